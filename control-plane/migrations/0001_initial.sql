-- Rackhand control plane schema, version 1.
--
-- Times are Unix milliseconds (INTEGER) so that the same statements run on
-- SQLite and PostgreSQL. Money is in minor units (cents) with an ISO 4217
-- currency code in lower case, as payment gateways send it.

CREATE TABLE sites (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE subnets (
    id           INTEGER PRIMARY KEY,
    site_id      INTEGER NOT NULL REFERENCES sites(id),
    name         TEXT NOT NULL UNIQUE,
    cidr         TEXT NOT NULL,
    gateway      TEXT,
    range_start  TEXT,
    range_end    TEXT,
    ptr_zone     TEXT,
    created_at   INTEGER NOT NULL
);

CREATE TABLE nodes (
    id                   INTEGER PRIMARY KEY,
    site_id              INTEGER NOT NULL REFERENCES sites(id),
    subnet_id            INTEGER NOT NULL REFERENCES subnets(id),
    name                 TEXT NOT NULL,
    bmc_driver           TEXT NOT NULL,
    bmc_url              TEXT NOT NULL,
    bmc_username         TEXT NOT NULL,
    -- Sealed with the control plane's sealing key; never stored in clear.
    bmc_password_sealed  TEXT NOT NULL,
    boot_mac             TEXT NOT NULL UNIQUE,
    cpu_cores            INTEGER NOT NULL,
    ram_mib              INTEGER NOT NULL,
    disk_gb              INTEGER NOT NULL,
    -- available | reserved; a reservation names its order.
    state                TEXT NOT NULL DEFAULT 'available',
    reserved_by_order    INTEGER,
    created_at           INTEGER NOT NULL,
    UNIQUE (site_id, name)
);

CREATE TABLE images (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    kernel_sha256  TEXT NOT NULL,
    initrd_sha256  TEXT NOT NULL,
    kernel_args    TEXT NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL
);

CREATE TABLE products (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    price_minor     INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    min_cpu_cores   INTEGER NOT NULL,
    min_ram_mib     INTEGER NOT NULL,
    min_disk_gb     INTEGER NOT NULL,
    image_id        INTEGER NOT NULL REFERENCES images(id),
    created_at      INTEGER NOT NULL
);

CREATE TABLE orders (
    id                INTEGER PRIMARY KEY,
    -- Random and never reused, so correlation keys derived from it stay
    -- unique even when the database is recreated.
    uid               TEXT NOT NULL UNIQUE,
    product_id        INTEGER NOT NULL REFERENCES products(id),
    site_id           INTEGER NOT NULL REFERENCES sites(id),
    customer_email    TEXT NOT NULL,
    hostname          TEXT NOT NULL,
    -- pending_payment | provisioning_pending | provisioning | active | failed
    state             TEXT NOT NULL,
    node_id           INTEGER REFERENCES nodes(id),
    failed_phase      TEXT,
    failure_error     TEXT,
    failure_upstream  TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE invoices (
    id            INTEGER PRIMARY KEY,
    order_id      INTEGER NOT NULL UNIQUE REFERENCES orders(id),
    amount_minor  INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    -- open | paid
    state         TEXT NOT NULL,
    paid_at       INTEGER,
    paid_by_event TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE services (
    id                    INTEGER PRIMARY KEY,
    order_id              INTEGER NOT NULL UNIQUE REFERENCES orders(id),
    node_id               INTEGER NOT NULL REFERENCES nodes(id),
    subnet_id             INTEGER NOT NULL REFERENCES subnets(id),
    ipv4                  TEXT NOT NULL,
    fqdn                  TEXT NOT NULL,
    ptr_done              INTEGER NOT NULL DEFAULT 0,
    root_password_sealed  TEXT,
    -- NULL (not sent) | sending | sent; 'sending' left behind by a crash
    -- means delivery is unknown and needs an operator's decision.
    email_state           TEXT,
    email_message_id      TEXT,
    -- provisioning | active
    state                 TEXT NOT NULL,
    activated_at          INTEGER,
    created_at            INTEGER NOT NULL,
    UNIQUE (subnet_id, ipv4)
);

CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY,
    order_id          INTEGER NOT NULL UNIQUE REFERENCES orders(id),
    phase             TEXT NOT NULL,
    -- queued | running | waiting | done | failed
    state             TEXT NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    run_after         INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX jobs_runnable ON jobs (state, run_after);

CREATE TABLE agent_tasks (
    id                INTEGER PRIMARY KEY,
    order_id          INTEGER NOT NULL REFERENCES orders(id),
    site_id           INTEGER NOT NULL REFERENCES sites(id),
    phase             TEXT NOT NULL,
    correlation_key   TEXT NOT NULL UNIQUE,
    -- pending | claimed | done | failed
    state             TEXT NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    run_after         INTEGER NOT NULL,
    claimed_by        INTEGER,
    lease_expires_at  INTEGER,
    progress          TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX agent_tasks_claimable ON agent_tasks (site_id, state, run_after);

CREATE TABLE activity_log (
    id               INTEGER PRIMARY KEY,
    order_id         INTEGER NOT NULL REFERENCES orders(id),
    phase            TEXT NOT NULL,
    -- started | succeeded | retrying | failed | progress | rejected
    event            TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    correlation_key  TEXT,
    message          TEXT NOT NULL,
    -- Upstream payload as JSON with secrets removed, or NULL.
    payload          TEXT,
    created_at       INTEGER NOT NULL
);
CREATE INDEX activity_log_order ON activity_log (order_id, id);

CREATE TABLE webhook_events (
    id           INTEGER PRIMARY KEY,
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    -- applied | ignored | rejected
    outcome      TEXT NOT NULL,
    reason       TEXT,
    invoice_id   INTEGER,
    payload      TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    UNIQUE (provider, event_id)
);

CREATE TABLE agents (
    id                INTEGER PRIMARY KEY,
    site_id           INTEGER NOT NULL REFERENCES sites(id),
    -- sha256 of the client certificate (DER), lowercase hex.
    cert_fingerprint  TEXT NOT NULL UNIQUE,
    cert_expires_at   INTEGER NOT NULL,
    agent_version     TEXT NOT NULL,
    enrolled_at       INTEGER NOT NULL,
    last_seen_at      INTEGER,
    revoked_at        INTEGER
);

CREATE TABLE enrollment_tokens (
    id            INTEGER PRIMARY KEY,
    site_id       INTEGER NOT NULL REFERENCES sites(id),
    token_sha256  TEXT NOT NULL UNIQUE,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    created_at    INTEGER NOT NULL
);
