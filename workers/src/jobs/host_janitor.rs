//! `host-janitor`: hosts that stopped pinging. Silent for `min_stale` (150 s): their records
//! become UNREACHABLE and stop holding a slot of the cap, so a rollout goes on without them.
//! Silent for `max_stale` (600 s): the host is forgotten (records, group memberships, tags;
//! a name in HOST capacity stays listed as missing). Marked for termination, stopped and silent
//! for `min_stale`: forgotten too. Teletraan's AgentJanitor and HostTerminator. A host that
//! pings again is known again and deployed like any other.

use std::time::Duration;

use schema::time::EpochMs;

use super::{Job, JobCtx, JobFuture};

/// The job's name.
pub const NAME: &str = "host-janitor";

/// When hosts count as silent and gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JanitorConfig {
    /// Silence after which a host's records are UNREACHABLE (`minStaleHostSeconds`).
    pub min_stale: Duration,
    /// Silence after which a host is forgotten (`maxStaleHostSeconds`).
    pub max_stale: Duration,
    /// Records or hosts handled per statement.
    pub batch: i64,
}

impl Default for JanitorConfig {
    fn default() -> Self {
        JanitorConfig { min_stale: Duration::from_secs(150), max_stale: Duration::from_secs(600), batch: 1000 }
    }
}

impl JanitorConfig {
    /// Checks that the thresholds make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_stale < Duration::from_secs(1) {
            return Err("min_stale_host_seconds must be at least 1".into());
        }
        if self.max_stale <= self.min_stale {
            return Err("max_stale_host_seconds must be larger than min_stale_host_seconds".into());
        }
        Ok(())
    }
}

fn ago(now: EpochMs, d: Duration) -> EpochMs {
    now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// What one janitor pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Records marked UNREACHABLE.
    pub unreachable: u64,
    /// Hosts marked for termination that stopped and were forgotten.
    pub stopped: store::Forgotten,
    /// Silent hosts forgotten.
    pub removed: store::Forgotten,
}

/// Calls `step` until a call handles less than a full batch (or `stop()` says so), summing.
async fn drain<F, Fut>(batch: i64, stop: &impl Fn() -> bool, mut step: F) -> store::Result<store::Forgotten>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = store::Result<store::Forgotten>>,
{
    let mut total = store::Forgotten::default();
    loop {
        let f = step().await?;
        let full = f.hosts >= batch as u64;
        total.add(f);
        if !full || stop() {
            return Ok(total);
        }
    }
}

/// One pass of the janitor at `now`, in bounded batches (the job's run, and the benchmark's).
/// Marking re-evaluates each stage right after it frees slots; forgetting re-evaluates each
/// stage that lost records once, at the end.
///
/// Silence is measured from the freshest heartbeat stored, not from the clock: when heartbeats
/// stop reaching Postgres at all (the broker or every worker down, the report queue backed
/// up), hosts that keep pinging their gateway would otherwise look silent and lose their
/// slots to others.
pub async fn sweep(
    store: &store::Store,
    c: &JanitorConfig,
    now: EpochMs,
    stop: impl Fn() -> bool,
) -> store::Result<Sweep> {
    let reference = store.freshest_heartbeat().await?.map_or(now, |fresh| fresh.min(now));
    let (min, max) = (ago(reference, c.min_stale), ago(reference, c.max_stale));
    // Marking counts records, not hosts: the batch is full when as many records changed.
    let marked = drain(c.batch, &stop, || async {
        let n = store.mark_silent_hosts(min, now, c.batch).await?;
        Ok(store::Forgotten { hosts: n, records: n, ..Default::default() })
    })
    .await?;
    let stopped = drain(c.batch, &stop, || store.finish_stopped_hosts(min, c.batch)).await?;
    let removed = drain(c.batch, &stop, || store.remove_silent_hosts(max, c.batch)).await?;
    for env_id in stopped.stages.iter().chain(&removed.stages).collect::<std::collections::BTreeSet<_>>() {
        store.refresh_stage(env_id, now).await?;
    }
    Ok(Sweep { unreachable: marked.records, stopped, removed })
}

/// The job.
pub struct HostJanitor(pub JanitorConfig);

impl Job for HostJanitor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let s = sweep(&ctx.store, &self.0, ctx.now, || ctx.stopping()).await?;
            Ok(format!(
                "{} records unreachable; {} stopped hosts and {} silent hosts forgotten ({} records)",
                s.unreachable,
                s.stopped.hosts,
                s.removed.hosts,
                s.stopped.records + s.removed.records
            ))
        })
    }
}
