-- Image files uploaded into the control plane's store, and pre-staging.
--
-- An image created for upload starts 'incomplete' and turns 'ready' once
-- every file its install method needs is uploaded; products accept ready
-- images only. Images registered by digest are ready at once. Until a file
-- is uploaded, its sha256 column on images holds the digest the operator
-- expects, or '' when none was given.
ALTER TABLE images ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';

CREATE TABLE image_files (
    image_id            INTEGER NOT NULL REFERENCES images(id),
    -- kernel | initrd | disk
    role                TEXT NOT NULL,
    sha256              TEXT NOT NULL,
    size                INTEGER NOT NULL,
    -- Fingerprint of the key whose detached signature verified the file,
    -- or NULL when it was uploaded without a signature.
    signer_fingerprint  TEXT,
    uploaded_at         INTEGER NOT NULL,
    PRIMARY KEY (image_id, role)
);
CREATE INDEX image_files_sha256 ON image_files (sha256);

CREATE TABLE image_stages (
    image_id      INTEGER NOT NULL REFERENCES images(id),
    site_id       INTEGER NOT NULL REFERENCES sites(id),
    -- requested | downloading | staged | failed, as the agent last reported
    status        TEXT NOT NULL,
    error         TEXT,
    requested_at  INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (image_id, site_id)
);
