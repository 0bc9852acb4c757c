//! `webhook-resend`: a PENDING webhook delivery that nobody holds and that has not moved for
//! ten minutes lost its queue message (dead-lettered after a store error, a purged queue):
//! it gets a new one. Deliveries are at least once; receivers dedupe on the delivery id.

use super::{Job, JobCtx, JobFuture};

/// The job's name.
pub const NAME: &str = "webhook-resend";

/// How long a PENDING delivery may stay untouched before it is sent again (well past its
/// retries and lease).
const STALE_MS: i64 = 10 * 60 * 1000;

/// The job.
pub struct WebhookResend;

impl Job for WebhookResend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let mut total = 0;
            loop {
                let n = ctx.store.resend_stale_webhook_deliveries(ctx.now, ctx.now - STALE_MS, 500).await?;
                total += n;
                if n < 500 || ctx.stopping() {
                    break;
                }
            }
            Ok(format!("{total} stale deliveries sent again"))
        })
    }
}
