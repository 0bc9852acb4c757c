//! The gateway: `POST /v1/system/ping`, wire-compatible with Teletraan's agents, answered from
//! memory. It never queries the database on the ping path: stages, capacity and agent records
//! are loaded at start and kept current by change events ([`sync`]); what pings change is
//! published to the workers in confirmed batches ([`publisher`]). Who may ping as which host
//! is checked from memory too ([`identity`]); `POST /v1/system/enroll` ([`enroll`]) gives a
//! host its own credential.

mod enroll;
pub mod fasthash;
pub mod identity;
pub mod longpoll;
mod ping;
pub mod publisher;
pub mod state;
pub mod sync;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bus::BusConfig;
use store::Store;

use crate::auth::{Need, RouteSpec};
use crate::openapi::{Answer, Described, Operation};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use self::identity::Identity;
use self::publisher::Item;
use self::state::{Hosts, Stages};

/// Settings of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The broker.
    pub bus: BusConfig,
    /// Most agent records and hosts in one published batch.
    pub batch_max: usize,
    /// Rough size limit of one published batch.
    pub batch_max_bytes: usize,
    /// Longest a changed record waits before it is published.
    pub flush_every: Duration,
    /// How often heartbeats are published.
    pub heartbeat_every: Duration,
    /// A host's heartbeat is stored at most once per this long (its last ping then), however
    /// often it pings: hosts count as gone after 600 s without one, so a minute costs nothing
    /// in precision and spares Postgres a write per ping.
    pub heartbeat_resolution: Duration,
    /// Items waiting to be published before pings stop queueing more (memory bound).
    pub queue_capacity: usize,
    /// How often stage versions are compared with Postgres, tokens reloaded and idle hosts
    /// forgotten.
    pub check_every: Duration,
    /// Hosts without records are forgotten after this long without a ping.
    pub forget_idle_after: Duration,
    /// Most hosts without records held (checked every `check_every`; the least recently seen
    /// go first), so that made-up host ids cannot grow memory without bound.
    pub max_hosts_without_records: usize,
    /// An unchanged record is published again once this long has passed since it was last
    /// sent, so that a batch the workers lost for good is repaired.
    pub resend_unchanged_after: Duration,
}

impl GatewayConfig {
    /// Defaults for a broker.
    pub fn new(bus: BusConfig) -> Self {
        GatewayConfig {
            bus,
            batch_max: 1000,
            batch_max_bytes: 1024 * 1024,
            flush_every: Duration::from_millis(50),
            heartbeat_every: Duration::from_secs(1),
            heartbeat_resolution: Duration::from_secs(60),
            queue_capacity: 50_000,
            check_every: Duration::from_secs(10),
            forget_idle_after: Duration::from_secs(3600),
            max_hosts_without_records: 1_000_000,
            resend_unchanged_after: Duration::from_secs(30 * 60),
        }
    }
}

/// The gateway's shared state.
pub struct Gateway {
    pub(crate) stages: RwLock<Stages>,
    pub(crate) hosts: Hosts,
    pub(crate) identity: Identity,
    reports: mpsc::Sender<Item>,
    ready: AtomicBool,
    pub(crate) polls: longpoll::LongPoll,
    shutdown: watch::Receiver<bool>,
    /// A host silent for longer than this publishes its identity again at its next ping, in
    /// case the janitor forgot it and its `hosts_forgotten.v1` message did not reach this
    /// gateway: two heartbeat periods, and at least ten minutes (so that a short heartbeat
    /// setting does not make every ping of a slow-pinging fleet republish).
    pub(crate) republish_after_ms: i64,
    /// [`GatewayConfig::resend_unchanged_after`] in milliseconds.
    pub(crate) resend_after_ms: i64,
}

impl Gateway {
    /// Whether the initial load is done and changes are being received.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Hosts held, stages held, long polls held, and 1 when ready: what `/metrics` shows.
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let stages = self.stages.read().unwrap_or_else(|p| p.into_inner()).by_id.len();
        (self.hosts.len(), stages, self.polls.len(), usize::from(self.is_ready()))
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Number of hosts held in memory.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Resolves when the gateway is asked to stop.
    pub(crate) async fn stopping(&self) {
        let mut stop = self.shutdown.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Starts a gateway's background tasks (change sync, publisher) and returns its state.
pub fn start(
    config: GatewayConfig,
    store: Store,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Arc<Gateway> {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let gateway = Arc::new(Gateway {
        stages: RwLock::new(Stages::default()),
        hosts: Hosts::default(),
        identity: Identity::default(),
        reports: tx,
        ready: AtomicBool::new(false),
        polls: longpoll::LongPoll::default(),
        shutdown: shutdown.clone(),
        republish_after_ms: (i64::try_from(config.heartbeat_resolution.as_millis()).unwrap_or(i64::MAX / 4) * 2)
            .max(600_000),
        resend_after_ms: i64::try_from(config.resend_unchanged_after.as_millis()).unwrap_or(i64::MAX / 4),
    });
    let id = format!("gateway-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    tasks.spawn(publisher::run(rx, gateway.clone(), config.clone(), id, shutdown.clone()));
    tasks.spawn(sync::check(gateway.clone(), store.clone(), config.clone(), shutdown.clone()));
    tasks.spawn(sync::run(gateway.clone(), store, config, shutdown));
    gateway
}

/// The gateway's routes as the API contract describes them (their handlers read raw bodies,
/// to count and answer bad ones their own way, so their types are stated here).
pub fn operations() -> Vec<Operation> {
    let ping = Described {
        body: Some(|g| g.subschema_for::<schema::ping::PingRequest>()),
        query: None,
        answers: vec![Answer::json::<schema::ping::PingResponse>(200)],
        headers: Vec::new(),
    };
    let enroll = Described {
        body: Some(|g| g.subschema_for::<enroll::EnrollInput>()),
        query: None,
        answers: vec![Answer::json::<enroll::EnrollOutput>(201)],
        headers: Vec::new(),
    };
    let fleet = [
        ("/v1/system/ping", ping, "an agent token or the host's credential (on the gateway's listener)"),
        ("/v1/system/enroll", enroll, "an enrollment token (on the gateway's listener)"),
    ];
    fleet
        .into_iter()
        .map(|(path, described, needs)| Operation {
            spec: RouteSpec { method: "POST", path, need: Need::Fleet(needs) },
            described,
            stated: Vec::new(),
        })
        .collect()
}

/// The gateway's routes: pings (answered from memory) and enrollments (which write to `store`).
pub fn router(gateway: Arc<Gateway>, store: Store) -> Router {
    let enrollments = Router::new()
        .route("/v1/system/enroll", post(enroll::enroll))
        .with_state(enroll::EnrollState { gateway: gateway.clone(), store });
    Router::new().route("/v1/system/ping", post(ping::ping)).with_state(gateway).merge(enrollments)
}
