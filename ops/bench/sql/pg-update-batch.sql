-- Calibration: 1,000 agent rows updated by one UPDATE … FROM unnest(…) (pgbench -D hosts=
-- -D stages=, seed.sql). The arrays are built by the server from a random run of hosts
-- rather than sent by the client; building them is included in the time.
\set start random(0, :hosts - 1000)
UPDATE agents AS a SET status = u.status, last_update = clock_timestamp(), report_at = clock_timestamp()
  FROM unnest(ARRAY(SELECT 'h-' || lpad(i::text, 7, '0') FROM generate_series(:start, :start + 999) AS i),
              ARRAY(SELECT 'bench-env-' || lpad((i % :stages)::text, 3, '0')
                    FROM generate_series(:start, :start + 999) AS i),
              ARRAY(SELECT 'SUCCEEDED'::text FROM generate_series(1, 1000))) AS u (host_id, env_id, status)
 WHERE a.host_id = u.host_id AND a.env_id = u.env_id;
