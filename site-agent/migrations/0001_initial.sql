-- Rackhand site agent local state, version 1. Times are Unix milliseconds.

-- Side effects on hardware, recorded under their correlation key BEFORE the
-- request is sent, so a retry or a restart knows the request may be out.
CREATE TABLE side_effects (
    correlation_key  TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    -- requested | sent | done
    state            TEXT NOT NULL,
    sends            INTEGER NOT NULL DEFAULT 0,
    detail           TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- Netboots the agent has armed: what a MAC gets from the boot HTTP server,
-- and the one-time token its callback must present.
CREATE TABLE boots (
    correlation_key  TEXT PRIMARY KEY,
    mac              TEXT NOT NULL,
    node_id          INTEGER NOT NULL,
    node_name        TEXT NOT NULL,
    image_name       TEXT NOT NULL,
    kernel_sha256    TEXT NOT NULL,
    initrd_sha256    TEXT NOT NULL,
    kernel_args      TEXT NOT NULL,
    hostname         TEXT NOT NULL,
    token            TEXT NOT NULL UNIQUE,
    -- armed | called_back | failed | expired
    state            TEXT NOT NULL,
    error            TEXT,
    callback_ip      TEXT,
    armed_at         INTEGER NOT NULL,
    deadline_at      INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX boots_by_mac ON boots (mac, armed_at);

-- Results not yet acknowledged by the control plane; resent until they are.
CREATE TABLE pending_reports (
    correlation_key  TEXT PRIMARY KEY,
    task_id          INTEGER NOT NULL,
    body             TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);
