-- Calibration: one agent row updated per statement (pgbench -D hosts= -D stages=, seed.sql).
\set i random(0, :hosts - 1)
\set k :i % :stages
UPDATE agents SET status = 'SUCCEEDED', last_update = clock_timestamp(), report_at = clock_timestamp()
 WHERE host_id = 'h-' || lpad(:i::text, 7, '0') AND env_id = 'bench-env-' || lpad(:k::text, 3, '0');
