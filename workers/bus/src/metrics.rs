//! Prometheus metrics of the consumers (`teletraan_worker_*`: only workers consume).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    HistogramVec, IntCounterVec, IntGaugeVec, register_histogram_vec, register_int_counter_vec, register_int_gauge_vec,
};

use crate::consume::Disposition;
use crate::topology::WorkQueue;

static MESSAGES: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_worker_messages_total",
        "Messages handled, by queue and outcome",
        &["queue", "outcome"]
    )
    .ok()
});

static DURATION: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    register_histogram_vec!(
        "teletraan_worker_message_duration_seconds",
        "Time to handle one message, by queue",
        &["queue"],
        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    )
    .ok()
});

static PARTITIONS: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "teletraan_worker_partitions",
        "Partitions of a queue this worker is subscribed to (the broker delivers each to one worker at a time)",
        &["queue"]
    )
    .ok()
});

pub(crate) fn partitions(queue: WorkQueue, held: usize) {
    if let Some(g) = PARTITIONS.as_ref() {
        g.with_label_values(&[queue.as_str()]).set(held as i64);
    }
}

pub(crate) fn message_done(queue: WorkQueue, d: &Disposition, took: Duration) {
    let outcome = match d {
        Disposition::Ack => "ack",
        Disposition::Retry(_) => "retry",
        Disposition::RetryLater(_) => "retry_later",
        Disposition::Dead(_) => "dead",
    };
    if let Some(m) = MESSAGES.as_ref() {
        m.with_label_values(&[queue.as_str(), outcome]).inc();
    }
    if let Some(h) = DURATION.as_ref() {
        h.with_label_values(&[queue.as_str()]).observe(took.as_secs_f64());
    }
}

/// Makes a queue's series exist (at zero) before its first message, so that dashboards and
/// alerts see them from the start.
pub(crate) fn init(queue: WorkQueue) {
    if let Some(m) = MESSAGES.as_ref() {
        for outcome in ["ack", "retry", "retry_later", "dead"] {
            m.with_label_values(&[queue.as_str(), outcome]);
        }
    }
    if let Some(h) = DURATION.as_ref() {
        h.with_label_values(&[queue.as_str()]);
    }
    if queue.partitions() > 0 {
        partitions(queue, 0);
    }
}
