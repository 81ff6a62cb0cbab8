-- Two node records must never drive the same BMC: an order for one would
-- power-cycle the other's machine. URLs are stored normalized by the API
-- (no trailing slash, lowercase scheme and host).
CREATE UNIQUE INDEX nodes_bmc_url ON nodes (bmc_url);
