//! Stages (Teletraan's `EnvironBean`): what users send, the defaults, the validation.

use serde::{Deserialize, Serialize};

use super::{Invalid, check_chars, check_text, invalid};
use crate::time::EpochMs;
use crate::{
    AcceptanceType, BuildName, DeployId, DeployPriority, DeployType, EnvId, EnvName, EnvState, EnvType, EnvironState,
    OverridePolicy, StageName,
};

/// One stage of an environment with its configuration (Teletraan's `EnvironBean`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environ {
    /// Stage id.
    pub id: EnvId,
    /// Environment name.
    pub env_name: EnvName,
    /// Stage name.
    pub stage_name: StageName,
    /// Deploy switch (PAUSED holds the current deploy).
    pub env_state: EnvState,
    /// Enable/disable switch.
    pub state: EnvironState,
    /// Free text.
    pub description: String,
    /// Builds deployable here carry this name.
    pub build_name: BuildName,
    /// Branch followed by automatic deploys.
    pub branch: String,
    /// Chat channels for notifications.
    pub chatroom: Option<String>,
    /// The current deploy.
    pub deploy_id: Option<DeployId>,
    /// Type of the current deploy.
    pub deploy_type: Option<DeployType>,
    /// At most this many hosts deploy at once (0 = not set).
    pub max_parallel: i32,
    /// At most this percentage of hosts deploy at once (0 = not set).
    pub max_parallel_pct: i32,
    /// Order among stages sharing a host.
    pub priority: DeployPriority,
    /// Overrides `priority`; set for sidecar stages.
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub system_priority: Option<i32>,
    /// Seconds without progress before a deploy is FAILING.
    pub stuck_threshold: i32,
    /// Success threshold in basis points (10000 = every host).
    pub success_threshold: i32,
    /// How deploys are accepted.
    pub acceptance_type: AcceptanceType,
    /// Seconds a succeeding deploy waits for a verdict (MANUAL acceptance) before it counts as
    /// rejected; 0 waits for ever.
    #[serde(default)]
    pub acceptance_timeout: i32,
    /// Mailed when a deploy fails.
    pub email_recipients: Option<String>,
    /// Mention commit authors.
    pub notify_authors: bool,
    /// Users told when a deploy finishes.
    pub watch_recipients: Option<String>,
    /// Keep at most this many deploys…
    pub max_deploy_num: i32,
    /// …and purge only those older than this many days.
    pub max_deploy_day: i32,
    /// Passed through to the agent.
    pub is_docker: bool,
    /// UI hint when a deploy replaces a running one.
    pub override_policy: OverridePolicy,
    /// Builds from `private*` branches may be deployed.
    pub allow_private_build: bool,
    /// Builds must come from trusted artifact URLs.
    pub ensure_trusted_build: bool,
    /// Kind of stage.
    pub stage_type: EnvType,
    /// Who changed the stage last.
    pub last_operator: String,
    /// When it was changed last.
    pub last_update: EpochMs,
    /// Its deploy schedule's id (`PUT /v1/schedules/{env}/{stage}/schedules` sets it).
    #[serde(default)]
    pub schedule_id: Option<String>,
    /// Its deploy constraint's id (`POST …/deploy_constraint` sets it).
    #[serde(default)]
    pub deploy_constraint_id: Option<String>,
}

/// Stage names that are paths of the environment's own (`/v1/envs/{env}/user_roles`…).
pub const RESERVED_STAGE_NAMES: [&str; 3] = ["user_roles", "group_roles", "token_roles"];
/// Environment names that are paths of `/v1/envs` (`/v1/envs/names`…).
pub const RESERVED_ENV_NAMES: [&str; 4] = ["names", "actions", "ids", "sidecars"];

/// A stage as a user sends it to create or update one; `null` (absent) = unchanged/default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct EnvironInput {
    pub env_name: Option<String>,
    pub stage_name: Option<String>,
    pub env_state: Option<EnvState>,
    pub state: Option<EnvironState>,
    pub description: Option<String>,
    pub build_name: Option<String>,
    pub branch: Option<String>,
    pub chatroom: Option<String>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub max_parallel: Option<i32>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub max_parallel_pct: Option<i32>,
    pub priority: Option<DeployPriority>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub system_priority: Option<i32>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub stuck_threshold: Option<i32>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub success_threshold: Option<i32>,
    pub acceptance_type: Option<AcceptanceType>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub acceptance_timeout: Option<i32>,
    pub email_recipients: Option<String>,
    pub notify_authors: Option<bool>,
    pub watch_recipients: Option<String>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub max_deploy_num: Option<i32>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub max_deploy_day: Option<i32>,
    pub is_docker: Option<bool>,
    pub override_policy: Option<OverridePolicy>,
    pub allow_private_build: Option<bool>,
    pub ensure_trusted_build: Option<bool>,
    pub stage_type: Option<EnvType>,
}

impl Environ {
    /// A new stage from a create request, with Teletraan's defaults (except where they were
    /// bugs: the description names env and stage the right way round, and an omitted stage
    /// type means PRODUCTION rather than the legacy DEFAULT that later updates refuse).
    pub fn create(id: EnvId, mut input: EnvironInput, operator: &str, now: EpochMs) -> Result<Environ, Invalid> {
        let env_name = EnvName::parse(input.env_name.clone().unwrap_or_default())
            .map_err(|e| invalid("envName", e.to_string()))?;
        let stage_name = StageName::parse(input.stage_name.clone().unwrap_or_default())
            .map_err(|e| invalid("stageName", e.to_string()))?;
        // These names are paths of their own under /v1/envs: a stage or environment so named
        // could not be reached.
        if RESERVED_STAGE_NAMES.contains(&stage_name.as_str()) {
            return Err(invalid("stageName", format!("{stage_name} is reserved (it names the environment's roles)")));
        }
        if RESERVED_ENV_NAMES.contains(&env_name.as_str()) {
            return Err(invalid("envName", format!("{env_name} is reserved (a path of /v1/envs)")));
        }
        let mut env = Environ {
            id,
            description: format!("Stage {stage_name} of environment {env_name}"),
            build_name: BuildName::parse(env_name.as_str()).map_err(|e| invalid("buildName", e.to_string()))?,
            env_name,
            stage_name,
            env_state: EnvState::Normal,
            state: EnvironState::Normal,
            branch: "master".into(),
            chatroom: None,
            deploy_id: None,
            deploy_type: None,
            max_parallel: 1,
            max_parallel_pct: 0,
            priority: DeployPriority::Normal,
            system_priority: None,
            stuck_threshold: 600,
            success_threshold: 10000,
            acceptance_type: AcceptanceType::Auto,
            acceptance_timeout: 0,
            email_recipients: None,
            notify_authors: false,
            watch_recipients: None,
            max_deploy_num: 5000,
            max_deploy_day: 365,
            is_docker: false,
            override_policy: OverridePolicy::Override,
            allow_private_build: false,
            ensure_trusted_build: false,
            stage_type: match input.stage_type.take() {
                Some(EnvType::Default) => {
                    return Err(invalid("stageType", "DEFAULT is a legacy value; use PRODUCTION"));
                }
                Some(t) => t,
                None => EnvType::Production,
            },
            last_operator: String::new(),
            last_update: now,
            schedule_id: None,
            deploy_constraint_id: None,
        };
        env.apply(input, operator, now)?;
        Ok(env)
    }

    /// Applies an update: absent fields stay as they are; names cannot change.
    pub fn apply(&mut self, input: EnvironInput, operator: &str, now: EpochMs) -> Result<(), Invalid> {
        if let Some(n) = &input.env_name
            && n != self.env_name.as_str()
        {
            return Err(invalid("envName", "cannot be changed"));
        }
        if let Some(n) = &input.stage_name
            && n != self.stage_name.as_str()
        {
            return Err(invalid("stageName", "cannot be changed"));
        }
        if let Some(v) = input.env_state {
            self.env_state = v;
        }
        if let Some(v) = input.state {
            self.state = v;
        }
        if let Some(v) = input.description {
            check_text("description", &v, 1024)?;
            self.description = v;
        }
        if let Some(v) = input.build_name {
            self.build_name = BuildName::parse(v).map_err(|e| invalid("buildName", e.to_string()))?;
        }
        if let Some(v) = input.branch {
            check_chars(
                "branch",
                &v,
                64,
                |c| c.is_ascii_alphanumeric() || "_:.,/-".contains(c),
                "letters, digits and _:.,/-",
            )?;
            self.branch = v;
        }
        if let Some(v) = input.chatroom {
            check_chars(
                "chatroom",
                &v,
                128,
                |c| c.is_ascii_alphanumeric() || "_ #,-".contains(c),
                "letters, digits and '_ #,-'",
            )?;
            self.chatroom = Some(v);
        }
        match (input.max_parallel, input.max_parallel_pct) {
            (Some(n), None) => {
                self.max_parallel = n;
                self.max_parallel_pct = 0;
            }
            (None, Some(p)) => {
                self.max_parallel = 0;
                self.max_parallel_pct = p;
            }
            (Some(n), Some(p)) => {
                self.max_parallel = n;
                self.max_parallel_pct = p;
            }
            (None, None) => {}
        }
        if self.max_parallel < 0 {
            return Err(invalid("maxParallel", "must be 0 or more"));
        }
        if !(0..=100).contains(&self.max_parallel_pct) {
            return Err(invalid("maxParallelPct", "must be between 0 and 100"));
        }
        if self.max_parallel == 0 && self.max_parallel_pct == 0 {
            return Err(invalid("maxParallel", "one of maxParallel or maxParallelPct must be positive"));
        }
        if let Some(v) = input.priority {
            self.priority = v;
        }
        if input.system_priority.is_some() {
            self.system_priority = input.system_priority.filter(|p| *p > 0);
        }
        if let Some(v) = input.stuck_threshold {
            if v <= 0 {
                return Err(invalid("stuckThreshold", "must be a positive number of seconds"));
            }
            self.stuck_threshold = v;
        }
        if let Some(v) = input.success_threshold {
            if !(0..=10000).contains(&v) {
                return Err(invalid("successThreshold", "must be between 0 and 10000 (basis points)"));
            }
            self.success_threshold = v;
        }
        if let Some(v) = input.acceptance_type {
            self.acceptance_type = v;
        }
        if let Some(v) = input.acceptance_timeout {
            if !(0..=30 * 24 * 3600).contains(&v) {
                return Err(invalid("acceptanceTimeout", "must be between 0 (none) and 2592000 seconds (30 days)"));
            }
            self.acceptance_timeout = v;
        }
        if let Some(v) = input.email_recipients {
            check_text("emailRecipients", &v, 1024)?;
            self.email_recipients = Some(v);
        }
        if let Some(v) = input.notify_authors {
            self.notify_authors = v;
        }
        if let Some(v) = input.watch_recipients {
            check_text("watchRecipients", &v, 1024)?;
            self.watch_recipients = Some(v);
        }
        if let Some(v) = input.max_deploy_num {
            if v <= 0 {
                return Err(invalid("maxDeployNum", "must be positive"));
            }
            self.max_deploy_num = v;
        }
        if let Some(v) = input.max_deploy_day {
            if v <= 0 {
                return Err(invalid("maxDeployDay", "must be positive"));
            }
            self.max_deploy_day = v;
        }
        if let Some(v) = input.is_docker {
            self.is_docker = v;
        }
        if let Some(v) = input.override_policy {
            self.override_policy = v;
        }
        if let Some(v) = input.allow_private_build {
            self.allow_private_build = v;
        }
        if let Some(v) = input.ensure_trusted_build {
            self.ensure_trusted_build = v;
        }
        if let Some(v) = input.stage_type {
            if v == EnvType::Default {
                return Err(invalid("stageType", "DEFAULT is a legacy value; use PRODUCTION"));
            }
            if self.stage_type.is_production() && !v.is_production() {
                return Err(invalid("stageType", format!("a {} stage cannot become {}", self.stage_type, v)));
            }
            if self.stage_type == EnvType::Dev && v != EnvType::Dev {
                self.allow_private_build = false;
            }
            self.stage_type = v;
        }
        if self.stage_type == EnvType::Dev {
            self.allow_private_build = true;
        }
        self.last_operator = operator.to_string();
        self.last_update = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> EnvironInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn create_fills_defaults() {
        let env =
            Environ::create(EnvId::generate(), input(r#"{"envName":"web","stageName":"prod"}"#), "alice", 5).unwrap();
        assert_eq!(env.build_name.as_str(), "web");
        assert_eq!((env.max_parallel, env.max_parallel_pct), (1, 0));
        assert_eq!(env.success_threshold, 10000);
        assert_eq!(env.stuck_threshold, 600);
        assert_eq!(env.description, "Stage prod of environment web");
        assert_eq!(env.stage_type, EnvType::Production);
        assert_eq!(env.last_operator, "alice");
    }

    #[test]
    fn one_parallel_field_clears_the_other() {
        let mut env =
            Environ::create(EnvId::generate(), input(r#"{"envName":"w","stageName":"p","maxParallel":3}"#), "a", 0)
                .unwrap();
        env.apply(input(r#"{"maxParallelPct":10}"#), "a", 1).unwrap();
        assert_eq!((env.max_parallel, env.max_parallel_pct), (0, 10));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (r#"{"envName":"web","stageName":"p","successThreshold":10001}"#, "successThreshold"),
            (r#"{"envName":"web","stageName":"p","maxParallelPct":101}"#, "maxParallelPct"),
            (r#"{"envName":"web","stageName":"p","maxParallel":-1}"#, "maxParallel"),
            (r#"{"envName":"we b","stageName":"p"}"#, "envName"),
            (r#"{"stageName":"p"}"#, "envName"),
            (r#"{"envName":"web","stageName":"p","stageType":"DEFAULT"}"#, "stageType"),
            (r#"{"envName":"web","stageName":"user_roles"}"#, "stageName"),
            (r#"{"envName":"names","stageName":"prod"}"#, "envName"),
            (r#"{"envName":"web","stageName":"p","stuckThreshold":0}"#, "stuckThreshold"),
            (r#"{"envName":"web","stageName":"p","description":"a\u0000b"}"#, "description"),
            (r#"{"envName":"web","stageName":"p","emailRecipients":"a\u0000b"}"#, "emailRecipients"),
        ];
        for (json, field) in cases {
            let err = Environ::create(EnvId::generate(), input(json), "a", 0).unwrap_err();
            assert_eq!(err.field, field, "{json}");
        }
    }

    #[test]
    fn production_stage_cannot_become_dev() {
        let mut env = Environ::create(EnvId::generate(), input(r#"{"envName":"w","stageName":"p"}"#), "a", 0).unwrap();
        assert_eq!(env.apply(input(r#"{"stageType":"DEV"}"#), "a", 1).unwrap_err().field, "stageType");
        let mut dev =
            Environ::create(EnvId::generate(), input(r#"{"envName":"w","stageName":"d","stageType":"DEV"}"#), "a", 0)
                .unwrap();
        assert!(dev.allow_private_build);
        dev.apply(input(r#"{"stageType":"PRODUCTION"}"#), "a", 1).unwrap();
    }
}
