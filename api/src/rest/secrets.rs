//! A stage's secret script variables: written here, sent to its hosts with the other script
//! variables, never returned (only their names are).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::{Extension, Json};

use super::envs::{check_value, map_key};
use super::{ApiState, stage_key};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};

/// `GET /v1/envs/{env}/{stage}/script_secrets`: the names of the secret variables.
pub(super) async fn names(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.script_secret_names(&env, &stage).await?))
}

/// `PUT /v1/envs/{env}/{stage}/script_secrets` with `{"NAME": "value", "OLD": null}`: sets or
/// removes the named secrets and leaves the others; answers the names.
pub(super) async fn put(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<BTreeMap<String, Option<String>>>,
) -> ApiResult<Json<Vec<String>>> {
    let (env, stage) = stage_key(env, stage)?;
    if input.is_empty() || input.len() > 1000 {
        return Err(ApiError::bad_request("between 1 and 1000 entries: {\"NAME\": \"value\"} sets, null removes"));
    }
    let mut changes = BTreeMap::new();
    for (k, v) in input {
        let k = map_key(&k)?;
        if let Some(v) = &v {
            check_value(&k, v)?;
        }
        changes.insert(k, v);
    }
    let names = s.store.set_script_secrets(&env, &stage, &changes, &p.name, schema::time::now_ms()).await?;
    tracing::info!(by = %p.name, env = %env, stage = %stage, count = changes.len(), "script secrets changed");
    Ok(Json(names))
}
