//! The topology of DESIGN §4 under a namespace prefix: the work queues (quorum queues with a
//! delay queue for retries and a dead queue), the fanout of goal changes and the topic of
//! domain events. Every process declares it at start; declaring is idempotent.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::connection::{BusError, connect, within};
use crate::consume::RETRY_DELAY;
use schema::partition::REPORT_PARTITIONS;

/// Where the broker is, which namespace of names this deployment uses, and how long the
/// broker may take to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// Prefix of every exchange and queue (`teletraan` by default; tests use their own).
    pub namespace: String,
    /// Longest one exchange with the broker may take: connecting (with the channel and the
    /// topology of a publisher), a publish, the confirms of a batch. Past it the broker counts
    /// as unavailable and the connection is replaced.
    pub timeout: Duration,
    /// PEM certificates of a private CA trusted for `amqps://` besides the system's roots.
    pub ca_pem: Option<String>,
}

/// The work queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkQueue {
    /// Deploy commands from the API.
    Commands,
    /// Reports and heartbeats from the gateways.
    Reports,
    /// Webhook deliveries, from the outbox.
    Webhooks,
}

impl WorkQueue {
    /// Short name (also the routing key).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkQueue::Commands => "commands",
            WorkQueue::Reports => "reports",
            WorkQueue::Webhooks => "webhooks",
        }
    }

    /// How many partition queues it has besides its shared queue (`schema::partition`): the
    /// reports have [`REPORT_PARTITIONS`]; the others none.
    pub fn partitions(self) -> u16 {
        match self {
            WorkQueue::Reports => REPORT_PARTITIONS,
            WorkQueue::Commands | WorkQueue::Webhooks => 0,
        }
    }

    /// Short name (and routing key) of partition `p`: `reports.7`.
    pub fn partition(self, p: u16) -> String {
        format!("{}.{p}", self.as_str())
    }
}

impl BusConfig {
    /// [`BusConfig::timeout`] unless set otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The broker at `url` under `namespace`, with the default timeout.
    pub fn new(url: impl Into<String>, namespace: impl Into<String>) -> Self {
        BusConfig { url: url.into(), namespace: namespace.into(), timeout: Self::DEFAULT_TIMEOUT, ca_pem: None }
    }

    /// A namespaced name.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}.{}", self.namespace, suffix)
    }

    /// Exchange of a work queue.
    pub fn exchange(&self, q: WorkQueue) -> String {
        self.name(q.as_str())
    }

    /// Fanout exchange of goal changes.
    pub fn changes_exchange(&self) -> String {
        self.name("changes")
    }

    /// Topic exchange of domain events.
    pub fn events_exchange(&self) -> String {
        self.name("events")
    }

    /// Queue that receives a copy of each of `q`'s dead letters, for a worker to record what
    /// became of them (the dead queue itself is kept for operators).
    pub fn dead_watch_queue(&self, q: WorkQueue) -> String {
        self.name(&format!("{}.dead.watch", q.as_str()))
    }
}

/// Work queues whose dead letters are watched: a dead command must end in a final status.
pub const WATCHED_DEAD_LETTERS: [WorkQueue; 1] = [WorkQueue::Commands];

fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// The exchange (and queue suffix) of messages waiting to be tried again. Its queues are
/// quorum queues, like the work queues: a classic queue lives on one node, and while that node
/// is down nobody could declare the topology again, so no role could reconnect. (Releases
/// before this one used classic `retry` queues; they are no longer declared, and what they hold
/// goes back to its work queue when its delay ends.)
pub const DELAY: &str = "delay";

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..Default::default() }
}

/// Declares the whole topology (idempotent; every process does it at start).
pub async fn declare_topology(ch: &Channel, cfg: &BusConfig) -> Result<(), BusError> {
    let retry = cfg.name(DELAY);
    let dead = cfg.name("dead");
    ch.exchange_declare(retry.as_str().into(), ExchangeKind::Direct, durable(), FieldTable::default()).await?;
    ch.exchange_declare(dead.as_str().into(), ExchangeKind::Direct, durable(), FieldTable::default()).await?;
    for q in [WorkQueue::Commands, WorkQueue::Reports, WorkQueue::Webhooks] {
        let exchange = cfg.exchange(q);
        let queue = cfg.name(q.as_str());
        ch.exchange_declare(exchange.as_str().into(), ExchangeKind::Direct, durable(), FieldTable::default()).await?;
        // Quorum queue: replicated and durable. A message that keeps failing delivery (a
        // consumer crashing on it) is dead-lettered instead of dropped.
        let args = quorum_args(&[
            ("x-dead-letter-exchange", AMQPValue::LongString(dead.as_str().into())),
            ("x-dead-letter-routing-key", AMQPValue::LongString(q.as_str().into())),
            ("x-delivery-limit", AMQPValue::LongInt(20)),
        ]);
        declare_bound(ch, &queue, args, &exchange, q.as_str()).await?;
        // Delay queue: holds a message for RETRY_DELAY, then dead-letters it back to the work
        // exchange, at least once (the quorum queue keeps it until the work queue took it).
        let retry_queue = cfg.name(&format!("{}.{DELAY}", q.as_str()));
        let args = quorum_args(&[
            ("x-message-ttl", AMQPValue::LongInt(RETRY_DELAY.as_millis() as i32)),
            ("x-dead-letter-exchange", AMQPValue::LongString(exchange.as_str().into())),
            ("x-dead-letter-routing-key", AMQPValue::LongString(q.as_str().into())),
            ("x-dead-letter-strategy", AMQPValue::LongString("at-least-once".into())),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]);
        declare_bound(ch, &retry_queue, args, &retry, q.as_str()).await?;
        // Dead queue: kept for operators.
        let dead_queue = cfg.name(&format!("{}.dead", q.as_str()));
        declare_bound(ch, &dead_queue, quorum_args(&[]), &dead, q.as_str()).await?;
        // Partition queues: each has one active consumer at a time (the broker hands it to the
        // next when that one leaves), so a partition's messages are handled one after the
        // other, in order, by one worker. Their failed messages are retried in place (never
        // sent round through the delay queue, which would reorder them) and end in the same
        // dead queue.
        for p in 0..q.partitions() {
            let key = q.partition(p);
            let name = cfg.name(&key);
            let args = quorum_args(&[
                ("x-single-active-consumer", AMQPValue::Boolean(true)),
                ("x-dead-letter-exchange", AMQPValue::LongString(dead.as_str().into())),
                ("x-dead-letter-routing-key", AMQPValue::LongString(q.as_str().into())),
                ("x-delivery-limit", AMQPValue::LongInt(20)),
            ]);
            declare_bound(ch, &name, args, &exchange, key.as_str()).await?;
        }
        if WATCHED_DEAD_LETTERS.contains(&q) {
            // A second queue on the dead exchange with the same key: each dead letter is copied
            // there for its watcher, and stays in the dead queue for operators.
            let watch = cfg.dead_watch_queue(q);
            declare_bound(ch, &watch, quorum_args(&[]), &dead, q.as_str()).await?;
        }
    }
    ch.exchange_declare(cfg.changes_exchange().as_str().into(), ExchangeKind::Fanout, durable(), FieldTable::default())
        .await?;
    ch.exchange_declare(cfg.events_exchange().as_str().into(), ExchangeKind::Topic, durable(), FieldTable::default())
        .await?;
    Ok(())
}

/// Declares a durable queue with `args` and binds it to `exchange` with `key`.
async fn declare_bound(ch: &Channel, queue: &str, args: FieldTable, exchange: &str, key: &str) -> Result<(), BusError> {
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(queue.into(), opts, args).await?;
    ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
        .await?;
    Ok(())
}

/// One queue's depth: (its name without the namespace, messages ready, consumers).
pub type QueueDepth = (String, u32, u32);

/// The queues an operator watches, by name without the namespace: each work queue, its
/// partitions and its dead-letter queue.
pub fn watched_queues() -> Vec<String> {
    let mut out = Vec::new();
    for q in [WorkQueue::Commands, WorkQueue::Reports, WorkQueue::Webhooks] {
        out.push(q.as_str().to_string());
        out.extend((0..q.partitions()).map(|p| q.partition(p)));
        out.push(format!("{}.dead", q.as_str()));
    }
    out
}

/// The depth of each work queue, its partitions and its dead-letter queue, read with passive declares on a
/// connection of its own (each exchange with the broker bounded by `cfg.timeout`).
pub async fn queue_depths(cfg: &BusConfig) -> Result<Vec<QueueDepth>, BusError> {
    let conn = connect(cfg).await?;
    let read = async {
        let ch = within(cfg.timeout, "opening a channel", conn.create_channel()).await?;
        let mut out = Vec::new();
        for name in watched_queues() {
            let full = cfg.name(&name);
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            let declare = ch.queue_declare(full.as_str().into(), passive, FieldTable::default());
            let q = within(cfg.timeout, "reading a queue's depth", declare).await?;
            out.push((name, q.message_count(), q.consumer_count()));
        }
        Ok(out)
    }
    .await;
    let _ = within(cfg.timeout, "closing", conn.close(200, "bye".into())).await;
    read
}

/// Deletes every exchange and queue of a namespace (tests clean up with it).
pub async fn delete_topology(cfg: &BusConfig) -> Result<(), BusError> {
    let conn = connect(cfg).await?;
    let ch = conn.create_channel().await?;
    for q in [WorkQueue::Commands, WorkQueue::Reports, WorkQueue::Webhooks] {
        let partitions = (0..q.partitions()).map(|p| q.partition(p));
        let queues = [q.as_str().to_string(), format!("{}.{DELAY}", q.as_str()), format!("{}.dead", q.as_str())];
        for queue in queues.into_iter().chain(partitions) {
            ch.queue_delete(cfg.name(&queue).as_str().into(), QueueDeleteOptions::default()).await?;
        }
        if WATCHED_DEAD_LETTERS.contains(&q) {
            ch.queue_delete(cfg.dead_watch_queue(q).as_str().into(), QueueDeleteOptions::default()).await?;
        }
        ch.exchange_delete(cfg.exchange(q).as_str().into(), ExchangeDeleteOptions::default()).await?;
    }
    for ex in [DELAY, "dead", "changes", "events"] {
        ch.exchange_delete(cfg.name(ex).as_str().into(), ExchangeDeleteOptions::default()).await?;
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}
