DROP INDEX packages_by_build_status;
ALTER TABLE packages DROP COLUMN build_log;
ALTER TABLE packages DROP COLUMN build_attempts;
ALTER TABLE packages DROP COLUMN build_finished_at;
ALTER TABLE packages DROP COLUMN build_started_at;
ALTER TABLE packages DROP COLUMN build_heartbeat_at;
ALTER TABLE packages DROP COLUMN build_claimed_by;
