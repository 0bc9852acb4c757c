-- Every known host has a heartbeat row: reports now store one for each host they mention, and
-- the host janitor finds silent hosts from that narrow table alone (a scan of it, not a join
-- of every record). Hosts known before get one from what was last heard of them.
INSERT INTO host_heartbeats (host_id, last_seen)
SELECT host_id, max(t) FROM (
    SELECT host_id, COALESCE(report_at, last_update) AS t FROM agents
    UNION ALL SELECT host_id, last_update FROM hosts
) AS heard
GROUP BY host_id
ON CONFLICT (host_id) DO NOTHING;
