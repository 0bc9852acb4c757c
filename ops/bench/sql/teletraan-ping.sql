-- One steady-state ping of host i, the statements Teletraan's PingHandler runs against its
-- database (reference teletraan-core.md §4.4 steps 2-5; a steady-state ping writes no agent
-- row). pgbench runs each statement in its own transaction, as Teletraan's DAOs do.
-- Variables: hosts, stages (pgbench -D).
\set i random(0, :hosts - 1)
\set k :i % :stages
-- 2. Heartbeat: read the host's row; nothing changed, so only last_update is touched.
SELECT host_name, ip, agent_version, auto_scaling_group, normandie_status, knox_status
  FROM hosts_and_agents WHERE host_id = 'h-' || lpad(:i::text, 7, '0');
UPDATE hosts_and_agents SET last_update = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
  WHERE host_id = 'h-' || lpad(:i::text, 7, '0');
-- Stage type for the sharded group names: the stage owning the host's autoscaling group.
SELECT stage_type FROM environs WHERE cluster_name = 'bench-grp-' || lpad(:k::text, 3, '0');
-- 3. Group membership: the host's rows, compared with the reported and sharded groups.
SELECT group_name, account_id, state FROM hosts WHERE host_id = 'h-' || lpad(:i::text, 7, '0');
-- 4. Stages of the host: host capacity, then reported groups, then sharded groups.
SELECT e.* FROM hosts_and_envs he JOIN environs e ON e.env_id = he.env_id
  WHERE he.host_name = 'h-' || lpad(:i::text, 7, '0');
SELECT e.* FROM groups_and_envs ge JOIN environs e ON e.env_id = ge.env_id
  WHERE ge.group_name IN ('bench-grp-' || lpad(:k::text, 3, '0'));
SELECT e.* FROM groups_and_envs ge JOIN environs e ON e.env_id = ge.env_id
  WHERE ge.group_name IN ('bench-grp-' || lpad(:k::text, 3, '0') || '-production-us-east-1a');
-- 5. The host's agent rows.
SELECT * FROM agents WHERE host_name = 'h-' || lpad(:i::text, 7, '0');
