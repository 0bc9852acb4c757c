//! Deploys: creating one is a command applied by a worker; reading them is direct.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::Response;
use schema::bus::Command;
use schema::model::{CommandStatus, Deploy};
use schema::{BuildId, DeployId};
use serde::Deserialize;

use super::{ApiState, commands, stage_key};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery, IdempotencyKey};

#[derive(Deserialize, schemars::JsonSchema)]
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
    key: IdempotencyKey,
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

    let command = Command::CreateDeployV1 { env_name: env.clone(), stage_name: stage.clone(), build_id, description };
    let sent = commands::send(&s, &p, &key, command).await?;
    Ok(commands::created(sent, format!("/v1/envs/{env}/{stage}/deploys/current")))
}

/// `GET /v1/envs/{env}/{stage}/deploys/current`.
pub(super) async fn current(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Deploy>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.current_deploy(&env, &stage).await?))
}

/// `GET /v1/deploys/dailycount`: how many deploys started today (since midnight UTC; Teletraan
/// counts from the server's local midnight).
pub(super) async fn daily_count(State(s): State<ApiState>) -> ApiResult<Json<i64>> {
    let midnight = schema::time::start_of_day_utc(schema::time::now_ms());
    Ok(Json(s.store.deploys_started_since(midnight).await?))
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
