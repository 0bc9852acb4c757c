//! Messages that travel over RabbitMQ. Each queue carries one envelope enum whose variants
//! name their version (`…V1`); a new shape is a new variant, so old and new processes can
//! run side by side during a rolling upgrade.

use serde::{Deserialize, Serialize};

use crate::model::{Agent, Deploy};
use crate::rules::goal::{AgentRecord, StageGoal};
use crate::time::EpochMs;
use crate::{
    AcceptanceStatus, AgentState, AgentStatus, BuildId, DeployAction, DeployId, DeployStage, EnvId, EnvName, GroupName,
    HostId, HostName, StageName,
};

/// A deploy command from the API to the workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandEnvelope {
    /// Unique id; workers apply a command id once.
    pub id: String,
    /// Delivery attempt (1 for the first).
    pub attempt: u32,
    /// When the API accepted it.
    pub issued_at: EpochMs,
    /// Who asked.
    pub operator: String,
    /// What to do.
    pub command: Command,
    /// The id of the API request that sent it (`X-Request-Id`), carried into the worker's
    /// logs; absent from older APIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind")]
pub enum Command {
    /// Deploy a build on a stage (`POST /v1/envs/{env}/{stage}/deploys`).
    #[serde(rename = "create_deploy.v1", rename_all = "camelCase")]
    CreateDeployV1 {
        /// Environment.
        env_name: EnvName,
        /// Stage.
        stage_name: StageName,
        /// Build to deploy.
        build_id: BuildId,
        /// Free text.
        description: Option<String>,
    },
    /// Promote, restart, roll back, pause or resume (`POST …/deploys/current/actions`).
    #[serde(rename = "deploy_action.v1", rename_all = "camelCase")]
    DeployActionV1 {
        /// Environment.
        env_name: EnvName,
        /// Stage.
        stage_name: StageName,
        /// What to do.
        action: DeployAction,
        /// PROMOTE: the deploy (of another stage) whose build to deploy.
        from_deploy_id: Option<DeployId>,
        /// ROLLBACK: the deploy to go back to (default: the last one that succeeded).
        to_deploy_id: Option<DeployId>,
        /// Free text.
        description: Option<String>,
        /// ROLLBACK: tag the build of the deploy it leaves BAD_BUILD, in the same transaction.
        #[serde(default)]
        mark_bad: bool,
    },
    /// Set the state of some hosts on a stage: hold (`PAUSED_BY_USER`), release (`NORMAL`),
    /// redo the deploy (`RESET`) or stop the service (`STOP`).
    #[serde(rename = "host_action.v1", rename_all = "camelCase")]
    HostActionV1 {
        /// Environment.
        env_name: EnvName,
        /// Stage.
        stage_name: StageName,
        /// The state asked for.
        action: AgentState,
        /// The hosts.
        host_ids: Vec<HostId>,
    },
    /// Redo the deploy on every host of a deploy that failed (`…/agents/reset_failed_agents`).
    #[serde(rename = "reset_failed.v1", rename_all = "camelCase")]
    ResetFailedV1 {
        /// Environment.
        env_name: EnvName,
        /// Stage.
        stage_name: StageName,
        /// The deploy.
        deploy_id: DeployId,
    },
    /// Stop the service on hosts of a stage, on every stage they serve (`DELETE …/hosts`).
    #[serde(rename = "stop_hosts.v1", rename_all = "camelCase")]
    StopHostsV1 {
        /// Environment.
        env_name: EnvName,
        /// Stage.
        stage_name: StageName,
        /// The hosts.
        host_ids: Vec<HostId>,
        /// Whether the hosts are to be replaced once stopped.
        replace: bool,
    },
    /// Record a verdict on a deploy, or change its description (`PUT /v1/deploys/{id}`).
    #[serde(rename = "update_deploy.v1", rename_all = "camelCase")]
    UpdateDeployV1 {
        /// The deploy.
        deploy_id: DeployId,
        /// PENDING_ACCEPT, ACCEPTED or REJECTED.
        acceptance_status: Option<AcceptanceStatus>,
        /// Free text.
        description: Option<String>,
    },
    /// End a deploy schedule's session early (`PUT …/schedules/override`).
    #[serde(rename = "override_schedule.v1", rename_all = "camelCase")]
    OverrideScheduleV1 {
        /// Environment.
        env_name: EnvName,
        /// Stage.
        stage_name: StageName,
        /// The current session.
        session: u32,
    },
}

impl Command {
    /// Short name for logs, metrics and the commands table.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateDeployV1 { .. } => "create_deploy",
            Command::DeployActionV1 { .. } => "deploy_action",
            Command::HostActionV1 { .. } => "host_action",
            Command::ResetFailedV1 { .. } => "reset_failed",
            Command::StopHostsV1 { .. } => "stop_hosts",
            Command::UpdateDeployV1 { .. } => "update_deploy",
            Command::OverrideScheduleV1 { .. } => "override_schedule",
        }
    }

    /// The stage the command acts on, when it names one (every command but a deploy's update,
    /// which names the deploy).
    pub fn stage_names(&self) -> Option<(&EnvName, &StageName)> {
        match self {
            Command::CreateDeployV1 { env_name, stage_name, .. }
            | Command::DeployActionV1 { env_name, stage_name, .. }
            | Command::HostActionV1 { env_name, stage_name, .. }
            | Command::ResetFailedV1 { env_name, stage_name, .. }
            | Command::StopHostsV1 { env_name, stage_name, .. }
            | Command::OverrideScheduleV1 { env_name, stage_name, .. } => Some((env_name, stage_name)),
            Command::UpdateDeployV1 { .. } => None,
        }
    }
}

/// Why a command failed, with the HTTP status the API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[error("{code}: {message}")]
pub struct CommandError {
    /// HTTP status.
    pub status: u16,
    /// Stable code (`not_found`, `invalid_build`…).
    pub code: String,
    /// For people.
    pub message: String,
}

/// The worker's answer to a command (sent to the API's direct reply-to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandReply {
    /// The command.
    pub command_id: String,
    /// The outcome.
    pub outcome: CommandOutcome,
}

/// Success with a JSON result (for a deploy: the deploy), or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum CommandOutcome {
    /// Applied.
    Ok {
        /// Result document.
        result: serde_json::Value,
    },
    /// Refused or failed.
    Err {
        /// Why.
        error: CommandError,
    },
}

/// What gateways send workers: agent records that changed, host facts and heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind")]
pub enum ReportMessage {
    /// A batch from one gateway.
    #[serde(rename = "reports.v1")]
    ReportsV1(ReportBatch),
}

/// One batch of changes seen by a gateway.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportBatch {
    /// Which gateway sent it.
    pub gateway: String,
    /// When.
    pub sent_at: EpochMs,
    /// Hosts whose identity or groups changed (or that the gateway has not reported yet).
    pub hosts: Vec<HostFacts>,
    /// Agent records to store.
    pub agents: Vec<AgentUpdate>,
    /// Hosts seen since the last batch, with the time they were last seen.
    pub heartbeats: Vec<Heartbeat>,
}

impl ReportBatch {
    /// Whether the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.agents.is_empty() && self.heartbeats.is_empty()
    }
}

/// A host's identity as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct HostFacts {
    pub host_id: HostId,
    pub host_name: HostName,
    pub ip: Option<String>,
    pub groups: Vec<GroupName>,
    pub agent_version: String,
    pub autoscaling_group: Option<String>,
    pub availability_zone: Option<String>,
    /// Tags from the ping's `ec2Tags` (deploy constraints read them).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    pub seen_at: EpochMs,
}

/// A host was seen at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// The host.
    pub host_id: HostId,
    /// Last ping.
    pub at: EpochMs,
}

/// An agent record computed by a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentUpdate {
    /// Host.
    pub host_id: HostId,
    /// Its name.
    pub host_name: HostName,
    /// Stage.
    pub env_id: EnvId,
    /// When the gateway computed it.
    pub at: EpochMs,
    /// The record; `None` removes it.
    pub record: Option<AgentRecord>,
    /// The record's control sequence as the gateway knew it. Workers bump it whenever they
    /// decide for a record (admission, user action); an update computed before such a
    /// decision is refused.
    pub control_seq: i64,
    /// Error text reported with a non-zero error number.
    pub error_message: Option<String>,
}

/// What workers send every gateway: goal changes, in version order per stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind")]
pub enum ChangeMessage {
    /// A stage was created or changed (or deleted: `stage` is `None`).
    #[serde(rename = "stage.v1", rename_all = "camelCase")]
    StageV1 {
        /// The stage.
        env_id: EnvId,
        /// Its version after the change.
        version: i64,
        /// The new snapshot.
        stage: Option<Box<StageSnapshot>>,
    },
    /// Agent records changed by workers or users (admissions, host actions).
    #[serde(rename = "agents.v1", rename_all = "camelCase")]
    AgentsV1 {
        /// The stage.
        env_id: EnvId,
        /// Its version after the change.
        version: i64,
        /// The records.
        agents: Vec<AgentControl>,
    },
    /// The janitor forgot these hosts (records, identity, heartbeats): a gateway that still
    /// knows one publishes its identity and heartbeat again at its next ping. Not ordered with
    /// stage changes; a gateway that misses it republishes after a long silence anyway.
    #[serde(rename = "hosts_forgotten.v1", rename_all = "camelCase")]
    HostsForgottenV1 {
        /// The hosts.
        host_ids: Vec<HostId>,
    },
    /// A host enrolled, or its credential was revoked: gateways refuse its older credentials
    /// (and static tokens claiming it) from then on. Not ordered with stage changes; gateways
    /// also read recent enrollments from Postgres every check, so a lost message costs seconds.
    #[serde(rename = "host_credential.v1", rename_all = "camelCase")]
    HostCredentialV1 {
        /// The host.
        host_id: HostId,
        /// The name it enrolled with.
        host_name: HostName,
        /// Its generation after the change.
        generation: u32,
        /// Whether the change was a revocation.
        revoked: bool,
    },
    /// Tokens were made, revoked or deleted: gateways read the valid ones again (they also do
    /// every check, so a lost message costs seconds).
    #[serde(rename = "tokens.v1")]
    TokensV1 {},
}

impl ChangeMessage {
    /// The stage and version the change brings (`None` for changes outside any stage).
    pub fn stage_version(&self) -> Option<(&EnvId, i64)> {
        match self {
            ChangeMessage::StageV1 { env_id, version, .. } | ChangeMessage::AgentsV1 { env_id, version, .. } => {
                Some((env_id, *version))
            }
            ChangeMessage::HostsForgottenV1 { .. }
            | ChangeMessage::HostCredentialV1 { .. }
            | ChangeMessage::TokensV1 {} => None,
        }
    }
}

/// Everything a gateway holds about a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageSnapshot {
    /// What goals are made from.
    pub goal: StageGoal,
    /// Group capacity.
    pub groups: Vec<GroupName>,
    /// Host capacity (host names).
    pub hosts: Vec<HostName>,
}

/// One agent record as workers set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentControl {
    /// Host.
    pub host_id: HostId,
    /// The record; `None` when removed.
    pub record: Option<AgentRecord>,
    /// The record's control sequence after the change.
    pub control_seq: i64,
}

/// A domain event on the `events` topic exchange (routing key = `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployEvent {
    /// `deploy.started`, `deploy.succeeding`, `deploy.failing`, …
    pub kind: String,
    /// Environment.
    pub env_name: EnvName,
    /// Stage.
    pub stage_name: StageName,
    /// The deploy after the event.
    pub deploy: Deploy,
    /// When.
    pub at: EpochMs,
}

/// A live update for the deploy board, on the `events` topic exchange (routing key
/// [`LiveEvent::routing_key`]). Published by workers after their transaction committed, best
/// effort: a lost one is made up for by the client reloading (the API tells it to, with a
/// `resync`), so these are never a source of truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind")]
pub enum LiveEvent {
    /// Agent records of one stage that a report batch, an admission or a host action wrote.
    #[serde(rename = "live.agents.v1")]
    AgentsV1(StageAgents),
    /// The current deploy of one stage after it was evaluated or a command changed it.
    #[serde(rename = "live.deploy.v1")]
    DeployV1(StageDeploy),
}

impl LiveEvent {
    /// The prefix of every live event's routing key: bind `live.#` for all of them.
    pub const ROUTING_PREFIX: &'static str = "live";

    /// `live.<what>.<env>.<stage>` (`live.agents.web.prod`, `live.deploy.web.prod`): a consumer
    /// binds `live.#`, `live.deploy.#` or `live.*.web.prod`. Names hold no dots, so the four
    /// words are always these.
    pub fn routing_key(&self) -> String {
        format!("{}.{}.{}.{}", Self::ROUTING_PREFIX, self.what(), self.env_name(), self.stage_name())
    }

    /// `agents` or `deploy` (the SSE event name).
    pub fn what(&self) -> &'static str {
        match self {
            LiveEvent::AgentsV1(_) => "agents",
            LiveEvent::DeployV1(_) => "deploy",
        }
    }

    /// The stage's id.
    pub fn env_id(&self) -> &EnvId {
        match self {
            LiveEvent::AgentsV1(a) => &a.env_id,
            LiveEvent::DeployV1(d) => &d.env_id,
        }
    }

    /// The stage's environment.
    pub fn env_name(&self) -> &EnvName {
        match self {
            LiveEvent::AgentsV1(a) => &a.env_name,
            LiveEvent::DeployV1(d) => &d.env_name,
        }
    }

    /// The stage's name.
    pub fn stage_name(&self) -> &StageName {
        match self {
            LiveEvent::AgentsV1(a) => &a.stage_name,
            LiveEvent::DeployV1(d) => &d.stage_name,
        }
    }
}

/// Agent records of one stage, as [`LiveEvent::AgentsV1`] carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageAgents {
    /// The stage.
    pub env_id: EnvId,
    /// Its environment.
    pub env_name: EnvName,
    /// Its name.
    pub stage_name: StageName,
    /// The records written, by host name.
    pub agents: Vec<AgentView>,
}

/// A stage's current deploy, as [`LiveEvent::DeployV1`] carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageDeploy {
    /// The stage.
    pub env_id: EnvId,
    /// Its environment.
    pub env_name: EnvName,
    /// Its name.
    pub stage_name: StageName,
    /// The deploy, as `GET /v1/deploys/{id}` answers it.
    pub deploy: Deploy,
    /// Whether the stage is paused (absent from workers older than this field: not paused).
    #[serde(default)]
    pub paused: bool,
}

/// What the board shows of one agent record (a row of the host grid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    /// Host.
    pub host_id: HostId,
    /// Its name.
    pub host_name: HostName,
    /// The deploy the record is about.
    pub deploy_id: DeployId,
    /// Step of that deploy.
    pub deploy_stage: DeployStage,
    /// Agent state (NORMAL, PAUSED_BY_USER, …).
    pub state: AgentState,
    /// Outcome of the step.
    pub status: AgentStatus,
    /// Error number of the last report (0: none).
    pub last_err_no: i32,
    /// When the record last changed.
    pub last_update_date: EpochMs,
    /// The record was removed (the host left the stage); the other fields are its last values.
    pub removed: bool,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        AgentView {
            host_id: a.host_id.clone(),
            host_name: a.host_name.clone(),
            deploy_id: a.deploy_id.clone(),
            deploy_stage: a.deploy_stage,
            state: a.state,
            status: a.status,
            last_err_no: a.last_errno,
            last_update_date: a.last_update_date,
            removed: false,
        }
    }
}

/// Work for the webhook workers: one message per delivery (the request and its attempts are
/// in Postgres, so a redelivered message changes nothing once the delivery is settled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind")]
pub enum WebhookMessage {
    /// Send one delivery, retrying as the worker's settings say.
    #[serde(rename = "deliver.v1", rename_all = "camelCase")]
    DeliverV1 {
        /// The delivery (`webhook_deliveries.id`).
        delivery_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_envelope_names_its_version() {
        let env = CommandEnvelope {
            request_id: None,
            id: "c1".into(),
            attempt: 1,
            issued_at: 5,
            operator: "alice".into(),
            command: Command::CreateDeployV1 {
                env_name: EnvName::parse("web").unwrap(),
                stage_name: StageName::parse("prod").unwrap(),
                build_id: BuildId::parse("b_abc").unwrap(),
                description: None,
            },
        };
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["command"]["kind"], "create_deploy.v1");
        assert_eq!(json["command"]["envName"], "web");
        assert_eq!(serde_json::from_value::<CommandEnvelope>(json).unwrap(), env);
    }

    #[test]
    fn live_events_name_their_version_and_route_by_stage() {
        let event = LiveEvent::AgentsV1(StageAgents {
            env_id: EnvId::parse("e1").unwrap(),
            env_name: EnvName::parse("web").unwrap(),
            stage_name: StageName::parse("prod").unwrap(),
            agents: vec![AgentView {
                host_id: HostId::parse("i-1").unwrap(),
                host_name: HostName::parse("web-1").unwrap(),
                deploy_id: DeployId::parse("d1").unwrap(),
                deploy_stage: DeployStage::Downloading,
                state: AgentState::Normal,
                status: AgentStatus::Succeeded,
                last_err_no: 0,
                last_update_date: 7,
                removed: false,
            }],
        });
        assert_eq!(event.routing_key(), "live.agents.web.prod");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "live.agents.v1");
        assert_eq!(json["envName"], "web");
        let agent = &json["agents"][0];
        assert_eq!(agent["hostName"], "web-1");
        assert_eq!(agent["deployStage"], "DOWNLOADING");
        assert_eq!(agent["lastErrNo"], 0);
        assert_eq!(agent["lastUpdateDate"], 7);
        assert_eq!(serde_json::from_value::<LiveEvent>(json).unwrap(), event);
    }

    #[test]
    fn unknown_message_kinds_are_refused() {
        assert!(serde_json::from_str::<ReportMessage>(r#"{"kind":"reports.v9"}"#).is_err());
        assert!(serde_json::from_str::<ChangeMessage>(r#"{"kind":"stage.v1"}"#).is_err());
        assert!(serde_json::from_str::<LiveEvent>(r#"{"kind":"live.agents.v9"}"#).is_err());
    }
}
