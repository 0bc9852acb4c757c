//! Consuming the partitions of a work queue (`schema::partition`): the partitions this process
//! is assigned, each on a channel of its own, its messages handled one after the other in
//! queue order.
//!
//! Each partition queue has a single active consumer (`x-single-active-consumer`), so while
//! two processes disagree on who owns a partition (one joined, one is leaving) the broker still
//! delivers to one of them only; the other waits, registered, and takes over when the first
//! lets go. Letting go is orderly: the message in hand is finished and acknowledged (or left
//! unacknowledged when its handler waits on a dependency), then the channel closes, and the
//! broker puts what it had sent ahead but was not acknowledged back at the head of the queue
//! for the next owner. So a partition's messages are neither lost nor reordered when owners
//! change, and never handled by two processes at once.
//!
//! A failure is retried in place, not through the delay queue (that would put the message
//! behind later ones): a dependency away is waited for with backoff, for as long as it takes;
//! a message failing for its content is tried [`MAX_ATTEMPTS`] times, then dead-lettered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::connection::{BusError, connect_with_retry, within};
use crate::consume::{DeliveryCtx, Disposition, Handler, MAX_ATTEMPTS, RETRY_DELAY, attempt_of, forward_copy};
use crate::topology::{BusConfig, WorkQueue, declare_topology};

/// Messages the broker sends a partition's consumer ahead of the one in hand.
const PREFETCH: u16 = 2;

/// Which partitions of a queue this process should consume; sent by whoever decides (the
/// workers' membership), read by [`consume_partitions`].
pub type Assignment = watch::Receiver<BTreeSet<u16>>;

/// Consumes the partitions of `queue` that `assigned` names, until `shutdown` turns true:
/// partitions added are subscribed to, partitions removed are let go of (see the module's
/// doc), at most `concurrency` messages handled at once over all partitions. Reconnects with
/// backoff, and re-subscribes to what is assigned then.
pub async fn consume_partitions<H: Handler>(
    cfg: BusConfig,
    queue: WorkQueue,
    handler: Arc<H>,
    concurrency: usize,
    mut assigned: Assignment,
    mut shutdown: watch::Receiver<bool>,
) {
    crate::metrics::init(queue);
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    while let Some(conn) = connect_with_retry(&cfg, &mut shutdown).await {
        let ctx = Session { cfg: &cfg, queue, handler: &handler, permits: &permits };
        let mut tasks = JoinSet::new();
        let outcome = ctx.run(&conn, &mut tasks, &mut assigned, &mut shutdown).await;
        crate::metrics::partitions(queue, 0);
        // The connection closes before the partitions' tasks are dropped: closing it hands each
        // partition back in one step, what it held first. (A consumer dropped first would be
        // cancelled before its channel closed, and the next owner could get later messages
        // before those that come back.)
        let _ = within(cfg.timeout, "closing", conn.close(200, "bye".into())).await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(queue = queue.as_str(), error = %e, "partition consumer lost its connection; reconnecting")
            }
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Session<'a, H> {
    cfg: &'a BusConfig,
    queue: WorkQueue,
    handler: &'a Arc<H>,
    permits: &'a Arc<Semaphore>,
}

impl<H: Handler> Session<'_, H> {
    /// Follows the assignment on one connection. `Ok` when shut down; an error when the
    /// connection or a partition's channel failed (everything is then subscribed again).
    async fn run(
        &self,
        conn: &Connection,
        tasks: &mut JoinSet<(u16, Result<(), BusError>)>,
        assigned: &mut Assignment,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), BusError> {
        within(self.cfg.timeout, "declaring the topology", async {
            let ch = conn.create_channel().await?;
            declare_topology(&ch, self.cfg).await?;
            ch.close(200, "declared".into()).await?;
            Ok::<_, BusError>(())
        })
        .await?;
        // Partitions consumed (their release switch) and those being let go of.
        let mut held: BTreeMap<u16, watch::Sender<bool>> = BTreeMap::new();
        let mut leaving: BTreeSet<u16> = BTreeSet::new();
        loop {
            let stopping = *shutdown.borrow();
            let want = if stopping { BTreeSet::new() } else { assigned.borrow_and_update().clone() };
            for (p, release) in held.iter().filter(|(p, _)| !want.contains(*p)) {
                let _ = release.send(true);
                leaving.insert(*p);
            }
            held.retain(|p, _| want.contains(p));
            // A partition let go of is subscribed to again only once its last consumer ended.
            let new: Vec<u16> =
                want.iter().copied().filter(|p| !held.contains_key(p) && !leaving.contains(p)).collect();
            for p in new {
                let (ch, consumer) = self.open(conn, p).await?;
                let (release, released) = watch::channel(false);
                held.insert(p, release);
                let part = Partition {
                    p,
                    cfg: self.cfg.clone(),
                    queue: self.queue,
                    handler: self.handler.clone(),
                    permits: self.permits.clone(),
                };
                tasks.spawn(async move { (part.p, part.drain(ch, consumer, released).await) });
            }
            crate::metrics::partitions(self.queue, held.len());
            if stopping && tasks.is_empty() {
                return Ok(());
            }
            tokio::select! {
                changed = assigned.changed(), if !stopping => {
                    if changed.is_err() {
                        // Nobody decides any more: let everything go, as at shutdown.
                        return self.release_all(&mut held, tasks).await;
                    }
                }
                _ = shutdown.changed(), if !stopping => {}
                ended = tasks.join_next(), if !tasks.is_empty() => match ended {
                    Some(Ok((p, Ok(())))) => {
                        leaving.remove(&p);
                    }
                    Some(Ok((p, Err(e)))) => {
                        tracing::warn!(queue = self.queue.as_str(), partition = p, error = %e, "partition consumer failed");
                        return Err(e);
                    }
                    Some(Err(e)) => return Err(BusError::Unavailable(format!("partition consumer ended: {e}"))),
                    None => {}
                },
            }
        }
    }

    async fn release_all(
        &self,
        held: &mut BTreeMap<u16, watch::Sender<bool>>,
        tasks: &mut JoinSet<(u16, Result<(), BusError>)>,
    ) -> Result<(), BusError> {
        for release in held.values() {
            let _ = release.send(true);
        }
        held.clear();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// A channel consuming partition `p` with manual acks and [`PREFETCH`], confirms on for its
    /// dead letters.
    async fn open(&self, conn: &Connection, p: u16) -> Result<(Channel, Consumer), BusError> {
        let name = self.cfg.name(&self.queue.partition(p));
        within(self.cfg.timeout, "subscribing to a partition", async {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            let consumer = ch
                .basic_consume(name.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                .await?;
            Ok::<_, BusError>((ch, consumer))
        })
        .await
    }
}

struct Partition<H> {
    p: u16,
    cfg: BusConfig,
    queue: WorkQueue,
    handler: Arc<H>,
    permits: Arc<Semaphore>,
}

/// Whether a delivery was settled, or left for the partition's next owner.
enum Settled {
    Yes,
    LeftForNextOwner,
}

impl<H: Handler> Partition<H> {
    /// Handles the partition's deliveries in order until `released` turns true, then closes
    /// the channel, which hands what was not acknowledged back to the queue.
    async fn drain(
        &self,
        ch: Channel,
        mut consumer: Consumer,
        mut released: watch::Receiver<bool>,
    ) -> Result<(), BusError> {
        tracing::debug!(queue = self.queue.as_str(), partition = self.p, "partition subscribed");
        loop {
            let delivery = tokio::select! {
                biased;
                _ = released.wait_for(|r| *r) => break,
                d = consumer.next() => d,
            };
            match delivery {
                Some(Ok(d)) => match self.settle(&ch, d, &mut released).await? {
                    Settled::Yes => {}
                    Settled::LeftForNextOwner => break,
                },
                Some(Err(e)) => return Err(e.into()),
                None => return Err(BusError::Unavailable("the broker cancelled the consumer".into())),
            }
        }
        let _ = within(self.cfg.timeout, "closing a channel", ch.close(200, "partition released".into())).await;
        tracing::debug!(queue = self.queue.as_str(), partition = self.p, "partition let go of");
        Ok(())
    }

    async fn settle(
        &self,
        ch: &Channel,
        d: Delivery,
        released: &mut watch::Receiver<bool>,
    ) -> Result<Settled, BusError> {
        let mut attempt = attempt_of(&d);
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(RETRY_DELAY)
            .with_jitter()
            .without_max_times()
            .build();
        let dead_reason = loop {
            let disposition = {
                let _permit = self.permits.acquire().await;
                let started = std::time::Instant::now();
                let disposition = self.handler.handle(&DeliveryCtx { delivery: &d, channel: ch, attempt }).await;
                crate::metrics::message_done(self.queue, &disposition, started.elapsed());
                disposition
            };
            match disposition {
                Disposition::Ack => break None,
                Disposition::RetryLater(reason) => {
                    tracing::warn!(
                        queue = self.queue.as_str(),
                        partition = self.p,
                        attempt,
                        reason,
                        "message failed on a dependency; will retry in place"
                    );
                }
                Disposition::Retry(reason) if attempt < MAX_ATTEMPTS => {
                    tracing::warn!(
                        queue = self.queue.as_str(),
                        partition = self.p,
                        attempt,
                        reason,
                        "message failed; will retry in place"
                    );
                    attempt += 1;
                }
                Disposition::Retry(reason) | Disposition::Dead(reason) => {
                    tracing::error!(
                        queue = self.queue.as_str(),
                        partition = self.p,
                        attempt,
                        reason,
                        "message dead-lettered"
                    );
                    break Some(reason);
                }
            }
            let delay = delays.next().unwrap_or(RETRY_DELAY);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // Unacknowledged, it goes back to the head of the queue for the next owner.
                _ = released.wait_for(|r| *r) => return Ok(Settled::LeftForNextOwner),
            }
        };
        if let Some(reason) = dead_reason {
            forward_copy(ch, &self.cfg, self.queue, &d, &self.cfg.name("dead"), attempt, Some(&reason)).await?;
        }
        within(self.cfg.timeout, "acknowledging", d.acker.ack(BasicAckOptions::default())).await?;
        Ok(Settled::Yes)
    }
}
