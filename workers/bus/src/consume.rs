//! The consumer loop of a work queue: manual acks after the handler finished, bounded
//! prefetch, delayed retries through the retry queue, dead-lettering, reconnection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, Consumer};
use tokio::sync::watch;

use crate::connection::{BusError, connect_with_retry, within};
use crate::publish::confirmed;
use crate::topology::{BusConfig, DELAY, WorkQueue, declare_topology};

/// How long a message waits in the retry queue before it is delivered again.
pub const RETRY_DELAY: Duration = Duration::from_secs(5);
/// Deliveries of a message before it is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 5;
/// Header carrying the delivery attempt.
const ATTEMPT_HEADER: &str = "x-attempt";
/// Header of a dead-lettered message: why its handler gave up on it (at most
/// [`MAX_REASON_BYTES`]).
pub const DEAD_REASON_HEADER: &str = "x-dead-reason";
/// Longest reason kept in [`DEAD_REASON_HEADER`].
const MAX_REASON_BYTES: usize = 1000;

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

pub(crate) fn attempt_of(d: &Delivery) -> u32 {
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
    crate::metrics::init(queue);
    while let Some(conn) = connect_with_retry(&cfg, &mut shutdown).await {
        let session = async {
            let (ch, consumer) = open_consumer(&conn, &cfg, &queue_name, prefetch, true).await?;
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
        let _ = within(cfg.timeout, "closing", conn.close(200, "bye".into())).await;
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
            Some((cfg.name(DELAY), attempt, None))
        }
        Disposition::Retry(reason) if attempt < MAX_ATTEMPTS => {
            tracing::warn!(queue = queue.as_str(), attempt, reason, "message failed; will retry");
            Some((cfg.name(DELAY), attempt + 1, None))
        }
        Disposition::Retry(reason) | Disposition::Dead(reason) => {
            tracing::error!(queue = queue.as_str(), attempt, reason, "message dead-lettered");
            Some((cfg.name("dead"), attempt, Some(reason.as_str())))
        }
    };
    if let Some((exchange, next_attempt, dead_reason)) = forward
        && let Err(e) = forward_copy(ch, cfg, queue, &d, &exchange, next_attempt, dead_reason).await
    {
        // Keep the message: put it back on the queue rather than lose it.
        tracing::warn!(error = %e, "could not forward a failed message; requeueing it");
        let _ = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
        return;
    }
    if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %e, "ack failed; the message will be redelivered");
    }
}

/// Publishes a copy of `d` to `exchange` (the delay or the dead exchange) under the queue's
/// routing key, with its attempt and, for a dead letter, why its handler gave up; confirmed.
pub(crate) async fn forward_copy(
    ch: &Channel,
    cfg: &BusConfig,
    queue: WorkQueue,
    d: &Delivery,
    exchange: &str,
    attempt: u32,
    dead_reason: Option<&str>,
) -> Result<(), BusError> {
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongInt(attempt as i32));
    if let Some(reason) = dead_reason {
        // Whoever watches the dead letters (a command's status) can say why.
        let mut end = reason.len().min(MAX_REASON_BYTES);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        headers.insert(DEAD_REASON_HEADER.into(), AMQPValue::LongString(reason[..end].into()));
    }
    let props = d.properties.clone().with_headers(headers);
    confirmed(ch, exchange, queue.as_str(), &d.data, props, cfg.timeout).await
}

/// Opens a channel consuming `queue` with manual acks and at most `prefetch` unacknowledged
/// messages (never more than are processed at once), within the configured timeout; with
/// `confirms`, the channel's own publishes (retries, dead letters) are confirmed.
pub(crate) async fn open_consumer(
    conn: &Connection,
    cfg: &BusConfig,
    queue: &str,
    prefetch: u16,
    confirms: bool,
) -> Result<(Channel, Consumer), BusError> {
    within(cfg.timeout, "opening a consumer", async {
        let ch = conn.create_channel().await?;
        declare_topology(&ch, cfg).await?;
        if confirms {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer =
            ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
        Ok::<_, BusError>((ch, consumer))
    })
    .await
}
