-- Indexes for the queries that run per report batch and per admission: the waiting hosts of
-- a stage, and the last error of a host.
CREATE INDEX agents_env_stage_state ON agents (env_id, deploy_stage, state);
CREATE INDEX agent_errors_env_host ON agent_errors (env_id, host_name);
