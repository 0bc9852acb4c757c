//! The REST API under `/v1`, with Teletraan's paths and camelCase JSON.

mod agents;
mod builds;
mod deploys;
mod envs;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::middleware;
use axum::routing::{get, post};
use schema::model::ArtifactPolicy;
use schema::*;
use store::Store;
use workers::rpc::CommandClient;

use crate::auth;
use crate::error::ApiResult;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Postgres.
    pub store: Store,
    /// Deploy commands to the workers.
    pub commands: Arc<CommandClient>,
    /// Where artifacts may come from.
    pub artifacts: Arc<ArtifactPolicy>,
    /// How long a deploy request waits for the worker before answering 202.
    pub command_wait: Duration,
}

impl FromRef<ApiState> for Store {
    fn from_ref(s: &ApiState) -> Store {
        s.store.clone()
    }
}

/// The `/v1` routes, behind authentication.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/envs", get(envs::list).post(envs::create))
        .route("/v1/envs/{env}/{stage}", get(envs::get).put(envs::update).delete(envs::delete))
        .route("/v1/envs/{env}/{stage}/capacity", get(envs::get_capacity).put(envs::put_capacity))
        .route("/v1/envs/{env}/{stage}/script_configs", get(envs::get_script_configs).put(envs::put_script_configs))
        .route("/v1/envs/{env}/{stage}/agent_configs", get(envs::get_agent_configs).put(envs::put_agent_configs))
        .route("/v1/envs/{env}/{stage}/deploys", post(deploys::create))
        .route("/v1/envs/{env}/{stage}/deploys/current", get(deploys::current))
        .route("/v1/envs/{env}/{stage}/agents", get(agents::list))
        .route("/v1/envs/{env}/{stage}/agents/errors/{host}", get(agents::error))
        .route("/v1/builds", get(builds::search).post(builds::publish))
        .route("/v1/builds/{id}", get(builds::get))
        .route("/v1/deploys/{id}", get(deploys::get))
        .route("/v1/commands/{id}", get(deploys::command))
        .route_layer(middleware::from_fn_with_state(state.store.clone(), auth::require_user))
        .with_state(state)
}

/// Parses the `{env}/{stage}` of a path.
fn stage_key(env: String, stage: String) -> ApiResult<(EnvName, StageName)> {
    Ok((EnvName::parse(env)?, StageName::parse(stage)?))
}
