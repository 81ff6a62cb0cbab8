-- What an image installs and how: the OS family for operators and
-- templates, the install method that tells the agent what the kernel and
-- initrd do, and for image writes the disk image by content.
ALTER TABLE images ADD COLUMN os_family TEXT NOT NULL DEFAULT 'linux';
ALTER TABLE images ADD COLUMN install_method TEXT NOT NULL DEFAULT 'live';
ALTER TABLE images ADD COLUMN disk_sha256 TEXT;
ALTER TABLE images ADD COLUMN disk_size INTEGER;
ALTER TABLE images ADD COLUMN disk_url TEXT;
