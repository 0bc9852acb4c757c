-- Every change of a host's record on a stage: a new deploy, a step, a status or a state. Each
-- statement that writes records logs its changes in the same statement (store/src/agents.rs,
-- store/src/actions.rs), so the log cannot miss or invent one; a report that repeats the record
-- logs nothing. It is the board's timeline of a deploy's host steps and a host's deploy
-- history. Rows are deleted after TELETRAAN_STEP_RETENTION_DAYS.
CREATE TABLE agent_steps (
    seq          bigserial PRIMARY KEY,
    host_id      text NOT NULL,
    env_id       text NOT NULL,
    host_name    text NOT NULL,
    deploy_id    text NOT NULL,
    deploy_stage text NOT NULL,
    state        text NOT NULL,
    status       text NOT NULL,
    err_no       integer NOT NULL,
    operator     text NOT NULL,
    at           timestamptz NOT NULL
);
CREATE INDEX agent_steps_deploy ON agent_steps (deploy_id, host_name, seq);
CREATE INDEX agent_steps_host ON agent_steps (host_name, seq);

-- Whether the record's last write changed its deploy, step, status or state: set by the
-- report upsert from the row it replaced, and returned so the change is logged. (A trigger
-- would log the same, but slowed every update of a record by about a quarter, repeated reports
-- included: BENCHMARKS.md §4.)
ALTER TABLE agents ADD COLUMN changed boolean NOT NULL DEFAULT true;
