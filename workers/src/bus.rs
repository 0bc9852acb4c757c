//! The RabbitMQ bus: topology (DESIGN §4) under a namespace prefix, a publisher that waits for
//! publisher confirms, and a consumer loop with manual acks, bounded prefetch, delayed retries
//! and dead-lettering, reconnecting with backoff after the broker goes away.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Mutex, watch};

/// How long a message waits in the retry queue before it is delivered again.
pub const RETRY_DELAY: Duration = Duration::from_secs(5);
/// Deliveries of a message before it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 5;
/// Header carrying the delivery attempt.
const ATTEMPT_HEADER: &str = "x-attempt";

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker is unreachable or the connection broke.
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a message (nack) or could not route it.
    #[error("message broker refused the message: {0}")]
    Refused(String),
}

impl From<lapin::Error> for BusError {
    fn from(e: lapin::Error) -> Self {
        BusError::Unavailable(e.to_string())
    }
}

/// Where the broker is and which namespace of names this deployment uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// Prefix of every exchange and queue (`teletraan` by default; tests use their own).
    pub namespace: String,
}

/// The two work queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkQueue {
    /// Deploy commands from the API.
    Commands,
    /// Reports and heartbeats from the gateways.
    Reports,
}

impl WorkQueue {
    /// Short name (also the routing key).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkQueue::Commands => "commands",
            WorkQueue::Reports => "reports",
        }
    }
}

impl BusConfig {
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
}

fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..Default::default() }
}

/// Declares the whole topology (idempotent; every process does it at start).
pub async fn declare_topology(ch: &Channel, cfg: &BusConfig) -> Result<(), BusError> {
    let retry = cfg.name("retry");
    let dead = cfg.name("dead");
    ch.exchange_declare(retry.as_str().into(), ExchangeKind::Direct, durable(), FieldTable::default()).await?;
    ch.exchange_declare(dead.as_str().into(), ExchangeKind::Direct, durable(), FieldTable::default()).await?;
    for q in [WorkQueue::Commands, WorkQueue::Reports] {
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
        let opts = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(queue.as_str().into(), opts, args).await?;
        ch.queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            q.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        // Retry queue: holds a message for RETRY_DELAY, then dead-letters it back to the work
        // exchange.
        let retry_queue = cfg.name(&format!("{}.retry", q.as_str()));
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(RETRY_DELAY.as_millis() as i32));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(exchange.as_str().into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(q.as_str().into()));
        ch.queue_declare(retry_queue.as_str().into(), opts, args).await?;
        ch.queue_bind(
            retry_queue.as_str().into(),
            retry.as_str().into(),
            q.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        // Dead queue: kept for operators.
        let dead_queue = cfg.name(&format!("{}.dead", q.as_str()));
        ch.queue_declare(dead_queue.as_str().into(), opts, quorum_args(&[])).await?;
        ch.queue_bind(
            dead_queue.as_str().into(),
            dead.as_str().into(),
            q.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.exchange_declare(cfg.changes_exchange().as_str().into(), ExchangeKind::Fanout, durable(), FieldTable::default())
        .await?;
    ch.exchange_declare(cfg.events_exchange().as_str().into(), ExchangeKind::Topic, durable(), FieldTable::default())
        .await?;
    Ok(())
}

/// Deletes every exchange and queue of a namespace (tests clean up with it).
pub async fn delete_topology(cfg: &BusConfig) -> Result<(), BusError> {
    let conn = connect(cfg).await?;
    let ch = conn.create_channel().await?;
    for q in [WorkQueue::Commands, WorkQueue::Reports] {
        for queue in [q.as_str().to_string(), format!("{}.retry", q.as_str()), format!("{}.dead", q.as_str())] {
            ch.queue_delete(cfg.name(&queue).as_str().into(), QueueDeleteOptions::default()).await?;
        }
        ch.exchange_delete(cfg.exchange(q).as_str().into(), ExchangeDeleteOptions::default()).await?;
    }
    for ex in ["retry", "dead", "changes", "events"] {
        ch.exchange_delete(cfg.name(ex).as_str().into(), ExchangeDeleteOptions::default()).await?;
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

/// Opens a connection.
pub async fn connect(cfg: &BusConfig) -> Result<Connection, BusError> {
    let props =
        ConnectionProperties::default().with_connection_name(format!("teletraan-{}", std::process::id()).into());
    Ok(Connection::connect(&cfg.url, props).await?)
}

/// Opens a connection, retrying with exponential backoff and jitter until it works or
/// `shutdown` turns true (then `None`).
pub async fn connect_with_retry(cfg: &BusConfig, shutdown: &mut watch::Receiver<bool>) -> Option<Connection> {
    let mut delays = backoff();
    loop {
        if *shutdown.borrow() {
            return None;
        }
        match connect(cfg).await {
            Ok(c) => return Some(c),
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach the message broker");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// Reconnection delays: 100 ms doubling to 10 s, with jitter, forever.
pub fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Persistent JSON message properties.
pub fn json_props() -> BasicProperties {
    BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(2)
}

async fn confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    payload: &[u8],
    props: BasicProperties,
) -> Result<(), BusError> {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            payload,
            props,
        )
        .await?
        .await?;
    check(confirm)
}

fn check(confirm: Confirmation) -> Result<(), BusError> {
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(BusError::Refused(format!("unroutable: {}", returned.reply_text))),
        Confirmation::Nack(_) => Err(BusError::Refused("nack".into())),
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Full exchange name.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Body.
    pub payload: Vec<u8>,
}

/// A publisher with confirms on a connection of its own, reconnected on demand.
pub struct Publisher {
    cfg: BusConfig,
    state: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    /// A publisher; it connects on first use.
    pub fn new(cfg: BusConfig) -> Self {
        Publisher { cfg, state: Mutex::new(None) }
    }

    /// The configuration.
    pub fn config(&self) -> &BusConfig {
        &self.cfg
    }

    /// Publishes messages and returns once the broker confirmed every one. On any error the
    /// connection is dropped (the next call reconnects) and the error returned: the caller
    /// still holds the messages and decides when to try again. Unroutable messages (no queue
    /// bound, e.g. no gateway running) are not an error for fanout and topic exchanges.
    pub async fn publish(&self, messages: &[Outgoing]) -> Result<(), BusError> {
        let mut state = self.state.lock().await;
        if state.as_ref().is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected()) {
            let conn = connect(&self.cfg).await?;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            declare_topology(&ch, &self.cfg).await?;
            *state = Some((conn, ch));
        }
        let Some((_, ch)) = state.as_ref() else { return Err(BusError::Unavailable("no channel".into())) };
        let result = async {
            let mut pending = Vec::with_capacity(messages.len());
            for m in messages {
                let confirm = ch
                    .basic_publish(
                        m.exchange.as_str().into(),
                        m.routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &m.payload,
                        json_props(),
                    )
                    .await?;
                pending.push(confirm);
            }
            for p in pending {
                match p.await? {
                    Confirmation::Nack(_) => return Err(BusError::Refused("nack".into())),
                    Confirmation::Ack(_) | Confirmation::NotRequested => {}
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            *state = None;
        }
        result
    }
}

/// What a handler decided about a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done (applied, or a duplicate): acknowledge.
    Ack,
    /// Failed; it may work next time: deliver again later, at most [`MAX_ATTEMPTS`] times.
    Retry(String),
    /// Failed because a dependency is away (database down, deadlock lost): deliver again
    /// later, without counting the attempt, for as long as it takes.
    RetryLater(String),
    /// Can never succeed (undecodable): move to the dead queue.
    Dead(String),
}

/// A delivery and what a handler may use to answer it.
pub struct DeliveryCtx<'a> {
    /// The message.
    pub delivery: &'a Delivery,
    /// The channel it came on (for replies).
    pub channel: &'a Channel,
    /// Delivery attempt, 1 for the first.
    pub attempt: u32,
}

/// Handles messages of one work queue.
pub trait Handler: Send + Sync + 'static {
    /// Processes one delivery; the consumer acknowledges, retries or dead-letters it after.
    fn handle(&self, ctx: &DeliveryCtx<'_>) -> impl Future<Output = Disposition> + Send;
}

fn attempt_of(d: &Delivery) -> u32 {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(&ShortString::from(ATTEMPT_HEADER)).cloned())
        .and_then(|v| match v {
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            _ => None,
        })
        .unwrap_or(1)
}

/// Consumes a work queue until `shutdown` turns true: at most `prefetch` messages in flight,
/// each acknowledged only after its handler finished (so after the database commit). Retries
/// go through the retry queue with the attempt counted in a header; after [`MAX_ATTEMPTS`], or
/// when the handler says so, the message goes to the dead queue. Reconnects with backoff.
pub async fn consume<H: Handler>(
    cfg: BusConfig,
    queue: WorkQueue,
    prefetch: u16,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    let queue_name = cfg.name(queue.as_str());
    while let Some(conn) = connect_with_retry(&cfg, &mut shutdown).await {
        let session = async {
            let ch = conn.create_channel().await?;
            declare_topology(&ch, &cfg).await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            // Bounded prefetch: never more unacknowledged messages than we process at once.
            ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
            let consumer = ch
                .basic_consume(
                    queue_name.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            tracing::info!(queue = %queue_name, prefetch, "consuming");
            let mut stop = shutdown.clone();
            let deliveries = consumer.take_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            deliveries
                .for_each_concurrent(usize::from(prefetch), |delivery| {
                    let (ch, cfg, handler) = (&ch, &cfg, &handler);
                    async move {
                        match delivery {
                            Ok(d) => settle(ch, cfg, queue, handler.as_ref(), d).await,
                            Err(e) => tracing::warn!(error = %e, "consumer error"),
                        }
                    }
                })
                .await;
            Ok::<_, BusError>(())
        }
        .await;
        let _ = conn.close(200, "bye".into()).await;
        match session {
            Ok(()) if *shutdown.borrow() => return,
            Ok(()) => tracing::warn!(queue = %queue_name, "consumer stopped; reconnecting"),
            Err(e) => tracing::warn!(queue = %queue_name, error = %e, "consumer lost its connection; reconnecting"),
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn settle<H: Handler>(ch: &Channel, cfg: &BusConfig, queue: WorkQueue, handler: &H, d: Delivery) {
    let attempt = attempt_of(&d);
    let started = std::time::Instant::now();
    let disposition = handler.handle(&DeliveryCtx { delivery: &d, channel: ch, attempt }).await;
    crate::metrics::message_done(queue, &disposition, started.elapsed());
    let forward = match &disposition {
        Disposition::Ack => None,
        Disposition::RetryLater(reason) => {
            tracing::warn!(queue = queue.as_str(), attempt, reason, "message failed on a dependency; will retry");
            Some((cfg.name("retry"), attempt))
        }
        Disposition::Retry(reason) if attempt < MAX_ATTEMPTS => {
            tracing::warn!(queue = queue.as_str(), attempt, reason, "message failed; will retry");
            Some((cfg.name("retry"), attempt + 1))
        }
        Disposition::Retry(reason) | Disposition::Dead(reason) => {
            tracing::error!(queue = queue.as_str(), attempt, reason, "message dead-lettered");
            Some((cfg.name("dead"), attempt))
        }
    };
    if let Some((exchange, next_attempt)) = forward {
        let mut headers = d.properties.headers().clone().unwrap_or_default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongInt(next_attempt as i32));
        let props = d.properties.clone().with_headers(headers);
        if let Err(e) = confirmed(ch, &exchange, queue.as_str(), &d.data, props).await {
            // Keep the message: put it back on the queue rather than lose it.
            tracing::warn!(error = %e, "could not forward a failed message; requeueing it");
            let _ = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
            return;
        }
    }
    if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %e, "ack failed; the message will be redelivered");
    }
}
