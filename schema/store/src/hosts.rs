//! Hosts: identity and groups as agents report them (or a provisioner pre-registers them),
//! heartbeats, and the host reads of the API (Teletraan's `HostBean`: one row per host and
//! group).

use std::time::SystemTime;

use schema::bus::{Heartbeat, HostFacts};
use schema::model::{Host, NewHost};
use schema::time::EpochMs;
use schema::{EnvId, GroupName, HostId, HostName, HostState};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::history::{self, Change, Place, kind};
use crate::rows::{get, get_id, get_ms, get_opt_id, get_opt_ms, get_parsed, ts};
use crate::{Error, Result, Store};

/// The columns of a host row joined with one of its groups (`g`) and its heartbeat (`hb`).
const HOST_COLUMNS: &str = "h.host_id, h.host_name, h.ip, h.agent_version, h.autoscaling_group, h.availability_zone, \
     h.state, h.create_date, h.last_update, g.group_name, hb.last_seen";

fn host_from_row(r: &Row) -> Result<Host> {
    Ok(Host {
        host_name: get_id(r, "host_name")?,
        group_name: get_opt_id(r, "group_name")?,
        ip: get(r, "ip")?,
        host_id: get_id(r, "host_id")?,
        account_id: None,
        create_date: get_ms(r, "create_date")?,
        last_update_date: get_ms(r, "last_update")?,
        state: get_parsed(r, "state")?,
        can_retire: 0,
        agent_version: get(r, "agent_version")?,
        autoscaling_group: get(r, "autoscaling_group")?,
        availability_zone: get(r, "availability_zone")?,
        last_ping_date: get_opt_ms(r, "last_seen")?,
    })
}

/// Which hosts a read wants.
enum Hosts<'a> {
    /// Hosts of this name, every group.
    Named(&'a HostName),
    /// The host of this id, every group.
    WithId(&'a HostId),
    /// Hosts of a group that are not on their way out, that group only.
    InGroup(&'a GroupName),
    /// Hosts reachable through a stage's capacity: the rows of its groups, and every row of the
    /// hosts it names (optionally only those of one name).
    OfStage(&'a EnvId, Option<&'a HostName>),
}

impl Store {
    async fn host_rows(&self, which: Hosts<'_>) -> Result<Vec<Host>> {
        const BASE: &str = "FROM hosts h LEFT JOIN host_groups g ON g.host_id = h.host_id \
             LEFT JOIN host_heartbeats hb ON hb.host_id = h.host_id";
        const ORDER: &str = "ORDER BY h.host_name, h.host_id, g.group_name";
        let client = self.client().await?;
        let (key, name): (&str, Option<&str>) = match &which {
            Hosts::Named(n) => (n.as_str(), None),
            Hosts::WithId(id) => (id.as_str(), None),
            Hosts::InGroup(g) => (g.as_str(), None),
            Hosts::OfStage(env_id, name) => (env_id.as_str(), name.map(HostName::as_str)),
        };
        let (sql, params): (String, Vec<&(dyn ToSql + Sync)>) = match &which {
            Hosts::Named(_) => (format!("SELECT {HOST_COLUMNS} {BASE} WHERE h.host_name = $1 {ORDER}"), vec![&key]),
            Hosts::WithId(_) => (format!("SELECT {HOST_COLUMNS} {BASE} WHERE h.host_id = $1 {ORDER}"), vec![&key]),
            Hosts::InGroup(_) => (
                format!(
                    "SELECT {HOST_COLUMNS} FROM hosts h JOIN host_groups g ON g.host_id = h.host_id
                     LEFT JOIN host_heartbeats hb ON hb.host_id = h.host_id
                     WHERE g.group_name = $1 AND h.state IN ('PROVISIONED', 'ACTIVE') {ORDER}"
                ),
                vec![&key],
            ),
            Hosts::OfStage(..) => (
                format!(
                    "SELECT {HOST_COLUMNS} {BASE}
                     WHERE ($2::text IS NULL OR h.host_name = $2)
                       AND (EXISTS (SELECT 1 FROM stage_groups sg WHERE sg.env_id = $1 AND sg.group_name = g.group_name)
                            OR EXISTS (SELECT 1 FROM stage_hosts sh WHERE sh.env_id = $1 AND sh.host_name = h.host_name))
                     {ORDER}"
                ),
                vec![&key, &name],
            ),
        };
        let rows = client.query(&sql, &params).await?;
        rows.iter().map(host_from_row).collect()
    }

    /// Hosts of this name, one row per group (`GET /v1/hosts/{hostName}`).
    pub async fn hosts_named(&self, name: &HostName) -> Result<Vec<Host>> {
        self.host_rows(Hosts::Named(name)).await
    }

    /// The host of this id, one row per group (`GET /v1/hosts/id/{hostId}`).
    pub async fn host_with_id(&self, id: &HostId) -> Result<Vec<Host>> {
        self.host_rows(Hosts::WithId(id)).await
    }

    /// Hosts of a group that are PROVISIONED or ACTIVE (`GET /v1/groups/{group}/instances`).
    pub async fn hosts_in_group(&self, group: &GroupName) -> Result<Vec<Host>> {
        self.host_rows(Hosts::InGroup(group)).await
    }

    /// Hosts reachable through a stage's capacity, optionally of one name: the rows of its
    /// groups, and every row of the hosts it names (`GET …/{stage}/hosts[/{hostName}]`).
    pub async fn hosts_of_stage(&self, env_id: &EnvId, name: Option<&HostName>) -> Result<Vec<Host>> {
        self.host_rows(Hosts::OfStage(env_id, name)).await
    }

    /// Pre-registers a host before its agent pings (`POST /v1/hosts`): PROVISIONED, in its
    /// group, with a heartbeat at `now` so that the janitor forgets it if it never pings. A
    /// host known already keeps its state and facts and only joins the group; an id known
    /// under another name is a conflict. Returns whether the host is new.
    pub async fn register_host(&self, host: &NewHost, operator: &str, now: EpochMs) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO hosts (host_id, host_name, ip, state, create_date, last_update)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (host_id) DO NOTHING",
                &[
                    &host.host_id.as_str(),
                    &host.host_name.as_str(),
                    &host.ip,
                    &HostState::Provisioned.as_str(),
                    &ts(now),
                ],
            )
            .await?
            == 1;
        if !inserted {
            let row = tx
                .query_one("SELECT host_name FROM hosts WHERE host_id = $1 FOR UPDATE", &[&host.host_id.as_str()])
                .await?;
            let known: String = get(&row, "host_name")?;
            if known != host.host_name.as_str() {
                return Err(Error::Conflict(format!(
                    "host {} is known as {known}, not {}",
                    host.host_id, host.host_name
                )));
            }
        }
        if let Some(group) = &host.group_name {
            tx.execute(
                "INSERT INTO host_groups (group_name, host_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&group.as_str(), &host.host_id.as_str()],
            )
            .await?;
        }
        tx.execute(
            "INSERT INTO host_heartbeats (host_id, last_seen) VALUES ($1, $2) ON CONFLICT (host_id) DO NOTHING",
            &[&host.host_id.as_str(), &ts(now)],
        )
        .await?;
        let after = serde_json::json!({
            "hostId": host.host_id, "hostName": host.host_name, "groupName": host.group_name, "ip": host.ip,
            "new": inserted,
        });
        let change = Change { kind: kind::HOST, action: "register", before: None, after: Some(after) };
        history::record(&*tx, Place::System, operator, None, change, now).await?;
        tx.commit().await?;
        Ok(inserted)
    }
}

impl Store {
    /// Stores host identities and replaces their group memberships and tags. Facts older than
    /// those stored (`seen_at`: a redelivered or late batch) change nothing. Returns the hosts
    /// whose facts were written.
    pub async fn upsert_hosts(&self, hosts: &[HostFacts]) -> Result<Vec<String>> {
        if hosts.is_empty() {
            return Ok(Vec::new());
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let written: Vec<String> = tx
            .query(
                "INSERT INTO hosts (host_id, host_name, ip, agent_version, autoscaling_group, availability_zone, state,
                     create_date, last_update, facts_at)
                 SELECT u.id, u.name, u.ip, u.version, u.asg, u.az, 'ACTIVE', u.seen, u.seen, u.seen
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
                      AS u(id, name, ip, version, asg, az, seen)
                 ON CONFLICT (host_id) DO UPDATE SET host_name = EXCLUDED.host_name, ip = EXCLUDED.ip,
                     agent_version = EXCLUDED.agent_version, autoscaling_group = EXCLUDED.autoscaling_group,
                     availability_zone = EXCLUDED.availability_zone, last_update = EXCLUDED.last_update,
                     facts_at = EXCLUDED.facts_at,
                     state = CASE WHEN hosts.state = 'PROVISIONED' THEN 'ACTIVE' ELSE hosts.state END
                 -- Evaluated on the locked row: facts seen before the stored ones are refused.
                 WHERE hosts.facts_at IS NULL OR hosts.facts_at <= EXCLUDED.facts_at
                 RETURNING host_id",
                &[&ids, &names, &ips, &versions, &asgs, &azs, &seen],
            )
            .await?
            .iter()
            .map(|r| get(r, "host_id"))
            .collect::<Result<_>>()?;
        // Memberships and tags of the hosts whose facts were taken, replaced.
        let mut group_hosts = Vec::new();
        let mut group_names = Vec::new();
        let (mut tag_hosts, mut tag_names, mut tag_values) = (Vec::new(), Vec::new(), Vec::new());
        for h in hosts.iter().filter(|h| written.iter().any(|w| w == h.host_id.as_str())) {
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
        tx.execute("DELETE FROM host_groups WHERE host_id = ANY($1)", &[&written]).await?;
        tx.execute(
            "INSERT INTO host_groups (host_id, group_name) SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT DO NOTHING",
            &[&group_hosts, &group_names],
        )
        .await?;
        tx.execute("DELETE FROM host_tags WHERE host_id = ANY($1)", &[&written]).await?;
        tx.execute(
            "INSERT INTO host_tags (host_id, tag_name, tag_value) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT DO NOTHING",
            &[&tag_hosts, &tag_names, &tag_values],
        )
        .await?;
        tx.commit().await?;
        Ok(written)
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
