-- Operator requests about one node's BMC outside any order (inventory,
-- power, boot device, sensors), run by the site agent of the node's site.
--
-- A node being added has no row in `nodes` yet, so an operation carries the
-- BMC access itself. The sealed password is cleared when the operation ends.
CREATE TABLE node_operations (
    id                   INTEGER PRIMARY KEY,
    site_id              INTEGER NOT NULL REFERENCES sites(id),
    node_id              INTEGER REFERENCES nodes(id),
    node_name            TEXT NOT NULL,
    boot_mac             TEXT,
    bmc_driver           TEXT NOT NULL,
    bmc_url              TEXT NOT NULL,
    bmc_username         TEXT NOT NULL,
    bmc_password_sealed  TEXT NOT NULL,
    -- The NodeAction as JSON.
    action               TEXT NOT NULL,
    -- pending | claimed | done | failed
    state                TEXT NOT NULL,
    claimed_by           INTEGER,
    lease_expires_at     INTEGER,
    result               TEXT,
    error                TEXT,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);
CREATE INDEX node_operations_claimable ON node_operations (site_id, state);

-- The last inventory read from the node's BMC, as JSON, and when.
ALTER TABLE nodes ADD COLUMN inventory TEXT;
ALTER TABLE nodes ADD COLUMN inventory_at INTEGER;
