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
