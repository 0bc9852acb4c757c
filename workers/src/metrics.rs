//! Prometheus metrics of the workers (`teletraan_worker_*`).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    GaugeVec, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, register_gauge_vec, register_histogram_vec,
    register_int_counter, register_int_counter_vec, register_int_gauge_vec,
};

static RELAYED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_worker_outbox_relayed_total",
        "Outbox messages published, by exchange",
        &["exchange"]
    )
    .ok()
});

pub(crate) fn relayed(exchange: &str, n: usize) {
    if let Some(m) = RELAYED.as_ref() {
        m.with_label_values(&[exchange]).inc_by(n as u64);
    }
}

static JOB_RUNS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_worker_job_runs_total",
        "Periodic job runs by this process, by job and outcome (ok, failed)",
        &["job_name", "outcome"]
    )
    .ok()
});

static JOB_DURATION: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    register_histogram_vec!(
        "teletraan_worker_job_duration_seconds",
        "Duration of periodic job runs by this process, by job",
        &["job_name"],
        vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]
    )
    .ok()
});

static JOB_LAST_SUCCESS: LazyLock<Option<GaugeVec>> = LazyLock::new(|| {
    register_gauge_vec!(
        "teletraan_worker_job_last_success_timestamp_seconds",
        "When each periodic job last succeeded, in any worker (read from the jobs table)",
        &["job_name"]
    )
    .ok()
});

static JOB_FAILURES: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "teletraan_worker_job_failures",
        "Failed runs of each periodic job, in any worker (read from the jobs table)",
        &["job_name"]
    )
    .ok()
});

pub(crate) fn job_done(job: &str, ok: bool, took: Duration) {
    if let Some(m) = JOB_RUNS.as_ref() {
        m.with_label_values(&[job, if ok { "ok" } else { "failed" }]).inc();
    }
    if let Some(h) = JOB_DURATION.as_ref() {
        h.with_label_values(&[job]).observe(took.as_secs_f64());
    }
}

/// Exports what the jobs table says of every job.
pub(crate) fn job_table(jobs: &[store::JobStatus]) {
    for j in jobs {
        if let (Some(g), Some(t)) = (JOB_LAST_SUCCESS.as_ref(), j.last_success) {
            g.with_label_values(&[j.name.as_str()]).set(t as f64 / 1000.0);
        }
        if let Some(g) = JOB_FAILURES.as_ref() {
            g.with_label_values(&[j.name.as_str()]).set(j.failures);
        }
    }
}

static WEBHOOK_ATTEMPTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_worker_webhook_attempts_total",
        "Webhook delivery attempts by this process, by phase (pre, post) and outcome (delivered, retry, failed)",
        &["phase", "outcome"]
    )
    .ok()
});

/// Counts one attempt; `phase` is `pre` or `post`, `outcome` `delivered`, `retry` or `failed`.
pub(crate) fn webhook_attempt(phase: &'static str, outcome: &'static str) {
    if let Some(m) = WEBHOOK_ATTEMPTS.as_ref() {
        m.with_label_values(&[phase, outcome]).inc();
    }
}

static LIVE_PUBLISHED: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!("teletraan_worker_live_events_published_total", "Live events for the board published").ok()
});

static LIVE_DROPPED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_worker_live_events_dropped_total",
        "Live events for the board dropped, by reason (queue_full, unpublished, stopped)",
        &["reason"]
    )
    .ok()
});

pub(crate) fn live_published(n: usize) {
    if let Some(m) = LIVE_PUBLISHED.as_ref() {
        m.inc_by(n as u64);
    }
}

/// Counts dropped live events; `reason` is `queue_full`, `unpublished` or `stopped`.
pub(crate) fn live_dropped(reason: &'static str, n: usize) {
    if let Some(m) = LIVE_DROPPED.as_ref() {
        m.with_label_values(&[reason]).inc_by(n as u64);
    }
}

static ADMISSIONS: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "teletraan_worker_admissions_total",
        "Hosts admitted into a deploy by this process: by commands (a deploy's first hosts), by stage \
         re-evaluations (after reports, and periodic) and by the auto-promoter's deploys"
    )
    .ok()
});

/// Counts hosts admitted by a re-evaluation.
pub(crate) fn admitted(n: usize) {
    if let (Some(m), true) = (ADMISSIONS.as_ref(), n > 0) {
        m.inc_by(n as u64);
    }
}

/// Makes the worker's series exist (at zero) from the start, so that dashboards and alerts see
/// them before the first event.
pub(crate) fn init() {
    for counter in [&ADMISSIONS, &LIVE_PUBLISHED] {
        LazyLock::force(counter);
    }
    if let Some(m) = LIVE_DROPPED.as_ref() {
        for reason in ["queue_full", "unpublished", "stopped"] {
            m.with_label_values(&[reason]);
        }
    }
}
