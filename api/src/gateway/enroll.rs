//! `POST /v1/system/enroll`: a host presents an enrollment token and gets a credential of its
//! own, bound to its host id and name and scoped to the token's groups. Unlike a ping, this
//! writes to Postgres (the binding, its history row and its announcement to every gateway,
//! in one transaction): a host enrolls once.

use std::sync::Arc;
use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{IntCounterVec, register_int_counter_vec};
use schema::rules::identity::Refusal;
use schema::{GroupName, HostId, HostName};
use serde::{Deserialize, Serialize};
use store::{Enrolled, Enrollment, Store};

use super::Gateway;
use super::identity::Credential;
use crate::auth::bearer;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;

static ENROLLMENTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!("teletraan_gateway_enrollments_total", "Enrollments answered, by outcome", &["outcome"])
        .ok()
});

fn count(outcome: &str) {
    if let Some(c) = ENROLLMENTS.as_ref() {
        c.with_label_values(&[outcome]).inc();
    }
}

/// What the enroll route shares.
#[derive(Clone)]
pub(crate) struct EnrollState {
    pub gateway: Arc<Gateway>,
    pub store: Store,
}

/// The request: who the host is and the groups it is in now.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct EnrollInput {
    host_id: Option<String>,
    host_name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// The answer: the credential (shown once; send it as `Authorization: token <credential>`).
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct EnrollOutput {
    host_id: HostId,
    host_name: HostName,
    generation: u32,
    groups: Option<Vec<GroupName>>,
    credential: String,
}

fn parse(input: EnrollInput) -> ApiResult<(HostId, HostName, Vec<GroupName>)> {
    let host_id =
        HostId::parse(input.host_id.unwrap_or_default()).map_err(|e| ApiError::bad_request(format!("hostId: {e}")))?;
    let host_name = match input.host_name.filter(|n| !n.is_empty()) {
        Some(n) => HostName::parse(n).map_err(|e| ApiError::bad_request(format!("hostName: {e}")))?,
        None => HostName::parse(host_id.as_str()).map_err(|e| ApiError::bad_request(format!("hostId: {e}")))?,
    };
    if input.groups.len() > 256 {
        return Err(ApiError::bad_request("groups: at most 256"));
    }
    let mut groups = input
        .groups
        .into_iter()
        .map(GroupName::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(format!("groups: {e}")))?;
    groups.sort();
    groups.dedup();
    Ok((host_id, host_name, groups))
}

/// `POST /v1/system/enroll` with `Authorization: token <enrollment token>` and
/// `{"hostId", "hostName", "groups"}`: 201 with the credential; 401 for a token that is not a
/// live ENROLL token, 403 for groups outside its scope, 409 when the host (or another host of
/// that name) already enrolled and the token may not replace its credential.
pub(super) async fn enroll(
    State(s): State<EnrollState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<EnrollInput>,
) -> Response {
    match run(&s, &headers, input).await {
        Ok(r) => {
            count("enrolled");
            r
        }
        Err(e) => {
            count(match e.status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::CONFLICT => "conflict",
                StatusCode::BAD_REQUEST => "bad_request",
                _ => "unavailable",
            });
            e.into_response()
        }
    }
}

async fn run(s: &EnrollState, headers: &HeaderMap, input: EnrollInput) -> ApiResult<Response> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthorized("missing credentials: send 'Authorization: token <enrollment token>'"));
    };
    let (host_id, host_name, groups) = parse(input)?;
    let Some(key) = s.gateway.identity.key() else {
        return Err(ApiError::unavailable("the gateway is loading; try again"));
    };
    let request = Enrollment { token, host_id: &host_id, host_name: &host_name, groups: &groups };
    let made = match s.store.enroll_host(&request, schema::time::now_ms()).await? {
        Enrolled::Done(made) => made,
        Enrolled::BadToken => return Err(ApiError::unauthorized("not a live enrollment token")),
        Enrolled::Refused(r @ Refusal::GroupOutOfScope(_)) => return Err(ApiError::forbidden(r.to_string())),
        Enrolled::Refused(r) => return Err(ApiError::conflict(r.to_string())),
    };
    s.gateway.identity.apply_binding(&made.host_id, &made.host_name, made.generation, false);
    let credential = Credential {
        host_id: made.host_id.clone(),
        host_name: made.host_name.clone(),
        generation: made.generation,
        groups: made.groups.clone(),
    }
    .sign(&key);
    tracing::info!(host.id = %made.host_id, generation = made.generation, token.id = %made.token_id, "host enrolled");
    let out = EnrollOutput {
        host_id: made.host_id,
        host_name: made.host_name,
        generation: made.generation,
        groups: made.groups,
        credential,
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}
