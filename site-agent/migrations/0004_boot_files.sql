-- Per-order install files (kickstart, preseed, NoCloud seed) of a boot,
-- served under the boot's one-time token while it is armed and deleted
-- when it ends. They are stored before the boot is armed, so an armed boot
-- always has its files; rows whose boot was never armed are never served.
CREATE TABLE boot_files (
    correlation_key  TEXT NOT NULL,
    name             TEXT NOT NULL,
    -- Holds the root password hash: never log it.
    content          TEXT NOT NULL,
    PRIMARY KEY (correlation_key, name)
);
