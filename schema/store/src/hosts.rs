//! Hosts: identity and groups as agents report them, and heartbeats.

use std::time::SystemTime;

use schema::bus::{Heartbeat, HostFacts};

use crate::rows::*;
use crate::{Result, Store};

impl Store {
    /// Stores host identities and replaces their group memberships and tags.
    pub async fn upsert_hosts(&self, hosts: &[HostFacts]) -> Result<()> {
        if hosts.is_empty() {
            return Ok(());
        }
        let mut hosts: Vec<&HostFacts> = hosts.iter().collect();
        hosts.sort_by(|a, b| (&a.host_id, a.seen_at).cmp(&(&b.host_id, b.seen_at)));
        hosts.reverse();
        hosts.dedup_by(|a, b| a.host_id == b.host_id);
        hosts.reverse();
        let ids: Vec<&str> = hosts.iter().map(|h| h.host_id.as_str()).collect();
        let names: Vec<&str> = hosts.iter().map(|h| h.host_name.as_str()).collect();
        let ips: Vec<Option<&str>> = hosts.iter().map(|h| h.ip.as_deref()).collect();
        let versions: Vec<&str> = hosts.iter().map(|h| h.agent_version.as_str()).collect();
        let asgs: Vec<Option<&str>> = hosts.iter().map(|h| h.autoscaling_group.as_deref()).collect();
        let azs: Vec<Option<&str>> = hosts.iter().map(|h| h.availability_zone.as_deref()).collect();
        let seen: Vec<SystemTime> = hosts.iter().map(|h| ts(h.seen_at)).collect();
        let mut group_hosts = Vec::new();
        let mut group_names = Vec::new();
        let (mut tag_hosts, mut tag_names, mut tag_values) = (Vec::new(), Vec::new(), Vec::new());
        for h in &hosts {
            for g in &h.groups {
                group_hosts.push(h.host_id.as_str());
                group_names.push(g.as_str());
            }
            for (k, v) in &h.tags {
                tag_hosts.push(h.host_id.as_str());
                tag_names.push(k.as_str());
                tag_values.push(v.as_str());
            }
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO hosts (host_id, host_name, ip, agent_version, autoscaling_group, availability_zone, state,
                 create_date, last_update)
             SELECT u.id, u.name, u.ip, u.version, u.asg, u.az, 'ACTIVE', u.seen, u.seen
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
                  AS u(id, name, ip, version, asg, az, seen)
             ON CONFLICT (host_id) DO UPDATE SET host_name = EXCLUDED.host_name, ip = EXCLUDED.ip,
                 agent_version = EXCLUDED.agent_version, autoscaling_group = EXCLUDED.autoscaling_group,
                 availability_zone = EXCLUDED.availability_zone, last_update = EXCLUDED.last_update,
                 state = CASE WHEN hosts.state = 'PROVISIONED' THEN 'ACTIVE' ELSE hosts.state END",
            &[&ids, &names, &ips, &versions, &asgs, &azs, &seen],
        )
        .await?;
        tx.execute("DELETE FROM host_groups WHERE host_id = ANY($1)", &[&ids]).await?;
        tx.execute(
            "INSERT INTO host_groups (host_id, group_name) SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT DO NOTHING",
            &[&group_hosts, &group_names],
        )
        .await?;
        tx.execute("DELETE FROM host_tags WHERE host_id = ANY($1)", &[&ids]).await?;
        tx.execute(
            "INSERT INTO host_tags (host_id, tag_name, tag_value) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT DO NOTHING",
            &[&tag_hosts, &tag_names, &tag_values],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records when hosts were last seen: one statement per batch.
    pub async fn record_heartbeats(&self, beats: &[Heartbeat]) -> Result<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let mut beats: Vec<&Heartbeat> = beats.iter().collect();
        beats.sort_by(|a, b| (&a.host_id, a.at).cmp(&(&b.host_id, b.at)));
        beats.reverse();
        beats.dedup_by(|a, b| a.host_id == b.host_id);
        beats.reverse();
        let ids: Vec<&str> = beats.iter().map(|b| b.host_id.as_str()).collect();
        let at: Vec<SystemTime> = beats.iter().map(|b| ts(b.at)).collect();
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO host_heartbeats AS h (host_id, last_seen)
                 SELECT * FROM unnest($1::text[], $2::timestamptz[])
                 ON CONFLICT (host_id) DO UPDATE SET last_seen = GREATEST(h.last_seen, EXCLUDED.last_seen)",
                &[&ids, &at],
            )
            .await?;
        Ok(())
    }
}
