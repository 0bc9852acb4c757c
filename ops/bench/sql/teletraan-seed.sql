-- The same fleet as seed.sql in Teletraan's tables (psql -v hosts=100000 -v stages=100), at
-- rest: every host serves its stage's current deploy, the steady state of most pings.
-- Stage k owns group bench-grp-KKK (cluster_name, as a stage owns its autoscaling group) and
-- has it as group capacity; host i is in the group of stage i % stages and also has the
-- sharded group Teletraan derives from it (bench-grp-KKK-production-us-east-1a).
\set ON_ERROR_STOP on

BEGIN;

INSERT INTO environs (env_id, env_name, stage_name, build_name, deploy_id, deploy_type, max_parallel,
                      max_parallel_pct, last_operator, last_update, cluster_name, stage_type)
SELECT 'bench-env-' || lpad(k::text, 3, '0'), 'bench-svc-' || lpad(k::text, 3, '0'), 'prod',
       'bench-svc-' || lpad(k::text, 3, '0'), 'bench-d2-' || lpad(k::text, 3, '0'), 'REGULAR', 0, 10, 'bench',
       (extract(epoch FROM now()) * 1000)::bigint, 'bench-grp-' || lpad(k::text, 3, '0'), 'PRODUCTION'
FROM generate_series(0, :stages - 1) AS k;

INSERT INTO groups_and_envs (group_name, env_id)
SELECT 'bench-grp-' || lpad(k::text, 3, '0'), 'bench-env-' || lpad(k::text, 3, '0')
FROM generate_series(0, :stages - 1) AS k;

CREATE TEMP TABLE bench_fleet ON COMMIT DROP AS
SELECT 'h-' || lpad(i::text, 7, '0') AS id, 'bench-grp-' || lpad((i % :stages)::text, 3, '0') AS grp,
       'bench-env-' || lpad((i % :stages)::text, 3, '0') AS env, (i % :stages) AS k,
       (extract(epoch FROM now()) * 1000)::bigint AS now_ms
FROM generate_series(0, :hosts - 1) AS i;

INSERT INTO hosts_and_agents (host_id, host_name, ip, create_date, last_update, agent_version, auto_scaling_group,
                              normandie_status, knox_status)
SELECT id, id, '10.0.0.1', now_ms, now_ms, '1.2.76', grp, 'ERROR', 'ERROR' FROM bench_fleet;

INSERT INTO hosts (host_id, host_name, group_name, ip, create_date, last_update, state)
SELECT id, id, grp, '10.0.0.1', now_ms, now_ms, 'ACTIVE' FROM bench_fleet
UNION ALL
SELECT id, id, grp || '-production-us-east-1a', '10.0.0.1', now_ms, now_ms, 'ACTIVE' FROM bench_fleet;

INSERT INTO agents (host_id, host_name, env_id, deploy_id, deploy_stage, state, status, start_date, last_update,
                    last_operator, first_deploy, stage_start_date)
SELECT id, id, env, 'bench-d2-' || lpad(k::text, 3, '0'), 'SERVING_BUILD', 'NORMAL', 'SUCCEEDED', now_ms, now_ms,
       'system', 0, now_ms
FROM bench_fleet;

COMMIT;

VACUUM ANALYZE environs, groups_and_envs, hosts_and_agents, hosts, agents;
