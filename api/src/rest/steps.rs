//! The log of hosts' step changes: a deploy's timeline, page by page of hosts, and a host's
//! changes and deploys, newest first.

use axum::Json;
use axum::extract::State;
use schema::model::{AgentStep, DeploySteps, HostDeploy};
use schema::{DeployId, HostName};
use serde::Deserialize;

use super::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};

/// The most hosts (deploy timeline) or rows (host reads) one page holds.
const MAX_PAGE: i64 = 1000;

fn page_size(size: Option<i64>, default: i64) -> ApiResult<i64> {
    match size.unwrap_or(default) {
        n @ 1..=MAX_PAGE => Ok(n),
        _ => Err(ApiError::bad_request(format!("pageSize must be between 1 and {MAX_PAGE}"))),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeployStepsQuery {
    /// The `next` of the previous page: hosts whose name sorts after it.
    after: Option<String>,
    /// Hosts per page (default 100, at most 1000).
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_size: Option<i64>,
}

/// `GET /v1/deploys/{id}/steps?after=&pageSize=`: the deploy's hosts by name, each with every
/// change of its record on the deploy, oldest first.
pub(super) async fn of_deploy(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeployStepsQuery>,
) -> ApiResult<Json<DeploySteps>> {
    let id = DeployId::parse(id)?;
    let size = page_size(q.page_size, 100)?;
    let after = q.after.filter(|a| !a.is_empty()).map(HostName::parse).transpose()?;
    s.store.deploy(&id).await?;
    Ok(Json(s.store.deploy_steps(&id, after.as_ref(), size).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct HostStepsQuery {
    /// Changes logged before this `seq` (the last `seq` of the previous page).
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    before: Option<i64>,
    /// Rows per page (default 100, at most 1000).
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_size: Option<i64>,
}

/// `GET /v1/agents/{hostName}/steps?before=&pageSize=`: the changes of the records of the
/// hosts of that name on every stage, newest first.
pub(super) async fn of_host(
    State(s): State<ApiState>,
    ApiPath(host): ApiPath<String>,
    ApiQuery(q): ApiQuery<HostStepsQuery>,
) -> ApiResult<Json<Vec<AgentStep>>> {
    let host = HostName::parse(host)?;
    let size = page_size(q.page_size, 100)?;
    Ok(Json(s.store.host_steps(&host, q.before, size).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct HostDeploysQuery {
    /// Deploys listed (default 30, at most 1000).
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_size: Option<i64>,
}

/// `GET /v1/agents/{hostName}/deploys?pageSize=`: the deploys the hosts of that name took part
/// in, the latest first, each with where the host ended.
pub(super) async fn deploys_of_host(
    State(s): State<ApiState>,
    ApiPath(host): ApiPath<String>,
    ApiQuery(q): ApiQuery<HostDeploysQuery>,
) -> ApiResult<Json<Vec<HostDeploy>>> {
    let host = HostName::parse(host)?;
    let size = page_size(q.page_size, 30)?;
    Ok(Json(s.store.host_deploys(&host, size).await?))
}
