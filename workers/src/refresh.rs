//! Stage re-evaluation after reports, coalesced: report batches mark the stages they touched,
//! and one task re-evaluates each marked stage (deploy state, then admission) as soon as it
//! can, once per round however many batches touched it. A stage another worker is evaluating
//! stays marked and is taken again next round, so no change is left unseen.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use schema::EnvId;
use store::Store;
use tokio::sync::{Notify, watch};

use schema::time::now_ms;

use crate::live::LiveEvents;
use crate::metrics;

/// Pause between rounds while stages remain marked (busy elsewhere or failing).
const RETRY: Duration = Duration::from_millis(20);

/// The stages waiting to be re-evaluated.
#[derive(Default)]
pub struct Refresher {
    dirty: Mutex<BTreeSet<EnvId>>,
    wake: Notify,
    live: LiveEvents,
}

impl Refresher {
    /// The same, telling the board each re-evaluated stage's deploy and the hosts it admitted.
    pub fn with_live(self, live: LiveEvents) -> Self {
        Refresher { live, ..self }
    }

    /// Marks stages whose agent records changed.
    pub fn mark<'a>(&self, stages: impl IntoIterator<Item = &'a EnvId>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        let before = dirty.len();
        dirty.extend(stages.into_iter().cloned());
        if dirty.len() > before {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> BTreeSet<EnvId> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stages marked now.
    pub fn pending(&self) -> usize {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Re-evaluates marked stages until `shutdown` turns true.
    pub async fn run(&self, store: Store, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            if self.refresh_marked(&store).await {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = shutdown.changed() => {}
                }
            } else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// One round of [`Refresher::run`]: re-evaluates each stage marked now, once; a stage
    /// another worker holds, or whose evaluation failed, stays marked. Returns whether any did.
    pub async fn refresh_marked(&self, store: &Store) -> bool {
        let mut again = Vec::new();
        for env_id in self.take() {
            match store.refresh_stage_if_free(&env_id, now_ms()).await {
                Ok(Some(refreshed)) => {
                    metrics::admitted(refreshed.admitted.as_ref().map_or(0, |a| a.agents.len()));
                    self.live.send(refreshed.into_live());
                }
                // Another worker holds the stage: it may have counted before our change
                // committed, so look again shortly.
                Ok(None) => again.push(env_id),
                Err(e) => {
                    tracing::warn!(env_id = %env_id, error = %e, "stage re-evaluation failed; will retry");
                    again.push(env_id);
                }
            }
        }
        self.mark(&again);
        !again.is_empty()
    }
}
