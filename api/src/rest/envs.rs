//! Environments and stages, their capacity and their maps.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use schema::model::{Environ, EnvironInput, StringMap};
use schema::rules::access::{GrantScope, Target};
use schema::{AccessRole, CapacityType, EnvId, EnvName, EnvType, GroupName, HostName, UnknownValue};
use serde::Deserialize;
use store::{StageFilter, StageMap, Subject};

use super::{ApiState, stage_key};
use crate::auth::Principal;
use crate::created::Created;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ListQuery {
    env_name: Option<String>,
    group_name: Option<String>,
    stage_type: Option<String>,
}

/// `GET /v1/envs?envName=&groupName=&stageType=`: the stages that pass every filter given
/// (every stage without one). An unknown filter is a 400, never ignored.
pub(super) async fn list(State(s): State<ApiState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<Vec<Environ>>> {
    let given = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let filter = StageFilter {
        env_name: given(q.env_name).map(EnvName::parse).transpose()?,
        group_name: given(q.group_name).map(GroupName::parse).transpose()?,
        stage_type: given(q.stage_type)
            .map(|t| t.to_ascii_uppercase().parse::<EnvType>())
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("stageType: {e}")))?,
    };
    Ok(Json(s.store.search_stages(&filter).await?))
}

/// `GET /v1/envs/{id}`: a stage by its id.
pub(super) async fn get_by_id(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Environ>> {
    Ok(Json(s.store.stage_by_id(&EnvId::parse(id)?).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct NamesQuery {
    name_filter: Option<String>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_index: Option<i64>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_size: Option<i64>,
}

/// `GET /v1/envs/names?nameFilter=&pageIndex=&pageSize=`: environment names containing
/// `nameFilter`, in order (30 a page by default).
pub(super) async fn names(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<NamesQuery>,
) -> ApiResult<Json<Vec<String>>> {
    let (index, size) = super::page(q.page_index, q.page_size, 1000)?;
    let filter = q.name_filter.filter(|f| !f.is_empty());
    if let Some(f) = &filter {
        schema::model::check_text("nameFilter", f, 64)?;
    }
    Ok(Json(s.store.env_names(filter.as_deref(), index, size).await?))
}

/// `POST /v1/envs`: creates a stage.
pub(super) async fn create(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiJson(input): ApiJson<EnvironInput>,
) -> ApiResult<Created<Environ>> {
    let e = Environ::create(EnvId::generate(), input, &p.name, schema::time::now_ms())?;
    p.require(AccessRole::Operator, Target::Env(&e.env_name))?;
    let new_env = s.store.stages(Some(&e.env_name)).await?.is_empty();
    s.store.create_stage(&e).await?;
    if new_env && !p.may(AccessRole::Admin, Target::Env(&e.env_name)) {
        // Whoever creates an environment administers it (as in Teletraan).
        let scope = GrantScope::Env(e.env_name.clone());
        s.store.set_grant(Subject::Principal, &p.name, &scope, AccessRole::Admin, &p.name, e.last_update).await?;
    }
    tracing::info!(env = %e.env_name, stage = %e.stage_name, operator = %p.name, "stage created");
    let location = format!("/v1/envs/{}/{}", e.env_name, e.stage_name);
    Ok(Created::at(location, e))
}

/// `GET /v1/envs/{env}/{stage}`.
pub(super) async fn get(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Environ>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.stage(&env, &stage).await?))
}

/// `PUT /v1/envs/{env}/{stage}`: a partial update (absent fields stay as they are).
pub(super) async fn update(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<EnvironInput>,
) -> ApiResult<StatusCode> {
    let (env, stage) = stage_key(env, stage)?;
    s.store.update_stage(&env, &stage, input, &p.name, schema::time::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/envs/{env}/{stage}`: refused while capacity or hosts remain.
pub(super) async fn delete(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (env, stage) = stage_key(env, stage)?;
    s.store.delete_stage(&env, &stage, &p.name, schema::time::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CapacityQuery {
    capacity_type: Option<String>,
}

fn capacity_type(q: &CapacityQuery) -> ApiResult<CapacityType> {
    match q.capacity_type.as_deref() {
        None | Some("") => Ok(CapacityType::Group),
        Some(t) => t.to_ascii_uppercase().parse().map_err(|e: UnknownValue| ApiError::bad_request(e.to_string())),
    }
}

/// `GET …/capacity?capacityType=GROUP|HOST`.
pub(super) async fn get_capacity(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<CapacityQuery>,
) -> ApiResult<Json<Vec<String>>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.capacity(&env, &stage, capacity_type(&q)?).await?))
}

/// `PUT …/capacity?capacityType=GROUP|HOST` with the full list of names.
pub(super) async fn put_capacity(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<CapacityQuery>,
    ApiJson(names): ApiJson<Vec<String>>,
) -> ApiResult<StatusCode> {
    let (env, stage) = stage_key(env, stage)?;
    let kind = capacity_type(&q)?;
    let mut clean = Vec::with_capacity(names.len());
    for n in names {
        let n = n.trim().to_string();
        match kind {
            CapacityType::Group => GroupName::parse(n.as_str()).map(|_| ())?,
            CapacityType::Host => HostName::parse(n.as_str()).map(|_| ())?,
        }
        clean.push(n);
    }
    clean.sort();
    clean.dedup();
    s.store.set_capacity(&env, &stage, kind, &clean, &p.name, schema::time::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One capacity name from a body: a JSON string (`"web"`), or the bare name (`web`), as
/// Teletraan takes it; validated for its kind.
fn one_name(kind: CapacityType, body: &[u8]) -> ApiResult<String> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body must be UTF-8"))?.trim();
    let name = if text.starts_with('"') {
        serde_json::from_str::<String>(text)
            .map_err(|e| ApiError::bad_request(format!("the body must be one name, a JSON string: {e}")))?
    } else {
        text.to_string()
    };
    let name = name.trim().to_string();
    match kind {
        CapacityType::Group => GroupName::parse(name.as_str()).map(|_| ())?,
        CapacityType::Host => HostName::parse(name.as_str()).map(|_| ())?,
    }
    Ok(name)
}

/// `POST …/capacity?capacityType=GROUP|HOST` with one name: attaches it (nothing happens when
/// it is attached already).
pub(super) async fn add_capacity(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<CapacityQuery>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    one_capacity(&s, &p, (env, stage), &q, body, true).await
}

/// `DELETE …/capacity?capacityType=GROUP|HOST` with one name: detaches it (nothing happens when
/// it is not attached).
pub(super) async fn remove_capacity(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<CapacityQuery>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    one_capacity(&s, &p, (env, stage), &q, body, false).await
}

/// Attaches (`add`) or detaches one name of a stage's capacity.
async fn one_capacity(
    s: &ApiState,
    p: &Principal,
    (env, stage): (String, String),
    q: &CapacityQuery,
    body: Result<Bytes, BytesRejection>,
    add: bool,
) -> ApiResult<StatusCode> {
    let (env, stage) = stage_key(env, stage)?;
    let kind = capacity_type(q)?;
    let name = one_name(kind, &body.map_err(crate::extract::body_error)?)?;
    let now = schema::time::now_ms();
    if add {
        s.store.add_capacity(&env, &stage, kind, &name, &p.name, now).await?;
    } else {
        s.store.remove_capacity(&env, &stage, kind, &name, &p.name, now).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A key of script variables or agent configs, trimmed: no spaces, `=` or control characters.
pub(super) fn map_key(k: &str) -> ApiResult<String> {
    let k = k.trim();
    if k.is_empty() || k.len() > 256 || k.chars().any(|c| c.is_control() || c == '=' || c.is_whitespace()) {
        return Err(ApiError::bad_request(format!(
            "invalid key {k:?}: no spaces, '=' or control characters, at most 256 bytes"
        )));
    }
    Ok(k.to_string())
}

/// A value of script variables or agent configs: at most 16 KiB, no NUL.
pub(super) fn check_value(k: &str, v: &str) -> ApiResult<()> {
    if v.len() > 16 * 1024 || v.contains('\0') {
        return Err(ApiError::bad_request(format!("value of {k:?} is too long or contains NUL")));
    }
    Ok(())
}

async fn get_map(s: &ApiState, env: String, stage: String, which: StageMap) -> ApiResult<Json<StringMap>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.stage_map(&env, &stage, which).await?))
}

async fn put_map(
    s: &ApiState,
    p: &Principal,
    env: String,
    stage: String,
    which: StageMap,
    map: StringMap,
) -> ApiResult<StatusCode> {
    let (env, stage) = stage_key(env, stage)?;
    if map.len() > 1000 {
        return Err(ApiError::bad_request("at most 1000 entries"));
    }
    let mut clean = StringMap::new();
    for (k, v) in map {
        let k = map_key(&k)?;
        check_value(&k, &v)?;
        // Teletraan trims agent config values; script variables are passed as given.
        let v = match which {
            StageMap::AgentConfigs => v.trim().to_string(),
            StageMap::ScriptConfigs => v,
        };
        clean.insert(k, v);
    }
    s.store.set_stage_map(&env, &stage, which, &clean, &p.name, schema::time::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET …/script_configs`: the script variables hooks receive.
pub(super) async fn get_script_configs(
    State(s): State<ApiState>,
    ApiPath((e, st)): ApiPath<(String, String)>,
) -> ApiResult<Json<StringMap>> {
    get_map(&s, e, st, StageMap::ScriptConfigs).await
}

/// `PUT …/script_configs`.
pub(super) async fn put_script_configs(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((e, st)): ApiPath<(String, String)>,
    ApiJson(map): ApiJson<StringMap>,
) -> ApiResult<StatusCode> {
    put_map(&s, &p, e, st, StageMap::ScriptConfigs, map).await
}

/// `GET …/agent_configs`: overrides of the agent's settings.
pub(super) async fn get_agent_configs(
    State(s): State<ApiState>,
    ApiPath((e, st)): ApiPath<(String, String)>,
) -> ApiResult<Json<StringMap>> {
    get_map(&s, e, st, StageMap::AgentConfigs).await
}

/// `PUT …/agent_configs`.
pub(super) async fn put_agent_configs(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((e, st)): ApiPath<(String, String)>,
    ApiJson(map): ApiJson<StringMap>,
) -> ApiResult<StatusCode> {
    put_map(&s, &p, e, st, StageMap::AgentConfigs, map).await
}
