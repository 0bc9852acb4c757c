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

async fn metrics() -> impl IntoResponse {
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

/// Health routes of the API listener.
pub fn api(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(api_ready))
        .route("/metrics", get(metrics))
        .with_state(store)
}

/// Health routes of the gateway listener.
pub fn gateway(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(gateway_ready))
        .route("/metrics", get(metrics))
        .with_state(gw)
}
