-- How the armed boot installs its node (see the protocol's InstallMethod),
-- and for image writes the disk image the installer downloads and writes.
-- After an image write, the node's later netboots are told to boot its disk.
ALTER TABLE boots ADD COLUMN install_method TEXT NOT NULL DEFAULT 'live';
ALTER TABLE boots ADD COLUMN disk_sha256 TEXT;
ALTER TABLE boots ADD COLUMN disk_size INTEGER;
