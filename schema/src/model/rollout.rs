//! Deploy schedules and deploy constraints as the API shows and takes them.

use serde::{Deserialize, Serialize};

use crate::time::EpochMs;
use crate::{DeployConstraintType, ScheduleState};

/// A stage's deploy schedule (Teletraan's `ScheduleBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ScheduleInput {
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub total_sessions: Option<i32>,
    pub cooldown_times: Option<String>,
    pub host_numbers: Option<String>,
}

/// A stage's deploy constraint (Teletraan's `DeployConstraintBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// PROCESSING while a host of the stage has a record but its tags have not been stored
    /// yet (they come with its facts, a heartbeat round at most after its first ping; with
    /// GROUP_BY_GROUP no host starts meanwhile), FINISHED once every host's tags are known.
    pub state: String,
    /// Created.
    pub start_date: EpochMs,
    /// Changed.
    pub last_update: EpochMs,
}

/// A constraint as users send it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ConstraintInput {
    pub constraint_key: Option<String>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i64")]
    pub max_parallel: Option<i64>,
    pub constraint_type: Option<DeployConstraintType>,
}
