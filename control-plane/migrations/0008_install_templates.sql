-- Operator install templates (Handlebars), checked when uploaded. A product
-- names the template its orders render into the install files that the site
-- agent serves to the installer.
CREATE TABLE install_templates (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    -- kickstart | preseed | cloud-config
    format      TEXT NOT NULL,
    body        TEXT NOT NULL,
    -- sha256 of body, lowercase hex, so operators can tell versions apart.
    sha256      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

ALTER TABLE products ADD COLUMN install_template_id INTEGER REFERENCES install_templates(id);

-- The SHA-512-crypt hash of root_password_sealed, sealed the same way. It is
-- stored so that every rendering of an order's install files (a retried or
-- re-handed-out image task) writes the same hash.
ALTER TABLE services ADD COLUMN root_password_hash_sealed TEXT;
