//! Rollout configuration and views: schedules, deploy constraints, deploy search, a stage's
//! progress, agent counts.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use schema::model::{ConstraintBean, ConstraintInput, ScheduleBean, ScheduleInput};
use schema::{AcceptanceStatus, DeployState, DeployType, EnvId, UnknownValue};
use serde::Deserialize;
use store::{AgentCount, DeployPage, DeployProgress, DeploySearch};

use super::{ApiState, stage_key};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// `PUT /v1/schedules/{env}/{stage}/schedules`: sets the stage's deploy schedule
/// (`totalSessions` ≤ 0 removes it; the answer is then `null`).
pub(super) async fn put_schedule(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<ScheduleInput>,
) -> ApiResult<Json<Option<ScheduleBean>>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.set_schedule(&env, &stage, input, &p.name, schema::time::now_ms()).await?))
}

/// `GET /v1/schedules/{env}/{stage}/{scheduleId}`: the stage's schedule, if it has that id.
pub(super) async fn get_schedule(
    State(s): State<ApiState>,
    ApiPath((env, stage, id)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<ScheduleBean>> {
    let (env, stage) = stage_key(env, stage)?;
    match s.store.schedule(&env, &stage).await? {
        Some(b) if b.id == id || id == "current" => Ok(Json(b)),
        _ => Err(ApiError::not_found(format!("Schedule {id} of {env}/{stage} does not exist."))),
    }
}

/// `GET /v1/envs/{env}/{stage}/deploy_constraint` (`null` when none).
pub(super) async fn get_constraint(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Option<ConstraintBean>>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.constraint(&env, &stage).await?))
}

/// `POST /v1/envs/{env}/{stage}/deploy_constraint`: creates or replaces the stage's constraint.
pub(super) async fn post_constraint(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<ConstraintInput>,
) -> ApiResult<Json<ConstraintBean>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.set_constraint(&env, &stage, input, &p.name, schema::time::now_ms()).await?))
}

/// `DELETE /v1/envs/{env}/{stage}/deploy_constraint`.
pub(super) async fn delete_constraint(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (env, stage) = stage_key(env, stage)?;
    s.store.delete_constraint(&env, &stage, &p.name, schema::time::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/deploys?envId=&operator=&deployType=&deployState=&acceptanceStatus=` (each may
/// repeat) `&commit=&commitDate=&repo=&branch=&before=&after=&pageIndex=&pageSize=&oldestFirst=`.
/// An unknown parameter is a 400.
pub(super) async fn search(State(s): State<ApiState>, RawQuery(query): RawQuery) -> ApiResult<Json<DeployPage>> {
    let (mut page_index, mut page_size) = (None, None);
    let mut q = DeploySearch::default();
    for (k, v) in form_pairs(query.as_deref().unwrap_or_default())? {
        let number = |v: &str| {
            schema::model::lenient::parse_integer(v)
                .ok_or_else(|| ApiError::bad_request(format!("{k} must be an integer, not {v:?}")))
        };
        match k.as_str() {
            "envId" => q.env_ids.push(EnvId::parse(v.as_str())?.into_string()),
            "operator" => q.operators.push(v),
            "deployType" => q.deploy_types.push(v.to_ascii_uppercase().parse::<DeployType>().map_err(bad)?.to_string()),
            "deployState" => {
                q.deploy_states.push(v.to_ascii_uppercase().parse::<DeployState>().map_err(bad)?.to_string())
            }
            "acceptanceStatus" => {
                q.acceptance_statuses.push(v.to_ascii_uppercase().parse::<AcceptanceStatus>().map_err(bad)?.to_string())
            }
            "commit" => {
                if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(ApiError::bad_request("commit may only contain letters and digits (1 to 64)"));
                }
                q.commit = Some(v);
            }
            "commitDate" => q.commit_date = Some(number(&v)?),
            "repo" => q.repo = Some(v),
            "branch" => q.branch = Some(v),
            "before" => q.before = Some(number(&v)?),
            "after" => q.after = Some(number(&v)?),
            "pageIndex" => page_index = Some(number(&v)?),
            "pageSize" => page_size = Some(number(&v)?),
            "oldestFirst" => {
                q.oldest_first = match v.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::bad_request("oldestFirst must be true or false")),
                }
            }
            other => return Err(ApiError::bad_request(format!("unknown parameter {other:?}"))),
        }
    }
    (q.page_index, q.page_size) = super::page(page_index, page_size, 1000)?;
    let dates = [q.before, q.after, q.commit_date];
    if dates.iter().flatten().any(|d| !(0..=32_503_680_000_000).contains(d)) {
        return Err(ApiError::bad_request("before, after and commitDate are epoch milliseconds between 1970 and 3000"));
    }
    if [&q.repo, &q.branch].iter().any(|v| v.as_deref().is_some_and(|v| v.contains('\0'))) {
        return Err(ApiError::bad_request("repo and branch must not contain NUL"));
    }
    Ok(Json(s.store.search_deploys(&q).await?))
}

fn bad(e: UnknownValue) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// Decodes `a=1&b=2&a=3` (repeated keys kept).
fn form_pairs(query: &str) -> ApiResult<Vec<(String, String)>> {
    let decode = |s: &str| -> ApiResult<String> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let byte = bytes
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| ApiError::bad_request("bad percent-encoding in the query"))?;
                    out.push(byte);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| ApiError::bad_request("query parameters must be UTF-8"))
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// `GET|PUT /v1/envs/{env}/{stage}/deploys/current/progress`: every record of the stage, the
/// host-capacity names no agent reported, and the hosts of the capacity without a record yet.
/// (Teletraan's PUT also moves the deploy's state; here it only reads.)
pub(super) async fn progress(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<DeployProgress>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.stage_progress(&env, &stage).await?))
}

/// `GET /v1/envs/{env}/{stage}/deploys/current/missing-hosts`: the host-capacity names no
/// agent reported (or that were forgotten).
pub(super) async fn missing_hosts(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.missing_hosts(&env, &stage).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CountQuery {
    action_type: Option<String>,
}

/// `GET /v1/envs/{env}/{stage}/agents/count?actionType=SERVING|SERVING_AND_NORMAL|FIRST_DEPLOY|FAILED_FIRST_DEPLOY`.
pub(super) async fn count(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<CountQuery>,
) -> ApiResult<Json<i64>> {
    let (env, stage) = stage_key(env, stage)?;
    let what = match q.action_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("SERVING") => AgentCount::Serving,
        Some("SERVING_AND_NORMAL") => AgentCount::ServingAndNormal,
        Some("FIRST_DEPLOY") => AgentCount::FirstDeploy,
        Some("FAILED_FIRST_DEPLOY") => AgentCount::FailedFirstDeploy,
        _ => {
            return Err(ApiError::bad_request(
                "actionType must be SERVING, SERVING_AND_NORMAL, FIRST_DEPLOY or FAILED_FIRST_DEPLOY",
            ));
        }
    };
    Ok(Json(s.store.count_agents(&env, &stage, what).await?))
}
