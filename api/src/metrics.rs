//! Prometheus metrics of the API (`teletraan_api_*`) and the gauges every scrape reads: the
//! fleet from Postgres on the API's listener, the gateway's memory on the gateway's.
//!
//! Labels are bounded: a route is its template (`/v1/envs/{env}/{stage}`), never the path.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, register_histogram_vec, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec,
};

use crate::gateway::Gateway;

static REQUESTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_api_requests_total",
        "REST requests answered, by route template, method and status",
        &["route", "method", "status"]
    )
    .ok()
});

static REQUEST_SECONDS: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    register_histogram_vec!(
        "teletraan_api_request_duration_seconds",
        "Time to answer a REST request (to its head), by route template and method",
        &["route", "method"],
        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]
    )
    .ok()
});

static COMMANDS: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    register_histogram_vec!(
        "teletraan_api_command_round_trip_seconds",
        "From recording a command to the worker's answer, by kind and outcome (done, refused, pending: \
         answered 202, unavailable: the broker did not take it)",
        &["kind", "outcome"],
        vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )
    .ok()
});

/// Counts a REST request by its route template (a `route_layer`, so the template is known).
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    if let Some(m) = REQUESTS.as_ref() {
        m.with_label_values(&[route, &method, response.status().as_str()]).inc();
    }
    if let Some(h) = REQUEST_SECONDS.as_ref() {
        h.with_label_values(&[route, &method]).observe(started.elapsed().as_secs_f64());
    }
    response
}

/// Records a command's round trip.
pub fn command_round_trip(kind: &str, outcome: &'static str, took: Duration) {
    if let Some(h) = COMMANDS.as_ref() {
        h.with_label_values(&[kind, outcome]).observe(took.as_secs_f64());
    }
}

static STAGES: LazyLock<Option<IntGauge>> =
    LazyLock::new(|| register_int_gauge!("teletraan_api_stages", "Stages (read from Postgres at scrape)").ok());

static DEPLOYS: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "teletraan_api_current_deploys",
        "Stages' current deploys by state (read from Postgres at scrape)",
        &["state"]
    )
    .ok()
});

static HOSTS: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "teletraan_api_hosts",
        "Agent records by stage and agent state (read from Postgres at scrape)",
        &["env", "stage", "state"]
    )
    .ok()
});

static UNSEEN: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    register_int_gauge!(
        "teletraan_api_hosts_unseen",
        "Hosts that have not pinged for 10 minutes (read from Postgres at scrape)"
    )
    .ok()
});

static SCRAPE_ERRORS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_api_scrape_errors_total",
        "Scrapes whose gauges could not be read, by source",
        &["source"]
    )
    .ok()
});

/// Hosts silent this long count as unseen (Teletraan's hosts count as gone after 600 s).
const UNSEEN_AFTER: Duration = Duration::from_secs(600);
/// The fleet's gauges are read at most this often, however many scrapers ask.
const FLEET_EVERY: Duration = Duration::from_secs(10);
/// Bound of one read of the fleet's gauges.
const FLEET_TIMEOUT: Duration = Duration::from_secs(5);

static FLEET_READ_AT: Mutex<Option<Instant>> = Mutex::new(None);

static QUEUE_MESSAGES: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "teletraan_api_queue_messages",
        "Messages ready in each work queue, report partition and dead-letter queue (read from RabbitMQ at scrape)",
        &["queue"]
    )
    .ok()
});

static QUEUE_CONSUMERS: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "teletraan_api_queue_consumers",
        "Consumers of each work queue, report partition and dead-letter queue (read from RabbitMQ at scrape)",
        &["queue"]
    )
    .ok()
});

/// Sets the queues' gauges from RabbitMQ; a failure is counted and leaves the last values.
async fn refresh_queues(bus: &bus::BusConfig) {
    match bus::queue_depths(bus).await {
        Ok(depths) => {
            for (queue, messages, consumers) in depths {
                if let Some(g) = QUEUE_MESSAGES.as_ref() {
                    g.with_label_values(&[&queue]).set(i64::from(messages));
                }
                if let Some(g) = QUEUE_CONSUMERS.as_ref() {
                    g.with_label_values(&[&queue]).set(i64::from(consumers));
                }
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "queue depths unread");
            if let Some(c) = SCRAPE_ERRORS.as_ref() {
                c.with_label_values(&["rabbitmq"]).inc();
            }
        }
    }
}

/// Sets the fleet's gauges from Postgres, and the queues' from RabbitMQ when `bus` is given (at
/// most once per [`FLEET_EVERY`]); a failure is counted and leaves the last values.
pub async fn refresh_fleet(store: &store::Store, bus: Option<&bus::BusConfig>) {
    {
        let mut last = FLEET_READ_AT.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < FLEET_EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    if let Some(bus) = bus {
        let _ = tokio::time::timeout(FLEET_TIMEOUT, refresh_queues(bus)).await;
    }
    let read = tokio::time::timeout(FLEET_TIMEOUT, store.fleet_gauges(schema::time::now_ms(), UNSEEN_AFTER)).await;
    let gauges = match read {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "fleet gauges unread");
            if let Some(c) = SCRAPE_ERRORS.as_ref() {
                c.with_label_values(&["postgres"]).inc();
            }
            return;
        }
        Err(_) => {
            if let Some(c) = SCRAPE_ERRORS.as_ref() {
                c.with_label_values(&["postgres"]).inc();
            }
            return;
        }
    };
    if let Some(g) = STAGES.as_ref() {
        g.set(gauges.stages);
    }
    if let Some(g) = DEPLOYS.as_ref() {
        // Every state is present, at zero when no deploy is in it, so alerts see a series.
        for state in schema::DeployState::ALL {
            let n = gauges.deploys.iter().find(|(s, _)| s == state.as_str()).map_or(0, |(_, n)| *n);
            g.with_label_values(&[state.as_str()]).set(n);
        }
    }
    if let Some(g) = HOSTS.as_ref() {
        // Stages and states that are gone must not linger.
        g.reset();
        for (env, stage, state, n) in &gauges.hosts {
            g.with_label_values(&[env, stage, state]).set(*n);
        }
    }
    if let Some(g) = UNSEEN.as_ref() {
        g.set(gauges.unseen);
    }
}

static CACHED_HOSTS: LazyLock<Option<IntGauge>> =
    LazyLock::new(|| register_int_gauge!("teletraan_gateway_cached_hosts", "Hosts the gateway holds in memory").ok());

static CACHED_STAGES: LazyLock<Option<IntGauge>> =
    LazyLock::new(|| register_int_gauge!("teletraan_gateway_cached_stages", "Stages the gateway holds in memory").ok());

static HELD_POLLS: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    register_int_gauge!("teletraan_gateway_held_long_polls", "Long-poll pings held open, waiting for a change").ok()
});

static READY: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    register_int_gauge!("teletraan_gateway_ready", "1 when the gateway has loaded its state and answers pings").ok()
});

/// Sets the gateway's gauges from its memory (cheap: counts held in place).
pub fn refresh_gateway(gw: &Gateway) {
    let (hosts, stages, polls, ready) = gw.sizes();
    for (gauge, value) in [(&CACHED_HOSTS, hosts), (&CACHED_STAGES, stages), (&HELD_POLLS, polls), (&READY, ready)] {
        if let Some(g) = gauge.as_ref() {
            g.set(value as i64);
        }
    }
}

static CHANGES: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_gateway_changes_total",
        "Change messages the gateway took, by outcome (applied, stale: older than what it holds, \
         gap: out of order, the stage reloaded)",
        &["outcome"]
    )
    .ok()
});

static RELOADS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_gateway_reloads_total",
        "Reloads from Postgres, by cause (gap: a change out of order, drift: the periodic version \
         check, stream: the change stream was lost, so everything)",
        &["cause"]
    )
    .ok()
});

/// Counts a change message by outcome.
pub fn change(outcome: &'static str) {
    if let Some(c) = CHANGES.as_ref() {
        c.with_label_values(&[outcome]).inc();
    }
}

/// Counts a reload by cause.
pub fn reload(cause: &'static str) {
    if let Some(c) = RELOADS.as_ref() {
        c.with_label_values(&[cause]).inc();
    }
}

static REPORTS: LazyLock<Option<prometheus::IntCounter>> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "teletraan_gateway_report_batches_published_total",
        "Report batches (records, host facts, heartbeats) the gateway published to the workers"
    )
    .ok()
});

/// Counts published report batches.
pub fn reports_published(batches: usize) {
    if let Some(c) = REPORTS.as_ref() {
        c.inc_by(batches as u64);
    }
}

/// Makes the series of the API and the gateway exist (at zero) from the start, so that
/// dashboards and alerts see them before the first event.
pub fn init() {
    if let Some(c) = SCRAPE_ERRORS.as_ref() {
        c.with_label_values(&["postgres"]);
        c.with_label_values(&["rabbitmq"]);
    }
    if let Some(c) = CHANGES.as_ref() {
        for outcome in ["applied", "stale", "gap"] {
            c.with_label_values(&[outcome]);
        }
    }
    if let Some(c) = RELOADS.as_ref() {
        for cause in ["gap", "drift", "stream"] {
            c.with_label_values(&[cause]);
        }
    }
    LazyLock::force(&REPORTS);
}
