-- The engine's tables. Timestamps are Unix milliseconds (UTC); ids are UUID text; contexts
-- are JSON text. The same logical schema exists for PostgreSQL, so one set of queries serves both.

CREATE TABLE workflow_executions (
    id               TEXT PRIMARY KEY NOT NULL,
    workflow_name    TEXT NOT NULL,
    workflow_version TEXT NOT NULL,
    package_id       TEXT,
    status           TEXT NOT NULL,
    total_tasks      INTEGER NOT NULL,
    remaining_tasks  INTEGER NOT NULL,
    failed_tasks     INTEGER NOT NULL DEFAULT 0,
    -- Last event sequence number; bumping it serializes writers of one execution so events
    -- are ordered per execution in commit order.
    event_seq        BIGINT NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT
);
CREATE INDEX workflow_executions_by_status ON workflow_executions (status, created_at);
CREATE INDEX workflow_executions_by_workflow ON workflow_executions (workflow_name, created_at);

CREATE TABLE task_executions (
    execution_id     TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    task_id          TEXT NOT NULL,
    -- Topological position: leaves merge into the final context in this order.
    position         INTEGER NOT NULL,
    -- JSON array of the tasks that depend on this one, so completion can cascade in SQL alone.
    dependents       TEXT NOT NULL,
    status           TEXT NOT NULL,
    remaining_deps   INTEGER NOT NULL,
    -- Dependencies that ended Failed or Skipped: the default trigger rule needs no extra read.
    failed_deps      INTEGER NOT NULL DEFAULT 0,
    -- Fencing token: bumped by every claim; every write of an attempt must match it.
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    recoveries       INTEGER NOT NULL DEFAULT 0,
    ready_at         BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT,
    PRIMARY KEY (execution_id, task_id)
);
CREATE INDEX task_executions_ready ON task_executions (ready_at) WHERE status = 'Ready';
CREATE INDEX task_executions_leases ON task_executions (lease_expires_at) WHERE status = 'Running';

-- Context documents, kept apart from the hot status rows: '/input' (workflow input),
-- '/final' (final context) or a task id (that task's output).
CREATE TABLE contexts (
    execution_id TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    owner        TEXT NOT NULL,
    data         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (execution_id, owner)
);

CREATE TABLE execution_events (
    execution_id TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    task_id      TEXT,
    kind         TEXT NOT NULL,
    attempt      INTEGER,
    message      TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
CREATE INDEX execution_events_by_time ON execution_events (created_at);
