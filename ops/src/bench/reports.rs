//! `teletraan bench reports`: agent updates applied to Postgres per second by the workers'
//! report path.
//!
//! Report batches like a gateway's (`ReportsV1`, N agent updates each, hosts drawn at random
//! over every seeded stage, each host re-reporting its seeded state with a newer time) are
//! published with confirms, as a gateway does: each stage's updates to its report partition, in
//! batches of N (`--shared`: in batches of N straight to the shared `reports` queue, the path
//! before partitions). Then W report consumers start in this process — each with its own broker
//! connection, the real [`ReportHandler`] and its stage [`Refresher`], like a `teletraan
//! worker`, each consuming its share of the partitions (`schema::partition::assigned` over W
//! members) — and the clock runs until every batch is acknowledged (a batch is acknowledged
//! after its transaction committed, so its rows are in Postgres).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bus::{BusConfig, DeliveryCtx, Disposition, Handler, Outgoing, Publisher, WorkQueue};
use clap::Args;
use schema::bus::{AgentUpdate, ReportBatch, ReportMessage};
use schema::partition;
use schema::rules::goal::AgentRecord;
use schema::{AgentState, AgentStatus, DeployId, DeployStage, EnvId, HostId, HostName};
use store::Store;
use tokio::sync::watch;
use workers::refresh::Refresher;
use workers::reports::ReportHandler;

use super::seeded::{self, HostRole, Seeded};
use crate::sim::SplitMix64;

/// Flags of `teletraan bench reports`.
#[derive(Debug, Clone, Args)]
pub struct ReportsArgs {
    /// Postgres URL of a seeded database (ops/bench/sql/seed.sql): the global `--database-url`.
    #[arg(skip)]
    pub database_url: String,
    /// RabbitMQ URL: the global `--amqp-url`.
    #[arg(skip)]
    pub amqp_url: String,
    /// Namespace of the queues, deleted at the end: the global `--namespace`.
    #[arg(skip)]
    pub namespace: String,
    /// Seeded hosts.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub hosts: u32,
    /// Seeded stages.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub stages: u32,
    /// Report batches to publish.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batches: u32,
    /// Agent updates per batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Report consumers (each like one worker process's).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Batches each consumer handles at once (the worker's default is 8).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub prefetch: u16,
    /// Publish to the shared queue every consumer takes from, as before report partitions.
    #[arg(long)]
    pub shared: bool,
    /// Seed of the host draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The real handler, counting what it acknowledged.
struct Counting {
    inner: ReportHandler,
    acked: AtomicU64,
    other: AtomicU64,
    /// Agent updates in the batches it acknowledged.
    updates: AtomicU64,
    /// When it acknowledged its last batch, in ms from `started`.
    last_ack_ms: AtomicU64,
    started: Instant,
}

impl Handler for Counting {
    async fn handle(&self, ctx: &DeliveryCtx<'_>) -> Disposition {
        let d = self.inner.handle(ctx).await;
        match d {
            Disposition::Ack => {
                if let Ok(ReportMessage::ReportsV1(b)) = serde_json::from_slice::<ReportMessage>(&ctx.delivery.data) {
                    self.updates.fetch_add(b.agents.len() as u64, Ordering::Relaxed);
                }
                self.last_ack_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                self.acked.fetch_add(1, Ordering::Relaxed)
            }
            _ => self.other.fetch_add(1, Ordering::Relaxed),
        };
        d
    }
}

fn record(seeded: &Seeded, i: u32) -> anyhow::Result<(EnvId, AgentRecord)> {
    let k = seeded.stage_of(i);
    let (v, stage, status) = match seeded.role(i) {
        HostRole::Deploying(s) => (2, s.parse::<DeployStage>()?, AgentStatus::Succeeded),
        HostRole::Done => (2, DeployStage::ServingBuild, AgentStatus::Succeeded),
        HostRole::Waiting => (1, DeployStage::ServingBuild, AgentStatus::Succeeded),
    };
    let record = AgentRecord {
        deploy_id: DeployId::parse(seeded::deploy_id(v, k))?,
        stage,
        status,
        state: AgentState::Normal,
        err_no: 0,
        fail_count: 0,
        first_deploy: false,
        container_health: String::new(),
    };
    Ok((EnvId::parse(seeded::env_id(k))?, record))
}

/// A message's routing key and body.
type Keyed = (String, Vec<u8>);

/// The batches, serialised, with the routing key each goes to, and the number of distinct
/// (host, stage) records they touch.
fn batches(args: &ReportsArgs, base_ms: i64) -> anyhow::Result<(Vec<Keyed>, usize)> {
    let seeded = Seeded { hosts: args.hosts, stages: args.stages };
    let mut rng = SplitMix64::new(args.seed);
    let mut touched = HashSet::new();
    let mut drawn = Vec::with_capacity(args.batches as usize);
    for b in 0..args.batches {
        let mut agents = Vec::with_capacity(args.batch_size as usize);
        let mut in_batch = HashSet::new();
        while agents.len() < args.batch_size.min(args.hosts) as usize {
            let i = (rng.next_u64() % u64::from(args.hosts)) as u32;
            if !in_batch.insert(i) {
                continue;
            }
            touched.insert(i);
            let (env_id, record) = record(&seeded, i)?;
            let id = seeded::host_id(i);
            agents.push(AgentUpdate {
                host_id: HostId::parse(id.as_str())?,
                host_name: HostName::parse(id)?,
                env_id,
                at: base_ms + i64::from(b),
                record: Some(record),
                control_seq: 0,
                error_message: None,
            });
        }
        drawn.push(agents);
    }
    // As a gateway sends them: whole batches to the shared queue, or each partition's updates
    // in batches of their own.
    let groups: Vec<(String, Vec<AgentUpdate>)> = if args.shared {
        drawn.into_iter().map(|agents| (WorkQueue::Reports.as_str().to_string(), agents)).collect()
    } else {
        let mut parts: Vec<Vec<AgentUpdate>> = vec![Vec::new(); usize::from(partition::REPORT_PARTITIONS)];
        for update in drawn.into_iter().flatten() {
            parts[usize::from(partition::of_stage(&update.env_id))].push(update);
        }
        let mut groups = Vec::new();
        for (p, updates) in parts.into_iter().enumerate() {
            for chunk in updates.chunks(args.batch_size as usize) {
                groups.push((WorkQueue::Reports.partition(p as u16), chunk.to_vec()));
            }
        }
        groups
    };
    let mut out = Vec::with_capacity(groups.len());
    for (key, agents) in groups {
        let sent_at = agents.iter().map(|a| a.at).max().unwrap_or(base_ms);
        let batch = ReportBatch { gateway: "bench".into(), sent_at, hosts: Vec::new(), agents, heartbeats: Vec::new() };
        out.push((key, serde_json::to_vec(&ReportMessage::ReportsV1(batch))?));
    }
    Ok((out, touched.len()))
}

/// Runs the benchmark and prints its figures (`result: key=value …` last).
pub async fn run(args: ReportsArgs) -> anyhow::Result<()> {
    let bus = BusConfig::new(args.amqp_url.clone(), args.namespace.clone());
    let base_ms = schema::time::now_ms();
    let (payloads, distinct) = batches(&args, base_ms)?;
    let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
    let messages = payloads.len() as u64;
    let updates = u64::from(args.batches) * u64::from(args.batch_size.min(args.hosts));
    println!(
        "reports: {} batches of {} agent updates ({:.1} MB, {distinct} distinct records) sent as {messages} messages to {}, {} consumer(s) with prefetch {}",
        args.batches,
        args.batch_size,
        bytes as f64 / 1e6,
        if args.shared { "the shared queue" } else { "the report partitions" },
        args.workers,
        args.prefetch
    );

    let publisher = Publisher::new(bus.clone());
    let started = Instant::now();
    let exchange = bus.exchange(WorkQueue::Reports);
    for chunk in payloads.chunks(16) {
        let messages: Vec<Outgoing> = chunk
            .iter()
            .map(|(key, p)| Outgoing { exchange: exchange.clone(), routing_key: key.clone(), payload: p.clone() })
            .collect();
        publisher.publish(&messages).await.context("cannot publish the report batches")?;
    }
    let published = started.elapsed();
    println!(
        "reports: published and confirmed in {:.2} s ({:.0} batches/s, {:.1} MB/s)",
        published.as_secs_f64(),
        f64::from(args.batches) / published.as_secs_f64(),
        bytes as f64 / 1e6 / published.as_secs_f64()
    );

    // Enough connections for every batch in flight and the refreshers.
    let pool = usize::from(args.workers) * (usize::from(args.prefetch) + 2);
    let store = Store::connect(&args.database_url, pool).context("cannot connect to Postgres")?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut handlers = Vec::new();
    let mut refreshers = Vec::new();
    let members: Vec<String> = (0..args.workers).map(|w| format!("bench-{w:02}")).collect();
    let mut assignments = Vec::new();
    let (busy_before, own_before) = (super::machine_busy_seconds(), super::cpu_seconds(std::process::id()));
    let started = Instant::now();
    for name in &members {
        let refresher = Arc::new(Refresher::default());
        let handler = Arc::new(Counting {
            inner: ReportHandler::new(store.clone(), refresher.clone()),
            acked: AtomicU64::new(0),
            other: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            last_ack_ms: AtomicU64::new(0),
            started,
        });
        if args.shared {
            tasks.spawn(bus::consume(bus.clone(), WorkQueue::Reports, args.prefetch, handler.clone(), stopped.clone()));
        } else {
            let share: BTreeSet<u16> = partition::assigned(&members, name).into_iter().collect();
            let (assign, assigned) = watch::channel(share);
            assignments.push(assign);
            let consume = bus::consume_partitions(
                bus.clone(),
                WorkQueue::Reports,
                handler.clone(),
                usize::from(args.prefetch),
                assigned,
                stopped.clone(),
            );
            tasks.spawn(consume);
        }
        let (r, s, st) = (refresher.clone(), store.clone(), stopped.clone());
        tasks.spawn(async move { r.run(s, st).await });
        handlers.push(handler);
        refreshers.push(refresher);
    }
    let acked = || handlers.iter().map(|h| h.acked.load(Ordering::Relaxed)).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(600);
    while acked() < messages {
        if Instant::now() > deadline {
            let _ = stop.send(true);
            bail!("only {} of {messages} messages acknowledged after 600 s", acked());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let applied = started.elapsed();
    // CPU the whole machine (Postgres, RabbitMQ, these consumers) and this process spent on it.
    let busy = super::machine_busy_seconds().zip(busy_before).map_or(0.0, |(a, b)| a - b);
    let own = super::cpu_seconds(std::process::id()).zip(own_before).map_or(0.0, |(a, b)| a - b);
    while refreshers.iter().any(|r| r.pending() > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refreshed = started.elapsed();
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    if let Err(e) = bus::delete_topology(&bus).await {
        eprintln!("reports: could not delete namespace {}: {e}", bus.namespace);
    }
    // Where the time went: each consumer's share of the work, and when it was done with it.
    for (name, h) in members.iter().zip(&handlers) {
        println!(
            "reports: consumer {name}: {} messages, {} updates, last acknowledged at {:.2} s",
            h.acked.load(Ordering::Relaxed),
            h.updates.load(Ordering::Relaxed),
            h.last_ack_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
    }
    println!(
        "reports: CPU while applying: machine {busy:.2} s ({:.0}% of 2 cores, {:.1} µs per update), this process {own:.2} s ({:.1} µs per update)",
        busy / applied.as_secs_f64() / 2.0 * 100.0,
        busy * 1e6 / updates as f64,
        own * 1e6 / updates as f64
    );
    let retried: u64 = handlers.iter().map(|h| h.other.load(Ordering::Relaxed)).sum();
    let rate = updates as f64 / applied.as_secs_f64();
    println!(
        "reports: {updates} agent updates applied in {:.2} s: {rate:.0} updates/s ({:.1} messages/s); stages re-evaluated after {:.2} s; {retried} deliveries not acknowledged at once",
        applied.as_secs_f64(),
        messages as f64 / applied.as_secs_f64(),
        refreshed.as_secs_f64()
    );
    println!(
        "result: label=reports workers={} shared={} prefetch={} batches={} messages={messages} batch_size={} updates={updates} applied_s={:.3} updates_per_s={rate:.0} refreshed_s={:.3} distinct={distinct} base_ms={base_ms} retried={retried} machine_us_per_update={:.1} own_us_per_update={:.1}",
        args.workers,
        args.shared,
        args.prefetch,
        args.batches,
        args.batch_size,
        applied.as_secs_f64(),
        refreshed.as_secs_f64(),
        busy * 1e6 / updates as f64,
        own * 1e6 / updates as f64
    );
    Ok(())
}
