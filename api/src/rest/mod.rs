//! The REST API under `/v1`, with Teletraan's paths and camelCase JSON.

mod access;
mod actions;
mod agents;
mod builds;
mod commands;
mod deploys;
mod envs;
mod events;
mod freeze;
mod history;
mod hosts;
mod identity;
mod links;
mod pipelines;
mod rollout;
mod secrets;
mod steps;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::Method;
use axum::middleware;
use axum::routing::{MethodFilter, on};
use bus::rpc::CommandClient;
use schema::model::{ArtifactPolicy, Deploy};
use schema::{AccessRole, EnvName, StageName};
use store::Store;

use crate::auth::{self, AuthState, From, Need, RouteSpec, TrustedHeaders};
use crate::error::ApiResult;
use crate::openapi::{Answer, Describe, Operation, accepted};

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
    /// Longest any request may take before it answers 503: the bound of last resort on a
    /// dependency that accepted a query or a message and never answered. Longer than
    /// `command_wait` and the broker's confirms, so that a deploy is never cut short. It bounds
    /// the time to the answer's head: a stream (`GET /v1/events`) goes on after it.
    pub request_timeout: Duration,
    /// Live events for `GET /v1/events` (the default hub is fed by nothing).
    pub events: crate::events::Hub,
}

impl FromRef<ApiState> for Store {
    fn from_ref(s: &ApiState) -> Store {
        s.store.clone()
    }
}

/// Declares every route once: the router is built from this list, and so is the table of
/// what each route needs (so no route can exist without declaring it).
macro_rules! routes {
    ($($method:ident $path:literal => $handler:expr, $need:expr $(, [$($answer:expr),* $(,)?])?;)*) => {
        /// Every route of the REST API and what it needs (the role matrix test and the
        /// documentation are generated from it).
        pub fn route_specs() -> Vec<RouteSpec> {
            vec![$(RouteSpec { method: stringify!($method), path: $path, need: $need }),*]
        }

        /// Every route as the API contract describes it: what its handler's signature says,
        /// plus the answers the table states for handlers that answer a bare `Response`.
        pub fn operations() -> Vec<Operation> {
            vec![$(Operation {
                spec: RouteSpec { method: stringify!($method), path: $path, need: $need },
                described: Describe::described(&$handler),
                stated: vec![$($($answer),*)?],
            }),*]
        }

        fn add_routes(router: Router<ApiState>) -> Router<ApiState> {
            router$(.route($path, on(MethodFilter::$method, $handler)))*
        }
    };
}

const READ: Need = Need::Read;
const OPERATE: Need = Need::Role(AccessRole::Operator, From::EnvPath);
const ADMINISTER_ENV: Need = Need::Role(AccessRole::Admin, From::EnvPath);
const ADMINISTER: Need = Need::Role(AccessRole::Admin, From::System);
const OPERATE_SYSTEM: Need = Need::Role(AccessRole::Operator, From::System);
const PUBLISH: &str = "on the system, or on an environment whose stages deploy builds of that name";
const TAG: &str = "for a build's tag (on the system, or on an environment that deploys that build's name); \
     OPERATOR on a stage's environment for a stage's; ADMIN on the system for the system's";

routes! {
    GET "/v1/me" => access::me, Need::Authenticated;
    GET "/v1/envs" => envs::list, READ;
    POST "/v1/envs" => envs::create, Need::InHandler(AccessRole::Operator, "on the new stage's environment");
    POST "/v1/envs/actions" => freeze::system, OPERATE_SYSTEM;
    GET "/v1/envs/names" => envs::names, READ;
    GET "/v1/envs/{id}" => envs::get_by_id, READ;
    GET "/v1/envs/{env}/{stage}" => envs::get, READ;
    PUT "/v1/envs/{env}/{stage}" => envs::update, OPERATE;
    DELETE "/v1/envs/{env}/{stage}" => envs::delete, ADMINISTER_ENV;
    POST "/v1/envs/{env}/{stage}/actions" => freeze::stage, OPERATE;
    GET "/v1/envs/{env}/{stage}/capacity" => envs::get_capacity, READ;
    PUT "/v1/envs/{env}/{stage}/capacity" => envs::put_capacity, OPERATE;
    POST "/v1/envs/{env}/{stage}/capacity" => envs::add_capacity, OPERATE;
    DELETE "/v1/envs/{env}/{stage}/capacity" => envs::remove_capacity, OPERATE;
    GET "/v1/envs/{env}/{stage}/script_configs" => envs::get_script_configs, READ;
    PUT "/v1/envs/{env}/{stage}/script_configs" => envs::put_script_configs, OPERATE;
    GET "/v1/envs/{env}/{stage}/script_secrets" => secrets::names, READ;
    PUT "/v1/envs/{env}/{stage}/script_secrets" => secrets::put, OPERATE;
    GET "/v1/envs/{env}/{stage}/agent_configs" => envs::get_agent_configs, READ;
    PUT "/v1/envs/{env}/{stage}/agent_configs" => envs::put_agent_configs, OPERATE;
    POST "/v1/envs/{env}/{stage}/deploys" => deploys::create, OPERATE, [Answer::json::<Deploy>(201), accepted()];
    GET "/v1/envs/{env}/{stage}/deploys/current" => deploys::current, READ;
    POST "/v1/envs/{env}/{stage}/deploys/current/actions" => actions::deploy_action, OPERATE,
        [Answer::json::<Deploy>(201), Answer::json::<Option<Deploy>>(200), accepted()];
    GET "/v1/envs/{env}/{stage}/deploys/current/progress" => rollout::progress, READ;
    GET "/v1/envs/{env}/{stage}/deploys/current/missing-hosts" => rollout::missing_hosts, READ;
    PUT "/v1/envs/{env}/{stage}/deploys/current/progress" => rollout::progress, READ;
    PUT "/v1/envs/{env}/{stage}/deploys/hostactions" => actions::host_action, OPERATE, [Answer::empty(204), accepted()];
    GET "/v1/envs/{env}/{stage}/hosts" => hosts::of_stage, READ;
    DELETE "/v1/envs/{env}/{stage}/hosts" => actions::stop_hosts, OPERATE, [Answer::empty(204), accepted()];
    GET "/v1/envs/{env}/{stage}/hosts/{host}" => hosts::one_of_stage, READ;
    GET "/v1/envs/{env}/{stage}/agents" => agents::list, READ;
    GET "/v1/envs/{env}/{stage}/agents/count" => rollout::count, READ;
    GET "/v1/envs/{env}/{stage}/agents/errors/{host}" => agents::error, READ;
    PUT "/v1/envs/{env}/{stage}/agents/reset_failed_agents/{deploy}" => actions::reset_failed, OPERATE,
        [Answer::empty(204), accepted()];
    PUT "/v1/envs/{env}/{stage}/agents/{host}" => actions::update_agent, OPERATE, [Answer::empty(204), accepted()];
    GET "/v1/envs/{env}/{stage}/deploy_constraint" => rollout::get_constraint, READ;
    POST "/v1/envs/{env}/{stage}/deploy_constraint" => rollout::post_constraint, OPERATE;
    DELETE "/v1/envs/{env}/{stage}/deploy_constraint" => rollout::delete_constraint, OPERATE;
    GET "/v1/envs/{env}/{stage}/web_hooks" => webhooks::get, READ;
    PUT "/v1/envs/{env}/{stage}/web_hooks" => webhooks::put, OPERATE;
    GET "/v1/envs/{env}/{stage}/web_hooks/deliveries" => webhooks::deliveries, READ;
    POST "/v1/envs/{env}/{stage}/web_hooks/deliveries/{id}/retry" => webhooks::retry, OPERATE;
    GET "/v1/envs/{env}/{stage}/history" => history::stage, READ;
    GET "/v1/envs/{env}/{stage}/metrics" => links::get_metrics, READ;
    PUT "/v1/envs/{env}/{stage}/metrics" => links::put_metrics, OPERATE;
    GET "/v1/envs/{env}/{stage}/alarms" => links::get_alarms, READ;
    PUT "/v1/envs/{env}/{stage}/alarms" => links::put_alarms, OPERATE;
    GET "/v1/envs/{env}/{stage}/promotes" => pipelines::get_promote, READ;
    PUT "/v1/envs/{env}/{stage}/promotes" => pipelines::put_promote, OPERATE;
    PUT "/v1/schedules/{env}/{stage}/schedules" => rollout::put_schedule, OPERATE;
    PUT "/v1/schedules/{env}/{stage}/override" => actions::override_schedule, OPERATE, [Answer::empty(204), accepted()];
    GET "/v1/schedules/{env}/{stage}/{id}" => rollout::get_schedule, READ;
    GET "/v1/envs/{env}/user_roles" => access::list_env_users, READ;
    POST "/v1/envs/{env}/user_roles" => access::create_env_user, ADMINISTER_ENV;
    GET "/v1/envs/{env}/user_roles/{name}" => access::get_env_user, READ;
    PUT "/v1/envs/{env}/user_roles/{name}" => access::put_env_user, ADMINISTER_ENV;
    DELETE "/v1/envs/{env}/user_roles/{name}" => access::delete_env_user, ADMINISTER_ENV;
    GET "/v1/envs/{env}/group_roles" => access::list_env_groups, READ;
    POST "/v1/envs/{env}/group_roles" => access::create_env_group, ADMINISTER_ENV;
    GET "/v1/envs/{env}/group_roles/{name}" => access::get_env_group, READ;
    PUT "/v1/envs/{env}/group_roles/{name}" => access::put_env_group, ADMINISTER_ENV;
    DELETE "/v1/envs/{env}/group_roles/{name}" => access::delete_env_group, ADMINISTER_ENV;
    GET "/v1/envs/{env}/token_roles" => access::list_env_scripts, READ;
    POST "/v1/envs/{env}/token_roles" => access::create_env_script, ADMINISTER_ENV;
    GET "/v1/envs/{env}/token_roles/{name}" => access::get_env_script, READ;
    PUT "/v1/envs/{env}/token_roles/{name}" => access::put_env_script, ADMINISTER_ENV;
    DELETE "/v1/envs/{env}/token_roles/{name}" => access::delete_env_script, ADMINISTER_ENV;
    GET "/v1/system/user_roles" => access::list_system_users, READ;
    POST "/v1/system/user_roles" => access::create_system_user, ADMINISTER;
    GET "/v1/system/user_roles/{name}" => access::get_system_user, READ;
    PUT "/v1/system/user_roles/{name}" => access::put_system_user, ADMINISTER;
    DELETE "/v1/system/user_roles/{name}" => access::delete_system_user, ADMINISTER;
    GET "/v1/system/group_roles" => access::list_system_groups, READ;
    POST "/v1/system/group_roles" => access::create_system_group, ADMINISTER;
    GET "/v1/system/group_roles/{name}" => access::get_system_group, READ;
    PUT "/v1/system/group_roles/{name}" => access::put_system_group, ADMINISTER;
    DELETE "/v1/system/group_roles/{name}" => access::delete_system_group, ADMINISTER;
    GET "/v1/principals" => access::list_principals, READ;
    POST "/v1/principals" => access::create_principal, ADMINISTER;
    DELETE "/v1/principals/{name}" => access::delete_principal, ADMINISTER;
    GET "/v1/tokens" => access::list_tokens, Need::Authenticated;
    POST "/v1/tokens" => access::create_token, ADMINISTER;
    GET "/v1/tokens/{id}" => access::get_token, Need::Authenticated;
    DELETE "/v1/tokens/{id}" => access::revoke_token, Need::Authenticated;
    GET "/v1/builds" => builds::search, READ;
    POST "/v1/builds" => builds::publish, Need::InHandler(AccessRole::Publisher, PUBLISH);
    GET "/v1/builds/tags" => builds::search_with_tags, READ;
    GET "/v1/builds/names" => builds::names, READ;
    GET "/v1/builds/names/{name}/branches" => builds::branches, READ;
    GET "/v1/builds/{id}" => builds::get, READ;
    DELETE "/v1/builds/{id}" => builds::delete, Need::InHandler(AccessRole::Publisher, PUBLISH);
    GET "/v1/builds/{id}/tags" => builds::get_with_tag, READ;
    GET "/v1/builds/{id}/tag" => pipelines::build_tag, READ;
    POST "/v1/tags" => pipelines::create_tag, Need::InHandler(AccessRole::Publisher, TAG);
    GET "/v1/tags/{id}" => pipelines::get_tag, READ;
    DELETE "/v1/tags/{id}" => pipelines::delete_tag, Need::InHandler(AccessRole::Publisher, TAG);
    GET "/v1/tags/targets/{target}" => pipelines::tags_of_target, READ;
    GET "/v1/tags/targets/{target}/latest" => pipelines::latest_tag_of_target, READ;
    GET "/v1/tags/values/{value}" => pipelines::tags_with_value, READ;
    GET "/v1/deploys" => rollout::search, READ;
    GET "/v1/deploys/dailycount" => deploys::daily_count, READ;
    GET "/v1/deploys/{id}" => deploys::get, READ;
    GET "/v1/deploys/{id}/steps" => steps::of_deploy, READ;
    PUT "/v1/deploys/{id}" => actions::update_deploy, Need::Role(AccessRole::Operator, From::DeployPath),
        [Answer::empty(204), accepted()];
    GET "/v1/commands/{id}" => deploys::command, READ;
    POST "/v1/hosts" => hosts::register, OPERATE_SYSTEM;
    GET "/v1/hosts/{host}" => hosts::named, READ;
    GET "/v1/hosts/id/{host}" => hosts::with_id, READ;
    GET "/v1/groups/{group}/instances" => hosts::group_instances, READ;
    GET "/v1/agents/{host}" => hosts::agents_named, READ;
    GET "/v1/agents/id/{host}" => hosts::agents_with_id, READ;
    GET "/v1/agents/{host}/steps" => steps::of_host, READ;
    GET "/v1/agents/{host}/deploys" => steps::deploys_of_host, READ;
    GET "/v1/history" => history::search, READ;
    GET "/v1/events" => events::stream, READ, [Answer::event_stream(200)];
    GET "/v1/host_credentials" => identity::list, READ;
    GET "/v1/host_credentials/{host}" => identity::get, READ;
    DELETE "/v1/host_credentials/{host}" => identity::revoke, ADMINISTER;
}

/// What the authorization of the `/v1` routes needs (see [`route_specs`]).
pub fn auth_state(store: Store, trusted: TrustedHeaders) -> AuthState {
    let needs = route_specs()
        .into_iter()
        .filter_map(|r| r.method.parse::<Method>().ok().map(|m| ((m, r.path), r.need)))
        .collect();
    AuthState { store, routes: Arc::new(needs), trusted: Arc::new(trusted) }
}

/// The `/v1` routes, behind authentication and authorization (see [`route_specs`]).
pub fn router(state: ApiState, auth: AuthState) -> Router {
    add_routes(Router::new()).route_layer(middleware::from_fn_with_state(auth, auth::authorize)).with_state(state)
}

/// Checks a `pageIndex` (from 1, default 1) and `pageSize` (default 30, at most `max`).
fn page(index: Option<i64>, size: Option<i64>, max: i64) -> ApiResult<(i64, i64)> {
    let (index, size) = (index.unwrap_or(1), size.unwrap_or(30));
    if !(1..=100_000).contains(&index) || !(1..=max).contains(&size) {
        return Err(crate::error::ApiError::bad_request(format!(
            "pageIndex must be between 1 and 100000 and pageSize between 1 and {max}"
        )));
    }
    Ok((index, size))
}

/// Parses the `{env}/{stage}` of a path.
pub(crate) fn stage_key(env: String, stage: String) -> ApiResult<(EnvName, StageName)> {
    Ok((EnvName::parse(env)?, StageName::parse(stage)?))
}

/// Refuses (403) unless the principal may publish builds named `name`: PUBLISHER on the
/// system, or on an environment whose stages deploy builds of that name.
async fn require_publisher(s: &ApiState, p: &auth::Principal, name: &schema::BuildName) -> ApiResult<()> {
    use schema::rules::access::Target;
    if p.may(AccessRole::Publisher, Target::System) {
        return Ok(());
    }
    let envs = s.store.envs_of_build_name(name).await?;
    if envs.iter().any(|e| p.may(AccessRole::Publisher, Target::Env(e))) {
        return Ok(());
    }
    Err(crate::error::ApiError::forbidden(format!(
        "{} needs the PUBLISHER role on the system or on an environment that deploys builds named {name}",
        p.name
    )))
}

/// The route table as Markdown: method, path, what it needs (`docs/routes.md`).
pub fn routes_markdown() -> String {
    let mut out = String::from(
        "# REST routes and the roles they need\n\n\
         Generated from the route table (`api/src/rest/mod.rs`); a test fails when this file is \
         out of date (`UPDATE_DOCS=1 cargo test -p api routes_doc` rewrites it). Roles include \
         the ones below them: READER < PUBLISHER < OPERATOR < ADMIN; a role on the system \
         counts on every environment.\n\n| method | path | needs |\n|---|---|---|\n",
    );
    for r in route_specs() {
        out.push_str(&format!("| {} | `{}` | {} |\n", r.method, r.path, r.need.describe()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_documents_its_success_answers() {
        let silent: Vec<String> = super::operations()
            .iter()
            .filter(|op| op.described.answers.is_empty() && op.stated.is_empty())
            .map(|op| format!("{} {}", op.spec.method, op.spec.path))
            .collect();
        assert!(silent.is_empty(), "state the answers of these routes in the route table: {silent:#?}");
    }

    #[test]
    fn routes_doc_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/routes.md");
        let want = super::routes_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "docs/routes.md is out of date: run UPDATE_DOCS=1 cargo test -p api routes_doc");
    }
}
