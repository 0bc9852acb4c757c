//! The outbox relay: publishes what transactions wrote to the outbox, with confirms, then
//! deletes it. Woken by Postgres notifications, and polls as a safety net.

use std::time::Duration;

use store::{Exchange, Store};
use tokio::sync::watch;

use crate::metrics;
use bus::{BusConfig, Outgoing, Publisher, WorkQueue, backoff};

/// Messages leased per round.
const BATCH: i64 = 500;
/// A relay that dies holding a lease delays its messages this long.
const LEASE: Duration = Duration::from_secs(30);
/// Poll interval when no notification arrives.
const POLL: Duration = Duration::from_secs(1);

/// Runs the relay until `shutdown` turns true.
pub async fn run(store: Store, database_url: String, bus: BusConfig, mut shutdown: watch::Receiver<bool>) {
    let publisher = Publisher::new(bus.clone());
    let mut wake: Option<tokio::sync::mpsc::Receiver<()>> = None;
    let mut delays = backoff();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if wake.is_none() {
            match Store::listen_outbox(&database_url).await {
                Ok(rx) => wake = Some(rx),
                Err(e) => tracing::debug!(error = %e, "outbox notifications unavailable; polling"),
            }
        }
        let failed = match relay_once(&store, &publisher, &bus).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay failed");
                true
            }
        };
        let wait = if failed { delays.next().unwrap_or(Duration::from_secs(10)) } else { POLL };
        if !failed {
            delays = backoff();
        }
        let notified = async {
            match wake.as_mut() {
                Some(rx) => rx.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            alive = notified, if !failed => if !alive { wake = None },
            _ = shutdown.changed() => {}
        }
    }
}

/// Publishes one batch; returns how many messages went out.
pub async fn relay_once(store: &Store, publisher: &Publisher, bus: &BusConfig) -> anyhow::Result<usize> {
    let messages = store.lease_outbox(BATCH, LEASE).await?;
    if messages.is_empty() {
        return Ok(0);
    }
    let outgoing: Vec<Outgoing> = messages
        .iter()
        .map(|m| Outgoing {
            exchange: match m.exchange {
                Exchange::Changes => bus.changes_exchange(),
                Exchange::Events => bus.events_exchange(),
                Exchange::Webhooks => bus.exchange(WorkQueue::Webhooks),
            },
            routing_key: m.routing_key.clone(),
            payload: serde_json::to_vec(&m.payload).unwrap_or_default(),
        })
        .collect();
    let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
    if let Err(e) = publisher.publish(&outgoing).await {
        let _ = store.release_outbox(&ids).await;
        return Err(e.into());
    }
    store.delete_outbox(&ids).await?;
    for exchange in [Exchange::Changes, Exchange::Events, Exchange::Webhooks] {
        metrics::relayed(exchange.as_str(), messages.iter().filter(|m| m.exchange == exchange).count());
    }
    Ok(messages.len())
}
