-- The cost of the step log: 1,000 agent rows whose step changes, by one UPDATE … FROM unnest(…)
-- as pg-update-batch.sql, each change logged to agent_steps in the same statement as the
-- report upsert does (store/src/agents.rs). pg-update-steps-unlogged.sql is the same without
-- the log: the difference is what the log costs when every row changes.
\set start random(0, :hosts - 1000)
WITH written AS (
UPDATE agents AS a SET deploy_stage = CASE WHEN a.deploy_stage = 'DOWNLOADING' THEN 'STAGING' ELSE 'DOWNLOADING' END,
       last_update = clock_timestamp(), report_at = clock_timestamp(), changed = true
  FROM unnest(ARRAY(SELECT 'h-' || lpad(i::text, 7, '0') FROM generate_series(:start, :start + 999) AS i),
              ARRAY(SELECT 'bench-env-' || lpad((i % :stages)::text, 3, '0')
                    FROM generate_series(:start, :start + 999) AS i)) AS u (host_id, env_id)
 WHERE a.host_id = u.host_id AND a.env_id = u.env_id
 RETURNING a.host_id, a.env_id, a.host_name, a.deploy_id, a.deploy_stage, a.state, a.status, a.last_err_no,
           a.last_operator, a.last_update, a.changed),
logged AS (INSERT INTO agent_steps (host_id, env_id, host_name, deploy_id, deploy_stage, state, status, err_no, operator, at)
           SELECT host_id, env_id, host_name, deploy_id, deploy_stage, state, status, last_err_no, last_operator, last_update
           FROM written WHERE changed ORDER BY host_name, env_id)
SELECT count(*) FROM written;
