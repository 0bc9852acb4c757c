//! Publishes what pings changed: agent records and host facts in batches (at most
//! `batch_max` items or about `batch_max_bytes`, at latest after `flush_every`), heartbeats aggregated per host and sent every
//! `heartbeat_every`, each batch confirmed by the broker. While the broker is away the batch is
//! kept and retried; the bounded queue in front of it then fills, and pings stop marking their
//! changes as sent, so they are sent again later: nothing is lost and memory stays bounded.

use std::collections::HashMap;
use std::time::Duration;

use schema::bus::{AgentUpdate, Heartbeat, HostFacts, ReportBatch, ReportMessage};
use schema::time::EpochMs;
use schema::*;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use workers::bus::{Outgoing, Publisher, WorkQueue, backoff};

use super::GatewayConfig;

/// Something a ping queued for the workers.
#[derive(Debug)]
pub enum Item {
    /// An agent record changed.
    Agent(AgentUpdate),
    /// A host's identity changed (or is new to this gateway).
    Host(HostFacts),
    /// A host pinged.
    Heartbeat(Heartbeat),
}

#[derive(Default)]
struct Pending {
    agents: Vec<AgentUpdate>,
    hosts: Vec<HostFacts>,
    heartbeats: HashMap<HostId, EpochMs>,
    first_change: Option<Instant>,
    /// Rough encoded size of the changes, to keep each message small.
    bytes: usize,
}

impl Pending {
    fn add(&mut self, item: Item) {
        match item {
            Item::Agent(a) => {
                self.bytes += 320 + a.error_message.as_ref().map_or(0, String::len);
                self.agents.push(a);
                self.first_change.get_or_insert_with(Instant::now);
            }
            Item::Host(h) => {
                self.bytes += 320 + h.groups.iter().map(|g| g.as_str().len() + 3).sum::<usize>();
                self.hosts.push(h);
                self.first_change.get_or_insert_with(Instant::now);
            }
            Item::Heartbeat(h) => {
                let at = self.heartbeats.entry(h.host_id).or_insert(h.at);
                *at = (*at).max(h.at);
            }
        }
    }

    fn changes(&self) -> usize {
        self.agents.len() + self.hosts.len()
    }

    fn full(&self, config: &GatewayConfig) -> bool {
        self.changes() >= config.batch_max || self.bytes >= config.batch_max_bytes
    }
}

/// Runs until `shutdown` turns true (then flushes once more).
pub async fn run(
    mut rx: mpsc::Receiver<Item>,
    config: GatewayConfig,
    gateway_id: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let publisher = Publisher::new(config.bus.clone());
    let mut pending = Pending::default();
    let mut last_heartbeats = Instant::now();
    let mut tick = tokio::time::interval(config.flush_every.min(config.heartbeat_every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = *shutdown.borrow();
        if !stopping {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => {
                        pending.add(item);
                        // Drain what is already there without waiting.
                        while !pending.full(&config) {
                            match rx.try_recv() {
                                Ok(item) => pending.add(item),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {}
                _ = shutdown.changed() => {}
            }
        }
        let changes_due =
            pending.full(&config) || pending.first_change.is_some_and(|t| t.elapsed() >= config.flush_every);
        let beats_due = !pending.heartbeats.is_empty() && last_heartbeats.elapsed() >= config.heartbeat_every;
        if changes_due || beats_due || stopping {
            let include_beats = beats_due || stopping;
            if include_beats {
                last_heartbeats = Instant::now();
            }
            flush(&publisher, &config, &gateway_id, &mut pending, include_beats, &mut shutdown).await;
        }
        if stopping {
            return;
        }
    }
}

async fn flush(
    publisher: &Publisher,
    config: &GatewayConfig,
    gateway_id: &str,
    pending: &mut Pending,
    include_beats: bool,
    shutdown: &mut watch::Receiver<bool>,
) {
    let batch = ReportBatch {
        gateway: gateway_id.to_string(),
        sent_at: workers::now_ms(),
        agents: std::mem::take(&mut pending.agents),
        hosts: std::mem::take(&mut pending.hosts),
        heartbeats: if include_beats {
            pending.heartbeats.drain().map(|(host_id, at)| Heartbeat { host_id, at }).collect()
        } else {
            Vec::new()
        },
    };
    pending.first_change = None;
    pending.bytes = 0;
    if batch.is_empty() {
        return;
    }
    let payload = match serde_json::to_vec(&ReportMessage::ReportsV1(batch)) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "could not encode a report batch");
            return;
        }
    };
    let message = [Outgoing {
        exchange: config.bus.exchange(WorkQueue::Reports),
        routing_key: WorkQueue::Reports.as_str().into(),
        payload,
    }];
    let mut delays = backoff();
    loop {
        match publisher.publish(&message).await {
            Ok(()) => return,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "could not publish reports; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    // One last attempt was made; the workers learn the rest from the next pings.
                    return;
                }
            }
        }
    }
}
