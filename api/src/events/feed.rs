//! The hub's feed: an exclusive queue on the broker bound to the `events` topic with `live.#`,
//! whose deliveries are handed to the hub. A lost connection is bound again with backoff, and
//! every subscriber is told to resync (what was published meanwhile is lost).

use std::time::Duration;

use bus::{BusConfig, backoff, connect_with_retry, declare_topology, within};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use schema::bus::LiveEvent;
use tokio::sync::watch;

use super::Hub;

/// Messages the queue holds for a slow API before the oldest are dropped: the board resyncs
/// after a gap anyway, and the broker must not hold an unbounded backlog for one process.
const QUEUE_LIMIT: i32 = 10_000;

/// Runs until `shutdown` turns true, then closes the hub.
pub(super) async fn run(hub: Hub, bus: BusConfig, mut shutdown: watch::Receiver<bool>) {
    let mut sessions = 0u64;
    let mut delays = backoff();
    while let Some(conn) = connect_with_retry(&bus, &mut shutdown).await {
        let session = async {
            let limit = bus.timeout;
            let (ch, q) = within(limit, "binding the live event queue", async {
                let ch = conn.create_channel().await?;
                declare_topology(&ch, &bus).await?;
                let mut args = FieldTable::default();
                args.insert("x-max-length".into(), AMQPValue::LongInt(QUEUE_LIMIT));
                // Exclusive, server-named and deleted with the connection: one per API process.
                let q = ch
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                        args,
                    )
                    .await?;
                let key = format!("{}.#", LiveEvent::ROUTING_PREFIX);
                ch.queue_bind(
                    q.name().clone(),
                    bus.events_exchange().as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
                Ok::<_, bus::BusError>((ch, q))
            })
            .await?;
            // No acks: a live event is worth nothing once it is late.
            let consume = ch.basic_consume(
                q.name().clone(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            );
            let mut deliveries = within(limit, "consuming live events", consume).await?;
            hub.set_fed(true);
            if sessions > 0 {
                hub.resync("the API's event feed reconnected to the broker; events may have been lost");
            }
            sessions += 1;
            delays = backoff();
            tracing::info!("live event feed bound");
            loop {
                tokio::select! {
                    d = deliveries.next() => match d {
                        Some(Ok(d)) => match serde_json::from_slice::<LiveEvent>(&d.data) {
                            Ok(event) => {
                                hub.publish(event);
                            }
                            // A kind from a newer worker: this API cannot show it.
                            Err(e) => tracing::debug!(error = %e, "undecodable live event ignored"),
                        },
                        Some(Err(e)) => return Err(bus::BusError::from(e)),
                        None => return Ok(()),
                    },
                    _ = shutdown.changed() => if *shutdown.borrow() { return Ok(()) },
                }
            }
        }
        .await;
        hub.set_fed(false);
        let _ = within(bus.timeout, "closing", conn.close(200, "bye".into())).await;
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = session {
            tracing::warn!(error = %e, "live event feed lost; binding again");
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
    hub.close();
}
