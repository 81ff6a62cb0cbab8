-- Where site agents download an image's files from when their cache does
-- not hold them yet (the sha256 digests still decide what is served).
ALTER TABLE images ADD COLUMN kernel_url TEXT;
ALTER TABLE images ADD COLUMN initrd_url TEXT;
