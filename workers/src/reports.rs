//! The report consumer: stores what gateways saw and marks the stages it touched for
//! re-evaluation (deploy progress and state, admission of the next hosts).

use std::sync::Arc;

use schema::bus::{LiveEvent, ReportMessage};
use store::Store;

use crate::live::LiveEvents;
use crate::refresh::Refresher;
use bus::{DeliveryCtx, Disposition, Handler};

/// Applies report batches from the `reports` queue.
pub struct ReportHandler {
    store: Store,
    refresher: Arc<Refresher>,
    live: LiveEvents,
}

impl ReportHandler {
    /// A handler on a store; touched stages are handed to `refresher`.
    pub fn new(store: Store, refresher: Arc<Refresher>) -> Self {
        ReportHandler { store, refresher, live: LiveEvents::default() }
    }

    /// The same, telling the board about the records each batch wrote (one event per stage).
    pub fn with_live(self, live: LiveEvents) -> Self {
        ReportHandler { live, ..self }
    }
}

impl Handler for ReportHandler {
    async fn handle(&self, ctx: &DeliveryCtx<'_>) -> Disposition {
        let batch = match serde_json::from_slice::<ReportMessage>(&ctx.delivery.data) {
            Ok(ReportMessage::ReportsV1(batch)) => batch,
            Err(e) => return Disposition::Dead(format!("undecodable report: {e}")),
        };
        let applied = match self.store.apply_report_batch(&batch).await {
            Ok(a) => a,
            Err(e) if e.is_transient() => {
                return Disposition::RetryLater(format!("report batch from {}: {e}", batch.gateway));
            }
            Err(e) => return Disposition::Retry(format!("report batch from {}: {e}", batch.gateway)),
        };
        tracing::debug!(gateway = %batch.gateway, written = applied.written, skipped = applied.skipped,
            deleted = applied.deleted, stages = applied.stages.len(), "report batch applied");
        // The batch is stored; the stages it touched are re-evaluated by the refresher, once per
        // round however many batches touch them (a crash before that leaves it to the sweep).
        self.refresher.mark(&applied.stages);
        self.live.send(applied.live.into_iter().map(LiveEvent::AgentsV1));
        Disposition::Ack
    }
}
