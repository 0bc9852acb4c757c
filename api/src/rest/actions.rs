//! Deploy and host actions: commands applied by the workers.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use schema::bus::Command;
use schema::{AcceptanceStatus, AgentState, DeployAction, DeployId, HostId, UnknownValue};
use serde::Deserialize;

use super::{ApiState, commands, stage_key};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey};

/// Most hosts one action may name.
const MAX_HOSTS: usize = 10_000;

fn parse_upper<T: std::str::FromStr<Err = UnknownValue>>(field: &str, v: Option<&str>) -> ApiResult<T> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Err(ApiError::bad_request(format!("{field} is required"))),
        Some(v) => v.to_ascii_uppercase().parse().map_err(|e: UnknownValue| ApiError::bad_request(e.to_string())),
    }
}

fn optional_deploy(field: &str, v: Option<String>) -> ApiResult<Option<DeployId>> {
    match v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => DeployId::parse(v).map(Some).map_err(|e| ApiError::bad_request(format!("{field}: {e}"))),
    }
}

fn description(d: Option<String>) -> ApiResult<Option<String>> {
    let d = d.filter(|d| !d.is_empty());
    if let Some(d) = &d {
        schema::model::check_text("description", d, 2048)?;
    }
    Ok(d)
}

fn host_ids(ids: Vec<String>) -> ApiResult<Vec<HostId>> {
    if ids.is_empty() {
        return Err(ApiError::bad_request("give at least one host id"));
    }
    if ids.len() > MAX_HOSTS {
        return Err(ApiError::bad_request(format!("at most {MAX_HOSTS} hosts at once")));
    }
    let mut out = ids.into_iter().map(|h| HostId::parse(h.trim())).collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ActionQuery {
    action_type: Option<String>,
    from_deploy_id: Option<String>,
    to_deploy_id: Option<String>,
    description: Option<String>,
    mark_bad: Option<bool>,
}

/// `POST /v1/envs/{env}/{stage}/deploys/current/actions?actionType=PROMOTE|RESTART|ROLLBACK|PAUSE|RESUME`
/// (`fromDeployId` to promote, `toDeployId` to roll back to a given deploy, `markBad=true` to
/// tag the build a rollback leaves BAD_BUILD in the same transaction). A new deploy
/// answers 201 with it; PAUSE and RESUME answer 200 with the current deploy (`null` when none).
pub(super) async fn deploy_action(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    key: IdempotencyKey,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ActionQuery>,
) -> ApiResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let action: DeployAction = parse_upper("actionType", q.action_type.as_deref())?;
    let command = Command::DeployActionV1 {
        env_name: env.clone(),
        stage_name: stage.clone(),
        action,
        from_deploy_id: optional_deploy("fromDeployId", q.from_deploy_id)?,
        to_deploy_id: optional_deploy("toDeployId", q.to_deploy_id)?,
        description: description(q.description)?,
        mark_bad: q.mark_bad.unwrap_or(false),
    };
    let sent = commands::send(&s, &p, &key, command).await?;
    Ok(match action {
        DeployAction::Promote | DeployAction::Restart | DeployAction::Rollback => {
            commands::created(sent, format!("/v1/envs/{env}/{stage}/deploys/current"))
        }
        DeployAction::Pause | DeployAction::Resume => commands::ok(sent),
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct HostActionQuery {
    action_type: Option<String>,
}

/// `PUT /v1/envs/{env}/{stage}/deploys/hostactions?actionType=PAUSED_BY_USER|RESET|NORMAL`
/// with a JSON list of host ids.
pub(super) async fn host_action(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    key: IdempotencyKey,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<HostActionQuery>,
    ApiJson(ids): ApiJson<Vec<String>>,
) -> ApiResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let action: AgentState = parse_upper("actionType", q.action_type.as_deref())?;
    if !matches!(action, AgentState::PausedByUser | AgentState::Reset | AgentState::Normal) {
        return Err(ApiError::bad_request("actionType must be PAUSED_BY_USER, RESET or NORMAL"));
    }
    let command = Command::HostActionV1 { env_name: env, stage_name: stage, action, host_ids: host_ids(ids)? };
    Ok(commands::no_content(commands::send(&s, &p, &key, command).await?))
}

/// The fields of an agent record a user may change.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AgentPatch {
    state: Option<AgentState>,
}

/// `PUT /v1/envs/{env}/{stage}/agents/{hostId}`: changes one host's state on the stage
/// (`PAUSED_BY_USER`, `RESET`, `NORMAL` or `STOP`).
pub(super) async fn update_agent(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    key: IdempotencyKey,
    ApiPath((env, stage, host)): ApiPath<(String, String, String)>,
    ApiJson(patch): ApiJson<AgentPatch>,
) -> ApiResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let host = HostId::parse(host)?;
    let Some(state) = patch.state else {
        return Err(ApiError::bad_request("give the new state, e.g. {\"state\": \"RESET\"}"));
    };
    if !matches!(state, AgentState::PausedByUser | AgentState::Reset | AgentState::Normal | AgentState::Stop) {
        return Err(ApiError::bad_request("state must be PAUSED_BY_USER, RESET, NORMAL or STOP"));
    }
    let command = Command::HostActionV1 { env_name: env, stage_name: stage, action: state, host_ids: vec![host] };
    Ok(commands::no_content(commands::send(&s, &p, &key, command).await?))
}

/// `PUT /v1/envs/{env}/{stage}/agents/reset_failed_agents/{deployId}`: redo the deploy on the
/// hosts where it failed.
pub(super) async fn reset_failed(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    key: IdempotencyKey,
    ApiPath((env, stage, deploy)): ApiPath<(String, String, String)>,
) -> ApiResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let command = Command::ResetFailedV1 { env_name: env, stage_name: stage, deploy_id: DeployId::parse(deploy)? };
    Ok(commands::no_content(commands::send(&s, &p, &key, command).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct StopQuery {
    replace_host: Option<bool>,
}

/// `DELETE /v1/envs/{env}/{stage}/hosts?replaceHost=` with a JSON list of host ids: stops the
/// service on those hosts (every stage they serve runs STOPPING).
pub(super) async fn stop_hosts(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    key: IdempotencyKey,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<StopQuery>,
    ApiJson(ids): ApiJson<Vec<String>>,
) -> ApiResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let command = Command::StopHostsV1 {
        env_name: env,
        stage_name: stage,
        host_ids: host_ids(ids)?,
        replace: q.replace_host.unwrap_or(true),
    };
    Ok(commands::no_content(commands::send(&s, &p, &key, command).await?))
}

/// What `PUT /v1/deploys/{id}` may change.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeployPatch {
    acceptance_status: Option<AcceptanceStatus>,
    description: Option<String>,
}

/// `PUT /v1/deploys/{id}`: a verdict (`PENDING_ACCEPT`, `ACCEPTED`, `REJECTED`) from the
/// system that tests deploys, and/or a new description.
pub(super) async fn update_deploy(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    key: IdempotencyKey,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<DeployPatch>,
) -> ApiResult<Response> {
    let deploy_id = DeployId::parse(id)?;
    if patch.acceptance_status.is_none() && patch.description.is_none() {
        return Err(ApiError::bad_request("give acceptanceStatus and/or description"));
    }
    let command = Command::UpdateDeployV1 {
        deploy_id,
        acceptance_status: patch.acceptance_status,
        description: description(patch.description)?,
    };
    Ok(commands::no_content(commands::send(&s, &p, &key, command).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct OverrideQuery {
    #[serde(default, deserialize_with = "schema::model::lenient::opt_u32")]
    session_number: Option<u32>,
}

/// `PUT /v1/schedules/{env}/{stage}/override?sessionNumber=`: ends the current session of the
/// stage's schedule early.
pub(super) async fn override_schedule(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    key: IdempotencyKey,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<OverrideQuery>,
) -> ApiResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let Some(session) = q.session_number else { return Err(ApiError::bad_request("sessionNumber is required")) };
    let command = Command::OverrideScheduleV1 { env_name: env, stage_name: stage, session };
    Ok(commands::no_content(commands::send(&s, &p, &key, command).await?))
}
