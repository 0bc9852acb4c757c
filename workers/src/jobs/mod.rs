//! Periodic jobs: each one a small file behind [`Job`], run by a scheduler in every worker
//! process. Postgres decides which process runs a due job (a lease on its row in `jobs`, see
//! `store::jobs`), so however many workers run, each due time runs once; a worker that dies
//! mid-run stops renewing its lease and another worker runs that due time again.
//!
//! The jobs and their default periods are in [`JobsConfig`]; `TELETRAAN_JOBS`
//! (`name=30s,other=off`) changes them. Every run is recorded in `job_runs`, and exported to
//! Prometheus: runs and failures by job, run duration, the last success of each job (read from
//! the table, so every worker shows what any worker did).

pub mod auto_promote;
pub mod deploy_state;
pub mod host_janitor;
pub mod retention;
pub mod webhook_resend;

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use schema::time::{EpochMs, now_ms};
use store::{JobClaim, Store};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::live::LiveEvents;
use crate::metrics;

/// What a job's run returns: a summary for `job_runs` (`"marked 2 hosts unreachable"`).
pub type JobResult = anyhow::Result<String>;

/// A boxed run of a job.
pub type JobFuture<'a> = Pin<Box<dyn Future<Output = JobResult> + Send + 'a>>;

/// What a run can use.
pub struct JobCtx {
    /// Postgres.
    pub store: Store,
    /// When the run started (the worker's clock; rules take it as `now`).
    pub now: EpochMs,
    /// Turns true when the worker stops: a long run should end between two batches.
    pub shutdown: watch::Receiver<bool>,
}

impl JobCtx {
    /// Whether the worker is stopping.
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// A periodic duty of the workers.
pub trait Job: Send + Sync + 'static {
    /// Name in the `jobs` table, in metrics and in `TELETRAAN_JOBS`.
    fn name(&self) -> &'static str;
    /// One run. It may run again for the same due time when a worker died during it, so it
    /// must be idempotent; it should check [`JobCtx::stopping`] between batches.
    fn run<'a>(&'a self, ctx: &'a JobCtx) -> JobFuture<'a>;
}

/// The scheduler's settings.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Period of each job; `None` turns it off in this process.
    pub periods: BTreeMap<String, Option<Duration>>,
    /// Lease of a claimed job; renewed every third of it while the job runs. A worker that
    /// dies holding a job delays it by at most this long.
    pub lease: Duration,
    /// Longest pause between two looks at the table.
    pub poll_max: Duration,
    /// Settings of the host janitor.
    pub janitor: host_janitor::JanitorConfig,
    /// Settings of retention.
    pub retention: retention::RetentionConfig,
}

impl Default for JobsConfig {
    fn default() -> Self {
        let periods = [
            (deploy_state::NAME, Duration::from_secs(10)),
            (auto_promote::NAME, Duration::from_secs(30)),
            (host_janitor::NAME, Duration::from_secs(30)),
            (retention::DEPLOYS, Duration::from_secs(3600)),
            (retention::BUILDS, Duration::from_secs(3600)),
            (retention::RECORDS, Duration::from_secs(3600)),
            (webhook_resend::NAME, Duration::from_secs(60)),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_string(), Some(p)))
        .collect();
        JobsConfig {
            periods,
            lease: Duration::from_secs(30),
            poll_max: Duration::from_secs(5),
            janitor: host_janitor::JanitorConfig::default(),
            retention: retention::RetentionConfig::default(),
        }
    }
}

impl JobsConfig {
    /// Applies `name=30s,other=off` (durations in ms, s, m, h or d). Unknown names and bad
    /// durations are refused with a message that names them.
    pub fn set_periods(&mut self, spec: &str) -> Result<(), String> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) =
                item.split_once('=').ok_or_else(|| format!("{item:?}: expected name=duration (or name=off)"))?;
            let (name, value) = (name.trim(), value.trim());
            let Some(slot) = self.periods.get_mut(name) else {
                let known: Vec<&str> = self.periods.keys().map(String::as_str).collect();
                return Err(format!("unknown job {name:?}; the jobs are {}", known.join(", ")));
            };
            *slot = if value.eq_ignore_ascii_case("off") {
                None
            } else {
                let d = parse_duration(value).map_err(|e| format!("{name}: {e}"))?;
                if d < Duration::from_millis(100) {
                    return Err(format!("{name}: a period must be at least 100ms"));
                }
                Some(d)
            };
        }
        Ok(())
    }

    /// The jobs this process runs, with their periods; those that change what the board
    /// shows tell it through `live`.
    pub fn jobs(&self, live: &LiveEvents) -> Vec<(Arc<dyn Job>, Duration)> {
        let all: Vec<Arc<dyn Job>> = vec![
            Arc::new(deploy_state::DeployState(live.clone())),
            Arc::new(auto_promote::AutoPromote),
            Arc::new(host_janitor::HostJanitor(self.janitor)),
            Arc::new(retention::DeployRetention(self.retention)),
            Arc::new(retention::BuildRetention(self.retention)),
            Arc::new(retention::RecordRetention(self.retention)),
            Arc::new(webhook_resend::WebhookResend),
        ];
        all.into_iter().filter_map(|j| self.periods.get(j.name()).copied().flatten().map(|p| (j, p))).collect()
    }
}

/// Errors of the stages a run went through: each is logged where it happens, the run goes on
/// with the next stage, and the run fails at the end if any stage did.
#[derive(Default)]
pub(crate) struct Failures {
    count: usize,
    first: Option<String>,
}

impl Failures {
    pub(crate) fn add(&mut self, job: &str, env_id: &schema::EnvId, e: store::Error) {
        tracing::warn!(job, env_id = %env_id, error = %e, "a stage failed; going on with the others");
        self.count += 1;
        self.first.get_or_insert_with(|| format!("stage {env_id}: {e}"));
    }

    /// The run's result: `summary` when no stage failed.
    pub(crate) fn into_result(self, summary: String) -> JobResult {
        match self.first {
            None => Ok(summary),
            Some(first) => Err(anyhow::anyhow!("{summary}; {} stage(s) failed, the first: {first}", self.count)),
        }
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 1h"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s, m, h or d)")),
    };
    ms.map(Duration::from_millis).ok_or_else(|| format!("{s:?} is too long"))
}

/// A name for this process in `jobs.leased_by` and `job_runs.worker`: host, pid and a random
/// suffix (pids are reused across restarts).
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..6])
}

/// Runs due jobs until `shutdown` turns true; running jobs get `grace` to finish, then their
/// leases are left to expire. Jobs tell the board what they changed through `live`.
pub async fn run(
    store: Store,
    config: JobsConfig,
    live: LiveEvents,
    worker: String,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let jobs: BTreeMap<&'static str, (Arc<dyn Job>, Duration)> =
        config.jobs(&live).into_iter().map(|(j, p)| (j.name(), (j, p))).collect();
    if jobs.is_empty() {
        return;
    }
    let names: Vec<&'static str> = jobs.keys().copied().collect();
    // Registration needs the database; keep trying until it is there.
    let mut delays = bus::backoff();
    for (name, (_, period)) in &jobs {
        loop {
            match store.register_job(name, *period).await {
                Ok(()) => break,
                Err(e) => {
                    let d = delays.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(job = name, error = %e, "cannot register a job; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }
    tracing::info!(jobs = ?names, %worker, "job scheduler started");
    let mut running: JoinSet<()> = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let wait = match tick(&store, &jobs, &names, &worker, &config, &shutdown, &mut running).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, "job scheduler cannot reach the database");
                config.poll_max
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = shutdown.changed() => {}
        }
    }
    let _ = tokio::time::timeout(grace, async { while running.join_next().await.is_some() {} }).await;
    running.abort_all();
}

/// Claims and starts every due job it can; returns how long to wait before looking again.
async fn tick(
    store: &Store,
    jobs: &BTreeMap<&'static str, (Arc<dyn Job>, Duration)>,
    names: &[&'static str],
    worker: &str,
    config: &JobsConfig,
    shutdown: &watch::Receiver<bool>,
    running: &mut JoinSet<()>,
) -> store::Result<Duration> {
    for name in store.skip_dying_jobs().await? {
        tracing::error!(job = %name, "a job's worker died on it repeatedly; skipped to its next due time");
    }
    while let Some(claim) = store.claim_job(names, worker, config.lease).await? {
        let Some((job, period)) = jobs.get(claim.name.as_str()).cloned() else { continue };
        let (store, worker, lease, shutdown) = (store.clone(), worker.to_string(), config.lease, shutdown.clone());
        running.spawn(async move { run_claim(store, job, period, claim, worker, lease, shutdown).await });
    }
    metrics::job_table(&store.jobs().await?);
    let (next, db_now) = store.next_job_time(names).await?;
    let until = next.map(|n| n - db_now).unwrap_or(i64::MAX);
    Ok(Duration::from_millis(u64::try_from(until).unwrap_or(0).max(20)).min(config.poll_max))
}

/// Runs one claimed job, renewing its lease meanwhile, and records how it ended. A job that
/// loses its lease (the database was unreachable longer than the lease) is stopped: another
/// worker may be running it now.
async fn run_claim(
    store: Store,
    job: Arc<dyn Job>,
    period: Duration,
    claim: JobClaim,
    worker: String,
    lease: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let started = std::time::Instant::now();
    tracing::debug!(job = %claim.name, attempt = claim.attempt, "job started");
    let ctx = JobCtx { store: store.clone(), now: now_ms(), shutdown };
    let renew = async {
        let mut tick = tokio::time::interval(lease / 3);
        tick.tick().await;
        // The lease runs from the claim; once it may have expired without a renewal (the
        // database unreachable meanwhile), another worker may hold the job: stop.
        let mut held_until = std::time::Instant::now() + lease;
        loop {
            tick.tick().await;
            let asked = std::time::Instant::now();
            match tokio::time::timeout(lease / 3, store.renew_job(&claim, &worker, lease)).await {
                Ok(Ok(true)) => held_until = asked + lease,
                Ok(Ok(false)) => return "lost its lease to another worker".to_string(),
                Ok(Err(e)) => tracing::warn!(job = %claim.name, error = %e, "cannot renew a job's lease"),
                Err(_) => tracing::warn!(job = %claim.name, "renewing a job's lease timed out"),
            }
            if std::time::Instant::now() + lease / 3 >= held_until {
                return "could not renew its lease in time; stopped so that no other worker runs it at once"
                    .to_string();
            }
        }
    };
    let outcome: JobResult = tokio::select! {
        r = AssertUnwindSafe(job.run(&ctx)).catch_unwind() => match r {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("the job panicked")),
        },
        lost = renew => Err(anyhow::anyhow!("{lost}")),
    };
    let took = started.elapsed();
    let (detail, error) = match &outcome {
        Ok(detail) => (detail.clone(), None),
        Err(e) => (String::new(), Some(format!("{e:#}"))),
    };
    metrics::job_done(&claim.name, error.is_none(), took);
    match &error {
        None => tracing::info!(job = %claim.name, duration_ms = took.as_millis() as u64, %detail, "job done"),
        Some(e) => tracing::warn!(job = %claim.name, duration_ms = took.as_millis() as u64, error = %e, "job failed"),
    }
    let mut delays = bus::backoff();
    for _ in 0..5 {
        match store.finish_job(&claim, &worker, period, &detail, error.as_deref()).await {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(job = %claim.name, "job finished after losing its lease");
                return;
            }
            Err(e) => {
                tracing::warn!(job = %claim.name, error = %e, "cannot record the end of a job; retrying");
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("5 weeks").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn periods_are_set_by_name_and_refused_when_unknown() {
        let mut c = JobsConfig::default();
        c.set_periods("host-janitor=5s, deploy-retention=off").unwrap();
        assert_eq!(c.periods["host-janitor"], Some(Duration::from_secs(5)));
        assert_eq!(c.periods["deploy-retention"], None);
        assert!(!c.jobs(&LiveEvents::default()).iter().any(|(j, _)| j.name() == "deploy-retention"));
        assert!(c.set_periods("janitor=5s").unwrap_err().contains("unknown job \"janitor\""));
        assert!(c.set_periods("host-janitor").unwrap_err().contains("name=duration"));
        assert!(c.set_periods("host-janitor=1ms").unwrap_err().contains("at least 100ms"));
    }

    #[test]
    fn every_job_has_a_default_period() {
        let c = JobsConfig::default();
        let names: Vec<&str> = c.jobs(&LiveEvents::default()).iter().map(|(j, _)| j.name()).collect();
        assert_eq!(names.len(), c.periods.len(), "{names:?}");
    }
}
