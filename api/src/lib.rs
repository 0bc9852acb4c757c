//! `api`: the HTTP side of the deploy system.
//!
//! Two routers: the REST API under `/v1` (Teletraan's paths and camelCase JSON; config writes
//! go straight to Postgres, deploy commands go through RabbitMQ to a worker), and the gateway
//! that answers agent pings from memory. Each listener also serves `/healthz`, `/readyz` and
//! `/metrics`.
//!
//! Handlers never return a 500 for bad input: every error has a JSON body and a 4xx status,
//! or 503 when a dependency is down. The gateway never touches the database on the ping path.

pub mod auth;
pub mod board;
pub mod created;
pub mod error;
pub mod events;
pub mod extract;
pub mod gateway;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod paths;
pub mod request_id;
pub mod rest;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

/// The API listener's router: REST, the deploy board and health, every request within the state's
/// `request_timeout`, a trailing slash on any path accepted. Serve it with connection info
/// (`into_make_service_with_connect_info::<SocketAddr>`) for trusted-header mode to see
/// where requests come from.
pub fn api_router(state: rest::ApiState, trusted: auth::TrustedHeaders) -> Router {
    metrics::init();
    let store = state.store.clone();
    let bus = state.commands.config().clone();
    let limit = state.request_timeout;
    let auth = rest::auth_state(store.clone(), trusted);
    let rest = rest::router(state.clone(), auth.clone()).route_layer(middleware::from_fn(metrics::track));
    let router = rest
        .clone()
        .merge(board::router(state, auth, rest))
        .merge(health::api(store, Some(bus)))
        .route("/openapi.json", axum::routing::get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(limit, within_deadline))
        .layer(middleware::from_fn(request_id::assign));
    paths::trimming_trailing_slashes(router)
}

/// The API contract: every REST route and the gateway's ping and enrollment (see [`openapi`]).
pub fn contract() -> serde_json::Value {
    let mut operations = rest::operations();
    operations.extend(gateway::operations());
    openapi::document(&operations)
}

/// `GET /openapi.json`, without credentials: the contract is public.
async fn openapi_json() -> Response {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| contract().to_string());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

/// Answers 503 for a request still running after `limit` (its handler is dropped: an open
/// transaction rolls back). Every dependency call has a bound of its own; this one catches a
/// server that accepted a query or a message and then said nothing. It bounds the time to the
/// answer's head: `next.run` returns once the handler has made its response, so a streamed
/// body (`GET /v1/events`) is sent after the deadline is gone.
async fn within_deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%method, %path, limit_ms = limit.as_millis() as u64, "request timed out");
            error::ApiError::unavailable(format!(
                "no answer within {} s: a dependency is slow or unreachable; try again",
                limit.as_secs()
            ))
            .into_response()
        }
    }
}

/// The gateway listener's router: ping plus health, a trailing slash on any path accepted.
pub fn gateway_router(gw: Arc<gateway::Gateway>, store: store::Store) -> Router {
    metrics::init();
    let router = gateway::router(gw.clone(), store)
        .merge(health::gateway(gw))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    paths::trimming_trailing_slashes(router)
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("no such path")
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "this path does not take that method".into(),
    }
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is the contract as the code generates it, for clients generated
    /// without a running server.
    #[test]
    fn openapi_doc_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let want = serde_json::to_string_pretty(&super::contract()).unwrap() + "\n";
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "docs/openapi.json is out of date: run UPDATE_DOCS=1 cargo test -p api openapi_doc");
    }
}
