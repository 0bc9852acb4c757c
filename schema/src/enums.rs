//! Teletraan's enumerations with their exact wire values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that names no value of an enumeration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {kind} (expected one of: {expected})")]
pub struct UnknownValue {
    /// Enumeration name.
    pub kind: &'static str,
    /// The rejected text.
    pub value: String,
    /// Comma list of the accepted values.
    pub expected: String,
}

macro_rules! str_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        kind: stringify!($name),
                        value: s.to_string(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "enum": [$($text),+]})
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

str_enum!(
    /// Where a host is in the rollout of one deploy (per host and stage).
    DeployStage {
        /// Reserved; the stage before PRE_DOWNLOAD.
        Unknown = "UNKNOWN",
        /// Hook run by the old build before the download.
        PreDownload = "PRE_DOWNLOAD",
        /// Built-in: fetch and extract the artifact.
        Downloading = "DOWNLOADING",
        /// Hook run by the old build after the download.
        PostDownload = "POST_DOWNLOAD",
        /// Built-in: switch the live symlink to the new build.
        Staging = "STAGING",
        /// Hook of the new build before the restart.
        PreRestart = "PRE_RESTART",
        /// Hook of the new build that restarts the service (mandatory).
        Restarting = "RESTARTING",
        /// Hook of the new build after the restart.
        PostRestart = "POST_RESTART",
        /// Done: the host serves the build.
        ServingBuild = "SERVING_BUILD",
        /// Stopping the service.
        Stopping = "STOPPING",
        /// The service is stopped.
        Stopped = "STOPPED",
    }
);

str_enum!(
    /// State of a deploy.
    DeployState {
        /// In progress, neither threshold met.
        Running = "RUNNING",
        /// In progress, too many hosts failed or no progress for the stuck threshold.
        Failing = "FAILING",
        /// Success threshold met; stays here while current so new hosts still get the build.
        Succeeding = "SUCCEEDING",
        /// Replaced after succeeding.
        Succeeded = "SUCCEEDED",
        /// Replaced before succeeding.
        Aborted = "ABORTED",
    }
);

str_enum!(
    /// Kind of deploy.
    DeployType {
        /// A build deployed or promoted.
        Regular = "REGULAR",
        /// A hotfix build (served before regular deploys).
        Hotfix = "HOTFIX",
        /// An older build redeployed.
        Rollback = "ROLLBACK",
        /// The current build redeployed.
        Restart = "RESTART",
        /// Service stop (never a deploy row; kept for the opcode mapping).
        Stop = "STOP",
    }
);

str_enum!(
    /// Acceptance of a deploy by tests outside the deploy system.
    AcceptanceStatus {
        /// Not yet succeeding.
        PendingDeploy = "PENDING_DEPLOY",
        /// Succeeding, awaiting a verdict (MANUAL acceptance).
        Outstanding = "OUTSTANDING",
        /// Being tested.
        PendingAccept = "PENDING_ACCEPT",
        /// Accepted.
        Accepted = "ACCEPTED",
        /// Rejected.
        Rejected = "REJECTED",
        /// Retired before a verdict.
        Terminated = "TERMINATED",
    }
);

str_enum!(
    /// How a stage accepts its deploys.
    AcceptanceType {
        /// Accepted as soon as it is succeeding.
        Auto = "AUTO",
        /// An outside system must accept or reject.
        Manual = "MANUAL",
    }
);

str_enum!(
    /// Control flag of one host for one stage (`agents.state`).
    AgentState {
        /// Normal operation.
        Normal = "NORMAL",
        /// A fatal failure: no more goals until reset or a new deploy.
        PausedBySystem = "PAUSED_BY_SYSTEM",
        /// Held by an operator.
        PausedByUser = "PAUSED_BY_USER",
        /// An operator asked to redo the deploy from scratch.
        Reset = "RESET",
        /// The agent asked to redo the deploy.
        ResetBySystem = "RESET_BY_SYSTEM",
        /// The stage no longer applies to the host.
        Delete = "DELETE",
        /// The host stopped pinging.
        Unreachable = "UNREACHABLE",
        /// Stop the service on the host.
        Stop = "STOP",
    }
);

str_enum!(
    /// Outcome of the last step an agent ran.
    AgentStatus {
        /// The step succeeded.
        Succeeded = "SUCCEEDED",
        /// In progress, or freshly assigned.
        Unknown = "UNKNOWN",
        /// Fatal agent-side failure.
        AgentFailed = "AGENT_FAILED",
        /// Agent-side failure worth retrying.
        RetryableAgentFailed = "RETRYABLE_AGENT_FAILED",
        /// A hook exited non-zero (retried).
        ScriptFailed = "SCRIPT_FAILED",
        /// The server changed the goal mid-step.
        AbortedByService = "ABORTED_BY_SERVICE",
        /// A hook ran past its timeout (fatal).
        ScriptTimeout = "SCRIPT_TIMEOUT",
        /// A step failed on every retry (fatal).
        TooManyRetry = "TOO_MANY_RETRY",
        /// The runtime does not match (fatal).
        RuntimeMismatch = "RUNTIME_MISMATCH",
    }
);

impl AgentStatus {
    /// Fatal statuses pause the host (`PAUSED_BY_SYSTEM`); any other failure repeats the step.
    pub const fn is_fatal(self) -> bool {
        match self {
            AgentStatus::ScriptTimeout
            | AgentStatus::TooManyRetry
            | AgentStatus::AgentFailed
            | AgentStatus::RuntimeMismatch => true,
            AgentStatus::Succeeded
            | AgentStatus::Unknown
            | AgentStatus::RetryableAgentFailed
            | AgentStatus::ScriptFailed
            | AgentStatus::AbortedByService => false,
        }
    }
}

str_enum!(
    /// Operation in a ping response.
    OpCode {
        /// Nothing to do.
        Noop = "NOOP",
        /// Deploy (REGULAR and HOTFIX deploys).
        Deploy = "DEPLOY",
        /// Restart deploy.
        Restart = "RESTART",
        /// Forget this environment.
        Delete = "DELETE",
        /// Defined by Teletraan, never sent.
        Wait = "WAIT",
        /// Rollback deploy.
        Rollback = "ROLLBACK",
        /// Stop the service.
        Stop = "STOP",
    }
);

impl DeployType {
    /// The opcode an agent receives for a goal of this deploy type.
    pub const fn op_code(self) -> OpCode {
        match self {
            DeployType::Regular | DeployType::Hotfix => OpCode::Deploy,
            DeployType::Rollback => OpCode::Rollback,
            DeployType::Restart => OpCode::Restart,
            DeployType::Stop => OpCode::Stop,
        }
    }
}

str_enum!(
    /// Deploy switch of a stage (`envState`): PAUSED puts the current deploy on hold.
    EnvState {
        /// Deploys progress.
        Normal = "NORMAL",
        /// Existing hosts get no goals; first deploys of new hosts still proceed.
        Paused = "PAUSED",
        /// Reserved by Teletraan, never set by it.
        Disabled = "DISABLED",
    }
);

str_enum!(
    /// Enable/disable switch of a stage (`state`).
    EnvironState {
        /// Enabled.
        Normal = "NORMAL",
        /// Disabled: no new build is deployed on it, by anyone (rollbacks and restarts are).
        Disabled = "DISABLED",
    }
);

str_enum!(
    /// What `POST /v1/envs/{env}/{stage}/actions` and `POST /v1/envs/actions` (the change
    /// freeze) do (`actionType`).
    EnvironAction {
        /// Enable: new builds may be deployed again.
        Enable = "ENABLE",
        /// Disable: no new build is deployed (rollbacks and restarts still are).
        Disable = "DISABLE",
    }
);

str_enum!(
    /// Kind of stage.
    EnvType {
        /// Legacy production (refused on create and update).
        Default = "DEFAULT",
        /// Production.
        Production = "PRODUCTION",
        /// Control group of a canary.
        Control = "CONTROL",
        /// Canary.
        Canary = "CANARY",
        /// Latest (non-production).
        Latest = "LATEST",
        /// Development (non-production).
        Dev = "DEV",
        /// Staging (non-production).
        Staging = "STAGING",
    }
);

impl EnvType {
    /// Production category: DEFAULT, PRODUCTION, CONTROL, CANARY.
    pub const fn is_production(self) -> bool {
        match self {
            EnvType::Default | EnvType::Production | EnvType::Control | EnvType::Canary => true,
            EnvType::Latest | EnvType::Dev | EnvType::Staging => false,
        }
    }
}

str_enum!(
    /// Priority of a stage among the stages on one host (lower value first).
    DeployPriority {
        /// 1000.
        Higher = "HIGHER",
        /// 2000.
        High = "HIGH",
        /// 3000, the default.
        Normal = "NORMAL",
        /// 4000.
        Low = "LOW",
        /// 5000.
        Lower = "LOWER",
    }
);

impl DeployPriority {
    /// Numeric value; lower is served first.
    pub const fn value(self) -> i32 {
        match self {
            DeployPriority::Higher => 1000,
            DeployPriority::High => 2000,
            DeployPriority::Normal => 3000,
            DeployPriority::Low => 4000,
            DeployPriority::Lower => 5000,
        }
    }
}

str_enum!(
    /// What the UI does when a deploy replaces a running one.
    OverridePolicy {
        /// Replace without asking.
        Override = "OVERRIDE",
        /// Ask for confirmation first.
        Warn = "WARN",
    }
);

str_enum!(
    /// Lifecycle of a host record.
    HostState {
        /// Registered, not yet pinging.
        Provisioned = "PROVISIONED",
        /// Pinging.
        Active = "ACTIVE",
        /// Stop the service, then retire with replacement.
        PendingTerminate = "PENDING_TERMINATE",
        /// Being terminated.
        Terminating = "TERMINATING",
        /// Gone.
        Terminated = "TERMINATED",
        /// Stop the service, then retire without replacement.
        PendingTerminateNoReplace = "PENDING_TERMINATE_NO_REPLACE",
    }
);

str_enum!(
    /// An action on a stage's current deploy (`POST …/deploys/current/actions?actionType=`).
    DeployAction {
        /// Deploy the build of another stage's deploy here.
        Promote = "PROMOTE",
        /// Redeploy the current build.
        Restart = "RESTART",
        /// Deploy an older build again.
        Rollback = "ROLLBACK",
        /// Hold the rollout.
        Pause = "PAUSE",
        /// Continue it.
        Resume = "RESUME",
    }
);

str_enum!(
    /// Where a staged rollout (deploy schedule) is.
    ScheduleState {
        /// No deploy started it yet: no limit.
        NotStarted = "NOT_STARTED",
        /// A session is deploying its hosts.
        Running = "RUNNING",
        /// Between sessions: nobody new starts.
        CoolingDown = "COOLING_DOWN",
        /// Every session done: the rest of the fleet proceeds.
        Final = "FINAL",
    }
);

str_enum!(
    /// How a deploy constraint rolls out the values of its tag.
    DeployConstraintType {
        /// One tag value at a time, in the values' order.
        GroupByGroup = "GROUP_BY_GROUP",
        /// Every tag value at once, each capped.
        AllGroupsInParallel = "ALL_GROUPS_IN_PARALLEL",
    }
);

str_enum!(
    /// Which capacity list a capacity call addresses.
    CapacityType {
        /// Host groups.
        Group = "GROUP",
        /// Individual host names.
        Host = "HOST",
    }
);

str_enum!(
    /// How a stage takes new builds (`promotes.type`).
    PromoteType {
        /// Only people deploy here.
        Manual = "MANUAL",
        /// The auto-promoter deploys what the predecessor (a stage, or new builds) offers.
        Auto = "AUTO",
    }
);

str_enum!(
    /// What auto-promotion does when the stage's current deploy failed (FAILING or REJECTED).
    PromoteFailPolicy {
        /// Keep promoting newer candidates.
        Continue = "CONTINUE",
        /// Switch the stage to MANUAL and leave the failed deploy.
        Disable = "DISABLE",
        /// Roll back to the last deploy that succeeded, then switch to MANUAL.
        Rollback = "ROLLBACK",
    }
);

str_enum!(
    /// Whether a person's deploy, rollback or restart switches auto-promotion off.
    PromoteDisablePolicy {
        /// Yes: a person took over.
        Auto = "AUTO",
        /// No: only a configuration change does.
        Manual = "MANUAL",
    }
);

str_enum!(
    /// A mark on a build, a stage or the whole system.
    TagValue {
        /// The build must not spread (and neither do later builds of its branch).
        BadBuild = "BAD_BUILD",
        /// The build is good (ends a bad mark along its branch).
        GoodBuild = "GOOD_BUILD",
        /// The build passed certification.
        CertifiedBuild = "CERTIFIED_BUILD",
        /// A stage was enabled.
        EnableEnv = "ENABLE_ENV",
        /// A stage was disabled.
        DisableEnv = "DISABLE_ENV",
    }
);

impl TagValue {
    /// Whether the value marks builds (the others mark stages or the system).
    pub const fn is_build_tag(self) -> bool {
        match self {
            TagValue::BadBuild | TagValue::GoodBuild | TagValue::CertifiedBuild => true,
            TagValue::EnableEnv | TagValue::DisableEnv => false,
        }
    }
}

str_enum!(
    /// What a tag marks.
    TagTargetType {
        /// A build (tags are stored against its build name, with the build's facts).
        Build = "BUILD",
        /// A stage (by stage id).
        Environment = "ENVIRONMENT",
        /// The whole system (target id `TELETRAAN`).
        Teletraan = "TELETRAAN",
    }
);

str_enum!(
    /// What a principal may do, in order: each role includes the ones before it.
    AccessRole {
        /// Read everything but secrets.
        Reader = "READER",
        /// Also publish builds and tag them.
        Publisher = "PUBLISHER",
        /// Also deploy and change the stages of the environments granted.
        Operator = "OPERATOR",
        /// Also grant roles, manage tokens, delete stages and builds, change system settings.
        Admin = "ADMIN",
    }
);

impl AccessRole {
    /// Rank in the order above (a higher role includes the lower ones).
    pub const fn rank(self) -> u8 {
        match self {
            AccessRole::Reader => 0,
            AccessRole::Publisher => 1,
            AccessRole::Operator => 2,
            AccessRole::Admin => 3,
        }
    }

    /// Whether this role includes `needed`.
    pub const fn includes(self, needed: AccessRole) -> bool {
        self.rank() >= needed.rank()
    }

    /// A role as Teletraan's clients send it: ours, or Teletraan's older names (READ, EXECUTE,
    /// WRITE, DELETE, MANAGE_SCRIPT_TOKEN…), mapped to the closest of ours.
    pub fn parse_lenient(s: &str) -> Result<AccessRole, UnknownValue> {
        match s.trim().to_ascii_uppercase().as_str() {
            "READ" | "READER" => Ok(AccessRole::Reader),
            "PUBLISHER" => Ok(AccessRole::Publisher),
            "EXECUTE" | "WRITE" | "DELETE" | "OPERATOR" => Ok(AccessRole::Operator),
            "MANAGE_SCRIPT_TOKEN" | "ADMIN" => Ok(AccessRole::Admin),
            other => other.parse(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_text_and_json() {
        for s in DeployStage::ALL {
            assert_eq!(s.as_str().parse::<DeployStage>().unwrap(), *s);
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(serde_json::from_str::<DeployStage>(&json).unwrap(), *s);
        }
        assert_eq!(serde_json::to_string(&AgentStatus::TooManyRetry).unwrap(), "\"TOO_MANY_RETRY\"");
    }

    #[test]
    fn unknown_value_names_the_accepted_ones() {
        let err = "SOON".parse::<DeployState>().unwrap_err();
        assert!(err.to_string().contains("RUNNING, FAILING"), "{err}");
    }

    #[test]
    fn fatal_statuses_are_teletraans() {
        let fatal: Vec<_> = AgentStatus::ALL.iter().filter(|s| s.is_fatal()).collect();
        assert_eq!(
            fatal,
            [
                &AgentStatus::AgentFailed,
                &AgentStatus::ScriptTimeout,
                &AgentStatus::TooManyRetry,
                &AgentStatus::RuntimeMismatch
            ]
        );
    }

    #[test]
    fn opcodes_follow_the_deploy_type() {
        assert_eq!(DeployType::Hotfix.op_code(), OpCode::Deploy);
        assert_eq!(DeployType::Rollback.op_code(), OpCode::Rollback);
        assert_eq!(DeployType::Restart.op_code(), OpCode::Restart);
    }
}
