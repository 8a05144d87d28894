DROP TABLE workflow_pauses;
DROP TABLE trigger_polls;
DROP TABLE audit_log;
DROP TABLE package_generation;
DROP TABLE packages;
DROP TABLE tenants;
DROP TABLE api_keys;
