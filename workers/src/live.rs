//! Live events for the deploy board (`schema::bus::LiveEvent`), published after the
//! transaction that made the change committed, best effort.
//!
//! A handler hands an event to [`LiveEvents::send`], which never waits: the event goes into a
//! bounded queue, or is dropped (and counted) when the queue is full. One task empties the
//! queue in batches through a confirmed publisher to the `events` topic exchange; a batch the
//! broker does not take is dropped too. Losing one is acceptable: the board reloads what it
//! shows when the API tells it to resync, while a report or a command must never wait for
//! the board.

use std::sync::Arc;

use bus::{BusConfig, Outgoing, Publisher};
use schema::bus::LiveEvent;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::metrics;

/// Events waiting to be published; past it new ones are dropped.
const QUEUE: usize = 1024;
/// Events published in one batch (one round of confirms).
const BATCH: usize = 64;

/// Where handlers send live events. Cheap to clone; the default publishes nothing (for
/// handlers made without a broker, in tests and benchmarks).
#[derive(Clone, Default)]
pub struct LiveEvents {
    queue: Option<mpsc::Sender<LiveEvent>>,
}

impl LiveEvents {
    /// Starts the publishing task (it stops when `shutdown` turns true) and returns its
    /// sender.
    pub fn spawn(bus: BusConfig, shutdown: watch::Receiver<bool>, tasks: &mut JoinSet<()>) -> LiveEvents {
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.spawn(run(Arc::new(Publisher::new(bus)), rx, shutdown));
        LiveEvents { queue: Some(tx) }
    }

    /// Whether events go anywhere (so that a handler skips reading what it would send).
    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues events for publishing, without waiting; drops them when the queue is full.
    pub fn send(&self, events: impl IntoIterator<Item = LiveEvent>) {
        let Some(queue) = &self.queue else { return };
        for event in events {
            if let Err(e) = queue.try_send(event) {
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => "queue_full",
                    mpsc::error::TrySendError::Closed(_) => "stopped",
                };
                metrics::live_dropped(reason, 1);
            }
        }
    }
}

async fn run(publisher: Arc<Publisher>, mut rx: mpsc::Receiver<LiveEvent>, mut shutdown: watch::Receiver<bool>) {
    let exchange = publisher.config().events_exchange();
    let mut batch = Vec::with_capacity(BATCH);
    let mut failing = false;
    loop {
        batch.clear();
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
            _ = shutdown.changed() => if *shutdown.borrow() { return } else { continue },
        }
        let outgoing: Vec<Outgoing> = batch
            .iter()
            .filter_map(|event| {
                let payload = serde_json::to_vec(event).ok()?;
                Some(Outgoing { exchange: exchange.clone(), routing_key: event.routing_key(), payload })
            })
            .collect();
        // Bounded by the bus timeout; events sent meanwhile wait in the queue or are dropped.
        match publisher.publish(&outgoing).await {
            Ok(()) => {
                if failing {
                    tracing::info!("live events published again");
                    failing = false;
                }
                metrics::live_published(outgoing.len());
            }
            Err(e) => {
                // Logged once per outage, counted always.
                if !failing {
                    tracing::warn!(error = %e, "cannot publish live events; dropping them until the broker takes them");
                    failing = true;
                }
                metrics::live_dropped("unpublished", outgoing.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use schema::bus::{AgentView, StageAgents};
    use schema::{AgentState, AgentStatus, DeployId, DeployStage, EnvId, EnvName, HostId, HostName, StageName};

    use super::*;

    fn event(n: i64) -> LiveEvent {
        LiveEvent::AgentsV1(StageAgents {
            env_id: EnvId::parse("e1").unwrap(),
            env_name: EnvName::parse("web").unwrap(),
            stage_name: StageName::parse("prod").unwrap(),
            agents: vec![AgentView {
                host_id: HostId::parse("i-1").unwrap(),
                host_name: HostName::parse("h1").unwrap(),
                deploy_id: DeployId::parse("d1").unwrap(),
                deploy_stage: DeployStage::Staging,
                state: AgentState::Normal,
                status: AgentStatus::Succeeded,
                last_err_no: 0,
                last_update_date: n,
                removed: false,
            }],
        })
    }

    #[test]
    fn a_handler_never_waits_for_the_board_a_full_queue_drops_what_comes_after() {
        // Nobody empties the queue (the broker is gone): sending returns at once, whatever it
        // is asked to send, and keeps the first events.
        let (tx, mut rx) = mpsc::channel(2);
        let live = LiveEvents { queue: Some(tx) };
        live.send((0..100).map(event));
        assert_eq!(rx.try_recv().unwrap(), event(0));
        assert_eq!(rx.try_recv().unwrap(), event(1));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn the_default_sends_nothing() {
        let live = LiveEvents::default();
        assert!(!live.is_on());
        live.send([event(0)]);
    }
}
