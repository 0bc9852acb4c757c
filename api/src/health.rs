//! `/healthz` (the process runs), `/readyz` (it can serve) and `/metrics` (Prometheus) on every
//! listener.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bus::BusConfig;
use store::Store;

use crate::error::ApiError;
use crate::gateway::Gateway;

async fn healthz() -> &'static str {
    "ok"
}

/// `/metrics` of a listener that reads nothing at scrape (a worker's).
async fn metrics() -> Response {
    encoded(|_| true)
}

/// Series of the gateway: shown on the gateway's listener only. A process running several
/// roles (`teletraan up`) has one registry; without this split each listener would show the
/// other's series and sums over scrape jobs would count them twice.
fn is_gateway(name: &str) -> bool {
    name.starts_with("teletraan_gateway_")
}

/// `/metrics` of the API's listener: the fleet's gauges read from Postgres and the queues' from
/// RabbitMQ first; every series but the gateway's (a worker in the same process shows its own
/// here).
async fn api_metrics(State((store, bus)): State<(Store, BusConfig)>) -> Response {
    crate::metrics::refresh_fleet(&store, Some(&bus)).await;
    encoded(|name| !is_gateway(name))
}

/// `/metrics` of the gateway's listener: its memory's gauges first; the gateway's series only.
async fn gateway_metrics(State(gw): State<Arc<Gateway>>) -> Response {
    crate::metrics::refresh_gateway(&gw);
    encoded(is_gateway)
}

fn encoded(keep: impl Fn(&str) -> bool) -> Response {
    let encoder = prometheus::TextEncoder::new();
    let families: Vec<_> = prometheus::gather().into_iter().filter(|f| keep(f.name())).collect();
    match encoder.encode_to_string(&families) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

async fn api_ready(State(store): State<Store>) -> Response {
    match store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unavailable");
            ApiError::unavailable("the database is unavailable").into_response()
        }
    }
}

async fn gateway_ready(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        ApiError::unavailable("the gateway is loading its state").into_response()
    }
}

/// Health routes of the API listener (`fleet`: the broker whose queues, with the fleet from
/// Postgres, its `/metrics` reads; a worker's listener reads neither).
pub fn api(store: Store, fleet: Option<BusConfig>) -> Router {
    let health =
        Router::new().route("/healthz", get(healthz)).route("/readyz", get(api_ready)).with_state(store.clone());
    let metrics = match fleet {
        Some(bus) => Router::new().route("/metrics", get(api_metrics)).with_state((store, bus)),
        None => Router::new().route("/metrics", get(metrics)),
    };
    health.merge(metrics)
}

/// Health routes of the gateway listener.
pub fn gateway(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(gateway_ready))
        .route("/metrics", get(gateway_metrics))
        .with_state(gw)
}
