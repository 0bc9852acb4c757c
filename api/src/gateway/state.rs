//! What a gateway holds in memory: every stage (with its capacity indexes), the agent records
//! of the hosts (tokens and host bindings are in `identity.rs`). Locks are std locks held for short, synchronous
//! sections only: never across an await.
//!
//! Memory per host is kept small: ids are shared text (`Arc<str>`), and the stage and deploy
//! ids of the records point to one copy per stage and per current deploy ([`Canon`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use schema::bus::{AgentControl, Heartbeat, StageSnapshot};
use schema::rules::goal::AgentRecord;
use schema::time::EpochMs;
use schema::{DeployId, EnvId, EnvName, GroupName, HostId, HostName, StageName};

use super::fasthash::{FastMap, hash_of};

/// Shards of the host map: pings of different hosts rarely wait for each other.
const SHARDS: usize = 64;

/// A stage as the gateway holds it.
#[derive(Debug)]
pub struct StageEntry {
    /// Version of the last change applied.
    pub version: AtomicI64,
    /// The stage.
    pub snapshot: StageSnapshot,
}

/// One shared copy of each stage id and of each current (or rollback target) deploy id, so
/// the records of a million hosts do not each carry their own.
#[derive(Debug, Default)]
pub struct Canon {
    envs: FastMap<EnvId, ()>,
    deploys: FastMap<DeployId, ()>,
}

impl Canon {
    /// The shared copy of a stage id (the id itself when unknown).
    pub fn env(&self, id: &EnvId) -> EnvId {
        self.envs.get_key_value(id.as_str()).map(|(k, _)| k.clone()).unwrap_or_else(|| id.clone())
    }

    /// A record whose deploy id is the shared copy.
    pub fn record(&self, mut r: AgentRecord) -> AgentRecord {
        if let Some((k, _)) = self.deploys.get_key_value(r.deploy_id.as_str()) {
            r.deploy_id = k.clone();
        }
        r
    }
}

/// Every stage, indexed by id, by group and by host name.
#[derive(Debug, Default)]
pub struct Stages {
    pub(crate) by_id: FastMap<EnvId, Arc<StageEntry>>,
    by_group: FastMap<GroupName, Vec<EnvId>>,
    by_host: FastMap<HostName, Vec<EnvId>>,
    /// Names of every stage seen, including deleted ones (DELETE goals carry them).
    pub(crate) names: FastMap<EnvId, (EnvName, StageName)>,
    canon: Arc<Canon>,
}

impl Stages {
    fn reindex(&mut self) {
        self.by_group.clear();
        self.by_host.clear();
        let mut canon = Canon::default();
        let mut ids: Vec<&EnvId> = self.by_id.keys().collect();
        ids.sort();
        for id in ids {
            let s = &self.by_id[id].snapshot;
            canon.envs.insert(s.goal.env_id.clone(), ());
            if let Some(d) = &s.goal.deploy {
                canon.deploys.insert(d.id.clone(), ());
                if let Some(a) = &d.alias {
                    canon.deploys.insert(a.clone(), ());
                }
            }
            for g in &s.groups {
                self.by_group.entry(g.clone()).or_default().push(id.clone());
            }
            for h in &s.hosts {
                self.by_host.entry(h.clone()).or_default().push(id.clone());
            }
        }
        self.canon = Arc::new(canon);
    }

    /// The shared ids of the stages now held.
    pub fn canon(&self) -> Arc<Canon> {
        self.canon.clone()
    }

    /// Replaces or removes one stage; returns what it replaced.
    pub fn put(&mut self, env_id: &EnvId, version: i64, snapshot: Option<StageSnapshot>) -> Option<Arc<StageEntry>> {
        let old = match snapshot {
            Some(snapshot) => {
                self.names.insert(env_id.clone(), (snapshot.goal.env_name.clone(), snapshot.goal.stage_name.clone()));
                self.by_id.insert(env_id.clone(), Arc::new(StageEntry { version: AtomicI64::new(version), snapshot }))
            }
            None => self.by_id.remove(env_id),
        };
        self.reindex();
        old
    }

    /// Replaces every stage.
    pub fn replace_all(&mut self, stages: Vec<(i64, StageSnapshot)>) {
        self.by_id.clear();
        for (version, snapshot) in stages {
            let id = snapshot.goal.env_id.clone();
            self.names.insert(id.clone(), (snapshot.goal.env_name.clone(), snapshot.goal.stage_name.clone()));
            self.by_id.insert(id, Arc::new(StageEntry { version: AtomicI64::new(version), snapshot }));
        }
        self.reindex();
    }

    /// The version held for a stage (0 when unknown).
    pub fn version(&self, env_id: &EnvId) -> i64 {
        self.by_id.get(env_id).map(|s| s.version.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// Records that a change without a new snapshot (agent records) was applied.
    pub fn set_version(&self, env_id: &EnvId, version: i64) {
        if let Some(s) = self.by_id.get(env_id) {
            s.version.store(version, Ordering::Release);
        }
    }

    /// Every stage id with its version.
    pub fn versions(&self) -> Vec<(EnvId, i64)> {
        self.by_id.iter().map(|(id, s)| (id.clone(), s.version.load(Ordering::Acquire))).collect()
    }

    /// The stages a host belongs to, at most one per environment: host capacity first, then
    /// group capacity; within a tier the first match (in stage id order) wins.
    pub fn stages_of(&self, host_name: &HostName, groups: &[GroupName]) -> Vec<Arc<StageEntry>> {
        let mut out: Vec<Arc<StageEntry>> = Vec::new();
        let tiers = self.by_host.get(host_name).into_iter().chain(groups.iter().filter_map(|g| self.by_group.get(g)));
        for ids in tiers {
            for id in ids {
                let Some(entry) = self.by_id.get(id) else { continue };
                // A host has a handful of stages: a scan beats hashing.
                if !out.iter().any(|s| s.snapshot.goal.env_name == entry.snapshot.goal.env_name) {
                    out.push(entry.clone());
                }
            }
        }
        out
    }

    /// A stage by id.
    pub fn get(&self, env_id: &EnvId) -> Option<Arc<StageEntry>> {
        self.by_id.get(env_id).cloned()
    }
}

/// The gateway's copy of one agent record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    /// Stage.
    pub env_id: EnvId,
    /// The record.
    pub record: AgentRecord,
    /// Sequence of worker decisions the gateway knows of.
    pub control_seq: i64,
    /// Hash of the last error text published (0 = none).
    pub error_hash: u64,
    /// When this gateway last published the record (0: it came from Postgres).
    pub sent_at: EpochMs,
}

/// A host's records, one per stage: almost always one, kept inline (no allocation, and no
/// pointer to chase on the ping path).
#[derive(Debug, Default)]
pub enum Records {
    /// None.
    #[default]
    None,
    /// One.
    One(AgentEntry),
    /// Several (a host in stages of several environments).
    Many(Vec<AgentEntry>),
}

impl Records {
    /// The records.
    pub fn as_slice(&self) -> &[AgentEntry] {
        match self {
            Records::None => &[],
            Records::One(e) => std::slice::from_ref(e),
            Records::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [AgentEntry] {
        match self {
            Records::None => &mut [],
            Records::One(e) => std::slice::from_mut(e),
            Records::Many(v) => v,
        }
    }

    /// Iterates over the records.
    pub fn iter(&self) -> std::slice::Iter<'_, AgentEntry> {
        self.as_slice().iter()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        matches!(self, Records::None)
    }

    fn push(&mut self, e: AgentEntry) {
        *self = match std::mem::take(self) {
            Records::None => Records::One(e),
            Records::One(a) => Records::Many(vec![a, e]),
            Records::Many(mut v) => {
                v.reserve_exact(1);
                v.push(e);
                Records::Many(v)
            }
        }
    }

    fn remove(&mut self, i: usize) {
        *self = match std::mem::take(self) {
            Records::One(_) | Records::None => Records::None,
            Records::Many(mut v) => {
                v.swap_remove(i);
                match v.len() {
                    1 => Records::One(v.remove(0)),
                    _ => Records::Many(v),
                }
            }
        }
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = &'a AgentEntry;
    type IntoIter = std::slice::Iter<'a, AgentEntry>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One host.
#[derive(Debug, Default)]
pub struct HostEntry {
    /// Hash of the identity last published (0 = never).
    pub facts_hash: u64,
    /// Its records, one per stage.
    pub agents: Records,
    /// Its last ping through this gateway (0: never).
    pub last_seen: EpochMs,
    /// The last ping published as its heartbeat (0: never).
    pub beat_sent: EpochMs,
}

impl HostEntry {
    /// The record for a stage.
    pub fn agent(&self, env_id: &EnvId) -> Option<&AgentEntry> {
        self.agents.iter().find(|a| &a.env_id == env_id)
    }

    /// Stores (or removes, with `None`) the record for a stage.
    pub fn set(&mut self, env_id: &EnvId, entry: Option<AgentEntry>) {
        let pos = self.agents.iter().position(|a| &a.env_id == env_id);
        match (pos, entry) {
            (Some(i), Some(e)) => self.agents.as_mut_slice()[i] = e,
            (None, Some(e)) => self.agents.push(e),
            (Some(i), None) => self.agents.remove(i),
            (None, None) => {}
        }
    }
}

type Shard = HashMap<HostId, HostEntry>;

/// A full load of the records, built aside and swapped in by [`Hosts::finish_load`].
pub struct Load {
    fresh: Vec<HashMap<HostId, Records>>,
}

/// Hosts, sharded by id.
pub struct Hosts {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

fn entry_of(env_id: EnvId, record: AgentRecord, control_seq: i64, error_hash: u64) -> AgentEntry {
    AgentEntry { env_id, record, control_seq, error_hash, sent_at: 0 }
}

impl Hosts {
    /// Runs `f` on a host's entry (created if missing) under its shard lock.
    pub fn with<R>(&self, host: &HostId, f: impl FnOnce(&mut HostEntry) -> R) -> R {
        let mut shard = self.shards[shard_index(host)].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = shard.get_mut(host) {
            return f(entry);
        }
        f(shard.entry(host.clone()).or_default())
    }

    /// Hosts the janitor forgot: the ones held here publish their identity and heartbeat
    /// again at their next ping (hosts not held are left alone).
    pub fn unpublish(&self, hosts: &[HostId]) {
        for host in hosts {
            let mut shard = self.shards[shard_index(host)].lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = shard.get_mut(host) {
                entry.facts_hash = 0;
                entry.beat_sent = 0;
            }
        }
    }

    /// Applies records set by workers (admissions, user actions).
    pub fn apply_controls(&self, env_id: &EnvId, controls: &[AgentControl], canon: &Canon) {
        let env_id = canon.env(env_id);
        for c in controls {
            self.with(&c.host_id, |h| {
                let error_hash = h.agent(&env_id).map(|a| a.error_hash).unwrap_or(0);
                let entry =
                    c.record.clone().map(|r| entry_of(env_id.clone(), canon.record(r), c.control_seq, error_hash));
                h.set(&env_id, entry);
            });
        }
    }

    /// Replaces every record of one stage (a reload); hosts without a record lose theirs.
    pub fn replace_stage(&self, env_id: &EnvId, rows: &[store::AgentRow], canon: &Canon) {
        let env_id = canon.env(env_id);
        let mut by_shard: Vec<Vec<&store::AgentRow>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for r in rows {
            by_shard[shard_index(&r.host_id)].push(r);
        }
        for (shard, rows) in self.shards.iter().zip(by_shard) {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            // Host ids come from agents: the default (keyed) hash.
            let keep: std::collections::HashSet<&str> = rows.iter().map(|r| r.host_id.as_str()).collect();
            for (host, entry) in shard.iter_mut() {
                if !keep.contains(host.as_str()) {
                    entry.set(&env_id, None);
                }
            }
            for r in rows {
                let h = shard.entry(r.host_id.clone()).or_default();
                let error_hash = h.agent(&env_id).map(|a| a.error_hash).unwrap_or(0);
                h.set(
                    &env_id,
                    Some(entry_of(env_id.clone(), canon.record(r.record.clone()), r.control_seq, error_hash)),
                );
            }
        }
    }

    /// Starts a full load (the start-up load, or after the change stream was lost).
    pub fn begin_load(&self) -> Load {
        Load { fresh: (0..SHARDS).map(|_| HashMap::new()).collect() }
    }

    /// Swaps a full load in. Each shard is swapped under its lock, so a ping never sees a
    /// host without its records; what pings learnt about hosts (identity, last ping) is kept.
    pub fn finish_load(&self, load: Load) {
        for (shard, mut agents) in self.shards.iter().zip(load.fresh) {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let old = std::mem::take(&mut *shard);
            for (host, entry) in old {
                let records = agents.remove(&host).unwrap_or_default();
                if !records.is_empty() || entry.last_seen > 0 {
                    shard.insert(host, HostEntry { agents: records, ..entry });
                }
            }
            for (host, records) in agents {
                shard.insert(host, HostEntry { agents: records, ..HostEntry::default() });
            }
            shard.shrink_to_fit();
        }
    }

    /// Forgets hosts that hold no record and have not pinged since `before`, then, while more
    /// than `keep_at_most` hosts without a record remain, the least recently seen of them.
    /// This bounds memory against hosts that come and go and against made-up host ids; a
    /// forgotten host only has its identity published again at its next ping.
    pub fn evict_idle(&self, before: EpochMs, keep_at_most: usize) -> usize {
        let mut evicted = 0;
        let mut seen = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let n = shard.len();
            shard.retain(|_, h| !h.agents.is_empty() || h.last_seen >= before);
            evicted += n - shard.len();
            seen.extend(shard.values().filter(|h| h.agents.is_empty()).map(|h| h.last_seen));
        }
        if seen.len() <= keep_at_most {
            return evicted;
        }
        // The newest `keep_at_most` stay: everything seen before the cut-off goes, and as many
        // seen exactly at it as needed.
        let excess = seen.len() - keep_at_most;
        let (_, cut, _) = seen.select_nth_unstable(excess - 1);
        let cut = *cut;
        let mut at_cut = excess - seen.iter().filter(|t| **t < cut).count();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let n = shard.len();
            shard.retain(|_, h| {
                if !h.agents.is_empty() || h.last_seen > cut {
                    return true;
                }
                if h.last_seen == cut {
                    if at_cut == 0 {
                        return true;
                    }
                    at_cut -= 1;
                }
                false
            });
            evicted += n - shard.len();
        }
        evicted
    }

    /// The heartbeats to publish: hosts whose last ping is newer than their last published
    /// heartbeat by at least `resolution` (a host pinging every few seconds is written to
    /// Postgres once per `resolution`, not on every ping). Marks them as published.
    pub fn heartbeats(&self, resolution: EpochMs) -> Vec<Heartbeat> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (id, h) in shard.iter_mut() {
                if h.last_seen > h.beat_sent && h.last_seen - h.beat_sent >= resolution {
                    h.beat_sent = h.last_seen;
                    out.push(Heartbeat { host_id: id.clone(), at: h.last_seen });
                }
            }
        }
        out
    }

    /// Number of hosts held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    /// Whether no host is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Load {
    /// Adds a chunk of records.
    pub fn add(&mut self, rows: Vec<store::AgentRow>, canon: &Canon) {
        for r in rows {
            let entry = entry_of(canon.env(&r.env_id), canon.record(r.record), r.control_seq, 0);
            self.fresh[shard_index(&r.host_id)].entry(r.host_id).or_default().push(entry);
        }
    }
}

fn shard_index(host: &HostId) -> usize {
    (hash_of(&host.as_str()) as usize) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_share_the_ids_of_the_stages() {
        let mut stages = Stages::default();
        let goal: schema::rules::goal::StageGoal = serde_json::from_value(serde_json::json!({
            "envId": "e1", "envName": "web", "stageName": "prod", "stageType": "PRODUCTION", "envState": "NORMAL",
            "priority": "NORMAL", "systemPriority": null, "isDocker": false, "agentConfigs": {}, "scriptVariables": {},
            "deploy": {"id": "d1", "deployType": "REGULAR", "alias": null, "build": {
                "id": "b_1234567", "name": "web", "artifactUrl": "https://a", "type": null, "repo": "r", "branch": "b",
                "commit": "1234567", "commitShort": "1234567", "commitInfo": null, "commitDate": 0, "publishInfo": null,
                "publisher": "ci", "publishDate": 0, "artifactSha256": null}}
        }))
        .unwrap();
        let env = goal.env_id.clone();
        stages.put(&env, 1, Some(StageSnapshot { goal, groups: vec![], hosts: vec![] }));
        let canon = stages.canon();
        let a = canon.record(AgentRecord::fresh(DeployId::parse("d1").unwrap(), false));
        let b = canon.record(AgentRecord::fresh(DeployId::parse("d1").unwrap(), false));
        assert!(a.deploy_id.same_allocation(&b.deploy_id));
        assert!(canon.env(&EnvId::parse("e1").unwrap()).same_allocation(&env));
        let other = canon.record(AgentRecord::fresh(DeployId::parse("old").unwrap(), false));
        assert_eq!(other.deploy_id.as_str(), "old");
    }

    #[test]
    fn a_host_is_beaten_once_per_resolution() {
        let hosts = Hosts::default();
        let h1 = HostId::parse("h1").unwrap();
        let h2 = HostId::parse("h2").unwrap();
        const T: EpochMs = 1_800_000_000_000;
        let ping = |h: &HostId, at: EpochMs| hosts.with(h, |e| e.last_seen = T + at);
        let ids = |beats: Vec<Heartbeat>| {
            let mut v: Vec<(String, EpochMs)> =
                beats.into_iter().map(|b| (b.host_id.into_string(), b.at - T)).collect();
            v.sort();
            v
        };
        ping(&h1, 1_000);
        ping(&h2, 1_500);
        assert_eq!(ids(hosts.heartbeats(60_000)), vec![("h1".into(), 1_000), ("h2".into(), 1_500)]);
        ping(&h1, 30_000);
        assert_eq!(ids(hosts.heartbeats(60_000)), vec![], "h1 was published 29 s ago");
        ping(&h1, 61_000);
        assert_eq!(ids(hosts.heartbeats(60_000)), vec![("h1".into(), 61_000)]);
        ping(&h2, 61_000);
        assert_eq!(ids(hosts.heartbeats(0)), vec![("h2".into(), 61_000)], "without a resolution: every new ping");
        assert_eq!(ids(hosts.heartbeats(0)), vec![], "but never the same one twice");
    }

    #[test]
    fn records_are_kept_one_inline_or_several() {
        let hosts = Hosts::default();
        let canon = Canon::default();
        let row = |host: &str, env: &str| store::AgentRow {
            env_id: EnvId::parse(env).unwrap(),
            host_id: HostId::parse(host).unwrap(),
            host_name: HostName::parse(host).unwrap(),
            record: AgentRecord::fresh(DeployId::parse("d1").unwrap(), false),
            control_seq: 0,
        };
        let mut load = hosts.begin_load();
        load.add(vec![row("h1", "e1"), row("h2", "e1"), row("h2", "e2"), row("h2", "e3")], &canon);
        hosts.finish_load(load);
        let envs = |h: &str| {
            hosts.with(&HostId::parse(h).unwrap(), |e| {
                let mut v: Vec<String> = e.agents.iter().map(|a| a.env_id.to_string()).collect();
                v.sort();
                (v, matches!(e.agents, Records::One(_)))
            })
        };
        assert_eq!(envs("h1"), (vec!["e1".to_string()], true));
        assert_eq!(envs("h2"), (vec!["e1".to_string(), "e2".into(), "e3".into()], false));
        let h2 = HostId::parse("h2").unwrap();
        for env in ["e2", "e1"] {
            hosts.with(&h2, |e| e.set(&EnvId::parse(env).unwrap(), None));
        }
        assert_eq!(envs("h2"), (vec!["e3".to_string()], true), "back to one, inline");
        hosts.with(&h2, |e| e.set(&EnvId::parse("e3").unwrap(), None));
        assert!(hosts.with(&h2, |e| e.agents.is_empty()));
        hosts.with(&h2, |e| e.set(&EnvId::parse("e3").unwrap(), None));
        assert_eq!(envs("h2"), (vec![], false));
    }

    #[test]
    fn hosts_without_records_are_bounded_oldest_first() {
        let hosts = Hosts::default();
        for i in 0..100 {
            hosts.with(&HostId::parse(format!("idle-{i}")).unwrap(), |e| e.last_seen = 1_000 + i);
        }
        let mut load = hosts.begin_load();
        let row = store::AgentRow {
            env_id: EnvId::parse("e1").unwrap(),
            host_id: HostId::parse("kept").unwrap(),
            host_name: HostName::parse("kept").unwrap(),
            record: AgentRecord::fresh(DeployId::parse("d1").unwrap(), false),
            control_seq: 0,
        };
        load.add(vec![row], &Canon::default());
        hosts.finish_load(load);
        assert_eq!(hosts.len(), 101);
        // Idle before 1,010: ten go; then only the newest 50 without a record stay.
        assert_eq!(hosts.evict_idle(1_010, 50), 50);
        assert_eq!(hosts.len(), 51, "50 without a record and the one with a record");
        let left: Vec<bool> =
            (0..100).map(|i| hosts.with(&HostId::parse(format!("idle-{i}")).unwrap(), |e| e.last_seen > 0)).collect();
        assert!(left[50..].iter().all(|l| *l), "the newest stay");
        // (looking a host up creates it: the oldest 50 now exist again, never seen)
        assert_eq!(hosts.evict_idle(0, 1_000), 0);
        assert_eq!(hosts.evict_idle(1_000_000, 1_000), 100, "all without a record are idle");
        assert_eq!(hosts.len(), 1, "a host with a record is never forgotten");
    }
}
