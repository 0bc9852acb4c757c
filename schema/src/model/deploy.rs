//! Deploys, agent records and command status as the API shows them.

use serde::{Deserialize, Serialize};

use crate::time::EpochMs;
use crate::{
    AcceptanceStatus, AgentState, AgentStatus, BuildId, DeployId, DeployStage, DeployState, DeployType, EnvId, HostId,
    HostName,
};

/// One deploy of a build on a stage (Teletraan's `DeployBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// A verdict that came before the deploy succeeded, applied when it first does (absent
    /// when none waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_verdict: Option<AcceptanceStatus>,
}

/// The server's view of one host for one stage (Teletraan's `AgentBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// One change of a host's record on a stage: a new deploy, a step, a status or a state, as the
/// database logged it when the record changed (`GET /v1/deploys/{id}/steps`,
/// `GET /v1/agents/{hostName}/steps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStep {
    /// Order of the changes (increasing, not contiguous).
    pub seq: i64,
    /// The host.
    pub host_id: HostId,
    /// Its name.
    pub host_name: HostName,
    /// The stage.
    pub env_id: EnvId,
    /// The deploy the record was on.
    pub deploy_id: DeployId,
    /// The step.
    pub deploy_stage: DeployStage,
    /// The record's state.
    pub state: AgentState,
    /// The step's status.
    pub status: AgentStatus,
    /// The error number reported.
    pub err_no: i32,
    /// Who made the change (`system` for reports and admissions).
    pub operator: String,
    /// When (the report's time, or the decision's).
    pub date: EpochMs,
}

/// One host's part in one deploy, summed up from its logged changes (a host's deploy history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostDeploy {
    /// The deploy.
    pub deploy_id: DeployId,
    /// The stage.
    pub env_id: EnvId,
    /// The build the deploy rolled out (absent once the deploy is deleted).
    pub build_id: Option<BuildId>,
    /// When the host's record first named the deploy.
    pub first_date: EpochMs,
    /// The last change on it.
    pub last_date: EpochMs,
    /// The step of that change.
    pub last_stage: DeployStage,
    /// Its status.
    pub last_status: AgentStatus,
    /// Its state.
    pub last_state: AgentState,
    /// Changes logged into a failed status during the deploy.
    pub failures: i64,
}

/// One host's changes on one deploy, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostSteps {
    /// The host's name.
    pub host_name: HostName,
    /// Its changes, oldest first.
    pub steps: Vec<AgentStep>,
}

/// A page of a deploy's hosts with their steps (`GET /v1/deploys/{id}/steps`), by host name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploySteps {
    /// The hosts of this page.
    pub hosts: Vec<HostSteps>,
    /// Hosts that took part in the deploy, over every page.
    pub total_hosts: i64,
    /// The `after` of the next page, when there is one.
    pub next: Option<HostName>,
}
