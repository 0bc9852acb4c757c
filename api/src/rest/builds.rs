//! Builds: publish, search (with effective tags), get, delete, names and branches.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schema::model::{Build, BuildInput, BuildWithTag};
use schema::{BuildId, BuildName};
use serde::Deserialize;
use store::BuildSearch;

use super::ApiState;
use crate::auth::Principal;
use crate::created::Created;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// `POST /v1/builds`: publishes a build.
pub(super) async fn publish(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<BuildInput>,
) -> ApiResult<Created<Build>> {
    let build = Build::publish(input, &s.artifacts, &p.name, schema::time::now_ms())?;
    super::require_publisher(&s, &p, &build.name).await?;
    s.store.insert_build(&build).await?;
    tracing::info!(build.id = %build.id, build.name = %build.name, publisher = %p.name, "build published");
    let location = format!("/v1/builds/{}", build.id);
    Ok(Created::at(location, build))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SearchQuery {
    name: Option<String>,
    commit: Option<String>,
    branch: Option<String>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    before: Option<i64>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    after: Option<i64>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_index: Option<i64>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_size: Option<i64>,
}

impl SearchQuery {
    fn check(self) -> ApiResult<BuildSearch> {
        let (page_index, page_size) = (self.page_index.unwrap_or(1), self.page_size.unwrap_or(100));
        if !(1..=100_000).contains(&page_index) || !(1..=1000).contains(&page_size) {
            return Err(ApiError::bad_request(
                "pageIndex must be between 1 and 100000 and pageSize between 1 and 1000",
            ));
        }
        let name = self.name.filter(|n| !n.is_empty()).map(BuildName::parse).transpose()?;
        let commit = self.commit.filter(|c| !c.is_empty());
        if let Some(c) = &commit
            && (!c.chars().all(|c| c.is_ascii_alphanumeric()) || c.len() > 64)
        {
            return Err(ApiError::bad_request("commit may only contain letters and digits (at most 64)"));
        }
        if name.is_none() && commit.is_none() {
            return Err(ApiError::bad_request("give a build name (name=) or a commit (commit=)"));
        }
        let branch = self.branch.filter(|b| !b.is_empty());
        if let Some(b) = &branch {
            schema::model::check_text("branch", b, 256)?;
        }
        for (field, v) in [("before", self.before), ("after", self.after)] {
            if v.is_some_and(|v| !(0..=32_503_680_000_000).contains(&v)) {
                return Err(ApiError::bad_request(format!("{field} is epoch milliseconds between 1970 and 3000")));
            }
        }
        Ok(BuildSearch { name, commit, branch, before: self.before, after: self.after, page_index, page_size })
    }
}

/// `GET /v1/builds?name=|commit=&branch=&before=&after=&pageIndex=&pageSize=`: newest first.
pub(super) async fn search(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<Vec<Build>>> {
    Ok(Json(s.store.search_builds(&q.check()?).await?))
}

/// `GET /v1/builds/tags` with the parameters of the search: the builds with their effective
/// tags.
pub(super) async fn search_with_tags(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<Vec<BuildWithTag>>> {
    let builds = s.store.search_builds(&q.check()?).await?;
    Ok(Json(s.store.with_effective_tags(builds).await?))
}

/// `GET /v1/builds/{id}`.
pub(super) async fn get(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Build>> {
    let id = BuildId::parse(id)?;
    Ok(Json(s.store.build(&id).await?))
}

/// `GET /v1/builds/{id}/tags`: the build with its effective tag (`{"build", "tag"}`).
pub(super) async fn get_with_tag(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<BuildWithTag>> {
    let build = s.store.build(&BuildId::parse(id)?).await?;
    let mut one = s.store.with_effective_tags(vec![build]).await?;
    one.pop().map(Json).ok_or_else(|| ApiError::internal("a build lost on the way"))
}

/// `DELETE /v1/builds/{id}`: deletes a build no deploy uses (409 while one does). Whoever may
/// publish builds of its name may delete it.
pub(super) async fn delete(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = BuildId::parse(id)?;
    let build = s.store.build(&id).await?;
    super::require_publisher(&s, &p, &build.name).await?;
    s.store.delete_build(&id, &p.name, schema::time::now_ms()).await?;
    tracing::info!(build.id = %id, operator = %p.name, "build deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct NamesQuery {
    filter: Option<String>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    start: Option<i64>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    size: Option<i64>,
}

/// `GET /v1/builds/names?filter=&start=&size=`: distinct build names containing `filter`, in
/// order; `start` is the page (from 1), `size` its length (default 100).
pub(super) async fn names(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<NamesQuery>,
) -> ApiResult<Json<Vec<String>>> {
    let (start, size) = (q.start.unwrap_or(1), q.size.unwrap_or(100));
    if !(1..=100_000).contains(&start) || !(1..=1000).contains(&size) {
        return Err(ApiError::bad_request("start must be between 1 and 100000 and size between 1 and 1000"));
    }
    let filter = q.filter.filter(|f| !f.is_empty());
    if let Some(f) = &filter {
        schema::model::check_text("filter", f, 64)?;
    }
    Ok(Json(s.store.build_names(filter.as_deref(), start, size).await?))
}

/// `GET /v1/builds/names/{name}/branches`: the branches builds of that name came from.
pub(super) async fn branches(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(s.store.build_branches(&BuildName::parse(name)?).await?))
}
