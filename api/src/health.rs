//! `/healthz` (the process runs), `/readyz` (it can serve) and `/metrics` (Prometheus) on every
//! listener.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use store::Store;

use crate::error::ApiError;
use crate::gateway::Gateway;

async fn healthz() -> &'static str {
    "ok"
}

/// `/metrics` of a listener that reads nothing at scrape (a worker's).
async fn metrics() -> Response {
    encoded()
}

/// `/metrics` of the API's listener: the fleet's gauges read from Postgres first.
async fn api_metrics(State(store): State<Store>) -> Response {
    crate::metrics::refresh_fleet(&store).await;
    encoded()
}

/// `/metrics` of the gateway's listener: its memory's gauges first.
async fn gateway_metrics(State(gw): State<Arc<Gateway>>) -> Response {
    crate::metrics::refresh_gateway(&gw);
    encoded()
}

fn encoded() -> Response {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&prometheus::gather()) {
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

/// Health routes of the API listener (`fleet`: its `/metrics` reads the fleet's gauges from
/// Postgres; a worker's listener does not).
pub fn api(store: Store, fleet: bool) -> Router {
    let router = Router::new().route("/healthz", get(healthz)).route("/readyz", get(api_ready));
    let router =
        if fleet { router.route("/metrics", get(api_metrics)) } else { router.route("/metrics", get(metrics)) };
    router.with_state(store)
}

/// Health routes of the gateway listener.
pub fn gateway(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(gateway_ready))
        .route("/metrics", get(gateway_metrics))
        .with_state(gw)
}
