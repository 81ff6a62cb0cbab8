-- The installer's last progress report (`event=started` or `progress`
-- callbacks), shown to operators while the boot is armed.
ALTER TABLE boots ADD COLUMN progress TEXT;
