//! The REST API under `/v1`, with Teletraan's paths and camelCase JSON.

mod actions;
mod agents;
mod builds;
mod commands;
mod deploys;
mod envs;
mod pipelines;
mod rollout;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::middleware;
use axum::routing::{get, post, put};
use bus::rpc::CommandClient;
use schema::model::ArtifactPolicy;
use schema::{EnvName, StageName};
use store::Store;

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
        .route("/v1/envs/{env}/{stage}/deploys/current/actions", post(actions::deploy_action))
        .route("/v1/envs/{env}/{stage}/deploys/current/progress", get(rollout::progress).put(rollout::progress))
        .route("/v1/envs/{env}/{stage}/deploys/hostactions", put(actions::host_action))
        .route("/v1/envs/{env}/{stage}/hosts", axum::routing::delete(actions::stop_hosts))
        .route("/v1/envs/{env}/{stage}/agents", get(agents::list))
        .route("/v1/envs/{env}/{stage}/agents/count", get(rollout::count))
        .route("/v1/envs/{env}/{stage}/agents/errors/{host}", get(agents::error))
        .route("/v1/envs/{env}/{stage}/agents/reset_failed_agents/{deploy}", put(actions::reset_failed))
        .route("/v1/envs/{env}/{stage}/agents/{host}", put(actions::update_agent))
        .route(
            "/v1/envs/{env}/{stage}/deploy_constraint",
            get(rollout::get_constraint).post(rollout::post_constraint).delete(rollout::delete_constraint),
        )
        .route("/v1/envs/{env}/{stage}/web_hooks", get(webhooks::get).put(webhooks::put))
        .route("/v1/envs/{env}/{stage}/web_hooks/deliveries", get(webhooks::deliveries))
        .route("/v1/envs/{env}/{stage}/web_hooks/deliveries/{id}/retry", post(webhooks::retry))
        .route("/v1/schedules/{env}/{stage}/schedules", put(rollout::put_schedule))
        .route("/v1/schedules/{env}/{stage}/override", put(actions::override_schedule))
        .route("/v1/schedules/{env}/{stage}/{id}", get(rollout::get_schedule))
        .route("/v1/builds", get(builds::search).post(builds::publish))
        .route("/v1/builds/{id}", get(builds::get))
        .route("/v1/builds/{id}/tag", get(pipelines::build_tag))
        .route("/v1/envs/{env}/{stage}/promotes", get(pipelines::get_promote).put(pipelines::put_promote))
        .route("/v1/tags", post(pipelines::create_tag))
        .route("/v1/tags/{id}", get(pipelines::get_tag).delete(pipelines::delete_tag))
        .route("/v1/tags/targets/{target}", get(pipelines::tags_of_target))
        .route("/v1/tags/targets/{target}/latest", get(pipelines::latest_tag_of_target))
        .route("/v1/tags/values/{value}", get(pipelines::tags_with_value))
        .route("/v1/deploys", get(rollout::search))
        .route("/v1/deploys/{id}", get(deploys::get).put(actions::update_deploy))
        .route("/v1/commands/{id}", get(deploys::command))
        .route_layer(middleware::from_fn_with_state(state.store.clone(), auth::require_user))
        .with_state(state)
}

/// Parses the `{env}/{stage}` of a path.
fn stage_key(env: String, stage: String) -> ApiResult<(EnvName, StageName)> {
    Ok((EnvName::parse(env)?, StageName::parse(stage)?))
}
