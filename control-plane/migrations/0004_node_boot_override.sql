-- A node's own boot files, which win over the site agent's [pxe] ones:
-- JSON {"tftp_file", "http_url", "ipxe_script_url"}, each optional; NULL
-- when the node uses the site-wide files.
ALTER TABLE nodes ADD COLUMN boot_override TEXT;
