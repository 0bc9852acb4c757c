//! Sending a command to the workers and turning the outcome into an answer: the worker's
//! result, its refusal as a 4xx, or 202 with the command's URL when it is late.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schema::bus::{Command, CommandEnvelope, CommandError, CommandOutcome};
use store::{NewCommand, Recorded};

use super::ApiState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::IdempotencyKey;
use crate::metrics;

/// What became of a command.
pub(super) enum Sent {
    /// A worker applied it; its result.
    Done(serde_json::Value),
    /// Queued, not answered in time: the 202 to send.
    Pending(Response),
}

/// Records the command, publishes it with confirms and waits (a bounded time) for a worker.
///
/// With an idempotency key the command's id is derived from the principal and the key: a
/// retried request finds the command recorded and answers its outcome when it has one, or
/// sends it again when it has none yet (workers apply a command id once) or when the broker
/// took nothing the first time.
pub(super) async fn send(s: &ApiState, p: &Principal, key: &IdempotencyKey, command: Command) -> ApiResult<Sent> {
    let now = schema::time::now_ms();
    let id = match &key.0 {
        Some(key) => keyed_id(&p.name, key),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let mut envelope = CommandEnvelope {
        id,
        attempt: 1,
        issued_at: now,
        operator: p.name.clone(),
        command,
        request_id: crate::request_id::current(),
    };
    let payload = serde_json::to_value(&envelope).map_err(ApiError::internal)?;
    let recorded = s
        .store
        .insert_command(NewCommand {
            id: &envelope.id,
            kind: envelope.command.kind(),
            operator: &p.name,
            payload: payload.clone(),
            now,
        })
        .await?;
    if let Recorded::Existing { payload: stored, status } = recorded {
        if stored.get("command") != payload.get("command") {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used for a different request; use a new key for a new request"
                    .into(),
            });
        }
        let status = *status;
        match (status.status.as_str(), status.result, status.error) {
            ("DONE", result, _) => return Ok(Sent::Done(result.unwrap_or_default())),
            // Refused, or failed for good: that is the answer. (Unsent: reopened, sent below.)
            ("FAILED", _, error) if !s.store.reopen_unsent_command(&envelope.id).await? => {
                return Err(error.map(ApiError::from).unwrap_or_else(|| ApiError::internal("failed command")));
            }
            _ => {}
        }
        // The first request's envelope, as the workers may have seen it.
        envelope = serde_json::from_value(stored).map_err(ApiError::internal)?;
    }
    let started = std::time::Instant::now();
    let kind = envelope.command.kind();
    match s.commands.send(&envelope, s.command_wait).await {
        Ok(Some(reply)) => match reply.outcome {
            CommandOutcome::Ok { result } => {
                metrics::command_round_trip(kind, "done", started.elapsed());
                Ok(Sent::Done(result))
            }
            CommandOutcome::Err { error } => {
                metrics::command_round_trip(kind, "refused", started.elapsed());
                Err(error.into())
            }
        },
        Ok(None) => {
            metrics::command_round_trip(kind, "pending", started.elapsed());
            Ok(Sent::Pending(pending(s, &envelope.id).await?))
        }
        Err(e) => {
            metrics::command_round_trip(kind, "unavailable", started.elapsed());
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

/// The id of the command a principal sends with an idempotency key: the same for the same
/// principal and key; another principal's same key is another command.
fn keyed_id(principal: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new().chain_update(principal).chain_update([0]).chain_update(key).finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("k-{hex}")
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

#[cfg(test)]
mod tests {
    use super::keyed_id;

    #[test]
    fn a_key_names_one_command_per_principal() {
        assert_eq!(keyed_id("ci", "release-42"), keyed_id("ci", "release-42"));
        assert_ne!(keyed_id("ci", "release-42"), keyed_id("alice", "release-42"));
        assert_ne!(keyed_id("ci", "release-42"), keyed_id("ci", "release-43"));
        // The separator keeps (name, key) pairs apart that would concatenate alike.
        assert_ne!(keyed_id("ab", "c"), keyed_id("a", "bc"));
        assert_eq!(keyed_id("ci", "k").len(), 2 + 64);
    }
}
