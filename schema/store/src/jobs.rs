//! Periodic jobs shared by worker processes: registration, claiming a due job under a lease,
//! renewing the lease while it runs, and recording how a run ended. Postgres decides who runs
//! what (row locks on `jobs`); no process is a leader.
//!
//! A job is due at `due_at`. Claiming it takes a lease and records an attempt in `job_runs`;
//! finishing it moves `due_at` to the next multiple of the period after now (due times missed
//! while nobody ran are skipped, not run in a burst). A worker that dies mid-run stops renewing
//! its lease; once the lease has expired another worker claims the same due time again, as a
//! new attempt. After [`MAX_ATTEMPTS`] attempts at one due time the job moves on to the next.

use std::time::{Duration, SystemTime};

use schema::time::EpochMs;

use crate::rows::{get, get_ms, get_opt_ms, ms};
use crate::{Result, Store};

/// Attempts at one due time before a job that keeps dying moves on to its next due time.
pub const MAX_ATTEMPTS: i32 = 3;

/// A job claimed by this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobClaim {
    /// Job name.
    pub name: String,
    /// The due time this run is for.
    pub due_at: EpochMs,
    /// Attempt at this due time (1 for the first).
    pub attempt: i32,
    /// The database's clock when the claim was made.
    pub claimed_at: EpochMs,
}

/// A job as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Job name.
    pub name: String,
    /// Next due time.
    pub due_at: EpochMs,
    /// Period it was registered with.
    pub period_ms: i64,
    /// The worker running it now, if any.
    pub leased_by: Option<String>,
    /// Last start.
    pub last_started: Option<EpochMs>,
    /// Last end (success or failure).
    pub last_finished: Option<EpochMs>,
    /// Last successful end.
    pub last_success: Option<EpochMs>,
    /// Error of the last failed run (cleared by a success).
    pub last_error: Option<String>,
    /// Runs that ended, in all.
    pub runs: i64,
    /// Runs that failed, in all.
    pub failures: i64,
}

/// One attempt at a due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// Job name.
    pub job: String,
    /// Its due time.
    pub due_at: EpochMs,
    /// Attempt at that due time.
    pub attempt: i32,
    /// The worker.
    pub worker: String,
    /// Start.
    pub started_at: EpochMs,
    /// End; `None` while running or when the worker died.
    pub finished_at: Option<EpochMs>,
    /// `ok`, `failed`, or `None`.
    pub outcome: Option<String>,
    /// What the run did, or why it failed.
    pub detail: Option<String>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Registers a job (first due now) or updates its period; idempotent, every worker does it
    /// at start. Due times are whole milliseconds, like every time the domain handles.
    pub async fn register_job(&self, name: &str, period: Duration) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO jobs (name, due_at, period_ms) VALUES ($1, date_trunc('milliseconds', now()), $2)
                 ON CONFLICT (name) DO UPDATE SET period_ms = EXCLUDED.period_ms,
                     -- A shorter period takes effect now, not after the old due time.
                     due_at = LEAST(jobs.due_at, date_trunc('milliseconds', now()) + interval '1 millisecond' * EXCLUDED.period_ms)",
                &[&name, &millis(period)],
            )
            .await?;
        Ok(())
    }

    /// Claims one due job among `names` that nobody holds (the most overdue first) for
    /// `lease`, as `worker`. Two workers never claim the same due time at once: the claim
    /// locks the row and skips rows another worker is claiming.
    pub async fn claim_job(&self, names: &[&str], worker: &str, lease: Duration) -> Result<Option<JobClaim>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "UPDATE jobs SET leased_by = $2, leased_until = now() + make_interval(secs => $3),
                     attempt = attempt + 1, last_started = now()
                 WHERE name = (SELECT name FROM jobs
                               WHERE name = ANY($1) AND due_at <= now() AND attempt < $4
                                 AND (leased_until IS NULL OR leased_until < now())
                               ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING name, due_at, attempt, now() AS claimed_at",
                &[&names, &worker, &lease.as_secs_f64(), &MAX_ATTEMPTS],
            )
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let claim = JobClaim {
            name: get(&row, "name")?,
            due_at: get_ms(&row, "due_at")?,
            attempt: get(&row, "attempt")?,
            claimed_at: get_ms(&row, "claimed_at")?,
        };
        tx.execute(
            "INSERT INTO job_runs (job, due_at, attempt, worker, started_at) VALUES ($1, $2, $3, $4, now())",
            &[&claim.name, &crate::rows::ts(claim.due_at), &claim.attempt, &worker],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(claim))
    }

    /// Extends the lease of a claimed job; `false` when the claim is no longer this worker's
    /// (its lease expired and another worker took the job).
    pub async fn renew_job(&self, claim: &JobClaim, worker: &str, lease: Duration) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE jobs SET leased_until = now() + make_interval(secs => $4)
                 WHERE name = $1 AND leased_by = $2 AND due_at = $3 AND attempt = $5",
                &[&claim.name, &worker, &crate::rows::ts(claim.due_at), &lease.as_secs_f64(), &claim.attempt],
            )
            .await?;
        Ok(n == 1)
    }

    /// Records the end of a claimed run and moves the job to its next due time. `error` is
    /// `None` for a success. Returns `false` when the claim was no longer this worker's (the
    /// outcome is still recorded in `job_runs`).
    pub async fn finish_job(
        &self,
        claim: &JobClaim,
        worker: &str,
        period: Duration,
        detail: &str,
        error: Option<&str>,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let due = crate::rows::ts(claim.due_at);
        let outcome = if error.is_some() { "failed" } else { "ok" };
        tx.execute(
            "UPDATE job_runs SET finished_at = now(), outcome = $4, detail = $5
             WHERE job = $1 AND due_at = $2 AND attempt = $3",
            &[&claim.name, &due, &claim.attempt, &outcome, &error.unwrap_or(detail)],
        )
        .await?;
        // The next due time is the first multiple of the period after now, counted from the
        // due time this run was for: a slow run or an outage skips due times instead of
        // running them back to back.
        let n = tx
            .execute(
                "UPDATE jobs SET
                     due_at = due_at + interval '1 millisecond'
                         * ($4::float8 * (floor(extract(epoch FROM (now() - due_at)) * 1000.0 / $4::float8) + 1)),
                     leased_by = NULL, leased_until = NULL, attempt = 0, last_finished = now(),
                     last_success = CASE WHEN $5::text IS NULL THEN now() ELSE last_success END,
                     last_error = $5, runs = runs + 1,
                     failures = failures + CASE WHEN $5::text IS NULL THEN 0 ELSE 1 END
                 WHERE name = $1 AND leased_by = $2 AND due_at = $3 AND attempt = $6",
                &[&claim.name, &worker, &due, &(millis(period).max(1) as f64), &error, &claim.attempt],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Moves jobs that keep dying past the due time they die on: a job claimed
    /// [`MAX_ATTEMPTS`] times at one due time whose last lease expired goes to its next due
    /// time, counted as a failure. Returns the jobs moved.
    pub async fn skip_dying_jobs(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE jobs SET
                     due_at = due_at + interval '1 millisecond'
                         * (greatest(period_ms, 1)::float8
                            * (floor(extract(epoch FROM (now() - due_at)) * 1000.0 / greatest(period_ms, 1)) + 1)),
                     leased_by = NULL, leased_until = NULL, attempt = 0, last_finished = now(),
                     last_error = 'its worker died ' || attempt || ' times in a row; skipped to the next due time',
                     runs = runs + 1, failures = failures + 1
                 WHERE attempt >= $1 AND leased_until < now()
                 RETURNING name",
                &[&MAX_ATTEMPTS],
            )
            .await?;
        rows.iter().map(|r| get(r, "name")).collect()
    }

    /// The earliest moment one of `names` may become claimable (a due time, or the end of a
    /// lease), as the database's clock sees it, and that clock now.
    pub async fn next_job_time(&self, names: &[&str]) -> Result<(Option<EpochMs>, EpochMs)> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT min(greatest(due_at, coalesce(leased_until, due_at))) AS next, now() AS now
                 FROM jobs WHERE name = ANY($1)",
                &[&names],
            )
            .await?;
        Ok((get_opt_ms(&row, "next")?, get_ms(&row, "now")?))
    }

    /// Every job, by name.
    pub async fn jobs(&self) -> Result<Vec<JobStatus>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, due_at, period_ms, leased_by, last_started, last_finished, last_success, last_error,
                     runs, failures
                 FROM jobs ORDER BY name",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JobStatus {
                    name: get(r, "name")?,
                    due_at: get_ms(r, "due_at")?,
                    period_ms: get(r, "period_ms")?,
                    leased_by: get(r, "leased_by")?,
                    last_started: get_opt_ms(r, "last_started")?,
                    last_finished: get_opt_ms(r, "last_finished")?,
                    last_success: get_opt_ms(r, "last_success")?,
                    last_error: get(r, "last_error")?,
                    runs: get(r, "runs")?,
                    failures: get(r, "failures")?,
                })
            })
            .collect()
    }

    /// The latest runs of a job, newest first.
    pub async fn job_runs(&self, job: &str, limit: i64) -> Result<Vec<JobRun>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT job, due_at, attempt, worker, started_at, finished_at, outcome, detail FROM job_runs
                 WHERE job = $1 ORDER BY started_at DESC, attempt DESC LIMIT $2",
                &[&job, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JobRun {
                    job: get(r, "job")?,
                    due_at: get_ms(r, "due_at")?,
                    attempt: get(r, "attempt")?,
                    worker: get(r, "worker")?,
                    started_at: get_ms(r, "started_at")?,
                    finished_at: get_opt_ms(r, "finished_at")?,
                    outcome: get(r, "outcome")?,
                    detail: get(r, "detail")?,
                })
            })
            .collect()
    }

    /// The database's clock.
    pub async fn db_now(&self) -> Result<EpochMs> {
        let client = self.client().await?;
        let now: SystemTime = client.query_one("SELECT now()", &[]).await?.get(0);
        Ok(ms(now))
    }
}
