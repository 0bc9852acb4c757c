//! The report consumer: stores what gateways saw, then re-evaluates the stages it touched
//! (deploy progress and state, admission of the next hosts).

use schema::bus::ReportMessage;
use store::Store;

use crate::bus::{DeliveryCtx, Disposition, Handler};
use crate::now_ms;

/// Applies report batches from the `reports` queue.
pub struct ReportHandler {
    store: Store,
}

impl ReportHandler {
    /// A handler on a store.
    pub fn new(store: Store) -> Self {
        ReportHandler { store }
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
        // Applying the batch again is harmless, so a failure here retries the whole message.
        for env_id in &applied.stages {
            match self.store.refresh_stage(env_id, now_ms()).await {
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    return Disposition::RetryLater(format!("refresh of stage {env_id}: {e}"));
                }
                Err(e) => return Disposition::Retry(format!("refresh of stage {env_id}: {e}")),
            }
        }
        Disposition::Ack
    }
}
