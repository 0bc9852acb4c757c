//! Enabling and disabling a stage, and the system-wide change freeze: configuration writes,
//! enforced where every deploy is made (`store::freeze`), so a refused deploy answers 409
//! with the reason.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use schema::EnvironAction;
use serde::Deserialize;

use super::{ApiState, stage_key};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SwitchQuery {
    action_type: Option<String>,
    description: Option<String>,
}

impl SwitchQuery {
    fn action(&self) -> ApiResult<EnvironAction> {
        match self.action_type.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            None => Err(ApiError::bad_request("actionType is required: ENABLE or DISABLE")),
            Some(a) => {
                a.to_ascii_uppercase().parse().map_err(|e: schema::UnknownValue| ApiError::bad_request(e.to_string()))
            }
        }
    }

    fn description(&self) -> ApiResult<Option<&str>> {
        let d = self.description.as_deref().map(str::trim).filter(|d| !d.is_empty());
        if let Some(d) = d {
            schema::model::check_text("description", d, 256)?;
        }
        Ok(d)
    }
}

/// `POST /v1/envs/{env}/{stage}/actions?actionType=ENABLE|DISABLE&description=`: a disabled
/// stage takes no new build (deploy, promotion, automatic promotion) until it is enabled;
/// rollbacks and restarts still go.
pub(super) async fn stage(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiPath((env, stage)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<SwitchQuery>,
) -> ApiResult<StatusCode> {
    let (env, stage) = stage_key(env, stage)?;
    let action = q.action()?;
    s.store.switch_stage(&env, &stage, action, q.description()?, &p.name, schema::time::now_ms()).await?;
    tracing::info!(env = %env, stage = %stage, action = %action, operator = %p.name, "stage switched");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/envs/actions?actionType=DISABLE|ENABLE&description=`: the change freeze. While it
/// is on, no stage takes a new build; stages keep their own switch. The description is
/// required, as in Teletraan: it is the reason refused deploys give.
pub(super) async fn system(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    ApiQuery(q): ApiQuery<SwitchQuery>,
) -> ApiResult<StatusCode> {
    let action = q.action()?;
    let Some(description) = q.description()? else {
        return Err(ApiError::bad_request("description is required: say why deploys are frozen or unfrozen"));
    };
    s.store.switch_freeze(action, Some(description), &p.name, schema::time::now_ms()).await?;
    tracing::warn!(action = %action, operator = %p.name, "change freeze switched");
    Ok(StatusCode::NO_CONTENT)
}
