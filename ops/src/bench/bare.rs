//! `teletraan bench bare`: the yardstick of the throughput benchmark. One axum route that does
//! what every ping costs before any decision — read the body, parse it into
//! [`PingRequest`], normalise it — and answers a fixed NOOP, serialised the way the gateway
//! serialises its answers. What the gateway adds on top (the token check, the in-memory
//! decision, queueing reports and heartbeats, metrics) is what the ratio measures.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, http};
use clap::Args;
use schema::ping::{PingRequest, PingResponse};

/// Flags of `teletraan bench bare`.
#[derive(Debug, Clone, Args)]
pub struct BareArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

async fn ping(body: Bytes) -> Response {
    let request: PingRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("malformed ping: {e}")).into_response(),
    };
    match request.normalize() {
        Ok(_) => Json(PingResponse::noop()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// The bare server's routes: `POST /v1/system/ping` and `GET /readyz`.
pub fn router() -> Router {
    Router::new()
        .route("/v1/system/ping", post(ping))
        .route("/readyz", get(|| async { (http::StatusCode::OK, "ready") }))
}

/// Serves until Ctrl-C or SIGTERM; prints `bench bare: listening http://ADDR` first.
pub async fn run(args: BareArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("bench bare: listening http://{}", listener.local_addr()?);
    axum::serve(listener, router()).with_graceful_shutdown(crate::interrupted()).await?;
    Ok(())
}
