DROP TABLE execution_events;
DROP TABLE contexts;
DROP TABLE task_executions;
DROP TABLE workflow_executions;
