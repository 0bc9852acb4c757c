//! Publishes what pings changed: agent records and host facts in batches (at most
//! `batch_max` items or about `batch_max_bytes`; records at latest after `flush_every`, since
//! rollouts wait for them, and host facts, which nothing waits for, at latest after
//! `heartbeat_every` unless records of their partition go sooner), one stream of
//! batches per report partition (a stage's records go to its partition, a host's facts and
//! heartbeats to the host's: `schema::partition`), and every
//! `heartbeat_every` the hosts that pinged since the last round and were not published within
//! `heartbeat_resolution` (found by a scan of the host map, so a ping costs nothing for its
//! heartbeat); each batch confirmed by the broker. While the broker is away the batch is
//! kept and retried; the bounded queue in front of it then fills, and pings stop marking their
//! changes as sent, so they are sent again later: nothing is lost and memory stays bounded.

use std::sync::Arc;
use std::time::Duration;

use bus::{Outgoing, Publisher, WorkQueue, backoff};
use schema::bus::{AgentUpdate, Heartbeat, HostFacts, ReportBatch, ReportMessage};
use schema::partition;
use schema::time::EpochMs;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Gateway, GatewayConfig};

/// Heartbeats in one message at most (about 80 bytes each once encoded).
const HEARTBEATS_PER_MESSAGE: usize = 5000;

/// Something a ping queued for the workers.
#[derive(Debug)]
pub enum Item {
    /// An agent record changed.
    Agent(AgentUpdate),
    /// A host's identity changed (or is new to this gateway).
    Host(HostFacts),
}

/// What waits for one partition.
#[derive(Default)]
struct Part {
    agents: Vec<AgentUpdate>,
    hosts: Vec<HostFacts>,
    /// When the oldest waiting record, and the oldest waiting host facts, came.
    first_agent: Option<Instant>,
    first_host: Option<Instant>,
    /// Rough encoded size of the changes, to keep each message small.
    bytes: usize,
}

impl Part {
    fn add(&mut self, item: Item) {
        match item {
            Item::Agent(a) => {
                self.bytes += 320 + a.error_message.as_ref().map_or(0, String::len);
                self.agents.push(a);
                self.first_agent.get_or_insert_with(Instant::now);
            }
            Item::Host(h) => {
                self.bytes += 320 + h.groups.iter().map(|g| g.as_str().len() + 3).sum::<usize>();
                self.hosts.push(h);
                self.first_host.get_or_insert_with(Instant::now);
            }
        }
    }

    fn changes(&self) -> usize {
        self.agents.len() + self.hosts.len()
    }

    fn full(&self, config: &GatewayConfig) -> bool {
        self.changes() >= config.batch_max || self.bytes >= config.batch_max_bytes
    }

    /// Records wait `flush_every` at most, host facts `heartbeat_every`: a gateway meeting
    /// hosts for the first time (a new gateway in a pool, a fleet moving over) sends their
    /// facts in a few large batches rather than a trickle of small ones in every partition.
    fn due(&self, config: &GatewayConfig) -> bool {
        self.full(config)
            || self.first_agent.is_some_and(|t| t.elapsed() >= config.flush_every)
            || self.first_host.is_some_and(|t| t.elapsed() >= config.heartbeat_every)
    }
}

/// What waits, by partition: each fills and is flushed on its own, so a busy partition's
/// batches are as large as without partitions.
struct Pending {
    parts: Vec<Part>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending { parts: (0..partition::REPORT_PARTITIONS).map(|_| Part::default()).collect() }
    }
}

impl Pending {
    fn add(&mut self, item: Item) {
        let p = match &item {
            Item::Agent(a) => partition::of_stage(&a.env_id),
            Item::Host(h) => partition::of_host(&h.host_id),
        };
        self.parts[usize::from(p)].add(item);
    }

    fn any_full(&self, config: &GatewayConfig) -> bool {
        self.parts.iter().any(|p| p.full(config))
    }

    fn any_due(&self, config: &GatewayConfig) -> bool {
        self.parts.iter().any(|p| p.due(config))
    }
}

/// Runs until `shutdown` turns true (then flushes once more).
pub async fn run(
    mut rx: mpsc::Receiver<Item>,
    gw: Arc<Gateway>,
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
                        while !pending.any_full(&config) {
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
        let changes_due = pending.any_due(&config);
        let beats_due = last_heartbeats.elapsed() >= config.heartbeat_every;
        if changes_due || beats_due || stopping {
            let mut beats = Vec::new();
            if beats_due || stopping {
                last_heartbeats = Instant::now();
                // A scan of every host: off the runtime's threads.
                let (gw, resolution) = (gw.clone(), config.heartbeat_resolution.as_millis() as EpochMs);
                beats = tokio::task::spawn_blocking(move || gw.hosts.heartbeats(resolution)).await.unwrap_or_default();
            }
            flush(&publisher, &config, &gateway_id, &mut pending, beats, stopping, &mut shutdown).await;
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
    beats: Vec<Heartbeat>,
    all: bool,
    shutdown: &mut watch::Receiver<bool>,
) {
    let batch = |agents, hosts, heartbeats| ReportBatch {
        gateway: gateway_id.to_string(),
        sent_at: schema::time::now_ms(),
        agents,
        hosts,
        heartbeats,
    };
    let mut batches = Vec::new();
    for (p, part) in pending.parts.iter_mut().enumerate() {
        if all || part.due(config) {
            let taken = std::mem::take(part);
            batches.push((p as u16, batch(taken.agents, taken.hosts, Vec::new())));
        }
    }
    // Heartbeats go in messages of their own, by the host's partition, each of a bounded size.
    let mut by_partition: Vec<Vec<Heartbeat>> = vec![Vec::new(); usize::from(partition::REPORT_PARTITIONS)];
    for beat in beats {
        by_partition[usize::from(partition::of_host(&beat.host_id))].push(beat);
    }
    for (p, mut beats) in by_partition.into_iter().enumerate() {
        while !beats.is_empty() {
            let rest = beats.split_off(beats.len().saturating_sub(HEARTBEATS_PER_MESSAGE));
            batches.push((p as u16, batch(Vec::new(), Vec::new(), rest)));
        }
    }
    let mut message = Vec::with_capacity(batches.len());
    for (p, batch) in batches.into_iter().filter(|(_, b)| !b.is_empty()) {
        match serde_json::to_vec(&ReportMessage::ReportsV1(batch)) {
            Ok(payload) => message.push(Outgoing {
                exchange: config.bus.exchange(WorkQueue::Reports),
                routing_key: WorkQueue::Reports.partition(p),
                payload,
            }),
            Err(e) => tracing::error!(error = %e, "could not encode a report batch"),
        }
    }
    if message.is_empty() {
        return;
    }
    let mut delays = backoff();
    loop {
        match publisher.publish(&message).await {
            Ok(()) => {
                crate::metrics::reports_published(message.len());
                return;
            }
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

#[cfg(test)]
mod tests {
    use schema::{EnvId, HostId, HostName};

    use super::*;

    fn update(host: &str, env: &str) -> Item {
        Item::Agent(AgentUpdate {
            host_id: HostId::parse(host).unwrap(),
            host_name: HostName::parse(host).unwrap(),
            env_id: EnvId::parse(env).unwrap(),
            at: 1,
            record: None,
            control_seq: 0,
            error_message: None,
        })
    }

    fn facts(host: &str) -> Item {
        Item::Host(HostFacts {
            host_id: HostId::parse(host).unwrap(),
            host_name: HostName::parse(host).unwrap(),
            ip: None,
            groups: Vec::new(),
            agent_version: "test".into(),
            autoscaling_group: None,
            availability_zone: None,
            tags: Default::default(),
            seen_at: 1,
        })
    }

    #[test]
    fn a_stages_records_wait_in_its_partition_and_a_hosts_facts_in_the_hosts() {
        let mut pending = Pending::default();
        let env = "EnvIdWeb000000000000aa";
        let stage_part = usize::from(partition::of_stage(&EnvId::parse(env).unwrap()));
        for i in 0..50 {
            pending.add(update(&format!("host-{i}"), env));
        }
        // Every record of one stage, whatever its host, in the stage's partition.
        assert_eq!(pending.parts[stage_part].agents.len(), 50);
        assert_eq!(pending.parts.iter().map(|p| p.agents.len()).sum::<usize>(), 50);
        for i in 0..50 {
            let host = format!("host-{i}");
            pending.add(facts(&host));
            let host_part = usize::from(partition::of_host(&HostId::parse(host.as_str()).unwrap()));
            assert!(pending.parts[host_part].hosts.iter().any(|h| h.host_id.as_str() == host));
        }
        assert!(pending.parts.iter().filter(|p| !p.hosts.is_empty()).count() > 1, "hosts spread over partitions");
    }

    #[test]
    fn a_partition_fills_and_is_due_on_its_own() {
        let mut config = GatewayConfig::new(bus::BusConfig::new("amqp://127.0.0.1:1/%2f", "test"));
        config.batch_max = 10;
        config.flush_every = Duration::from_secs(3600);
        let mut pending = Pending::default();
        let env = "EnvIdWeb000000000000aa";
        let stage_part = usize::from(partition::of_stage(&EnvId::parse(env).unwrap()));
        for i in 0..9 {
            pending.add(update(&format!("host-{i}"), env));
        }
        assert!(!pending.any_full(&config) && !pending.any_due(&config));
        pending.add(update("host-9", env));
        assert!(pending.any_full(&config));
        let due: Vec<usize> = (0..pending.parts.len()).filter(|p| pending.parts[*p].due(&config)).collect();
        assert_eq!(due, vec![stage_part], "only the full partition is due");
    }

    #[test]
    fn host_facts_wait_longer_than_records_and_ride_along_with_them() {
        let mut config = GatewayConfig::new(bus::BusConfig::new("amqp://127.0.0.1:1/%2f", "test"));
        config.flush_every = Duration::ZERO;
        config.heartbeat_every = Duration::from_secs(3600);
        let mut pending = Pending::default();
        pending.add(facts("host-1"));
        assert!(!pending.any_due(&config), "facts alone wait for the heartbeat round");
        let p = usize::from(partition::of_host(&HostId::parse("host-1").unwrap()));
        let env = (0..1000)
            .map(|i| format!("EnvIdWeb{i:014}"))
            .find(|e| usize::from(partition::of_stage(&EnvId::parse(e.as_str()).unwrap())) == p)
            .unwrap();
        pending.add(update("host-2", &env));
        assert!(pending.parts[p].due(&config), "a record is due at once, and takes the facts with it");
        config.flush_every = Duration::from_secs(3600);
        config.heartbeat_every = Duration::ZERO;
        assert!(pending.parts[p].due(&config), "facts are due after the heartbeat interval");
    }
}
