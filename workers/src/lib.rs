//! `workers`: everything that runs behind the queues.
//!
//! Consumers apply deploy commands (replying to the API; a command dead-lettered ends FAILED,
//! [`dead_letters`]) and gateway reports (then
//! re-evaluating the stages they touched: deploy state and admission); the outbox relay
//! publishes what transactions announced; periodic jobs ([`jobs`]) do what the clock decides
//! (stuck deploys, silent hosts, retention). Any number of worker processes may run: they
//! share the queues, Postgres row locks and the leases of the `jobs` table, with no leader;
//! the report partitions are shared out among the live workers ([`members`]), each consumed
//! by one of them at a time.
//! The webhook consumer ([`webhooks`]) sends what deploys fired, outside every deploy's path.
//! After their commits, the handlers tell the deploy board what changed ([`live`]), best
//! effort and never waiting for it.
//!
//! Workers never answer HTTP and never hold rollout rules of their own: the rules are the pure
//! functions of `schema::rules`, applied inside `store` transactions.

pub mod commands;
pub mod dead_letters;
pub mod jobs;
pub mod live;
pub mod members;
mod metrics;
pub mod refresh;
pub mod relay;
pub mod reports;
pub mod webhooks;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use store::Store;
use tokio::sync::watch;
use tokio::task::JoinSet;

use bus::{BusConfig, WorkQueue};

/// Settings of a worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The broker.
    pub bus: BusConfig,
    /// Postgres URL (the relay listens for outbox notifications on its own connection).
    pub database_url: String,
    /// Commands handled at once.
    pub command_prefetch: u16,
    /// Report batches handled at once, over every partition this worker consumes (and on the
    /// shared queue older gateways publish to).
    pub report_prefetch: u16,
    /// This worker's name among the others (for its membership and its job leases): unique
    /// per process.
    pub name: String,
    /// How often it tells the pool it is alive ([`members::HEARTBEAT`]).
    pub member_heartbeat: Duration,
    /// How long after its last heartbeat the pool counts it gone ([`members::LEASE`]).
    pub member_lease: Duration,
    /// Periodic jobs.
    pub jobs: jobs::JobsConfig,
    /// Webhook deliveries.
    pub webhooks: webhooks::WebhookConfig,
}

impl WorkerConfig {
    /// Defaults for a broker and a database.
    pub fn new(bus: BusConfig, database_url: String) -> Self {
        WorkerConfig {
            bus,
            database_url,
            command_prefetch: 16,
            report_prefetch: 8,
            name: jobs::worker_name(),
            member_heartbeat: members::HEARTBEAT,
            member_lease: members::LEASE,
            jobs: jobs::JobsConfig::default(),
            webhooks: webhooks::WebhookConfig::default(),
        }
    }
}

/// Starts every worker task; they stop when `shutdown` turns true.
pub fn spawn(config: WorkerConfig, store: Store, shutdown: watch::Receiver<bool>, tasks: &mut JoinSet<()>) {
    metrics::init();
    let live = live::LiveEvents::spawn(config.bus.clone(), shutdown.clone(), tasks);
    tasks.spawn(bus::consume(
        config.bus.clone(),
        WorkQueue::Commands,
        config.command_prefetch,
        Arc::new(commands::CommandHandler::new(store.clone()).with_live(live.clone())),
        shutdown.clone(),
    ));
    tasks.spawn(bus::watch_dead_letters(
        config.bus.clone(),
        WorkQueue::Commands,
        Arc::new(dead_letters::DeadCommands::new(store.clone())),
        shutdown.clone(),
    ));
    let refresher = Arc::new(refresh::Refresher::default().with_live(live.clone()));
    let reports = Arc::new(reports::ReportHandler::new(store.clone(), refresher.clone()).with_live(live.clone()));
    // The report partitions this worker is given, each consumed in order by one worker at a
    // time; and the shared queue, where gateways of releases before partitions publish.
    let (assign, assigned) = watch::channel(BTreeSet::new());
    tasks.spawn(members::run(
        store.clone(),
        config.name.clone(),
        assign,
        config.member_heartbeat,
        config.member_lease,
        shutdown.clone(),
    ));
    tasks.spawn(bus::consume_partitions(
        config.bus.clone(),
        WorkQueue::Reports,
        reports.clone(),
        usize::from(config.report_prefetch),
        assigned,
        shutdown.clone(),
    ));
    tasks.spawn(bus::consume(
        config.bus.clone(),
        WorkQueue::Reports,
        config.report_prefetch,
        reports,
        shutdown.clone(),
    ));
    {
        let (store, shutdown) = (store.clone(), shutdown.clone());
        tasks.spawn(async move { refresher.run(store, shutdown).await });
    }
    match webhooks::WebhookHandler::new(store.clone(), config.webhooks.clone(), shutdown.clone()) {
        Ok(handler) => {
            tasks.spawn(bus::consume(
                config.bus.clone(),
                WorkQueue::Webhooks,
                config.webhooks.prefetch,
                Arc::new(handler),
                shutdown.clone(),
            ));
        }
        // Deliveries wait in their queue for a worker that can send them.
        Err(e) => tracing::error!(error = %e, "no HTTP client for webhooks; this worker sends none"),
    }
    tasks.spawn(relay::run(store.clone(), config.database_url.clone(), config.bus.clone(), shutdown.clone()));
    tasks.spawn(jobs::run(store, config.jobs, live, config.name, shutdown, Duration::from_secs(10)));
}
