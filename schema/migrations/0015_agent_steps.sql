-- Every change of a host's record on a stage: a new deploy, a step, a status or a state. The
-- database writes it whichever role changed the record (a report, an admission, a user's host
-- action), in the same transaction, so the log cannot miss or invent a change. It is the
-- board's timeline of a deploy's host steps and a host's deploy history. Rows are deleted after
-- TELETRAAN_STEP_RETENTION_DAYS and with their deploy.
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

CREATE FUNCTION record_agent_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_steps (host_id, env_id, host_name, deploy_id, deploy_stage, state, status, err_no, operator, at)
    VALUES (NEW.host_id, NEW.env_id, NEW.host_name, NEW.deploy_id, NEW.deploy_stage, NEW.state, NEW.status,
            NEW.last_err_no, NEW.last_operator, NEW.last_update);
    RETURN NULL;
END $$;

CREATE TRIGGER agent_steps_on_insert AFTER INSERT ON agents
    FOR EACH ROW EXECUTE FUNCTION record_agent_step();
-- A report that repeats the record (every ping re-reports it) writes nothing.
CREATE TRIGGER agent_steps_on_update AFTER UPDATE ON agents
    FOR EACH ROW
    WHEN (OLD.deploy_id IS DISTINCT FROM NEW.deploy_id OR OLD.deploy_stage IS DISTINCT FROM NEW.deploy_stage
          OR OLD.status IS DISTINCT FROM NEW.status OR OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION record_agent_step();
