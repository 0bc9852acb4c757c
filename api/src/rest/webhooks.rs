//! A stage's webhooks (Teletraan's `EnvWebHookBean`, plus a write-only secret) and their
//! deliveries: the list, and sending a failed one again.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use schema::model::{DeliveryStatus, EnvWebHooks, EnvWebHooksInput, WebHookDelivery};
use serde::Deserialize;

use super::{ApiState, stage_key};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Largest page of deliveries.
const MAX_PAGE_SIZE: i64 = 500;

/// `GET /v1/envs/{env}/{stage}/web_hooks`: the hooks (empty lists when none) and `hasSecret`.
pub(super) async fn get(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
) -> ApiResult<Json<EnvWebHooks>> {
    let (env, stage) = stage_key(env, stage)?;
    Ok(Json(s.store.webhooks(&env, &stage).await?))
}

/// `PUT /v1/envs/{env}/{stage}/web_hooks`: replaces the hooks; `secret` absent keeps the
/// stored one, `""` removes it. Answers what is stored, without the secret.
pub(super) async fn put(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<EnvWebHooksInput>,
) -> ApiResult<Json<EnvWebHooks>> {
    let (env, stage) = stage_key(env, stage)?;
    let (config, secret) = input.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let stored = s.store.set_webhooks(&env, &stage, &config, &secret, &p.name, schema::time::now_ms()).await?;
    tracing::info!(env = %env, stage = %stage, operator = %p.name, pre = stored.pre_deploy_hooks.len(),
        post = stored.post_deploy_hooks.len(), secret = ?secret, "webhooks set");
    Ok(Json(stored))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeliveriesQuery {
    status: Option<String>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_index: Option<i64>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_size: Option<i64>,
}

/// `GET /v1/envs/{env}/{stage}/web_hooks/deliveries?status=&pageIndex=&pageSize=`: newest first.
pub(super) async fn deliveries(
    State(s): State<ApiState>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<Vec<WebHookDelivery>>> {
    let (env, stage) = stage_key(env, stage)?;
    let status = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => Some(
            DeliveryStatus::parse(v)
                .ok_or_else(|| ApiError::bad_request("status must be PENDING, DELIVERED or FAILED"))?,
        ),
    };
    let (page_index, page_size) = super::page(q.page_index, q.page_size, MAX_PAGE_SIZE)?;
    Ok(Json(s.store.webhook_deliveries(&env, &stage, status, page_index, page_size).await?))
}

/// `POST /v1/envs/{env}/{stage}/web_hooks/deliveries/{id}/retry`: sends a FAILED delivery
/// again (409 when it is not FAILED, 404 when the stage has no such delivery).
pub(super) async fn retry(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage, id)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<WebHookDelivery>> {
    let (env, stage) = stage_key(env, stage)?;
    // Ids are minted by the server; anything else cannot name a delivery.
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(ApiError::not_found(format!("Webhook delivery {id:?} of {env}/{stage} does not exist.")));
    }
    let d = s.store.retry_webhook_delivery(&env, &stage, &id, &p.name, schema::time::now_ms()).await?;
    tracing::info!(delivery.id = %d.id, env = %env, stage = %stage, operator = %p.name, "webhook delivery retried");
    Ok(Json(d))
}
