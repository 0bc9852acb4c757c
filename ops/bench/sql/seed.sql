-- A fleet with a rollout in progress, written straight into a migrated teletraan database
-- (psql -v hosts=100000 -v stages=100 -f seed.sql). Much faster than registering hosts through
-- pings; the gateway loads it like any other database.
--
-- Naming (ops/src/bench/seeded.rs builds the pings from the same scheme; a unit test checks
-- that both agree):
--   stage k (0 <= k < stages): env id bench-env-KKK, environment bench-svc-KKK, stage prod,
--     group capacity bench-grp-KKK, maxParallelPct 10; builds bench-b1-KKK and bench-b2-KKK;
--     deploy bench-d1-KKK (SUCCEEDED) and bench-d2-KKK (RUNNING, current).
--   host i (0 <= i < hosts): id and name h-IIIIIII, group bench-grp of stage i % stages;
--     with j = i / stages (its rank in its stage):
--       j % 10 = 0      on bench-d2 mid-deploy (one of the seven work stages, status UNKNOWN):
--                       10 % of the stage, exactly its cap, so no worker admits anyone more;
--       j % 10 in 1..4  done: bench-d2, SERVING_BUILD, SUCCEEDED;
--       j % 10 in 5..9  waiting for admission: bench-d1, SERVING_BUILD, SUCCEEDED.
\set ON_ERROR_STOP on

BEGIN;

INSERT INTO environs (env_id, env_name, stage_name, build_name, deploy_id, deploy_type, max_parallel,
                      max_parallel_pct, stuck_th, last_operator, last_update, version)
SELECT 'bench-env-' || lpad(k::text, 3, '0'), 'bench-svc-' || lpad(k::text, 3, '0'), 'prod',
       'bench-svc-' || lpad(k::text, 3, '0'), 'bench-d2-' || lpad(k::text, 3, '0'), 'REGULAR', 0, 10,
       -- No progress is ever reported for the mid-deploy hosts: keep the deploy from turning
       -- FAILING (which would change nothing a ping sees, but would add writes) during a run.
       86400, 'bench', now(), 1
FROM generate_series(0, :stages - 1) AS k;

INSERT INTO stage_groups (env_id, group_name)
SELECT 'bench-env-' || lpad(k::text, 3, '0'), 'bench-grp-' || lpad(k::text, 3, '0')
FROM generate_series(0, :stages - 1) AS k;

INSERT INTO builds (build_id, build_name, artifact_url, scm, scm_repo, scm_branch, scm_commit, scm_commit_7,
                    commit_date, publisher, publish_date)
SELECT 'bench-b' || v || '-' || lpad(k::text, 3, '0'), 'bench-svc-' || lpad(k::text, 3, '0'),
       'https://artifacts.example.com/bench-svc-' || lpad(k::text, 3, '0') || '-' || v || '.tar.gz',
       'GitHub', 'org/bench-svc', 'main', md5(k || '-' || v) || 'abcdef01', left(md5(k || '-' || v), 7),
       now(), 'bench', now()
FROM generate_series(0, :stages - 1) AS k, (VALUES (1), (2)) AS b (v);

INSERT INTO deploys (deploy_id, env_id, build_id, deploy_type, state, start_date, operator, last_update,
                     acc_status, suc_total, total)
SELECT 'bench-d' || v || '-' || lpad(k::text, 3, '0'), 'bench-env-' || lpad(k::text, 3, '0'),
       'bench-b' || v || '-' || lpad(k::text, 3, '0'), 'REGULAR',
       CASE WHEN v = 1 THEN 'SUCCEEDED' ELSE 'RUNNING' END,
       now() - (3 - v) * interval '1 hour', 'bench', now(),
       CASE WHEN v = 1 THEN 'ACCEPTED' ELSE 'PENDING_DEPLOY' END, 0, 0
FROM generate_series(0, :stages - 1) AS k, (VALUES (1), (2)) AS b (v);

CREATE TEMP TABLE bench_fleet ON COMMIT DROP AS
SELECT 'h-' || lpad(i::text, 7, '0') AS id, i % :stages AS k, i / :stages AS j
FROM generate_series(0, :hosts - 1) AS i;

INSERT INTO agents (host_id, env_id, host_name, deploy_id, deploy_stage, state, status, start_date, last_update,
                    last_operator, stage_start_date, first_deploy)
SELECT f.id, 'bench-env-' || lpad(f.k::text, 3, '0'), f.id,
       CASE WHEN f.j % 10 <= 4 THEN 'bench-d2-' ELSE 'bench-d1-' END || lpad(f.k::text, 3, '0'),
       CASE WHEN f.j % 10 = 0
            THEN (ARRAY['PRE_DOWNLOAD', 'DOWNLOADING', 'POST_DOWNLOAD', 'STAGING', 'PRE_RESTART', 'RESTARTING',
                        'POST_RESTART'])[(f.j / 10) % 7 + 1]
            ELSE 'SERVING_BUILD' END,
       'NORMAL',
       CASE WHEN f.j % 10 = 0 THEN 'UNKNOWN' ELSE 'SUCCEEDED' END,
       now(), now(), 'system', now(), false
FROM bench_fleet AS f;

INSERT INTO hosts (host_id, host_name, ip, agent_version, autoscaling_group, availability_zone, create_date,
                   last_update)
SELECT f.id, f.id, '10.' || (f.j / 65536) % 256 || '.' || (f.j / 256) % 256 || '.' || f.j % 256, '1.2.76',
       'bench-grp-' || lpad(f.k::text, 3, '0'), 'us-east-1a', now(), now()
FROM bench_fleet AS f;

INSERT INTO host_groups (group_name, host_id)
SELECT 'bench-grp-' || lpad(f.k::text, 3, '0'), f.id FROM bench_fleet AS f;

INSERT INTO host_heartbeats (host_id, last_seen) SELECT f.id, now() FROM bench_fleet AS f;

UPDATE deploys AS d SET total = c.total, suc_total = c.done
FROM (SELECT env_id, deploy_id, count(*) FILTER (WHERE deploy_stage = 'SERVING_BUILD') AS done,
             sum(count(*)) OVER (PARTITION BY env_id) AS total
      FROM agents GROUP BY env_id, deploy_id) AS c
WHERE d.deploy_id = 'bench-d2-' || right(c.env_id, 3) AND c.deploy_id = d.deploy_id;

COMMIT;

ANALYZE environs, stage_groups, builds, deploys, agents, hosts, host_groups, host_heartbeats;
