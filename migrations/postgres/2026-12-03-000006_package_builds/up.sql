-- Package builds by the compiler service (cloacina-compiler). A worker claims a `pending` row
-- (status-checked update; `FOR UPDATE SKIP LOCKED` on PostgreSQL), stamps its heartbeat while
-- it builds, and finishes it `success` or `failed`; a claim whose heartbeat is older than the
-- stale threshold is handed back to `pending` by any compiler's sweep.
-- Who holds the build claim (a compiler worker id), while `build_status` is 'building'.
ALTER TABLE packages ADD COLUMN build_claimed_by TEXT;
-- The claim holder's last heartbeat (Unix ms).
ALTER TABLE packages ADD COLUMN build_heartbeat_at BIGINT;
-- When the current (or last) build started and finished (Unix ms).
ALTER TABLE packages ADD COLUMN build_started_at BIGINT;
ALTER TABLE packages ADD COLUMN build_finished_at BIGINT;
-- How many times the package was claimed without a recorded outcome counting against it.
ALTER TABLE packages ADD COLUMN build_attempts INTEGER NOT NULL DEFAULT 0;
-- The tail of the last build's log (bounded by the compiler).
ALTER TABLE packages ADD COLUMN build_log TEXT;
-- Claims look for the oldest pending row; sweeps for building rows.
CREATE INDEX packages_by_build_status ON packages (build_status, created_at);
