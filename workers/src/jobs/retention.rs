//! Retention jobs: `deploy-retention` (deploys beyond each stage's `maxDeployNum` and older
//! than its `maxDeployDay`), `build-retention` (unreferenced builds beyond a count and an age
//! per build name), `record-retention` (finished commands, settled webhook deliveries, old job
//! runs, errors of records that are gone, hosts' step changes). Each deletes in bounded batches; what is current or referenced stays (see
//! `store::retention`).

use super::{Job, JobCtx, JobFuture};

/// Name of the deploy retention job.
pub const DEPLOYS: &str = "deploy-retention";
/// Name of the build retention job.
pub const BUILDS: &str = "build-retention";
/// Name of the bookkeeping retention job.
pub const RECORDS: &str = "record-retention";

/// How much history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Builds kept per build name at least (Teletraan: 1000).
    pub builds_per_name: i64,
    /// Builds younger than this many days are kept whatever their number (Teletraan: 180).
    pub build_days: i64,
    /// Finished commands are kept this many days.
    pub command_days: i64,
    /// Job runs are kept this many days.
    pub job_run_days: i64,
    /// The audit history is kept this many days.
    pub history_days: i64,
    /// The log of hosts' step changes is kept this many days.
    pub step_days: i64,
    /// Rows deleted per transaction.
    pub batch: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            builds_per_name: 1000,
            build_days: 180,
            command_days: 30,
            job_run_days: 7,
            history_days: 365,
            step_days: 30,
            batch: 1000,
        }
    }
}

/// `deploy-retention`.
pub struct DeployRetention(pub RetentionConfig);

impl Job for DeployRetention {
    fn name(&self) -> &'static str {
        DEPLOYS
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let n = ctx.store.purge_deploys(ctx.now, self.0.batch, || ctx.stopping()).await?;
            Ok(format!("{n} deploys deleted"))
        })
    }
}

/// `build-retention`.
pub struct BuildRetention(pub RetentionConfig);

impl Job for BuildRetention {
    fn name(&self) -> &'static str {
        BUILDS
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let c = &self.0;
            let n =
                ctx.store.purge_builds(ctx.now, c.builds_per_name, c.build_days, c.batch, || ctx.stopping()).await?;
            Ok(format!("{n} builds deleted"))
        })
    }
}

/// `record-retention`.
pub struct RecordRetention(pub RetentionConfig);

impl Job for RecordRetention {
    fn name(&self) -> &'static str {
        RECORDS
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let c = &self.0;
            let n = ctx
                .store
                .purge_records(ctx.now, c.command_days, c.job_run_days, c.history_days, c.batch, || ctx.stopping())
                .await?;
            let steps = ctx.store.purge_steps(ctx.now, c.step_days, c.batch, || ctx.stopping()).await?;
            let n = n + steps;
            Ok(format!("{n} rows deleted"))
        })
    }
}
