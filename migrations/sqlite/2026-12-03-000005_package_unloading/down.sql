ALTER TABLE packages DROP COLUMN unloading_at;
