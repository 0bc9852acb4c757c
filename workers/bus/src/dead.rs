//! Watching a work queue's dead letters: each message dead-lettered (by a handler that gave up,
//! or by the broker past the delivery limit) is copied to a watch queue
//! ([`BusConfig::dead_watch_queue`]), and a watcher tells a handler about it, so that what the
//! message stood for (a command) can end in a final state. The dead queue itself keeps the
//! message for operators.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, ShortString};
use tokio::sync::watch;

use crate::connection::{BusError, connect_with_retry, within};
use crate::consume::{DEAD_REASON_HEADER, RETRY_DELAY, open_consumer};
use crate::topology::{BusConfig, WorkQueue};

/// Header RabbitMQ sets on a message it dead-lettered itself (`delivery_limit`, `rejected`…).
const BROKER_REASON_HEADER: &str = "x-first-death-reason";
/// Dead letters handled at once.
const PREFETCH: u16 = 8;

/// Records what became of dead-lettered messages.
pub trait DeadLetterHandler: Send + Sync + 'static {
    /// Called once per dead letter with its body and why it died (when known). `Err` means
    /// "try again later" (a dependency is away): the message is requeued after a delay.
    fn dead(&self, body: &[u8], reason: Option<&str>) -> impl Future<Output = Result<(), String>> + Send;
}

fn reason_of(d: &Delivery) -> Option<String> {
    let headers = d.properties.headers().as_ref()?;
    let text = |name: &str| match headers.inner().get(&ShortString::from(name)) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    };
    text(DEAD_REASON_HEADER).or_else(|| text(BROKER_REASON_HEADER).map(|r| format!("dead-lettered by the broker: {r}")))
}

/// Consumes the watch queue of `queue`'s dead letters until `shutdown` turns true, acking each
/// message once `handler` recorded it. Reconnects with backoff.
pub async fn watch_dead_letters<H: DeadLetterHandler>(
    cfg: BusConfig,
    queue: WorkQueue,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    let queue_name = cfg.dead_watch_queue(queue);
    while let Some(conn) = connect_with_retry(&cfg, &mut shutdown).await {
        let session = async {
            let (_ch, consumer) = open_consumer(&conn, &cfg, &queue_name, PREFETCH, false).await?;
            tracing::info!(queue = %queue_name, "watching dead letters");
            let mut stop = shutdown.clone();
            let deliveries = consumer.take_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            deliveries
                .for_each_concurrent(usize::from(PREFETCH), |delivery| {
                    let handler = &handler;
                    async move {
                        let d = match delivery {
                            Ok(d) => d,
                            Err(e) => return tracing::warn!(error = %e, "dead-letter watcher error"),
                        };
                        match handler.dead(&d.data, reason_of(&d).as_deref()).await {
                            Ok(()) => {
                                if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                                    tracing::warn!(error = %e, "ack failed; the dead letter will come again");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "could not record a dead letter; will retry");
                                tokio::time::sleep(RETRY_DELAY).await;
                                let _ = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                            }
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
            Ok(()) => tracing::warn!(queue = %queue_name, "dead-letter watcher stopped; reconnecting"),
            Err(e) => tracing::warn!(queue = %queue_name, error = %e, "dead-letter watcher lost its connection"),
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
