ALTER TABLE contexts ADD CONSTRAINT contexts_execution_id_fkey
    FOREIGN KEY (execution_id) REFERENCES workflow_executions (id) ON DELETE CASCADE;
ALTER TABLE execution_events ADD CONSTRAINT execution_events_execution_id_fkey
    FOREIGN KEY (execution_id) REFERENCES workflow_executions (id) ON DELETE CASCADE;
