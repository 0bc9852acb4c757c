//! The host janitor's side of the store: hosts that stopped pinging are marked UNREACHABLE
//! (their records stop holding a slot of the cap), hosts silent for longer are forgotten (their
//! records, group memberships, tags and heartbeats go; a name in a stage's HOST capacity stays
//! there and shows as missing), and hosts marked for termination are forgotten once their
//! service stopped and they went silent.
//!
//! Every change to records happens under the stage's row lock and locks only the records
//! that are still silent when it runs (a host that reported meanwhile is left alone), is
//! announced to the gateways in the same transaction, and is followed by the stage's
//! re-evaluation in a transaction of its own (a freed slot admits the next host; fewer hosts
//! may let the deploy succeed). Everything here is idempotent: a run that dies half-way is
//! finished by the next.
//!
//! Silent hosts are found from `host_heartbeats` alone (every host a report mentions has a
//! row there): a scan of that narrow table per run, then the few silent hosts by key.

use std::collections::{BTreeMap, BTreeSet};

use schema::bus::{AgentControl, ChangeMessage};
use schema::rules::agent_state::{self, AgentEvent};
use schema::time::EpochMs;
use schema::{AgentState, EnvId, HostId};

use crate::actions::{announce_rows, update_states};
use crate::agents::{AGENT_COLUMNS_OF_A, agent_row};
use crate::outbox::{Exchange, enqueue};
use crate::rows::{get, get_id, ts};
use crate::stages::{announce_with, lock_stage_by_id};
use crate::{Result, Store};

/// Who the janitor's changes are recorded as.
pub const JANITOR: &str = "janitor";

/// When a record's host was last heard of: its last heartbeat or its last report, whichever
/// is later (a report may come before the heartbeat that goes with it is stored).
const LAST_HEARD: &str = "COALESCE(GREATEST(h.last_seen, a.report_at), a.last_update)";

/// What forgetting hosts did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Hosts removed.
    pub hosts: u64,
    /// Agent records removed.
    pub records: u64,
    /// Stages that lost records: re-evaluate each once ([`Store::refresh_stage`]) when the
    /// pass is done (fewer hosts may let a deploy succeed; a stopped host's slot is free).
    pub stages: BTreeSet<EnvId>,
}

impl Forgotten {
    /// Adds another call's result to this one.
    pub fn add(&mut self, other: Forgotten) {
        self.hosts += other.hosts;
        self.records += other.records;
        self.stages.extend(other.stages);
    }
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
    /// The latest heartbeat stored, of any host: how fresh what Postgres knows of the fleet is.
    pub async fn freshest_heartbeat(&self) -> Result<Option<EpochMs>> {
        let client = self.client().await?;
        let row = client.query_one("SELECT max(last_seen) AS t FROM host_heartbeats", &[]).await?;
        crate::rows::get_opt_ms(&row, "t")
    }

    /// Marks UNREACHABLE the records of hosts last heard of before `before` (at most `limit`
    /// records per call), as the agent-state rule says silence does (an operator's hold, a
    /// pending reset or stop survive it). Returns how many records changed.
    pub async fn mark_silent_hosts(&self, before: EpochMs, now: EpochMs, limit: i64) -> Result<u64> {
        let states = silenced_states();
        let rows = {
            let client = self.client().await?;
            client
                .query(
                    // Driven by the narrow heartbeat table (every known host has a row): a scan
                    // of it, then the records of the few silent hosts by key.
                    "SELECT a.env_id, a.host_id FROM host_heartbeats h JOIN agents a ON a.host_id = h.host_id
                     WHERE h.last_seen < $2 AND a.state = ANY($1) AND (a.report_at IS NULL OR a.report_at < $2)
                     ORDER BY a.env_id, a.host_id LIMIT $3",
                    &[&states, &ts(before), &limit],
                )
                .await?
        };
        let mut changed = 0;
        for (env_id, hosts) in by_stage(&rows)? {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            if lock_stage_by_id(&*tx, &env_id, false).await?.is_none() {
                continue;
            }
            // Only the records still silent are locked (a host that reported meanwhile is left
            // alone), in key order like every other writer of records.
            let ids: Vec<&str> = hosts.iter().map(HostId::as_str).collect();
            let silent = tx
                .query(
                    &format!(
                        "SELECT {AGENT_COLUMNS_OF_A} FROM agents a LEFT JOIN host_heartbeats h ON h.host_id = a.host_id
                         WHERE a.env_id = $1 AND a.host_id = ANY($2) AND {LAST_HEARD} < $3
                         ORDER BY a.host_id FOR UPDATE OF a"
                    ),
                    &[&env_id.as_str(), &ids, &ts(before)],
                )
                .await?
                .iter()
                .map(agent_row)
                .collect::<Result<Vec<_>>>()?;
            let updated = update_states(&*tx, &env_id, silent, AgentEvent::WentSilent, JANITOR, now).await?;
            if updated.is_empty() {
                continue;
            }
            changed += updated.len() as u64;
            tracing::info!(env_id = %env_id, hosts = updated.len(), "hosts went silent: marked unreachable");
            announce_rows(&*tx, &env_id, updated).await?;
            tx.commit().await?;
            // Their slots are free: the next hosts start, in a transaction of its own (admission
            // locks other records, which must not wait on the ones locked above).
            self.refresh_stage(&env_id, now).await?;
        }
        Ok(changed)
    }

    /// Forgets hosts last heard of before `before` (at most `limit` per call): their records,
    /// group memberships, tags, errors and heartbeats. Returns what went.
    pub async fn remove_silent_hosts(&self, before: EpochMs, limit: i64) -> Result<Forgotten> {
        let hosts = self
            .host_ids(
                "SELECT h.host_id FROM host_heartbeats h
                     WHERE h.last_seen < $1
                       AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.host_id = h.host_id AND a.report_at >= $1)
                       AND NOT EXISTS (SELECT 1 FROM hosts s WHERE s.host_id = h.host_id AND s.last_update >= $1)
                     ORDER BY h.host_id LIMIT $2",
                before,
                limit,
            )
            .await?;
        self.forget_hosts(&hosts, before).await
    }

    /// Forgets hosts marked for termination (`DELETE …/hosts`) whose every record has stopped
    /// (STOPPED, or failed while stopping) and that were last heard of before `before`: their
    /// machine was shut down. A stopped host that keeps pinging stays, stopped.
    pub async fn finish_stopped_hosts(&self, before: EpochMs, limit: i64) -> Result<Forgotten> {
        let hosts = self
            .host_ids(
                "SELECT hs.host_id FROM hosts hs LEFT JOIN host_heartbeats h ON h.host_id = hs.host_id
                     WHERE hs.state IN ('PENDING_TERMINATE', 'PENDING_TERMINATE_NO_REPLACE')
                       AND COALESCE(h.last_seen, hs.last_update) < $1
                       AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.host_id = hs.host_id
                                       AND a.deploy_stage <> 'STOPPED' AND a.state <> 'PAUSED_BY_SYSTEM')
                     ORDER BY hs.host_id LIMIT $2",
                before,
                limit,
            )
            .await?;
        self.forget_hosts(&hosts, before).await
    }

    /// The host ids a query with parameters `(before, limit)` finds.
    async fn host_ids(&self, query: &str, before: EpochMs, limit: i64) -> Result<Vec<String>> {
        let client = self.client().await?;
        client.query(query, &[&ts(before), &limit]).await?.iter().map(|r| get(r, "host_id")).collect()
    }

    /// Removes everything known of `hosts` that are still silent since `before`: their
    /// records stage by stage (announced to the gateways), then the hosts. The stages are
    /// returned for one re-evaluation each at the end of the pass rather than once per batch.
    async fn forget_hosts(&self, hosts: &[String], before: EpochMs) -> Result<Forgotten> {
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
            // The stage's lock orders this against admissions and reports of the stage.
            if lock_stage_by_id(&*tx, &env_id, false).await?.is_none() {
                continue;
            }
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
            tx.commit().await?;
            done.stages.insert(env_id);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Hosts that pinged meanwhile, or still have a record, stay. Each DELETE checks on the
        // row it locks (a host whose report commits meanwhile is re-read and kept), and only
        // what went has its memberships, tags and errors removed.
        let silent = "NOT EXISTS (SELECT 1 FROM agents a WHERE a.host_id = x.host_id)
             AND NOT EXISTS (SELECT 1 FROM host_heartbeats h WHERE h.host_id = x.host_id AND h.last_seen >= $2)";
        let mut gone: Vec<String> = tx
            .query(
                &format!(
                    "DELETE FROM hosts x WHERE x.host_id = ANY($1) AND x.last_update < $2 AND {silent}
                     RETURNING x.host_id"
                ),
                &[&hosts, &ts(before)],
            )
            .await?
            .iter()
            .map(|r| get(r, "host_id"))
            .collect::<Result<_>>()?;
        done.hosts = gone.len() as u64;
        let beats: Vec<String> = tx
            .query(
                "DELETE FROM host_heartbeats x WHERE x.host_id = ANY($1) AND x.last_seen < $2
                   AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.host_id = x.host_id)
                   AND NOT EXISTS (SELECT 1 FROM hosts hs WHERE hs.host_id = x.host_id)
                 RETURNING x.host_id",
                &[&hosts, &ts(before)],
            )
            .await?
            .iter()
            .map(|r| get(r, "host_id"))
            .collect::<Result<_>>()?;
        gone.extend(beats);
        gone.sort();
        gone.dedup();
        for table in ["host_groups", "host_tags", "agent_errors"] {
            tx.execute(&format!("DELETE FROM {table} WHERE host_id = ANY($1)"), &[&gone]).await?;
        }
        if !gone.is_empty() {
            // Gateways that still hold these hosts publish them again when they ping.
            let host_ids = gone.iter().map(|h| HostId::parse(h.as_str())).collect::<Result<Vec<_>, _>>();
            let host_ids = host_ids.map_err(|e| crate::Error::Corrupt(e.to_string()))?;
            enqueue(&*tx, Exchange::Changes, "hosts", &ChangeMessage::HostsForgottenV1 { host_ids }).await?;
        }
        tx.commit().await?;
        Ok(done)
    }
}
