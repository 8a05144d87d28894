DROP INDEX workflow_executions_dedup;
ALTER TABLE workflow_executions DROP COLUMN dedup_key;
DROP TABLE cron_fires;
DROP TABLE cron_schedules;
