-- A package whose delete stopped at a failed unload step: no longer desired (no replica loads
-- it again), but kept so that `package delete` can be rerun to finish the unload.
ALTER TABLE packages ADD COLUMN unloading_at BIGINT;
