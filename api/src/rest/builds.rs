//! Builds: publish, search, get.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schema::model::{Build, BuildInput};
use schema::{BuildId, BuildName};
use serde::Deserialize;

use super::ApiState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// `POST /v1/builds`: publishes a build.
pub(super) async fn publish(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<BuildInput>,
) -> ApiResult<Response> {
    let build = Build::publish(input, &s.artifacts, &p.name, schema::time::now_ms())?;
    super::require_publisher(&s, &p, &build.name).await?;
    s.store.insert_build(&build).await?;
    tracing::info!(build.id = %build.id, build.name = %build.name, publisher = %p.name, "build published");
    let location = format!("/v1/builds/{}", build.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(build)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SearchQuery {
    name: Option<String>,
    commit: Option<String>,
    branch: Option<String>,
    page_index: Option<i64>,
    page_size: Option<i64>,
}

/// `GET /v1/builds?name=|commit=`: newest first.
pub(super) async fn search(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<Vec<Build>>> {
    let page_index = q.page_index.unwrap_or(1);
    let page_size = q.page_size.unwrap_or(100);
    if !(1..=100_000).contains(&page_index) || !(1..=1000).contains(&page_size) {
        return Err(ApiError::bad_request("pageIndex must be between 1 and 100000 and pageSize between 1 and 1000"));
    }
    let builds = match (q.name.filter(|n| !n.is_empty()), q.commit.filter(|c| !c.is_empty())) {
        (Some(name), _) => {
            let name = BuildName::parse(name)?;
            s.store.builds_by_name(&name, q.branch.as_deref().filter(|b| !b.is_empty()), page_index, page_size).await?
        }
        (None, Some(commit)) => {
            if !commit.chars().all(|c| c.is_ascii_alphanumeric()) || commit.len() > 64 {
                return Err(ApiError::bad_request("commit may only contain letters and digits"));
            }
            s.store.builds_by_commit(&commit, page_index, page_size).await?
        }
        (None, None) => return Err(ApiError::bad_request("give a build name (name=) or a commit (commit=)")),
    };
    Ok(Json(builds))
}

/// `GET /v1/builds/{id}`.
pub(super) async fn get(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Build>> {
    let id = BuildId::parse(id)?;
    Ok(Json(s.store.build(&id).await?))
}
