//! Deploys: creating one is a command applied by a worker; reading them is direct.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schema::bus::{Command, CommandEnvelope, CommandError, CommandOutcome};
use schema::model::{CommandStatus, Deploy};
use schema::*;
use serde::Deserialize;
use store::NewCommand;

use super::{ApiState, stage_key};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeployQuery {
    build_id: Option<String>,
    description: Option<String>,
}

/// `POST /v1/envs/{env}/{stage}/deploys?buildId=&description=`: deploys a build. The command
/// goes through RabbitMQ to a worker; the answer is the worker's (201 with the deploy), or
/// 202 with the command's URL when the worker does not answer in time.
pub(super) async fn create(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeployQuery>,
) -> ApiResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let build_id = match q.build_id.as_deref().map(str::trim) {
        None | Some("") => return Err(ApiError::bad_request("buildId is required")),
        Some(b) => BuildId::parse(b)?,
    };
    let description = q.description.filter(|d| !d.is_empty());
    if let Some(d) = &description {
        schema::model::check_text("description", d, 2048)?;
    }
    // Checked here for a fast, clear answer; the worker checks again under the stage lock.
    let e = s.store.stage(&env, &stage).await?;
    let build = s.store.build(&build_id).await?;
    if build.name != e.build_name {
        return Err(ApiError::bad_request(format!(
            "build {build_id} is named {:?} but stage {env}/{stage} deploys builds named {:?}",
            build.name.as_str(),
            e.build_name.as_str()
        )));
    }

    let now = workers::now_ms();
    let envelope = CommandEnvelope {
        id: uuid::Uuid::new_v4().to_string(),
        attempt: 1,
        issued_at: now,
        operator: p.name.clone(),
        command: Command::CreateDeployV1 { env_name: env.clone(), stage_name: stage.clone(), build_id, description },
    };
    let payload = serde_json::to_value(&envelope).map_err(ApiError::internal)?;
    s.store
        .insert_command(NewCommand { id: &envelope.id, kind: envelope.command.kind(), operator: &p.name, payload, now })
        .await?;
    match s.commands.send(&envelope, s.command_wait).await {
        Ok(Some(reply)) => match reply.outcome {
            CommandOutcome::Ok { result } => {
                let location = format!("/v1/envs/{env}/{stage}/deploys/current");
                Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(result)).into_response())
            }
            CommandOutcome::Err { error } => Err(error.into()),
        },
        Ok(None) => {
            let location = format!("/v1/commands/{}", envelope.id);
            let status = s.store.command(&envelope.id).await?;
            Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(status)).into_response())
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not queue a deploy command");
            let error = CommandError { status: 503, code: "unavailable".into(), message: e.to_string() };
            let _ = s.store.fail_command(&envelope.id, &error, workers::now_ms()).await;
            // The broker may have taken the command although its confirm was lost, and a worker
            // applied it: then say what happened rather than invite a second deploy.
            if let Ok(Some(done)) = s.store.command(&envelope.id).await
                && done.status == "DONE"
                && let Some(result) = done.result
            {
                let location = format!("/v1/envs/{env}/{stage}/deploys/current");
                return Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(result)).into_response());
            }
            Err(ApiError::unavailable("the message broker is unavailable; the deploy was not started"))
        }
    }
}

/// `GET /v1/envs/{env}/{stage}/deploys/current`.
pub(super) async fn current(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Deploy>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.current_deploy(&env, &stage).await?))
}

/// `GET /v1/deploys/{id}`.
pub(super) async fn get(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Deploy>> {
    let id = DeployId::parse(id)?;
    Ok(Json(s.store.deploy(&id).await?))
}

/// `GET /v1/commands/{id}`: progress of a command answered with 202.
pub(super) async fn command(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<CommandStatus>> {
    if id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ApiError::bad_request("invalid command id"));
    }
    s.store.command(&id).await?.map(Json).ok_or_else(|| ApiError::not_found(format!("Command {id} does not exist.")))
}
