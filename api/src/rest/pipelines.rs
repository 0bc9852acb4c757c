//! Pipelines and build tags: a stage's auto-deploy settings, marks on builds, a build's
//! effective tag.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schema::model::{Promote, PromoteInput, Tag, TagInput};
use schema::rules::access::Target;
use schema::{AccessRole, BuildId, BuildName, EnvId, TagTargetType, TagValue, UnknownValue};

use super::{ApiState, stage_key};
use crate::auth::Principal;
use crate::created::Created;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};

/// Most tags a list answers.
const TAG_LIST: i64 = 1000;

/// `GET /v1/envs/{env}/{stage}/promotes`: the stage's pipeline settings (MANUAL with queue
/// size 1 when none were set).
pub(super) async fn get_promote(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Promote>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.promote(&env, &stage).await?))
}

/// `PUT /v1/envs/{env}/{stage}/promotes`: changes them (absent fields keep their value).
pub(super) async fn put_promote(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<PromoteInput>,
) -> ApiResult<Json<Promote>> {
    let (env, stage) = stage_key(env, stage)?;
    let promote = s.store.set_promote(&env, &stage, input, &p.name, schema::time::now_ms()).await?;
    tracing::info!(env = %env, stage = %stage, operator = %p.name, promote = ?promote.promote_type, "pipeline changed");
    Ok(Json(promote))
}

/// `POST /v1/tags`: marks a build (`targetType: BUILD`, `targetId`: the build id), a stage or
/// the system.
pub(super) async fn create_tag(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<TagInput>,
) -> ApiResult<Created<Tag>> {
    let new = input.check()?;
    match new.target_type {
        TagTargetType::Build => {
            let build = s.store.build(&BuildId::parse(new.target_id.as_str())?).await?;
            super::require_publisher(&s, &p, &build.name).await?;
        }
        TagTargetType::Environment => {
            let e = s.store.stage_by_id(&EnvId::parse(new.target_id.as_str())?).await?;
            p.require(AccessRole::Operator, Target::Env(&e.env_name))?;
        }
        TagTargetType::Teletraan => p.require(AccessRole::Admin, Target::System)?,
    }
    let tag = s.store.insert_tag(&new, &p.name, schema::time::now_ms()).await?;
    tracing::info!(tag.id = %tag.id, value = %tag.value, target = %tag.target_id, operator = %p.name, "tagged");
    let location = format!("/v1/tags/{}", tag.id);
    Ok(Created::at(location, tag))
}

fn tag_id(id: &str) -> ApiResult<&str> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ApiError::bad_request("a tag id has letters, digits, '-' and '_' only"));
    }
    Ok(id)
}

/// `GET /v1/tags/{id}`.
pub(super) async fn get_tag(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Tag>> {
    Ok(Json(s.store.tag(tag_id(&id)?).await?))
}

/// `DELETE /v1/tags/{id}` (needs what making it needed).
pub(super) async fn delete_tag(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let tag = s.store.tag(tag_id(&id)?).await?;
    match tag.target_type {
        TagTargetType::Build => super::require_publisher(&s, &p, &BuildName::parse(tag.target_id.as_str())?).await?,
        TagTargetType::Environment => match s.store.stage_by_id(&EnvId::parse(tag.target_id.as_str())?).await {
            Ok(e) => p.require(AccessRole::Operator, Target::Env(&e.env_name))?,
            // The stage is gone: its tags are the system's to clean up.
            Err(store::Error::NotFound(_)) => p.require(AccessRole::Admin, Target::System)?,
            Err(e) => return Err(e.into()),
        },
        TagTargetType::Teletraan => p.require(AccessRole::Admin, Target::System)?,
    }
    s.store.delete_tag(&tag.id, &p.name, schema::time::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn target(id: &str) -> ApiResult<&str> {
    schema::model::check_text("targetId", id, 128)?;
    Ok(id)
}

/// `GET /v1/tags/targets/{targetId}`: the tags of a build name, stage id or `TELETRAAN`,
/// newest first.
pub(super) async fn tags_of_target(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<Tag>>> {
    Ok(Json(s.store.tags_of_target(target(&id)?, TAG_LIST).await?))
}

/// `GET /v1/tags/targets/{targetId}/latest` (`null` when none).
pub(super) async fn latest_tag_of_target(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Option<Tag>>> {
    Ok(Json(s.store.tags_of_target(target(&id)?, 1).await?.into_iter().next()))
}

/// `GET /v1/tags/values/{value}`: tags with a value, newest first.
pub(super) async fn tags_with_value(
    State(s): State<ApiState>,
    ApiPath(value): ApiPath<String>,
) -> ApiResult<Json<Vec<Tag>>> {
    let value: TagValue =
        value.to_ascii_uppercase().parse().map_err(|e: UnknownValue| ApiError::bad_request(e.to_string()))?;
    Ok(Json(s.store.tags_with_value(value, TAG_LIST).await?))
}

/// `GET /v1/builds/{id}/tag`: the build's effective tag, which may be on an earlier build of
/// its branch (`null` when no tag reaches it).
pub(super) async fn build_tag(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Option<Tag>>> {
    let id = BuildId::parse(id)?;
    Ok(Json(s.store.effective_tag(&id).await?))
}
