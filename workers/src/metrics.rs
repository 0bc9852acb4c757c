//! Prometheus metrics of the workers (`teletraan_worker_*`).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, register_int_counter_vec};

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
