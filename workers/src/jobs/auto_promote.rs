//! `auto-promote`: for every stage on AUTO promotion, deploys what its predecessor offers (new
//! builds, or accepted deploys of another stage) when the rule says so, and applies the fail
//! policy when the stage's current deploy failed. Teletraan's AutoPromoter; the rule is
//! `schema::rules::promote`. A stage another worker holds is left for the next round.

use schema::rules::promote::DEFAULT_BUFFER_MS;
use store::PromoteOutcome;

use super::{Job, JobCtx, JobFuture};

/// The job's name.
pub const NAME: &str = "auto-promote";

/// The job.
pub struct AutoPromote;

impl Job for AutoPromote {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let stages = ctx.store.auto_promoted_stages().await?;
            let (mut promoted, mut disabled, mut busy, mut failed) = (0, 0, 0, super::Failures::default());
            for env_id in &stages {
                if ctx.stopping() {
                    break;
                }
                // Each stage on its own clock reading (a round over many stages takes time), and
                // one stage failing does not starve the others.
                let round = ctx.store.auto_promote(env_id, schema::time::now_ms(), DEFAULT_BUFFER_MS);
                let (outcome, admitted) = store::counting_admissions(round).await;
                if outcome.is_ok() {
                    // The first hosts of a promotion, or of a rollback after a failure.
                    crate::metrics::admitted(admitted);
                }
                match outcome {
                    Ok(PromoteOutcome::Promoted(_)) => promoted += 1,
                    Ok(PromoteOutcome::Disabled | PromoteOutcome::RolledBack(_)) => disabled += 1,
                    Ok(PromoteOutcome::Busy) => busy += 1,
                    Ok(PromoteOutcome::Skipped | PromoteOutcome::Waiting | PromoteOutcome::NothingToDo) => {}
                    Err(e) => failed.add(NAME, env_id, e),
                }
            }
            failed.into_result(format!(
                "{} stages on AUTO: {promoted} promoted, {disabled} switched to MANUAL after a failure, {busy} busy",
                stages.len()
            ))
        })
    }
}
