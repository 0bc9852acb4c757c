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

/// The job.
pub struct HostJanitor(pub JanitorConfig);

impl Job for HostJanitor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a> {
        Box::pin(async move {
            let c = &self.0;
            let (mut unreachable, mut stopped, mut removed) =
                (0, store::Forgotten::default(), store::Forgotten::default());
            // Batches until a call finds nothing more (each call is bounded).
            loop {
                let n = ctx.store.mark_silent_hosts(ago(ctx.now, c.min_stale), ctx.now, c.batch).await?;
                unreachable += n;
                if n < c.batch as u64 || ctx.stopping() {
                    break;
                }
            }
            loop {
                let f = ctx.store.finish_stopped_hosts(ago(ctx.now, c.min_stale), ctx.now, c.batch).await?;
                stopped.hosts += f.hosts;
                stopped.records += f.records;
                if f.hosts < c.batch as u64 || ctx.stopping() {
                    break;
                }
            }
            loop {
                let f = ctx.store.remove_silent_hosts(ago(ctx.now, c.max_stale), ctx.now, c.batch).await?;
                removed.hosts += f.hosts;
                removed.records += f.records;
                if f.hosts < c.batch as u64 || ctx.stopping() {
                    break;
                }
            }
            Ok(format!(
                "{unreachable} records unreachable; {} stopped hosts and {} silent hosts forgotten ({} records)",
                stopped.hosts,
                removed.hosts,
                stopped.records + removed.records
            ))
        })
    }
}
