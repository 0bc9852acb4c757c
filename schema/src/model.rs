//! The Teletraan-compatible JSON beans (camelCase, epoch milliseconds) and the validation of
//! what users send. Timestamps are [`EpochMs`]; `null` in an update means "leave unchanged".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::EpochMs;
use crate::*;

/// A rejected input, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// JSON name of the field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { field, message: message.into() }
}

/// One stage of an environment with its configuration (Teletraan's `EnvironBean`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub system_priority: Option<i32>,
    /// Seconds without progress before a deploy is FAILING.
    pub stuck_threshold: i32,
    /// Success threshold in basis points (10000 = every host).
    pub success_threshold: i32,
    /// How deploys are accepted.
    pub acceptance_type: AcceptanceType,
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
}

/// A stage as a user sends it to create or update one; `null` (absent) = unchanged/default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
    pub max_parallel: Option<i32>,
    pub max_parallel_pct: Option<i32>,
    pub priority: Option<DeployPriority>,
    pub system_priority: Option<i32>,
    pub stuck_threshold: Option<i32>,
    pub success_threshold: Option<i32>,
    pub acceptance_type: Option<AcceptanceType>,
    pub email_recipients: Option<String>,
    pub notify_authors: Option<bool>,
    pub watch_recipients: Option<String>,
    pub max_deploy_num: Option<i32>,
    pub max_deploy_day: Option<i32>,
    pub is_docker: Option<bool>,
    pub override_policy: Option<OverridePolicy>,
    pub allow_private_build: Option<bool>,
    pub ensure_trusted_build: Option<bool>,
    pub stage_type: Option<EnvType>,
}

/// Free text: at most `max` characters, no control characters but newlines and tabs (Postgres
/// refuses NUL, and nothing else belongs in these fields).
pub fn check_text(field: &'static str, v: &str, max: usize) -> Result<(), Invalid> {
    if v.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    if let Some(c) = v.chars().find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(invalid(field, format!("contains the control character {c:?}")));
    }
    Ok(())
}

fn optional_text(field: &'static str, v: Option<String>, max: usize) -> Result<Option<String>, Invalid> {
    if let Some(v) = &v {
        check_text(field, v, max)?;
    }
    Ok(v)
}

fn check_chars(field: &'static str, v: &str, max: usize, ok: fn(char) -> bool, allowed: &str) -> Result<(), Invalid> {
    if v.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    match v.chars().find(|c| !ok(*c)) {
        Some(c) => Err(invalid(field, format!("may only contain {allowed}; found {c:?}"))),
        None => Ok(()),
    }
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

/// An immutable artifact record published by CI (Teletraan's `BuildBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    /// `<22-char id>_<commit7>`.
    pub id: BuildId,
    /// Build name; must equal a stage's `buildName` to deploy there.
    pub name: BuildName,
    /// Where the agent downloads the artifact (http, https or file).
    pub artifact_url: String,
    /// SCM type.
    #[serde(rename = "type")]
    pub scm: Option<String>,
    /// Repository.
    pub repo: String,
    /// Branch.
    pub branch: String,
    /// Full commit.
    pub commit: String,
    /// First 7 characters of the commit.
    pub commit_short: String,
    /// Link to the commit.
    pub commit_info: Option<String>,
    /// Commit time.
    pub commit_date: EpochMs,
    /// Link to the CI job.
    pub publish_info: Option<String>,
    /// Who published.
    pub publisher: String,
    /// When.
    pub publish_date: EpochMs,
    /// Hex SHA-256 of the artifact; the agent refuses an artifact that does not match.
    pub artifact_sha256: Option<String>,
}

/// A build as CI publishes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct BuildInput {
    pub name: Option<String>,
    pub artifact_url: Option<String>,
    #[serde(rename = "type")]
    pub scm: Option<String>,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub commit_short: Option<String>,
    pub commit_info: Option<String>,
    pub commit_date: Option<EpochMs>,
    pub publish_info: Option<String>,
    pub artifact_sha256: Option<String>,
}

/// Where artifacts may come from.
#[derive(Debug, Clone, Default)]
pub struct ArtifactPolicy {
    /// When non-empty, an artifact URL must start with one of these.
    pub allowed_prefixes: Vec<String>,
}

fn required(field: &'static str, v: Option<String>, max: usize) -> Result<String, Invalid> {
    let v = v.map(|s| s.trim().to_string()).unwrap_or_default();
    if v.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if v.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(v)
}

impl Build {
    /// Validates a publish request and fills Teletraan's defaults.
    pub fn publish(
        input: BuildInput,
        policy: &ArtifactPolicy,
        publisher: &str,
        now: EpochMs,
    ) -> Result<Build, Invalid> {
        let name = BuildName::parse(input.name.unwrap_or_default()).map_err(|e| invalid("name", e.to_string()))?;
        let artifact_url = required("artifactUrl", input.artifact_url, 2048)?;
        let scheme_ok = ["http://", "https://", "file://"].iter().any(|p| artifact_url.starts_with(p));
        if !scheme_ok {
            return Err(invalid("artifactUrl", "must be an http://, https:// or file:// URL"));
        }
        if !policy.allowed_prefixes.is_empty()
            && !policy.allowed_prefixes.iter().any(|p| artifact_url.starts_with(p.as_str()))
        {
            return Err(invalid("artifactUrl", "is not under an allowed artifact location"));
        }
        let repo = required("repo", input.repo, 256)?;
        let branch = required("branch", input.branch, 256)?;
        let commit = required("commit", input.commit, 64)?;
        if !commit.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid("commit", "may only contain letters and digits"));
        }
        let commit_short = match input.commit_short {
            Some(s) if !s.is_empty() => {
                if s.len() > 16 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(invalid("commitShort", "must be up to 16 letters and digits"));
                }
                s
            }
            _ => commit.chars().take(7).collect(),
        };
        let artifact_sha256 = match input.artifact_sha256 {
            Some(s) => {
                let s = s.trim().to_ascii_lowercase();
                if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(invalid("artifactSha256", "must be 64 hexadecimal characters"));
                }
                Some(s)
            }
            None => None,
        };
        // Year 3000: far enough, and well inside what Postgres and every client can represent.
        const LATEST: EpochMs = 32_503_680_000_000;
        if let Some(d) = input.commit_date
            && !(0..=LATEST).contains(&d)
        {
            return Err(invalid("commitDate", "must be epoch milliseconds between 1970 and 3000"));
        }
        let id = BuildId::generate(&commit_short).map_err(|e| invalid("commitShort", e.to_string()))?;
        Ok(Build {
            id,
            name,
            artifact_url,
            scm: optional_text("type", input.scm, 64)?,
            repo,
            branch,
            commit,
            commit_short,
            commit_info: optional_text("commitInfo", input.commit_info, 2048)?,
            commit_date: input.commit_date.unwrap_or(now),
            publish_info: Some(
                optional_text("publishInfo", input.publish_info, 2048)?.unwrap_or_else(|| "UNKNOWN".into()),
            ),
            publisher: publisher.to_string(),
            publish_date: now,
            artifact_sha256,
        })
    }
}

/// One deploy of a build on a stage (Teletraan's `DeployBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deploy {
    /// Deploy id.
    pub id: DeployId,
    /// For rollbacks: the deploy rolled back to.
    pub alias: Option<DeployId>,
    /// The stage.
    pub env_id: EnvId,
    /// The build rolled out.
    pub build_id: BuildId,
    /// Kind.
    #[serde(rename = "type")]
    pub deploy_type: DeployType,
    /// State.
    pub state: DeployState,
    /// Created at.
    pub start_date: EpochMs,
    /// Who asked.
    pub operator: String,
    /// Last observable change (drives stuck detection).
    pub last_update_date: EpochMs,
    /// Free text.
    pub description: Option<String>,
    /// Hosts done.
    pub success_total: i32,
    /// Hosts failed for good.
    pub fail_total: i32,
    /// Hosts of the stage.
    pub total: i32,
    /// First time the deploy reached SUCCEEDING.
    pub success_date: Option<EpochMs>,
    /// Acceptance.
    pub acceptance_status: AcceptanceStatus,
    /// For promotions: the source deploy.
    pub from_deploy_id: Option<DeployId>,
}

/// The server's view of one host for one stage (Teletraan's `AgentBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Agent {
    pub host_id: HostId,
    pub host_name: HostName,
    pub env_id: EnvId,
    pub deploy_id: DeployId,
    pub deploy_stage: DeployStage,
    pub state: AgentState,
    pub status: AgentStatus,
    pub start_date: EpochMs,
    pub last_update_date: EpochMs,
    pub last_operator: String,
    pub last_errno: i32,
    pub fail_count: i32,
    pub first_deploy: bool,
    pub first_deploy_date: Option<EpochMs>,
    pub stage_start_date: EpochMs,
    pub container_health_status: String,
}

/// Progress of a command sent to the workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandStatus {
    /// Command id.
    pub id: String,
    /// Kind of command.
    pub kind: String,
    /// PENDING, DONE or FAILED.
    pub status: String,
    /// When the API accepted it.
    pub created_at: EpochMs,
    /// When a worker finished it.
    pub finished_at: Option<EpochMs>,
    /// The outcome (for a deploy: the deploy).
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<crate::bus::CommandError>,
}

/// A stage's deploy schedule (Teletraan's `ScheduleBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleBean {
    /// Schedule id.
    pub id: String,
    /// Number of sessions.
    pub total_sessions: i32,
    /// Minutes of cooldown per session, comma separated (negative: wait for an operator).
    pub cooldown_times: String,
    /// Hosts per session, comma separated: counts (cumulative) or percentages (`10%`).
    pub host_numbers: String,
    /// Current session, 1-based (0 before the first deploy).
    pub current_session: i32,
    /// State.
    pub state: ScheduleState,
    /// When the state was entered.
    pub state_start_time: EpochMs,
}

/// A schedule as users send it; `totalSessions` of 0 or less removes the schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ScheduleInput {
    pub total_sessions: Option<i32>,
    pub cooldown_times: Option<String>,
    pub host_numbers: Option<String>,
}

/// A stage's deploy constraint (Teletraan's `DeployConstraintBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConstraintBean {
    /// Constraint id.
    pub id: String,
    /// The tag name (read from the pings' `ec2Tags`).
    pub constraint_key: String,
    /// Hosts per tag value out of service at once.
    pub max_parallel: i64,
    /// Values in parallel, or one after the other.
    pub constraint_type: DeployConstraintType,
    /// Always FINISHED: tags are read live from the pings, there is nothing to sync.
    pub state: String,
    /// Created.
    pub start_date: EpochMs,
    /// Changed.
    pub last_update: EpochMs,
}

/// A constraint as users send it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ConstraintInput {
    pub constraint_key: Option<String>,
    pub max_parallel: Option<i64>,
    pub constraint_type: Option<DeployConstraintType>,
}

/// A string→string map (script variables, agent configs).
pub type StringMap = BTreeMap<String, String>;

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

    fn build(json: &str) -> Result<Build, Invalid> {
        Build::publish(serde_json::from_str(json).unwrap(), &ArtifactPolicy::default(), "ci", 7)
    }

    #[test]
    fn publish_fills_defaults_and_mints_the_id() {
        let b = build(r#"{"name":"web","artifactUrl":"https://a/web.tgz","repo":"org/web","branch":"main","commit":"fabe9af6ac4c"}"#).unwrap();
        assert_eq!(b.commit_short, "fabe9af");
        assert!(b.id.as_str().ends_with("_fabe9af"));
        assert_eq!((b.commit_date, b.publish_date), (7, 7));
        assert_eq!(b.publisher, "ci");
    }

    #[test]
    fn publish_rejects_bad_urls_and_checksums() {
        let base = r#""name":"web","repo":"r","branch":"b","commit":"abc""#;
        assert_eq!(build(&format!(r#"{{{base},"artifactUrl":"ftp://x"}}"#)).unwrap_err().field, "artifactUrl");
        assert_eq!(build(&format!(r#"{{{base}}}"#)).unwrap_err().field, "artifactUrl");
        assert_eq!(
            build(&format!(r#"{{{base},"artifactUrl":"file:///a.tgz","artifactSha256":"xyz"}}"#)).unwrap_err().field,
            "artifactSha256"
        );
        assert_eq!(
            build(&format!(r#"{{{base},"artifactUrl":"file:///a.tgz","commitInfo":"x\u0000"}}"#)).unwrap_err().field,
            "commitInfo"
        );
        assert_eq!(
            build(&format!(r#"{{{base},"artifactUrl":"file:///a.tgz","commitDate":100000000000000000}}"#))
                .unwrap_err()
                .field,
            "commitDate"
        );
        let policy = ArtifactPolicy { allowed_prefixes: vec!["https://artifacts/".into()] };
        let input: BuildInput =
            serde_json::from_str(&format!(r#"{{{base},"artifactUrl":"https://elsewhere/a.tgz"}}"#)).unwrap();
        assert_eq!(Build::publish(input, &policy, "ci", 0).unwrap_err().field, "artifactUrl");
    }
}
