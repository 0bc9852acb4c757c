//! [`Fleet`]: start the virtual agents, look at them, change their failure flags, stop them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schema::DeployStage;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{HostSpec, SimConfig};
use super::host::{EnvStatus, HostState};
use super::observe::{Event, Observer};
use super::rollout::{RolloutReport, Tags};
use super::stats::{CounterSnapshot, Counters};

/// Why a fleet could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// The configuration is unusable; the text says why.
    Config(String),
    /// Not called inside a tokio runtime.
    NoRuntime,
    /// The HTTP client could not be built.
    Http(String),
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::Config(m) => write!(f, "invalid simulation: {m}"),
            SimError::NoRuntime => f.write_str("a fleet must be started inside a tokio runtime"),
            SimError::Http(m) => write!(f, "cannot build the HTTP client: {m}"),
        }
    }
}

impl std::error::Error for SimError {}

/// One host: its identity, its state and its failure flags.
#[derive(Debug)]
pub(crate) struct Slot {
    pub spec: HostSpec,
    pub name: Arc<str>,
    /// `ec2Tags` as sent: a JSON object in a string.
    pub tags_json: Option<String>,
    pub state: Mutex<HostState>,
    /// One bit per stage (`DeployStage as usize`): the host fails that stage until healed.
    failing: AtomicU16,
    /// The host sends no ping (a network partition, a frozen machine) until revived.
    silent: AtomicBool,
}

impl Slot {
    /// Is this host silent now?
    pub fn is_silent(&self) -> bool {
        self.silent.load(Ordering::Relaxed)
    }

    /// Does this host fail `stage` now?
    pub fn fails(&self, stage: DeployStage) -> bool {
        self.failing.load(Ordering::Relaxed) & (1 << stage as u16) != 0
    }
}

/// What the agent tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The configuration (its `hosts` moved into `slots`).
    pub config: SimConfig,
    pub http: reqwest::Client,
    pub url: String,
    pub auth: Option<String>,
    pub slots: Vec<Slot>,
    pub by_id: HashMap<String, usize>,
    pub counters: Counters,
    /// One permit per ping in flight (`max_connections`).
    pub connections: tokio::sync::Semaphore,
    pub observer: Mutex<Observer>,
    pub started: Instant,
}

/// One host as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    /// Host id.
    pub id: String,
    /// Host name.
    pub name: String,
    /// Its environments.
    pub envs: Vec<EnvStatus>,
}

/// How many hosts are where, now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageCounts {
    /// Hosts with no environment yet.
    pub idle: usize,
    /// Environments per last step taken (a host with two environments counts twice).
    pub by_stage: BTreeMap<DeployStage, usize>,
    /// Environments whose last step failed for good (the server paused them).
    pub failed: usize,
}

/// N virtual agents in this process, one tokio task each, pinging one gateway through one
/// shared HTTP client. Dropping the fleet stops its tasks; [`Fleet::stop`] also waits for them.
#[derive(Debug)]
pub struct Fleet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Fleet {
    /// Validates `config` and starts one task per host. Must be called inside a tokio runtime.
    pub fn start(mut config: SimConfig) -> Result<Fleet, SimError> {
        config.validate().map_err(SimError::Config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SimError::NoRuntime)?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(config.max_connections)
            .user_agent(config.agent_version.clone())
            .build()
            .map_err(|e| SimError::Http(e.to_string()))?;
        let hosts = std::mem::take(&mut config.hosts);
        let mut slots = Vec::with_capacity(hosts.len());
        let mut host_tags: Vec<Tags> = Vec::with_capacity(hosts.len());
        for spec in hosts {
            let failing = config
                .failures
                .hosts
                .iter()
                .filter(|(h, _)| *h == spec.id)
                .fold(0u16, |bits, (_, stage)| bits | 1 << *stage as u16);
            let tags_json = (!spec.tags.is_empty()).then(|| serde_json::to_string(&spec.tags).unwrap_or_default());
            host_tags.push(spec.tags.iter().map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str()))).collect());
            slots.push(Slot {
                name: Arc::from(spec.name.as_str()),
                spec,
                tags_json,
                state: Mutex::new(HostState::default()),
                failing: AtomicU16::new(failing),
                silent: AtomicBool::new(false),
            });
        }
        let by_id = slots.iter().enumerate().map(|(i, s)| (s.spec.id.clone(), i)).collect();
        let shared = Arc::new(Shared {
            http,
            url: format!("{}/v1/system/ping", config.gateway.trim_end_matches('/')),
            auth: (!config.token.is_empty()).then(|| format!("token {}", config.token)),
            by_id,
            counters: Counters::default(),
            connections: tokio::sync::Semaphore::new(config.max_connections),
            observer: Mutex::new(Observer::new(config.timeline_capacity, host_tags)),
            started: Instant::now(),
            slots,
            config,
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..shared.slots.len())
            .map(|i| runtime.spawn(super::agent::run(shared.clone(), i, stopped.clone())))
            .collect();
        Ok(Fleet { shared, stop, tasks: Mutex::new(tasks) })
    }

    fn observer(&self) -> std::sync::MutexGuard<'_, Observer> {
        self.shared.observer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.shared.slots.len()
    }

    /// `true` for a fleet of no host.
    pub fn is_empty(&self) -> bool {
        self.shared.slots.is_empty()
    }

    /// Time since the fleet started (the clock of the timeline).
    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    fn snapshot(slot: &Slot) -> HostSnapshot {
        let state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        HostSnapshot { id: slot.spec.id.clone(), name: slot.spec.name.clone(), envs: state.envs.clone() }
    }

    /// Every host, as it is now.
    pub fn hosts(&self) -> Vec<HostSnapshot> {
        self.shared.slots.iter().map(Fleet::snapshot).collect()
    }

    /// One host (by id), as it is now.
    pub fn host(&self, id: &str) -> Option<HostSnapshot> {
        self.shared.by_id.get(id).map(|i| Fleet::snapshot(&self.shared.slots[*i]))
    }

    /// Hosts per step, now.
    pub fn stage_counts(&self) -> StageCounts {
        let mut c = StageCounts::default();
        for slot in &self.shared.slots {
            let state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.envs.is_empty() {
                c.idle += 1;
            }
            for e in &state.envs {
                *c.by_stage.entry(e.deploy_stage).or_default() += 1;
                c.failed += e.agent_status.is_fatal() as usize;
            }
        }
        c
    }

    /// The events kept (the latest `timeline_capacity`), oldest first.
    pub fn timeline(&self) -> Vec<Event> {
        self.observer().timeline()
    }

    /// Events not kept in the timeline (over its capacity).
    pub fn timeline_dropped(&self) -> u64 {
        self.observer().dropped()
    }

    /// What the agents saw of each deploy, in the order deploys were first seen.
    pub fn rollouts(&self) -> Vec<RolloutReport> {
        self.observer().book().reports()
    }

    /// What the agents saw of one deploy.
    pub fn rollout(&self, deploy_id: &str) -> Option<RolloutReport> {
        self.observer().book().report(deploy_id)
    }

    /// The counters, now.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// From now on, host `host` (its id) fails `stage` on every attempt, like a flag file on a
    /// real host. `false` when there is no such host.
    pub fn fail(&self, host: &str, stage: DeployStage) -> bool {
        match self.shared.by_id.get(host) {
            Some(i) => {
                self.shared.slots[*i].failing.fetch_or(1 << stage as u16, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Host `host` fails no stage any more (random failures still apply). `false` when there
    /// is no such host.
    pub fn heal(&self, host: &str) -> bool {
        match self.shared.by_id.get(host) {
            Some(i) => {
                self.shared.slots[*i].failing.store(0, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// From now on, host `host` (its id) sends no ping, as if cut off the network: it keeps
    /// its state and its step in progress, and goes on where it stopped once revived. `false`
    /// when there is no such host.
    pub fn silence(&self, host: &str) -> bool {
        self.set_silent(host, true)
    }

    /// Host `host` pings again. `false` when there is no such host.
    pub fn revive(&self, host: &str) -> bool {
        self.set_silent(host, false)
    }

    fn set_silent(&self, host: &str, silent: bool) -> bool {
        match self.shared.by_id.get(host) {
            Some(i) => {
                self.shared.slots[*i].silent.store(silent, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Polls `done` every 20 ms until it holds (`true`) or `deadline` has passed (`false`).
    pub async fn wait_until(&self, mut done: impl FnMut(&Fleet) -> bool, deadline: Duration) -> bool {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if done(self) {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends every task and waits for them. Observations stay readable afterwards.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}
