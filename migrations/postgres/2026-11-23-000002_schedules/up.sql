-- Cron schedules, the instants they fired, and de-duplication of trigger fires.
-- Timestamps and instants are Unix milliseconds (UTC), as everywhere else.

-- One row per (package, schedule name). `next_run_at` is the schedule's cursor: the earliest
-- instant not yet fired or skipped. It only moves forward, and an instant fires only in the
-- transaction that moves the cursor past it (see docs/scheduling.md, "Exactly once").
CREATE TABLE cron_schedules (
    id           TEXT PRIMARY KEY NOT NULL,
    package_id   TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    workflow     TEXT NOT NULL,
    expression   TEXT NOT NULL,
    -- IANA time zone name the expression is evaluated in.
    timezone     TEXT NOT NULL,
    -- 'skip' or 'run_all'; catch_up_max is run_all's cap (NULL for skip).
    catch_up     TEXT NOT NULL,
    catch_up_max INTEGER,
    next_run_at  BIGINT NOT NULL,
    -- The last instant fired (not when it fired).
    last_run_at  BIGINT,
    -- Instants dropped by the catch-up policy so far.
    missed_count BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (package_id, name)
);
CREATE INDEX cron_schedules_due ON cron_schedules (next_run_at);

-- Each fired instant, written in the same transaction as its execution. The primary key makes
-- a second fire of one instant impossible even if a cursor were ever moved back.
CREATE TABLE cron_fires (
    schedule_id  TEXT NOT NULL REFERENCES cron_schedules (id) ON DELETE CASCADE,
    instant      BIGINT NOT NULL,
    execution_id TEXT NOT NULL,
    fired_at     BIGINT NOT NULL,
    PRIMARY KEY (schedule_id, instant)
);

-- A run started by a custom-poll trigger carries `trigger:<workflow>:<trigger>:<sha256 of the
-- canonical context>`; while one such run is not finished, another with the same key cannot
-- be created (in any process).
ALTER TABLE workflow_executions ADD COLUMN dedup_key TEXT;
CREATE UNIQUE INDEX workflow_executions_dedup ON workflow_executions (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('Pending', 'Running', 'Paused');
