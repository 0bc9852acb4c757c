//! The goal of one ping: Teletraan's GoalAnalyst decision table, as a pure function.
//!
//! For every stage a host touches (stages it belongs to, stages it reports, stages with a
//! record) [`analyse`] decides what the record becomes and whether the stage offers a step
//! to run; [`plan`] then picks at most one step for the whole host, in priority order, and
//! builds the response. Steps that would take a serving host out of service "need a wait":
//! the caller's `admit` decides them (the gateway admits only first deploys itself and
//! otherwise follows the admissions made by the workers, which it sees as records moved to
//! the current deploy).

use serde::{Deserialize, Serialize};

use crate::model::{Build, StringMap};
use crate::ping::{DeployGoal, PingResponse, ReportIn};
use crate::rules::agent_state;
use crate::rules::stage_seq::next_stage;
use crate::{
    AgentState, AgentStatus, DeployId, DeployPriority, DeployStage, DeployType, EnvId, EnvName, EnvState, EnvType,
    OpCode, StageName,
};

/// What a host needs to know of a stage to be given goals. Its `Debug` hides the values of
/// the script variables (some are secrets).
#[derive(Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageGoal {
    /// Stage id.
    pub env_id: EnvId,
    /// Environment name.
    pub env_name: EnvName,
    /// Stage name.
    pub stage_name: StageName,
    /// Kind of stage.
    pub stage_type: EnvType,
    /// PAUSED holds existing hosts.
    pub env_state: EnvState,
    /// Order among stages on a host.
    pub priority: DeployPriority,
    /// Overrides the priority (sidecars).
    pub system_priority: Option<i32>,
    /// Passed through.
    pub is_docker: bool,
    /// Agent config overrides (`STAGE.key` applies to one stage).
    pub agent_configs: StringMap,
    /// Script variables, sent with PRE_DOWNLOAD.
    pub script_variables: StringMap,
    /// The current deploy, if any.
    pub deploy: Option<CurrentDeploy>,
}

impl std::fmt::Debug for StageGoal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageGoal")
            .field("env_id", &self.env_id)
            .field("env_name", &self.env_name)
            .field("stage_name", &self.stage_name)
            .field("stage_type", &self.stage_type)
            .field("env_state", &self.env_state)
            .field("priority", &self.priority)
            .field("system_priority", &self.system_priority)
            .field("is_docker", &self.is_docker)
            .field("agent_configs", &self.agent_configs)
            .field("script_variables", &crate::model::KeysOnly(&self.script_variables))
            .field("deploy", &self.deploy)
            .finish()
    }
}

/// The current deploy of a stage, with what goals carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentDeploy {
    /// Deploy id.
    pub id: DeployId,
    /// Kind.
    pub deploy_type: DeployType,
    /// For a rollback: the deploy rolled back to (hosts on it are left alone).
    pub alias: Option<DeployId>,
    /// The build (sent with DOWNLOADING).
    pub build: Build,
}

/// The server's record of one host on one stage: the fields the rules read and write.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    /// Deploy the host works on or serves.
    pub deploy_id: DeployId,
    /// Stage the host is in, or has been told to run.
    pub stage: DeployStage,
    /// Outcome of the last step.
    pub status: AgentStatus,
    /// Control flag.
    pub state: AgentState,
    /// Error number of the last step.
    pub err_no: i32,
    /// Agent-side retries.
    pub fail_count: i32,
    /// The host is provisioning for the first time (not held by the caps).
    pub first_deploy: bool,
    /// Free text from the agent.
    pub container_health: String,
}

impl AgentRecord {
    /// A host told to start `deploy` from the first stage.
    pub fn fresh(deploy: DeployId, first_deploy: bool) -> Self {
        AgentRecord {
            deploy_id: deploy,
            stage: DeployStage::PreDownload,
            status: AgentStatus::Unknown,
            state: AgentState::Normal,
            err_no: 0,
            fail_count: 0,
            first_deploy,
            container_health: String::new(),
        }
    }

    /// Whether this host occupies a slot of its stage's parallelism cap: it is out of
    /// service on a deploy (including failed hosts, which keep their slot) and not a first
    /// deploy, or it is being stopped. A host held by an operator does not, nor does a host
    /// that went silent (UNREACHABLE): the rollout goes on without it.
    pub fn is_active(&self) -> bool {
        (!self.first_deploy
            && self.stage != DeployStage::ServingBuild
            && !matches!(self.state, AgentState::PausedByUser | AgentState::Unreachable))
            || self.state == AgentState::Stop
    }
}

/// Everything known about one stage of one host when a ping arrives.
#[derive(Debug, Clone, Copy)]
pub struct EnvInput<'a> {
    /// The stage id.
    pub env_id: &'a EnvId,
    /// The stage, when the host belongs to it.
    pub stage: Option<&'a StageGoal>,
    /// What the agent reported for it.
    pub report: Option<&'a ReportIn>,
    /// The server's record.
    pub record: Option<&'a AgentRecord>,
    /// The host already runs this environment, so this is not its first deploy of it: it has
    /// a record for another stage of the environment, or it reports this stage although the
    /// caller holds no record for it (a gateway that has not seen the host's record yet).
    pub env_installed: bool,
    /// Names of the stage when it still exists anywhere (a DELETE goal carries them).
    pub names: Option<(&'a EnvName, &'a StageName)>,
}

/// A step a stage offers the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The record if this step is chosen.
    pub record: AgentRecord,
    /// Starting it takes a serving host out of service: it must be admitted.
    pub needs_wait: bool,
    /// A STOP goal (served before anything else).
    pub stop: bool,
    /// The host reported the rollback's alias deploy: answer with the alias id.
    pub aliased: bool,
    /// Ordering value (lower first).
    pub priority: i32,
}

/// The outcome of [`analyse`] for one stage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// The record after this ping if no step of this stage is chosen (`None`: unchanged).
    pub record: Option<AgentRecord>,
    /// A step to offer.
    pub install: Option<Install>,
    /// The host should forget this stage (DELETE).
    pub uninstall: bool,
    /// The record is obsolete and must be removed.
    pub delete: bool,
}

/// Decides one stage of one host (Teletraan's GoalAnalyst cases 0.1 to 4).
pub fn analyse(input: EnvInput<'_>) -> Analysis {
    let EnvInput { stage, report, record, env_installed, .. } = input;
    let mut out = Analysis::default();
    let first_deploy_now = record.map(|a| a.first_deploy).unwrap_or(!env_installed);

    // The report, rewritten to the rollback deploy when it names the rollback's alias.
    let mut aliased = false;
    let report_deploy = report.map(|r| match stage.and_then(|e| e.deploy.as_ref()) {
        Some(d)
            if d.deploy_type == DeployType::Rollback
                && (d.alias.as_ref() == Some(&r.deploy_id) || r.deploy_alias.as_ref() == Some(&d.id)) =>
        {
            aliased = d.alias.as_ref() == Some(&r.deploy_id);
            d.id.clone()
        }
        _ => r.deploy_id.clone(),
    });

    // The record as the report makes it.
    let updated = report.zip(report_deploy.clone()).map(|(r, deploy_id)| {
        let old_state = record.map(|a| a.state).unwrap_or(AgentState::Normal);
        let state = agent_state::after_report(old_state, r.reset_by_system, r.status, r.stage);
        let first_deploy = record.map(|a| a.first_deploy).unwrap_or(false)
            && r.stage != DeployStage::ServingBuild
            && state != AgentState::PausedBySystem;
        AgentRecord {
            deploy_id,
            stage: r.stage,
            status: r.status,
            state,
            err_no: r.err_no,
            fail_count: r.fail_count,
            first_deploy,
            container_health: r.container_health.clone(),
        }
    });
    out.record = updated.clone();

    let Some(env) = stage else {
        // Cases 3 and 4: the stage no longer applies to this host.
        if let Some(mut u) = updated {
            u.state = AgentState::Delete;
            out.record = Some(u);
            out.uninstall = true;
        } else if record.is_some() {
            out.delete = true;
        }
        return out;
    };

    let priority_of = |first: bool, deploy_type: DeployType| -> i32 {
        if let Some(p) = env.system_priority {
            return p;
        }
        if first {
            return env.priority.value();
        }
        match deploy_type {
            DeployType::Hotfix => 980,
            DeployType::Rollback => 990,
            DeployType::Regular | DeployType::Restart | DeployType::Stop => env.priority.value(),
        }
    };

    // Case 0.4: stopping the service beats everything, even a stage without a deploy.
    if let Some(a) = record
        && a.state == AgentState::Stop
    {
        let stopped = |stage: DeployStage| Install {
            record: AgentRecord { stage, status: AgentStatus::Unknown, err_no: 0, ..a.clone() },
            needs_wait: false,
            stop: true,
            aliased: false,
            priority: priority_of(false, DeployType::Stop),
        };
        match (a.stage, updated.as_ref()) {
            (DeployStage::Stopped, _) => {}
            (DeployStage::Stopping, Some(u)) if u.state == AgentState::PausedBySystem => {}
            (DeployStage::Stopping, Some(u)) if u.status == AgentStatus::Succeeded => {
                out.install = Some(stopped(DeployStage::Stopped));
            }
            (DeployStage::Stopping, _) => out.install = Some(stopped(DeployStage::Stopping)),
            _ => out.install = Some(stopped(DeployStage::Stopping)),
        }
        return out;
    }

    // Case 0.1: nothing deployed here yet.
    let Some(deploy) = env.deploy.as_ref() else { return out };
    // Case 0.2: a paused stage holds every host but those provisioning for the first time.
    if env.env_state != EnvState::Normal && !first_deploy_now {
        return out;
    }
    // Case 0.3: an operator holds this host.
    if record.is_some_and(|a| a.state == AgentState::PausedByUser) {
        return out;
    }

    // A host on its first deploy stops being one once it serves (the report's record clears
    // the flag): a new deploy reaching it then must not count it as new.
    let first_now = match (record, updated.as_ref()) {
        (None, _) => !env_installed,
        (Some(_), Some(u)) => u.first_deploy,
        (Some(a), None) => a.first_deploy,
    };
    let from_scratch = |needs_wait: bool| {
        let first = first_now;
        Install {
            record: AgentRecord::fresh(deploy.id.clone(), first),
            needs_wait,
            stop: false,
            aliased: false,
            priority: priority_of(first, deploy.deploy_type),
        }
    };

    match (report, updated) {
        (Some(r), Some(u)) => {
            let serving = r.stage == DeployStage::ServingBuild;
            if u.deploy_id == deploy.id {
                if matches!(u.state, AgentState::Reset | AgentState::ResetBySystem) {
                    // Case 1.0: redo the deploy from scratch; a serving host waits unless the
                    // workers admitted it (its record left SERVING_BUILD).
                    let waits = serving && record.is_none_or(|a| a.stage == DeployStage::ServingBuild);
                    out.install = Some(from_scratch(waits));
                } else if r.stage == DeployStage::ServingBuild {
                    // Case 1.1: the steady state.
                } else if r.status == AgentStatus::Succeeded {
                    // Case 1.2: the next stage.
                    let record = AgentRecord {
                        stage: next_stage(r.stage),
                        status: AgentStatus::Unknown,
                        state: AgentState::Normal,
                        err_no: 0,
                        fail_count: 0,
                        ..u
                    };
                    let priority = priority_of(record.first_deploy, deploy.deploy_type);
                    out.install = Some(Install { record, needs_wait: false, stop: false, aliased, priority });
                } else if u.state == AgentState::PausedBySystem {
                    // Case 1.3: failed for good; wait for a reset or a new deploy.
                } else {
                    // Case 1.4: repeat the step.
                    let priority = priority_of(u.first_deploy, deploy.deploy_type);
                    out.install = Some(Install { record: u, needs_wait: false, stop: false, aliased, priority });
                }
            } else {
                // Case 1.5: a new deploy. A host that serves waits for admission unless its
                // record shows the workers admitted it (it names this deploy, before
                // SERVING_BUILD). Teletraan only looks at the record's stage, but a record may
                // be behind the agent (another gateway, a reload from a Postgres that lags):
                // "mid-deploy" in a stale record must not let a serving host skip the cap.
                let admitted = record.is_some_and(|a| a.deploy_id == deploy.id && a.stage != DeployStage::ServingBuild);
                out.install = Some(from_scratch(serving && !admitted));
            }
        }
        _ => {
            // Case 2: no report (a new host, a new stage, or an agent that lost its status).
            let needs_wait = record.is_none_or(|a| a.stage == DeployStage::ServingBuild);
            out.install = Some(from_scratch(needs_wait));
        }
    }
    out
}

/// What to record for one stage after a ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    /// Store this record.
    Upsert(AgentRecord),
    /// Remove the record.
    Delete,
}

/// The outcome of a whole ping.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The answer.
    pub response: PingResponse,
    /// The records this ping produces, one per stage that has one (callers store only those
    /// that differ from what they hold).
    pub records: Vec<(EnvId, RecordChange)>,
    /// The stage whose step was chosen, if any.
    pub chosen: Option<EnvId>,
}

/// Picks at most one step for the host, in order: STOP goals, then ascending priority, then
/// steps that need no admission, then stage id (for a stable order). `admit` decides steps
/// that need a wait; a refused one lets a lower-priority stage proceed.
pub fn plan(inputs: &[EnvInput<'_>], mut admit: impl FnMut(&EnvId, &Install) -> bool) -> Plan {
    let analyses: Vec<(EnvInput<'_>, Analysis)> = inputs.iter().map(|i| (*i, analyse(*i))).collect();

    let mut order: Vec<usize> = (0..analyses.len()).filter(|i| analyses[*i].1.install.is_some()).collect();
    order.sort_by(|a, b| {
        let (ia, ib) = (analyses[*a].1.install.as_ref(), analyses[*b].1.install.as_ref());
        let key = |i: Option<&Install>| i.map(|i| (!i.stop, i.priority, i.needs_wait));
        key(ia).cmp(&key(ib)).then_with(|| analyses[*a].0.env_id.cmp(analyses[*b].0.env_id))
    });
    let chosen = order.into_iter().find(|i| {
        let (input, analysis) = &analyses[*i];
        match &analysis.install {
            Some(install) => !install.needs_wait || admit(input.env_id, install),
            None => false,
        }
    });

    let mut records = Vec::new();
    for (i, (input, analysis)) in analyses.iter().enumerate() {
        let change = if Some(i) == chosen {
            analysis.install.as_ref().map(|install| RecordChange::Upsert(install.record.clone()))
        } else if analysis.delete {
            Some(RecordChange::Delete)
        } else {
            analysis.record.clone().map(RecordChange::Upsert)
        };
        if let Some(change) = change {
            records.push((input.env_id.clone(), change));
        }
    }

    let response = match chosen {
        Some(i) => {
            let (input, analysis) = &analyses[i];
            match (input.stage, analysis.install.as_ref()) {
                (Some(stage), Some(install)) => install_response(stage, install),
                _ => PingResponse::noop(),
            }
        }
        None => analyses
            .iter()
            .find(|(_, a)| a.uninstall)
            .and_then(|(input, _)| input.report.map(|r| uninstall_response(r, input.names)))
            .unwrap_or_else(PingResponse::noop),
    };
    Plan { response, records, chosen: chosen.map(|i| analyses[i].0.env_id.clone()) }
}

/// The agent configs for one stage: plain keys, overridden by `<STAGE>.key` keys for the
/// stage being run; keys prefixed with another stage's name are not sent. (Teletraan sends
/// other stages' keys verbatim and lets hash order pick between `X` and `STAGE.X`.)
pub fn agent_configs_for(configs: &StringMap, stage: DeployStage) -> StringMap {
    let stage_prefix = |k: &str| {
        DeployStage::ALL.iter().find_map(|s| {
            k.strip_prefix(s.as_str()).and_then(|rest| rest.strip_prefix('.')).map(|rest| (*s, rest.to_string()))
        })
    };
    let mut out = StringMap::new();
    for (k, v) in configs {
        if stage_prefix(k).is_none() {
            out.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in configs {
        if let Some((s, rest)) = stage_prefix(k)
            && s == stage
        {
            out.insert(rest, v.clone());
        }
    }
    out
}

fn install_response(stage: &StageGoal, install: &Install) -> PingResponse {
    let deploy = stage.deploy.as_ref();
    let deploy_type = deploy.map(|d| d.deploy_type).unwrap_or(DeployType::Regular);
    let op_code = if install.stop { OpCode::Stop } else { deploy_type.op_code() };
    let (deploy_id, deploy_alias) = match deploy {
        Some(d) if install.aliased => (d.alias.clone().unwrap_or_else(|| d.id.clone()), Some(d.id.clone())),
        _ => (install.record.deploy_id.clone(), None),
    };
    let goal_stage = install.record.stage;
    let configs = agent_configs_for(&stage.agent_configs, goal_stage);
    PingResponse {
        op_code,
        deploy_goal: Some(DeployGoal {
            deploy_id,
            deploy_type,
            env_id: stage.env_id.clone(),
            env_name: Some(stage.env_name.clone()),
            stage_name: Some(stage.stage_name.clone()),
            stage_type: stage.stage_type,
            deploy_stage: goal_stage,
            build: if goal_stage == DeployStage::Downloading { deploy.map(|d| d.build.clone()) } else { None },
            deploy_alias,
            agent_configs: (!configs.is_empty()).then_some(configs),
            script_variables: (goal_stage == DeployStage::PreDownload).then(|| stage.script_variables.clone()),
            first_deploy: install.record.first_deploy,
            is_docker: stage.is_docker,
        }),
    }
}

fn uninstall_response(report: &ReportIn, names: Option<(&EnvName, &StageName)>) -> PingResponse {
    PingResponse {
        op_code: OpCode::Delete,
        deploy_goal: Some(DeployGoal {
            deploy_id: report.deploy_id.clone(),
            deploy_type: DeployType::Regular,
            env_id: report.env_id.clone(),
            // Unknown names (a stage deleted before this process started) go out as null: the
            // agent then finds the environment by its id.
            env_name: names.map(|n| n.0.clone()),
            stage_name: names.map(|n| n.1.clone()),
            stage_type: EnvType::Production,
            deploy_stage: report.stage,
            build: None,
            deploy_alias: None,
            agent_configs: None,
            script_variables: None,
            first_deploy: false,
            is_docker: false,
        }),
    }
}

#[cfg(test)]
mod tests;
