//! Live events for the deploy board: what workers publish after their commits
//! (`schema::bus::LiveEvent` on the `events` topic, routing keys `live.#`), fanned out in
//! this process to every subscriber.
//!
//! A [`Hub`] holds a broadcast of [`Update`]s. Its feed ([`Hub::spawn_feed`]) binds a queue of
//! its own to the broker and publishes into it; `GET /v1/events` (`rest/events.rs`) turns a
//! [`Subscription`] into server-sent events, and anything in the process can subscribe the
//! same way. Nothing is stored and nothing is replayed: a subscriber that falls behind, or a
//! feed that lost its connection, gets an [`Update::Resync`], which tells the client to reload
//! what it shows.

mod feed;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bus::BusConfig;
use schema::bus::LiveEvent;
use schema::{EnvName, StageName};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

/// Updates a subscriber may fall behind by before it is told to resync.
pub const BACKLOG: usize = 1024;

/// What subscribers receive.
// Always shared behind an `Arc` (one per update, whatever the subscribers): the size of the
// larger variant costs nothing per subscriber.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// A live event, numbered.
    Live(LiveUpdate),
    /// Events may have been lost: reload what is shown, then follow the events again.
    Resync {
        /// Why (for people and logs).
        reason: String,
    },
}

/// A live event as the hub hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveUpdate {
    /// Increasing within this process (the SSE `id`); restarts with the process.
    pub id: u64,
    /// The event.
    pub event: LiveEvent,
    /// The JSON of the event's fields, without its `kind` (the SSE `data`), made once for
    /// every subscriber.
    data: String,
}

impl LiveUpdate {
    /// The JSON of the event's fields, without its `kind`: `{"envId", "envName", "stageName",
    /// "agents": […]}` or `{…, "deploy": {…}}`.
    pub fn data(&self) -> &str {
        &self.data
    }
}

/// Which events a subscriber wants; resyncs reach every subscriber.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    env: Option<EnvName>,
    stage: Option<StageName>,
}

impl Filter {
    /// Every event.
    pub fn everything() -> Filter {
        Filter::default()
    }

    /// The events of every stage of an environment.
    pub fn env(env: EnvName) -> Filter {
        Filter { env: Some(env), stage: None }
    }

    /// The events of one stage.
    pub fn stage(env: EnvName, stage: StageName) -> Filter {
        Filter { env: Some(env), stage: Some(stage) }
    }

    /// Whether the subscriber wants `update`.
    pub fn wants(&self, update: &Update) -> bool {
        match update {
            Update::Resync { .. } => true,
            Update::Live(live) => {
                self.env.as_ref().is_none_or(|env| live.event.env_name() == env)
                    && self.stage.as_ref().is_none_or(|stage| live.event.stage_name() == stage)
            }
        }
    }
}

struct Inner {
    tx: broadcast::Sender<Arc<Update>>,
    seq: AtomicU64,
    fed: AtomicBool,
    closed: watch::Sender<bool>,
}

/// The fan-out of live events in this process. Cheap to clone (clones share it). The default
/// hub is one no feed publishes into: its subscribers wait for events that never come, which
/// is what tests and processes without a broker need.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Default for Hub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(BACKLOG);
        let (closed, _) = watch::channel(false);
        Hub { inner: Arc::new(Inner { tx, seq: AtomicU64::new(0), fed: AtomicBool::new(false), closed }) }
    }
}

impl Hub {
    /// A subscription to the events `filter` wants, from now on.
    pub fn subscribe(&self, filter: Filter) -> Subscription {
        Subscription { rx: self.inner.tx.subscribe(), closed: self.inner.closed.subscribe(), filter }
    }

    /// Hands `event` to every subscriber (the feed does it for each event from the broker; a
    /// test or an in-process producer may too). Returns its id.
    pub fn publish(&self, event: LiveEvent) -> u64 {
        let id = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let data = match &event {
            LiveEvent::AgentsV1(agents) => serde_json::to_string(agents),
            LiveEvent::DeployV1(deploy) => serde_json::to_string(deploy),
        };
        match data {
            Ok(data) => self.send(Update::Live(LiveUpdate { id, event, data })),
            // Plain data always serializes; were it not to, the clients must not miss it.
            Err(e) => self.resync(format!("an event could not be encoded: {e}")),
        }
        id
    }

    /// Tells every subscriber to reload what it shows.
    pub fn resync(&self, reason: impl Into<String>) {
        self.send(Update::Resync { reason: reason.into() });
    }

    fn send(&self, update: Update) {
        // No subscriber is not an error: nobody is watching.
        let _ = self.inner.tx.send(Arc::new(update));
    }

    /// Ends every subscription, now and to come (at shutdown, so that open streams end and
    /// the server can stop).
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Whether the feed is bound to the broker now, so that events published from now on
    /// reach the subscribers.
    pub fn is_fed(&self) -> bool {
        self.inner.fed.load(Ordering::Acquire)
    }

    fn set_fed(&self, fed: bool) {
        self.inner.fed.store(fed, Ordering::Release);
    }

    /// Feeds the hub from the broker's `events` exchange until `shutdown` turns true, then
    /// closes it: an exclusive queue bound with `live.#`, bound again with backoff after a
    /// lost connection, with a resync for everyone each time (events may have been lost).
    pub fn spawn_feed(&self, bus: BusConfig, shutdown: watch::Receiver<bool>, tasks: &mut JoinSet<()>) {
        tasks.spawn(feed::run(self.clone(), bus, shutdown));
    }
}

/// A subscriber's view of the hub.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Update>>,
    closed: watch::Receiver<bool>,
    filter: Filter,
}

impl Subscription {
    /// The next update the filter wants: a [`Update::Resync`] when this subscriber fell more
    /// than [`BACKLOG`] updates behind. `None` once the hub is closed.
    pub async fn next(&mut self) -> Option<Arc<Update>> {
        loop {
            let received = tokio::select! {
                biased;
                _ = self.closed.wait_for(|closed| *closed) => return None,
                r = self.rx.recv() => r,
            };
            match received {
                Ok(update) if self.filter.wants(&update) => return Some(update),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(Arc::new(Update::Resync {
                        reason: format!("this stream fell behind by {missed} events"),
                    }));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use schema::bus::{AgentView, StageAgents};
    use schema::{AgentState, AgentStatus, DeployId, DeployStage, EnvId, HostId, HostName};

    use super::*;

    fn agents(env: &str, stage: &str) -> LiveEvent {
        LiveEvent::AgentsV1(StageAgents {
            env_id: EnvId::parse(format!("{env}_{stage}")).unwrap(),
            env_name: EnvName::parse(env).unwrap(),
            stage_name: StageName::parse(stage).unwrap(),
            agents: vec![AgentView {
                host_id: HostId::parse("i-1").unwrap(),
                host_name: HostName::parse("h1").unwrap(),
                deploy_id: DeployId::parse("d1").unwrap(),
                deploy_stage: DeployStage::PreDownload,
                state: AgentState::Normal,
                status: AgentStatus::Unknown,
                last_err_no: 0,
                last_update_date: 1,
                removed: false,
            }],
        })
    }

    fn stage(env: &str, stage: &str) -> Filter {
        Filter::stage(EnvName::parse(env).unwrap(), StageName::parse(stage).unwrap())
    }

    async fn next_live(sub: &mut Subscription) -> LiveUpdate {
        match sub.next().await.as_deref() {
            Some(Update::Live(live)) => live.clone(),
            other => panic!("expected a live event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_its_stage_only_and_every_resync() {
        let hub = Hub::default();
        let mut prod = hub.subscribe(stage("web", "prod"));
        let mut web = hub.subscribe(Filter::env(EnvName::parse("web").unwrap()));
        hub.publish(agents("web", "canary"));
        hub.publish(agents("api", "prod"));
        let id = hub.publish(agents("web", "prod"));
        hub.resync("test");

        let live = next_live(&mut prod).await;
        assert_eq!((live.id, live.event.stage_name().as_str()), (id, "prod"));
        assert!(live.data().starts_with(r#"{"envId":"web_prod","envName":"web","stageName":"prod","agents":[{"#));
        assert_eq!(*prod.next().await.unwrap(), Update::Resync { reason: "test".into() });
        assert_eq!(next_live(&mut web).await.event.stage_name().as_str(), "canary");
        assert_eq!(next_live(&mut web).await.id, id);
    }

    #[tokio::test]
    async fn ids_increase() {
        let hub = Hub::default();
        let first = hub.publish(agents("web", "prod"));
        assert_eq!(hub.publish(agents("web", "prod")), first + 1);
    }

    #[tokio::test]
    async fn a_subscriber_that_fell_behind_is_told_to_resync_then_follows_again() {
        let hub = Hub::default();
        let mut sub = hub.subscribe(Filter::everything());
        for _ in 0..BACKLOG + 5 {
            hub.publish(agents("web", "prod"));
        }
        match sub.next().await.as_deref() {
            Some(Update::Resync { reason }) => assert!(reason.contains("fell behind by 5"), "{reason}"),
            other => panic!("expected a resync, got {other:?}"),
        }
        next_live(&mut sub).await;
    }

    #[tokio::test]
    async fn closing_the_hub_ends_every_subscription() {
        let hub = Hub::default();
        let mut sub = hub.subscribe(Filter::everything());
        let waiting = tokio::spawn(async move { sub.next().await });
        hub.close();
        assert_eq!(waiting.await.unwrap(), None);
        assert!(hub.subscribe(Filter::everything()).next().await.is_none(), "a late subscriber ends at once");
    }
}
