//! Agent records of a stage (the host grid) and their errors.

use axum::Json;
use axum::extract::State;
use schema::model::Agent;
use schema::{EnvId, HostId, HostName};
use serde::Serialize;

use super::{ApiState, stage_key};
use crate::error::ApiResult;
use crate::extract::ApiPath;

/// `GET /v1/envs/{env}/{stage}/agents`.
pub(super) async fn list(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<Agent>>> {
    let (env, stage) = stage_key(env, stage)?;
    let e = s.store.stage(&env, &stage).await?;
    Ok(Json(s.store.agents_of_stage(&e.id).await?))
}

/// Teletraan's `AgentErrorBean`.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AgentError {
    host_id: Option<HostId>,
    host_name: HostName,
    env_id: EnvId,
    error_message: Option<String>,
}

/// `GET /v1/envs/{env}/{stage}/agents/errors/{hostName}`: the last error text (empty when none).
pub(super) async fn error(
    State(s): State<ApiState>,
    ApiPath((env, stage, host)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<AgentError>> {
    let (env, stage) = stage_key(env, stage)?;
    let host = HostName::parse(host)?;
    let e = s.store.stage(&env, &stage).await?;
    let found = s.store.agent_error(&e.id, &host).await?;
    Ok(Json(AgentError {
        host_id: found.as_ref().map(|f| f.0.clone()),
        host_name: host,
        env_id: e.id,
        error_message: found.map(|f| f.1),
    }))
}
