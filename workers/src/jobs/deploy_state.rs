//! `deploy-state`: re-evaluates every stage with an active deploy, so that what depends on the
//! clock moves even when no agent reports: a deploy that stopped progressing turns FAILING
//! (`stuckThreshold`), a schedule's cooldown ends, a verdict that did not come in time
//! rejects the deploy, and waiting hosts are admitted. Teletraan's StateTransitioner. A stage
//! another worker is evaluating right now is skipped, not waited for. The board is told of a
//! deploy this moved and of the hosts it admitted; a stage where nothing moved sends nothing.

use super::{Job, JobCtx, JobFuture};
use crate::live::LiveEvents;

/// The job's name.
pub const NAME: &str = "deploy-state";

/// The job, telling the board what it changed.
pub struct DeployState(pub LiveEvents);

impl Job for DeployState {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let stages = ctx.store.stages_with_active_deploys().await?;
            let (mut done, mut busy, mut failed) = (0, 0, super::Failures::default());
            for env_id in &stages {
                if ctx.stopping() {
                    break;
                }
                // One stage failing does not starve the others.
                match ctx.store.refresh_stage_if_free(env_id, schema::time::now_ms()).await {
                    Ok(Some(refreshed)) => {
                        done += 1;
                        if refreshed.deploy_changed || refreshed.admitted.is_some() {
                            self.0.send(refreshed.into_live());
                        }
                    }
                    Ok(None) => busy += 1,
                    Err(e) => failed.add(NAME, env_id, e),
                }
            }
            failed.into_result(format!("evaluated {done} of {} stages ({busy} busy elsewhere)", stages.len()))
        })
    }
}
