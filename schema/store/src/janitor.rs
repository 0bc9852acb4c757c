//! The host janitor's side of the store: hosts that stopped pinging are marked UNREACHABLE
//! (their records stop holding a slot of the cap), hosts silent for longer are forgotten (their
//! records, group memberships, tags and heartbeats go; a name in a stage's HOST capacity stays
//! there and shows as missing), and hosts marked for termination are forgotten once their
//! service stopped and they went silent.
//!
//! Every change to records happens under the stage's row lock, is announced to the gateways
//! in the same transaction, and is followed by the stage's re-evaluation (a freed slot admits
//! the next host; fewer hosts may let the deploy succeed). Silence is checked again under the
//! lock, so a host that pinged meanwhile is left alone. Everything here is idempotent: a run
//! that dies half-way is finished by the next.

use std::collections::BTreeMap;

use schema::bus::{AgentControl, ChangeMessage};
use schema::rules::agent_state::{self, AgentEvent};
use schema::time::EpochMs;
use schema::{AgentState, EnvId, HostId};

use crate::actions::{announce_rows, update_states};
use crate::agents::{admit, lock_rows};
use crate::deploys::evaluate_current;
use crate::rows::{get, get_id, ts};
use crate::stages::{announce_with, lock_stage_by_id};
use crate::{Result, Store};

/// Who the janitor's changes are recorded as.
pub const JANITOR: &str = "janitor";

/// When a record's host was last heard of: its last heartbeat or its last report, whichever
/// is later (a report may come before the heartbeat that goes with it is stored).
const LAST_HEARD: &str = "COALESCE(GREATEST(h.last_seen, a.report_at), a.last_update)";

/// What forgetting hosts did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Hosts removed.
    pub hosts: u64,
    /// Agent records removed.
    pub records: u64,
}

/// The states a record leaves when its host goes silent (from the rule, not a list kept here).
fn silenced_states() -> Vec<&'static str> {
    AgentState::ALL
        .iter()
        .filter(|s| agent_state::next(**s, AgentEvent::WentSilent) != **s)
        .map(|s| s.as_str())
        .collect()
}

/// Groups `(env_id, host_id)` rows by stage.
fn by_stage(rows: &[tokio_postgres::Row]) -> Result<BTreeMap<EnvId, Vec<HostId>>> {
    let mut out: BTreeMap<EnvId, Vec<HostId>> = BTreeMap::new();
    for r in rows {
        out.entry(get_id(r, "env_id")?).or_default().push(get_id(r, "host_id")?);
    }
    Ok(out)
}

impl Store {
    /// Marks UNREACHABLE the records of hosts last heard of before `before` (at most `limit`
    /// records per call), as the agent-state rule says silence does (an operator's hold, a
    /// pending reset or stop survive it). Returns how many records changed.
    pub async fn mark_silent_hosts(&self, before: EpochMs, now: EpochMs, limit: i64) -> Result<u64> {
        let states = silenced_states();
        let rows = {
            let client = self.client().await?;
            client
                .query(
                    &format!(
                        "SELECT a.env_id, a.host_id FROM agents a LEFT JOIN host_heartbeats h ON h.host_id = a.host_id
                         WHERE a.state = ANY($1) AND {LAST_HEARD} < $2
                         ORDER BY a.env_id, a.host_id LIMIT $3"
                    ),
                    &[&states, &ts(before), &limit],
                )
                .await?
        };
        let mut changed = 0;
        for (env_id, hosts) in by_stage(&rows)? {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let Some(e) = lock_stage_by_id(&*tx, &env_id, false).await? else { continue };
            let locked = lock_rows(&*tx, &env_id, &hosts).await?;
            let ids: Vec<&str> = locked.iter().map(|r| r.host_id.as_str()).collect();
            let still: Vec<String> = tx
                .query(
                    &format!(
                        "SELECT a.host_id FROM agents a LEFT JOIN host_heartbeats h ON h.host_id = a.host_id
                         WHERE a.env_id = $1 AND a.host_id = ANY($2) AND {LAST_HEARD} < $3"
                    ),
                    &[&env_id.as_str(), &ids, &ts(before)],
                )
                .await?
                .iter()
                .map(|r| get(r, "host_id"))
                .collect::<Result<_>>()?;
            let silent = locked.into_iter().filter(|r| still.iter().any(|s| s == r.host_id.as_str())).collect();
            let updated = update_states(&*tx, &env_id, silent, AgentEvent::WentSilent, JANITOR, now).await?;
            if updated.is_empty() {
                continue;
            }
            changed += updated.len() as u64;
            tracing::info!(env_id = %env_id, hosts = updated.len(), "hosts went silent: marked unreachable");
            announce_rows(&*tx, &env_id, updated).await?;
            // Their slots are free: the next hosts may start.
            evaluate_current(&*tx, &e, now).await?;
            admit(&*tx, &e, now).await?;
            tx.commit().await?;
        }
        Ok(changed)
    }

    /// Forgets hosts last heard of before `before` (at most `limit` per call): their records,
    /// group memberships, tags, errors and heartbeats. Returns what went.
    pub async fn remove_silent_hosts(&self, before: EpochMs, now: EpochMs, limit: i64) -> Result<Forgotten> {
        let hosts: Vec<String> = {
            let client = self.client().await?;
            client
                .query(
                    "WITH heard AS (
                         SELECT host_id, last_seen AS t FROM host_heartbeats
                         UNION ALL SELECT host_id, COALESCE(report_at, last_update) FROM agents
                         UNION ALL SELECT host_id, last_update FROM hosts)
                     SELECT host_id FROM heard GROUP BY host_id HAVING max(t) < $1 ORDER BY host_id LIMIT $2",
                    &[&ts(before), &limit],
                )
                .await?
                .iter()
                .map(|r| get(r, "host_id"))
                .collect::<Result<_>>()?
        };
        self.forget_hosts(&hosts, before, now).await
    }

    /// Forgets hosts marked for termination (`DELETE …/hosts`) whose every record has stopped
    /// (STOPPED, or failed while stopping) and that were last heard of before `before`: their
    /// machine was shut down. A stopped host that keeps pinging stays, stopped.
    pub async fn finish_stopped_hosts(&self, before: EpochMs, now: EpochMs, limit: i64) -> Result<Forgotten> {
        let hosts: Vec<String> = {
            let client = self.client().await?;
            client
                .query(
                    "SELECT hs.host_id FROM hosts hs LEFT JOIN host_heartbeats h ON h.host_id = hs.host_id
                     WHERE hs.state IN ('PENDING_TERMINATE', 'PENDING_TERMINATE_NO_REPLACE')
                       AND COALESCE(h.last_seen, hs.last_update) < $1
                       AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.host_id = hs.host_id
                                       AND a.deploy_stage <> 'STOPPED' AND a.state <> 'PAUSED_BY_SYSTEM')
                     ORDER BY hs.host_id LIMIT $2",
                    &[&ts(before), &limit],
                )
                .await?
                .iter()
                .map(|r| get(r, "host_id"))
                .collect::<Result<_>>()?
        };
        self.forget_hosts(&hosts, before, now).await
    }

    /// Removes everything known of `hosts` that are still silent since `before`: their
    /// records stage by stage (announced, then the stage re-evaluated), then the hosts.
    async fn forget_hosts(&self, hosts: &[String], before: EpochMs, now: EpochMs) -> Result<Forgotten> {
        let mut done = Forgotten::default();
        if hosts.is_empty() {
            return Ok(done);
        }
        let rows = {
            let client = self.client().await?;
            client
                .query("SELECT env_id, host_id FROM agents WHERE host_id = ANY($1) ORDER BY env_id, host_id", &[&hosts])
                .await?
        };
        for (env_id, ids) in by_stage(&rows)? {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let Some(e) = lock_stage_by_id(&*tx, &env_id, false).await? else { continue };
            let ids: Vec<&str> = ids.iter().map(HostId::as_str).collect();
            let removed = tx
                .query(
                    "DELETE FROM agents a WHERE a.env_id = $1 AND a.host_id = ANY($2)
                       AND COALESCE(GREATEST((SELECT h.last_seen FROM host_heartbeats h WHERE h.host_id = a.host_id),
                                             a.report_at), a.last_update) < $3
                     RETURNING a.host_id, a.control_seq",
                    &[&env_id.as_str(), &ids, &ts(before)],
                )
                .await?;
            if removed.is_empty() {
                continue;
            }
            done.records += removed.len() as u64;
            let controls = removed
                .iter()
                .map(|r| {
                    Ok(AgentControl {
                        host_id: get_id(r, "host_id")?,
                        record: None,
                        control_seq: get(r, "control_seq")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            tracing::info!(env_id = %env_id, hosts = controls.len(), "silent hosts forgotten");
            announce_with(&*tx, &env_id, |version| ChangeMessage::AgentsV1 {
                env_id: env_id.clone(),
                version,
                agents: controls,
            })
            .await?;
            evaluate_current(&*tx, &e, now).await?;
            admit(&*tx, &e, now).await?;
            tx.commit().await?;
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Hosts that pinged meanwhile, or still have a record, stay.
        let gone: Vec<String> = tx
            .query(
                "SELECT x.host_id FROM unnest($1::text[]) AS x(host_id)
                 WHERE NOT EXISTS (SELECT 1 FROM agents a WHERE a.host_id = x.host_id)
                   AND NOT EXISTS (SELECT 1 FROM host_heartbeats h WHERE h.host_id = x.host_id AND h.last_seen >= $2)
                   AND NOT EXISTS (SELECT 1 FROM hosts hs WHERE hs.host_id = x.host_id AND hs.last_update >= $2)",
                &[&hosts, &ts(before)],
            )
            .await?
            .iter()
            .map(|r| get(r, "host_id"))
            .collect::<Result<_>>()?;
        for table in ["host_groups", "host_tags", "agent_errors", "host_heartbeats"] {
            tx.execute(&format!("DELETE FROM {table} WHERE host_id = ANY($1)"), &[&gone]).await?;
        }
        done.hosts = tx.execute("DELETE FROM hosts WHERE host_id = ANY($1)", &[&gone]).await?;
        tx.commit().await?;
        Ok(done)
    }
}
