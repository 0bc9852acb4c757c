//! `deploy-state`: re-evaluates every stage with an active deploy, so that what depends on the
//! clock moves even when no agent reports: a deploy that stopped progressing turns FAILING
//! (`stuckThreshold`), a schedule's cooldown ends, a verdict that did not come in time
//! rejects the deploy, and waiting hosts are admitted. Teletraan's StateTransitioner. A stage
//! another worker is evaluating right now is skipped, not waited for.

use super::{Job, JobCtx, JobFuture};

/// The job's name.
pub const NAME: &str = "deploy-state";

/// The job.
pub struct DeployState;

impl Job for DeployState {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let stages = ctx.store.stages_with_active_deploys().await?;
            let (mut done, mut busy) = (0, 0);
            for env_id in &stages {
                if ctx.stopping() {
                    break;
                }
                if ctx.store.refresh_stage_if_free(env_id, schema::time::now_ms()).await? {
                    done += 1;
                } else {
                    busy += 1;
                }
            }
            Ok(format!("evaluated {done} of {} stages ({busy} busy elsewhere)", stages.len()))
        })
    }
}
