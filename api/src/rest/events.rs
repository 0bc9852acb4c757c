//! `GET /v1/events`: live updates of stages as server-sent events (see `docs/events.md`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use schema::{EnvName, StageName};
use serde::Deserialize;

use super::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::events::{Filter, Subscription, Update};
use crate::extract::ApiQuery;

/// A comment line this often keeps proxies and clients from taking a quiet stream for dead.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct EventsQuery {
    /// Only the events of this environment's stages (recommended: without it, a stream
    /// carries every stage's events).
    env: Option<String>,
    /// Only the events of this stage of `env` (needs `env`).
    stage: Option<String>,
}

/// `GET /v1/events?env=…&stage=…`: `agents`, `deploy` and `resync` events, with a keep-alive
/// comment every 15 s, until the client leaves or the server stops. There is no replay: a
/// request with `Last-Event-ID` (a client reconnecting) starts with a `resync`.
pub(super) async fn stream(
    State(s): State<ApiState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let filter = match (q.env, q.stage) {
        (None, None) => Filter::everything(),
        (Some(env), None) => Filter::env(EnvName::parse(env)?),
        (Some(env), Some(stage)) => Filter::stage(EnvName::parse(env)?, StageName::parse(stage)?),
        (None, Some(_)) => return Err(ApiError::bad_request("stage needs env: /v1/events?env=<env>&stage=<stage>")),
    };
    // Subscribed before the answer starts: nothing published after the client got the
    // headers is missed.
    let subscription = s.events.subscribe(filter);
    let first = headers.contains_key("last-event-id").then(|| Update::Resync {
        reason: "events are not replayed: reload what is shown, then follow this stream".into(),
    });
    let events = futures_util::stream::unfold((subscription, first), next_event);
    let mut response =
        Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")).into_response();
    // nginx and friends would hold the events back in their buffers otherwise.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// A stream's subscription, and the update to send before anything from it.
type Cursor = (Subscription, Option<Update>);

async fn next_event((mut subscription, first): Cursor) -> Option<(Result<Event, Infallible>, Cursor)> {
    let event = match first {
        Some(update) => to_sse(&update),
        None => to_sse(&*subscription.next().await?),
    };
    Some((Ok(event), (subscription, None)))
}

fn to_sse(update: &Update) -> Event {
    match update {
        Update::Live(live) => Event::default().event(live.event.what()).id(live.id.to_string()).data(live.data()),
        Update::Resync { reason } => {
            Event::default().event("resync").data(serde_json::json!({ "reason": reason }).to_string())
        }
    }
}
