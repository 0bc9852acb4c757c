//! Hosts' enrollments: list them, and revoke a host's credential (it must enroll again).

use axum::extract::State;
use axum::{Extension, Json};
use schema::HostId;
use serde::Deserialize;
use store::HostCredential;

use super::{ApiState, page};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{ApiPath, ApiQuery};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PageQuery {
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_index: Option<i64>,
    #[serde(default, deserialize_with = "schema::model::lenient::opt_i64")]
    page_size: Option<i64>,
}

/// `GET /v1/host_credentials?pageIndex=&pageSize=`: enrollments by host id (never credentials).
pub(super) async fn list(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Vec<HostCredential>>> {
    let (page_index, page_size) = page(q.page_index, q.page_size, 1000)?;
    Ok(Json(s.store.host_credentials(page_index, page_size).await?))
}

/// `GET /v1/host_credentials/{hostId}`.
pub(super) async fn get(State(s): State<ApiState>, ApiPath(host): ApiPath<String>) -> ApiResult<Json<HostCredential>> {
    Ok(Json(s.store.host_credential(&HostId::parse(host)?).await?))
}

/// `DELETE /v1/host_credentials/{hostId}`: the host's credential is refused from now on (by
/// every gateway within seconds) until the host enrolls again; static agent tokens still may
/// not ping as it.
pub(super) async fn revoke(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath(host): ApiPath<String>,
) -> ApiResult<Json<HostCredential>> {
    let host = HostId::parse(host)?;
    let revoked = s.store.revoke_host_credential(&host, &p.name, schema::time::now_ms()).await?;
    tracing::info!(by = %p.name, host.id = %host, generation = revoked.generation, "host credential revoked");
    Ok(Json(revoked))
}
