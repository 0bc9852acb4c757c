//! A stage's dashboard graphs and alarms, shown on the board (`…/metrics`, `…/alarms`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use schema::model::{Alarm, AlarmInput, MetricsConfig, MetricsConfigInput, check_alarms, check_metrics};

use super::{ApiState, stage_key};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};

/// `GET /v1/envs/{env}/{stage}/metrics`: the stage's graphs (`[]` when none).
pub(super) async fn get_metrics(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<MetricsConfig>>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.metrics_links(&env, &stage).await?))
}

/// `PUT /v1/envs/{env}/{stage}/metrics` with the whole list (`{title, url, specs: [{min, max,
/// color}]}`).
pub(super) async fn put_metrics(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<Vec<MetricsConfigInput>>,
) -> ApiResult<StatusCode> {
    let (env, stage) = stage_key(env, stage)?;
    let links = check_metrics(input)?;
    s.store.set_metrics_links(&env, &stage, &links, &p.name, schema::time::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/envs/{env}/{stage}/alarms`: the stage's alarms (`[]` when none).
pub(super) async fn get_alarms(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<Vec<Alarm>>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.alarm_links(&env, &stage).await?))
}

/// `PUT /v1/envs/{env}/{stage}/alarms` with the whole list (`{name, alarmUrl, metricsUrl}`).
pub(super) async fn put_alarms(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<Vec<AlarmInput>>,
) -> ApiResult<StatusCode> {
    let (env, stage) = stage_key(env, stage)?;
    let links = check_alarms(input)?;
    s.store.set_alarm_links(&env, &stage, &links, &p.name, schema::time::now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}
