-- The control plane: API keys, tenants, uploaded packages and the audit log, kept in the
-- admin tenant's store (`public`); and the trigger poll claims every tenant's store uses so
-- that replicas sharing a database poll each custom-poll trigger once per interval.
-- With one migration set every schema gets every table; only `public`'s control rows are used.
-- Timestamps are Unix milliseconds (UTC); ids are UUID text, as everywhere else.

-- Only the SHA-256 of a key is stored; the plaintext is shown once, when it is created.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    -- 'read', 'write' or 'admin'.
    role       TEXT NOT NULL,
    -- The tenant the key acts in; NULL for a key of the admin tenant.
    tenant_id  TEXT,
    is_admin   BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Names are unique case-insensitively (a tenant's PostgreSQL schema is its lowercased name).
CREATE TABLE tenants (
    name        TEXT PRIMARY KEY NOT NULL,
    name_lower  TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at  BIGINT NOT NULL
);

-- Uploaded package archives, one row per (tenant, name, version); the unique index also
-- serves lookups by tenant.
CREATE TABLE packages (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    -- Lowercase hex SHA-256 and length of `archive`.
    sha256       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    archive      BLOB NOT NULL,
    signature    BLOB,
    signed       BOOLEAN NOT NULL,
    has_library  BOOLEAN NOT NULL,
    -- 'pending', 'building', 'failed' or 'success'.
    build_status TEXT NOT NULL,
    build_error  TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (tenant, name, version)
);

-- One row, bumped in the same transaction as every change to `packages`, so a replica learns
-- whether anything changed from one cheap read.
CREATE TABLE package_generation (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO package_generation (id, generation) VALUES (1, 0);

-- Who did what, newest last; `detail` is JSON text.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (at);

-- One row per poll of a custom-poll trigger: the primary key lets exactly one replica claim
-- each (tenant, trigger, slot), where slot = now_ms / poll_interval_ms. Old rows are pruned.
CREATE TABLE trigger_polls (
    tenant       TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    slot         BIGINT NOT NULL,
    claimed_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, trigger_name, slot)
) WITHOUT ROWID;
CREATE INDEX trigger_polls_by_time ON trigger_polls (claimed_at);

-- Workflows paused through the API: new runs refused on every replica until resumed.
CREATE TABLE workflow_pauses (
    tenant    TEXT NOT NULL,
    workflow  TEXT NOT NULL,
    paused_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, workflow)
);
