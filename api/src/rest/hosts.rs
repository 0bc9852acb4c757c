//! Hosts and groups: who is where (Teletraan's `HostBean`, one per host and group), every
//! stage's record of a host, and pre-registration by a provisioner.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use schema::model::{Agent, Host, HostInput};
use schema::{GroupName, HostId, HostName};

use super::{ApiState, stage_key};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};

/// `GET /v1/envs/{env}/{stage}/hosts`: hosts reachable through the stage's capacity (the rows
/// of its groups, and every row of the hosts it names).
pub(super) async fn of_stage(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<Host>>> {
    let (env, stage) = stage_key(env, stage)?;
    let e = s.store.stage(&env, &stage).await?;
    Ok(Json(s.store.hosts_of_stage(&e.id, None).await?))
}

/// `GET /v1/envs/{env}/{stage}/hosts/{hostName}`: that host's rows, if the stage reaches it.
pub(super) async fn one_of_stage(
    State(s): State<ApiState>,
    ApiPath((env, stage, host)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Vec<Host>>> {
    let (env, stage) = stage_key(env, stage)?;
    let host = HostName::parse(host)?;
    let e = s.store.stage(&env, &stage).await?;
    Ok(Json(s.store.hosts_of_stage(&e.id, Some(&host)).await?))
}

/// `GET /v1/hosts/{hostName}`: the hosts of that name, one row per group (`[]` when none).
pub(super) async fn named(State(s): State<ApiState>, ApiPath(host): ApiPath<String>) -> ApiResult<Json<Vec<Host>>> {
    Ok(Json(s.store.hosts_named(&HostName::parse(host)?).await?))
}

/// `GET /v1/hosts/id/{hostId}`: the host of that id, one row per group (`[]` when unknown).
pub(super) async fn with_id(State(s): State<ApiState>, ApiPath(host): ApiPath<String>) -> ApiResult<Json<Vec<Host>>> {
    Ok(Json(s.store.host_with_id(&HostId::parse(host)?).await?))
}

/// `POST /v1/hosts`: pre-registers a host before its agent pings (PROVISIONED, in its group).
/// Registering a known host again only adds the group: a provisioner may retry.
pub(super) async fn register(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<HostInput>,
) -> ApiResult<StatusCode> {
    let host = input.check()?;
    let new = s.store.register_host(&host, &p.name, schema::time::now_ms()).await?;
    tracing::info!(host.id = %host.host_id, host.name = %host.host_name, new, operator = %p.name, "host registered");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/groups/{group}/instances`: the group's hosts that are PROVISIONED or ACTIVE.
pub(super) async fn group_instances(
    State(s): State<ApiState>,
    ApiPath(group): ApiPath<String>,
) -> ApiResult<Json<Vec<Host>>> {
    Ok(Json(s.store.hosts_in_group(&GroupName::parse(group)?).await?))
}

/// `GET /v1/agents/{hostName}`: every stage's record of the hosts of that name.
pub(super) async fn agents_named(
    State(s): State<ApiState>,
    ApiPath(host): ApiPath<String>,
) -> ApiResult<Json<Vec<Agent>>> {
    Ok(Json(s.store.agents_of_host(Some(&HostName::parse(host)?), None).await?))
}

/// `GET /v1/agents/id/{hostId}`: every stage's record of the host of that id.
pub(super) async fn agents_with_id(
    State(s): State<ApiState>,
    ApiPath(host): ApiPath<String>,
) -> ApiResult<Json<Vec<Agent>>> {
    Ok(Json(s.store.agents_of_host(None, Some(&HostId::parse(host)?)).await?))
}
