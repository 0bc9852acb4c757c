//! The audit history: who changed what, when, from what to what.

use axum::Json;
use axum::extract::State;
use schema::EnvName;
use serde::Deserialize;
use store::{HistoryEntry, HistoryQuery};

use super::{ApiState, page, stage_key};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};

/// Largest page of history.
const MAX_PAGE_SIZE: i64 = 500;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PageQuery {
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_index: Option<i64>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_size: Option<i64>,
}

/// `GET /v1/envs/{env}/{stage}/history?pageIndex=&pageSize=`: the stage's changes, newest first.
pub(super) async fn stage(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    let (env, stage) = stage_key(env, stage)?;
    let (page_index, page_size) = page(q.page_index, q.page_size, MAX_PAGE_SIZE)?;
    Ok(Json(s.store.stage_history(&env, &stage, page_index, page_size).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SearchQuery {
    env_name: Option<String>,
    operator: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_index: Option<i64>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_size: Option<i64>,
}

/// `GET /v1/history?envName=&operator=&type=&pageIndex=&pageSize=`: every change, newest
/// first (roles, tokens and builds too, which belong to no stage).
pub(super) async fn search(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    let (page_index, page_size) = page(q.page_index, q.page_size, MAX_PAGE_SIZE)?;
    let env_name = match q.env_name.filter(|v| !v.is_empty()) {
        Some(v) => Some(EnvName::parse(v)?.into_string()),
        None => None,
    };
    let short = |name: &str, v: Option<String>| match v.filter(|v| !v.is_empty()) {
        Some(v) if v.len() > 256 => Err(ApiError::bad_request(format!("{name} is longer than 256 bytes"))),
        v => Ok(v),
    };
    let query = HistoryQuery {
        env_name,
        operator: short("operator", q.operator)?,
        kind: short("type", q.kind)?,
        page_index,
        page_size,
    };
    Ok(Json(s.store.history(&query).await?))
}
