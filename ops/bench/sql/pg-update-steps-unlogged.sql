-- pg-update-steps.sql without the log (see there).
\set start random(0, :hosts - 1000)
WITH written AS (
UPDATE agents AS a SET deploy_stage = CASE WHEN a.deploy_stage = 'DOWNLOADING' THEN 'STAGING' ELSE 'DOWNLOADING' END,
       last_update = clock_timestamp(), report_at = clock_timestamp(), changed = true
  FROM unnest(ARRAY(SELECT 'h-' || lpad(i::text, 7, '0') FROM generate_series(:start, :start + 999) AS i),
              ARRAY(SELECT 'bench-env-' || lpad((i % :stages)::text, 3, '0')
                    FROM generate_series(:start, :start + 999) AS i)) AS u (host_id, env_id)
 WHERE a.host_id = u.host_id AND a.env_id = u.env_id
 RETURNING a.host_id, a.env_id, a.host_name, a.deploy_id, a.deploy_stage, a.state, a.status, a.last_err_no,
           a.last_operator, a.last_update, a.changed)
SELECT count(*) FROM written;
