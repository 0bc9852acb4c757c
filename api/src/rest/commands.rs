//! Sending a command to the workers and turning the outcome into an answer: the worker's
//! result, its refusal as a 4xx, or 202 with the command's URL when it is late.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schema::bus::{Command, CommandEnvelope, CommandError, CommandOutcome};
use store::NewCommand;

use super::ApiState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};

/// What became of a command.
pub(super) enum Sent {
    /// A worker applied it; its result.
    Done(serde_json::Value),
    /// Queued, not answered in time: the 202 to send.
    Pending(Response),
}

/// Records the command, publishes it with confirms and waits (a bounded time) for a worker.
pub(super) async fn send(s: &ApiState, p: &Principal, command: Command) -> ApiResult<Sent> {
    let now = schema::time::now_ms();
    let envelope = CommandEnvelope {
        id: uuid::Uuid::new_v4().to_string(),
        attempt: 1,
        issued_at: now,
        operator: p.name.clone(),
        command,
    };
    let payload = serde_json::to_value(&envelope).map_err(ApiError::internal)?;
    s.store
        .insert_command(NewCommand { id: &envelope.id, kind: envelope.command.kind(), operator: &p.name, payload, now })
        .await?;
    match s.commands.send(&envelope, s.command_wait).await {
        Ok(Some(reply)) => match reply.outcome {
            CommandOutcome::Ok { result } => Ok(Sent::Done(result)),
            CommandOutcome::Err { error } => Err(error.into()),
        },
        Ok(None) => Ok(Sent::Pending(pending(s, &envelope.id).await?)),
        Err(e) => {
            tracing::warn!(command.kind = envelope.command.kind(), error = %e, "could not queue a command");
            let error = CommandError { status: 503, code: "unavailable".into(), message: e.to_string() };
            let _ = s.store.fail_command(&envelope.id, &error, schema::time::now_ms()).await;
            // The broker may have taken the command although its confirm was lost, and a worker
            // applied it: then say what happened rather than invite the user to do it twice.
            if let Ok(Some(done)) = s.store.command(&envelope.id).await {
                match (done.status.as_str(), done.result, done.error) {
                    ("DONE", Some(result), _) => return Ok(Sent::Done(result)),
                    ("FAILED", _, Some(error)) if error.status != 503 => return Err(error.into()),
                    _ => {}
                }
            }
            Err(ApiError::unavailable("the message broker is unavailable; nothing was done"))
        }
    }
}

async fn pending(s: &ApiState, id: &str) -> ApiResult<Response> {
    let location = format!("/v1/commands/{id}");
    let status = s.store.command(id).await?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(status)).into_response())
}

/// The answer for a command whose result is a new resource (201 with a Location).
pub(super) fn created(sent: Sent, location: String) -> Response {
    match sent {
        Sent::Done(result) => (StatusCode::CREATED, [(header::LOCATION, location)], Json(result)).into_response(),
        Sent::Pending(r) => r,
    }
}

/// The answer for a command that returns a document (200).
pub(super) fn ok(sent: Sent) -> Response {
    match sent {
        Sent::Done(result) => Json(result).into_response(),
        Sent::Pending(r) => r,
    }
}

/// The answer for a command with nothing to return (204).
pub(super) fn no_content(sent: Sent) -> Response {
    match sent {
        Sent::Done(_) => StatusCode::NO_CONTENT.into_response(),
        Sent::Pending(r) => r,
    }
}
