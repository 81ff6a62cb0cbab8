-- How the site agent trusts a BMC's HTTPS certificate, most of which are
-- self-signed: extra CA certificates (PEM) or the certificate's SHA-256
-- fingerprint (64 hex digits). Both NULL: the public web roots only.
ALTER TABLE nodes ADD COLUMN bmc_ca_pem TEXT;
ALTER TABLE nodes ADD COLUMN bmc_fingerprint TEXT;
ALTER TABLE node_operations ADD COLUMN bmc_ca_pem TEXT;
ALTER TABLE node_operations ADD COLUMN bmc_fingerprint TEXT;
