//! What a gateway holds in memory: every stage (with its capacity indexes), the agent records
//! of the hosts, and the token hashes. Locks are std locks held for short, synchronous
//! sections only: never across an await.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use schema::bus::{AgentControl, StageSnapshot};
use schema::rules::goal::AgentRecord;
use schema::*;
use store::Role;

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

/// Every stage, indexed by id, by group and by host name.
#[derive(Debug, Default)]
pub struct Stages {
    pub(crate) by_id: HashMap<EnvId, Arc<StageEntry>>,
    by_group: HashMap<GroupName, Vec<EnvId>>,
    by_host: HashMap<HostName, Vec<EnvId>>,
    /// Names of every stage seen, including deleted ones (DELETE goals carry them).
    pub(crate) names: HashMap<EnvId, (EnvName, StageName)>,
}

impl Stages {
    fn reindex(&mut self) {
        self.by_group.clear();
        self.by_host.clear();
        let mut ids: Vec<&EnvId> = self.by_id.keys().collect();
        ids.sort();
        for id in ids {
            let s = &self.by_id[id].snapshot;
            for g in &s.groups {
                self.by_group.entry(g.clone()).or_default().push(id.clone());
            }
            for h in &s.hosts {
                self.by_host.entry(h.clone()).or_default().push(id.clone());
            }
        }
    }

    /// Replaces or removes one stage.
    pub fn put(&mut self, env_id: &EnvId, version: i64, snapshot: Option<StageSnapshot>) {
        match snapshot {
            Some(snapshot) => {
                self.names.insert(env_id.clone(), (snapshot.goal.env_name.clone(), snapshot.goal.stage_name.clone()));
                self.by_id.insert(env_id.clone(), Arc::new(StageEntry { version: AtomicI64::new(version), snapshot }));
            }
            None => {
                self.by_id.remove(env_id);
            }
        }
        self.reindex();
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
        let mut envs: HashSet<&EnvName> = HashSet::new();
        let tiers = self.by_host.get(host_name).into_iter().chain(groups.iter().filter_map(|g| self.by_group.get(g)));
        for ids in tiers {
            for id in ids {
                let Some(entry) = self.by_id.get(id) else { continue };
                if envs.insert(&entry.snapshot.goal.env_name) {
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
    /// Sequence of user actions the gateway knows of.
    pub control_seq: i64,
    /// Hash of the last error text published (0 = none).
    pub error_hash: u64,
    /// When this gateway last published the record (0: it came from Postgres).
    pub sent_at: i64,
}

/// One host.
#[derive(Debug, Default)]
pub struct HostEntry {
    /// Hash of the identity last published (0 = never).
    pub facts_hash: u64,
    /// Its records, one per stage.
    pub agents: Vec<AgentEntry>,
    /// Its last ping through this gateway (0: never).
    pub last_seen: i64,
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
            (Some(i), Some(e)) => self.agents[i] = e,
            (None, Some(e)) => self.agents.push(e),
            (Some(i), None) => {
                self.agents.swap_remove(i);
            }
            (None, None) => {}
        }
    }
}

/// Hosts, sharded by id.
pub struct Hosts {
    shards: Vec<Mutex<HashMap<HostId, HostEntry>>>,
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

impl Hosts {
    /// Runs `f` on a host's entry (created if missing) under its shard lock.
    pub fn with<R>(&self, host: &HostId, f: impl FnOnce(&mut HostEntry) -> R) -> R {
        let mut shard = self.shard(host).lock().unwrap_or_else(|p| p.into_inner());
        f(shard.entry(host.clone()).or_default())
    }

    fn shard(&self, host: &HostId) -> &Mutex<HashMap<HostId, HostEntry>> {
        &self.shards[self.shard_index(host)]
    }

    fn shard_index(&self, host: &HostId) -> usize {
        let mut h = DefaultHasher::new();
        host.hash(&mut h);
        (h.finish() as usize) % SHARDS
    }

    /// Applies records set by workers (admissions, user actions).
    pub fn apply_controls(&self, env_id: &EnvId, controls: &[AgentControl]) {
        for c in controls {
            self.with(&c.host_id, |h| {
                let entry = c.record.clone().map(|record| AgentEntry {
                    env_id: env_id.clone(),
                    record,
                    control_seq: c.control_seq,
                    error_hash: h.agent(env_id).map(|a| a.error_hash).unwrap_or(0),
                    sent_at: 0,
                });
                h.set(env_id, entry);
            });
        }
    }

    /// Replaces every record of one stage (a reload); hosts without a record lose theirs.
    pub fn replace_stage(&self, env_id: &EnvId, rows: &[store::AgentRow]) {
        let present: HashSet<&HostId> = rows.iter().map(|r| &r.host_id).collect();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (host, entry) in shard.iter_mut() {
                if !present.contains(host) {
                    entry.set(env_id, None);
                }
            }
        }
        for r in rows {
            self.with(&r.host_id, |h| {
                let error_hash = h.agent(env_id).map(|a| a.error_hash).unwrap_or(0);
                h.set(
                    env_id,
                    Some(AgentEntry {
                        env_id: env_id.clone(),
                        record: r.record.clone(),
                        control_seq: r.control_seq,
                        error_hash,
                        sent_at: 0,
                    }),
                );
            });
        }
    }

    /// Replaces every record (the start-up load, or after the change stream was lost). Each
    /// shard is rebuilt aside and swapped in under its lock, so a ping never sees a host
    /// without its records; what pings learnt about hosts (identity, last ping) is kept.
    pub fn replace_all(&self, rows: Vec<store::AgentRow>) {
        let mut fresh: Vec<HashMap<HostId, Vec<AgentEntry>>> = (0..SHARDS).map(|_| HashMap::new()).collect();
        for r in rows {
            let i = self.shard_index(&r.host_id);
            fresh[i].entry(r.host_id).or_default().push(AgentEntry {
                env_id: r.env_id,
                record: r.record,
                control_seq: r.control_seq,
                error_hash: 0,
                sent_at: 0,
            });
        }
        for (shard, mut agents) in self.shards.iter().zip(fresh) {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let old = std::mem::take(&mut *shard);
            for (host, entry) in old {
                let records = agents.remove(&host).unwrap_or_default();
                if !records.is_empty() || entry.last_seen > 0 {
                    shard.insert(
                        host,
                        HostEntry { facts_hash: entry.facts_hash, agents: records, last_seen: entry.last_seen },
                    );
                }
            }
            for (host, records) in agents {
                shard.insert(host, HostEntry { facts_hash: 0, agents: records, last_seen: 0 });
            }
        }
    }

    /// Forgets hosts that hold no record and have not pinged since `before` (bounds memory
    /// against hosts that come and go, or made-up host ids).
    pub fn evict_idle(&self, before: i64) -> usize {
        let mut evicted = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let n = shard.len();
            shard.retain(|_, h| !h.agents.is_empty() || h.last_seen >= before);
            evicted += n - shard.len();
        }
        evicted
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

/// Token hashes and their roles.
#[derive(Default)]
pub struct Tokens {
    map: RwLock<HashMap<[u8; 32], Role>>,
}

impl Tokens {
    /// Replaces the set.
    pub fn replace(&self, tokens: Vec<([u8; 32], Role)>) {
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = tokens.into_iter().collect();
    }

    /// The role of a raw token.
    pub fn role(&self, token: &str) -> Option<Role> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(&store::hash_token(token)).copied()
    }
}

/// A stable hash of a value (for "did it change" checks).
pub fn hash_of(v: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    // 0 means "never"; move a real 0 out of the way.
    h.finish().max(1)
}
