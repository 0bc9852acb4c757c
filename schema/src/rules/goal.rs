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
use crate::*;

/// What a host needs to know of a stage to be given goals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// The current deploy of a stage, with what goals carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// deploy, or it is being stopped.
    pub fn is_active(&self) -> bool {
        (!self.first_deploy && self.stage != DeployStage::ServingBuild && self.state != AgentState::PausedByUser)
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
mod tests {
    use super::*;
    use crate::DeployStage::*;

    fn id<T: TryFrom<String>>(s: &str) -> T
    where
        T::Error: std::fmt::Debug,
    {
        T::try_from(s.to_string()).unwrap()
    }

    fn build() -> Build {
        Build {
            id: id("b1_abc1234"),
            name: id("web"),
            artifact_url: "https://a/web.tgz".into(),
            scm: None,
            repo: "r".into(),
            branch: "main".into(),
            commit: "abc1234".into(),
            commit_short: "abc1234".into(),
            commit_info: None,
            commit_date: 0,
            publish_info: None,
            publisher: "ci".into(),
            publish_date: 0,
            artifact_sha256: None,
        }
    }

    fn stage(deploy: &str) -> StageGoal {
        StageGoal {
            env_id: id("e1"),
            env_name: id("web"),
            stage_name: id("prod"),
            stage_type: EnvType::Production,
            env_state: EnvState::Normal,
            priority: DeployPriority::Normal,
            system_priority: None,
            is_docker: false,
            agent_configs: StringMap::new(),
            script_variables: StringMap::new(),
            deploy: Some(CurrentDeploy {
                id: id(deploy),
                deploy_type: DeployType::Regular,
                alias: None,
                build: build(),
            }),
        }
    }

    fn report(deploy: &str, stage: DeployStage, status: AgentStatus) -> ReportIn {
        ReportIn {
            env_id: id("e1"),
            deploy_id: id(deploy),
            stage,
            status,
            err_no: 0,
            err_msg: None,
            fail_count: 0,
            deploy_alias: None,
            container_health: String::new(),
            reset_by_system: false,
        }
    }

    fn rec(deploy: &str, stage: DeployStage, status: AgentStatus, state: AgentState) -> AgentRecord {
        AgentRecord { status, state, stage, ..AgentRecord::fresh(id(deploy), false) }
    }

    fn env_id() -> EnvId {
        id("e1")
    }

    /// Runs one stage through [`plan`], admitting first deploys only (as the gateway does).
    fn run(stage: Option<&StageGoal>, report: Option<&ReportIn>, record: Option<&AgentRecord>) -> Plan {
        let env_id = env_id();
        let input = EnvInput { env_id: &env_id, stage, report, record, env_installed: false, names: None };
        plan(&[input], |_, install| install.record.first_deploy)
    }

    fn goal_stage(p: &Plan) -> Option<DeployStage> {
        p.response.deploy_goal.as_ref().map(|g| g.deploy_stage)
    }

    #[test]
    fn new_host_starts_its_first_deploy_at_once() {
        let s = stage("d1");
        let p = run(Some(&s), None, None);
        assert_eq!(p.response.op_code, OpCode::Deploy);
        let goal = p.response.deploy_goal.unwrap();
        assert_eq!(goal.deploy_stage, PreDownload);
        assert!(goal.first_deploy);
        assert_eq!(goal.script_variables, Some(StringMap::new()), "PRE_DOWNLOAD carries the (empty) variables");
        assert!(goal.build.is_none());
    }

    #[test]
    fn serving_host_waits_for_admission() {
        let s = stage("d2");
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        let a = rec("d1", ServingBuild, AgentStatus::Succeeded, AgentState::Normal);
        let p = run(Some(&s), Some(&r), Some(&a));
        assert_eq!(p.response, PingResponse::noop());
        assert_eq!(p.records, vec![(env_id(), RecordChange::Upsert(a))], "the unchanged record is all it produces");
    }

    #[test]
    fn admitted_host_starts_without_waiting() {
        // The worker admitted the host by moving its record to the current deploy.
        let s = stage("d2");
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        let a = AgentRecord::fresh(id("d2"), false);
        let p = run(Some(&s), Some(&r), Some(&a));
        assert_eq!(goal_stage(&p), Some(PreDownload));
        assert_eq!(p.records, vec![(env_id(), RecordChange::Upsert(AgentRecord::fresh(id("d2"), false)))]);
    }

    #[test]
    fn each_success_moves_to_the_next_stage_and_downloading_carries_the_build() {
        let s = stage("d1");
        for (from, to) in [
            (PreDownload, Downloading),
            (Downloading, PostDownload),
            (PostDownload, Staging),
            (Staging, PreRestart),
            (PreRestart, Restarting),
            (Restarting, PostRestart),
            (PostRestart, ServingBuild),
        ] {
            let r = report("d1", from, AgentStatus::Succeeded);
            let a = rec("d1", from, AgentStatus::Unknown, AgentState::Normal);
            let p = run(Some(&s), Some(&r), Some(&a));
            assert_eq!(goal_stage(&p), Some(to), "after {from}");
            let goal = p.response.deploy_goal.unwrap();
            assert_eq!(goal.build.is_some(), to == Downloading);
            assert_eq!(goal.script_variables.is_some(), to == PreDownload);
        }
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        let p = run(Some(&s), Some(&r), Some(&rec("d1", ServingBuild, AgentStatus::Unknown, AgentState::Normal)));
        assert_eq!(p.response, PingResponse::noop());
    }

    #[test]
    fn a_retryable_failure_repeats_the_step_and_a_fatal_one_pauses_the_host() {
        let s = stage("d1");
        let a = rec("d1", Restarting, AgentStatus::Unknown, AgentState::Normal);
        let r = ReportIn { err_no: 2, ..report("d1", Restarting, AgentStatus::ScriptFailed) };
        let p = run(Some(&s), Some(&r), Some(&a));
        assert_eq!(goal_stage(&p), Some(Restarting));

        let r = report("d1", Restarting, AgentStatus::TooManyRetry);
        let p = run(Some(&s), Some(&r), Some(&a));
        assert_eq!(p.response, PingResponse::noop());
        let RecordChange::Upsert(u) = &p.records[0].1 else { panic!() };
        assert_eq!(u.state, AgentState::PausedBySystem);
    }

    #[test]
    fn a_new_deploy_reaches_a_host_mid_deploy_without_admission() {
        let s = stage("d2");
        let r = report("d1", Restarting, AgentStatus::ScriptFailed);
        let p = run(Some(&s), Some(&r), Some(&rec("d1", Restarting, AgentStatus::Unknown, AgentState::Normal)));
        assert_eq!(goal_stage(&p), Some(PreDownload));
    }

    #[test]
    fn paused_stage_holds_existing_hosts_but_not_first_deploys() {
        let mut s = stage("d2");
        s.env_state = EnvState::Paused;
        let r = report("d1", PreRestart, AgentStatus::Succeeded);
        let p = run(Some(&s), Some(&r), Some(&rec("d1", PreRestart, AgentStatus::Unknown, AgentState::Normal)));
        assert_eq!(p.response, PingResponse::noop());
        let p = run(Some(&s), None, None);
        assert_eq!(goal_stage(&p), Some(PreDownload));
    }

    #[test]
    fn user_paused_host_gets_nothing() {
        let s = stage("d1");
        let r = report("d1", PreRestart, AgentStatus::Succeeded);
        let p = run(Some(&s), Some(&r), Some(&rec("d1", PreRestart, AgentStatus::Unknown, AgentState::PausedByUser)));
        assert_eq!(p.response, PingResponse::noop());
    }

    #[test]
    fn reset_redoes_the_deploy_from_scratch() {
        let s = stage("d1");
        let r = report("d1", Restarting, AgentStatus::TooManyRetry);
        let a = rec("d1", Restarting, AgentStatus::TooManyRetry, AgentState::Reset);
        let p = run(Some(&s), Some(&r), Some(&a));
        assert_eq!(goal_stage(&p), Some(PreDownload));
    }

    #[test]
    fn stop_flow_runs_stopping_then_stopped_then_nothing() {
        let s = stage("d1");
        let a = rec("d1", ServingBuild, AgentStatus::Succeeded, AgentState::Stop);
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        let p = run(Some(&s), Some(&r), Some(&a));
        assert_eq!(p.response.op_code, OpCode::Stop);
        assert_eq!(goal_stage(&p), Some(Stopping));

        let a = rec("d1", Stopping, AgentStatus::Unknown, AgentState::Stop);
        let r = report("d1", Stopping, AgentStatus::Succeeded);
        assert_eq!(goal_stage(&run(Some(&s), Some(&r), Some(&a))), Some(Stopped));

        let a = rec("d1", Stopped, AgentStatus::Succeeded, AgentState::Stop);
        let r = report("d1", Stopped, AgentStatus::Succeeded);
        assert_eq!(run(Some(&s), Some(&r), Some(&a)).response, PingResponse::noop());
    }

    #[test]
    fn a_stage_the_host_left_is_deleted() {
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        let a = rec("d1", ServingBuild, AgentStatus::Succeeded, AgentState::Normal);
        let p = run(None, Some(&r), Some(&a));
        assert_eq!(p.response.op_code, OpCode::Delete);
        assert_eq!(p.response.deploy_goal.as_ref().unwrap().env_id, env_id());
        let RecordChange::Upsert(u) = &p.records[0].1 else { panic!() };
        assert_eq!(u.state, AgentState::Delete);

        let p = run(None, None, Some(&a));
        assert_eq!(p.records, vec![(env_id(), RecordChange::Delete)]);
        assert_eq!(p.response, PingResponse::noop());
    }

    #[test]
    fn rollback_leaves_hosts_on_its_target_alone() {
        let mut s = stage("rb");
        s.deploy.as_mut().unwrap().deploy_type = DeployType::Rollback;
        s.deploy.as_mut().unwrap().alias = Some(id("d1"));
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        let p = run(Some(&s), Some(&r), Some(&rec("d1", ServingBuild, AgentStatus::Succeeded, AgentState::Normal)));
        assert_eq!(p.response, PingResponse::noop());
        let RecordChange::Upsert(u) = &p.records[0].1 else { panic!() };
        assert_eq!(u.deploy_id.as_str(), "rb", "counted as done on the rollback");

        // A host mid-way through the target continues under the target's id.
        let r = report("d1", Staging, AgentStatus::Succeeded);
        let p = run(Some(&s), Some(&r), Some(&rec("d1", Staging, AgentStatus::Unknown, AgentState::Normal)));
        let goal = p.response.deploy_goal.unwrap();
        assert_eq!((goal.deploy_id.as_str(), goal.deploy_alias.as_ref().map(|d| d.as_str())), ("d1", Some("rb")));
        assert_eq!(goal.deploy_stage, PreRestart);
        assert_eq!(p.response.op_code, OpCode::Rollback);
    }

    #[test]
    fn higher_priority_stage_goes_first_and_stop_beats_all() {
        let mut hi = stage("d1");
        hi.env_id = id("hi");
        hi.priority = DeployPriority::High;
        let mut lo = stage("d2");
        lo.env_id = id("lo");
        lo.priority = DeployPriority::Low;
        let (hi_id, lo_id) = (id::<EnvId>("hi"), id::<EnvId>("lo"));
        let inputs = [
            EnvInput {
                env_id: &lo_id,
                stage: Some(&lo),
                report: None,
                record: None,
                env_installed: false,
                names: None,
            },
            EnvInput {
                env_id: &hi_id,
                stage: Some(&hi),
                report: None,
                record: None,
                env_installed: false,
                names: None,
            },
        ];
        let p = plan(&inputs, |_, _| true);
        assert_eq!(p.chosen, Some(hi_id.clone()));

        // When the high one is refused admission, the low one proceeds.
        let p = plan(&inputs, |e, _| e == &lo_id);
        assert_eq!(p.chosen, Some(lo_id.clone()));

        let stop = rec("d2", ServingBuild, AgentStatus::Succeeded, AgentState::Stop);
        let inputs = [
            EnvInput {
                env_id: &hi_id,
                stage: Some(&hi),
                report: None,
                record: None,
                env_installed: false,
                names: None,
            },
            EnvInput {
                env_id: &lo_id,
                stage: Some(&lo),
                report: None,
                record: Some(&stop),
                env_installed: false,
                names: None,
            },
        ];
        let p = plan(&inputs, |_, _| true);
        assert_eq!(p.response.op_code, OpCode::Stop);
    }

    #[test]
    fn stage_scoped_agent_configs_apply_to_their_stage_only() {
        let configs: StringMap =
            [("max_retry", "3"), ("RESTARTING.max_retry", "5"), ("PRE_RESTART.process_timeout", "10")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let r = agent_configs_for(&configs, Restarting);
        assert_eq!(r.len(), 1);
        assert_eq!(r["max_retry"], "5");
        let p = agent_configs_for(&configs, PreRestart);
        assert_eq!((p["max_retry"].as_str(), p["process_timeout"].as_str()), ("3", "10"));
    }

    #[test]
    fn first_deploy_flag_clears_when_the_host_serves() {
        let s = stage("d1");
        let a = AgentRecord { stage: PostRestart, ..AgentRecord::fresh(id("d1"), true) };
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        let p = run(Some(&s), Some(&r), Some(&a));
        let RecordChange::Upsert(u) = &p.records[0].1 else { panic!() };
        assert!(!u.first_deploy);
    }

    #[test]
    fn a_host_that_already_runs_the_environment_is_not_a_first_deploy() {
        let s = stage("d2");
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        let id = env_id();
        let input =
            EnvInput { env_id: &id, stage: Some(&s), report: Some(&r), record: None, env_installed: true, names: None };
        let p = plan(&[input], |_, install| install.record.first_deploy);
        assert_eq!(p.response, PingResponse::noop(), "it waits for admission like any serving host");
        let a = analyse(input);
        let install = a.install.unwrap();
        assert!(install.needs_wait && !install.record.first_deploy);
    }

    #[test]
    fn a_host_that_just_finished_its_first_deploy_waits_for_the_next() {
        // Told SERVING_BUILD on its first deploy, it reports success just as a new deploy lands.
        let s = stage("d2");
        let a = AgentRecord { stage: ServingBuild, ..AgentRecord::fresh(id("d1"), true) };
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        let p = run(Some(&s), Some(&r), Some(&a));
        assert_eq!(p.response, PingResponse::noop(), "not a first deploy any more: it waits for admission");
    }

    #[test]
    fn a_stale_mid_deploy_record_does_not_let_a_serving_host_skip_admission() {
        let s = stage("d2");
        let a = rec("d1", PostRestart, AgentStatus::Unknown, AgentState::Normal);
        let r = report("d1", ServingBuild, AgentStatus::Succeeded);
        assert_eq!(run(Some(&s), Some(&r), Some(&a)).response, PingResponse::noop());
        // Admitted (its record names the new deploy), it starts.
        let a = AgentRecord::fresh(id("d2"), false);
        assert_eq!(goal_stage(&run(Some(&s), Some(&r), Some(&a))), Some(PreDownload));
    }

    #[test]
    fn active_hosts_are_those_out_of_service() {
        let serving = rec("d", ServingBuild, AgentStatus::Succeeded, AgentState::Normal);
        assert!(!serving.is_active());
        assert!(rec("d", Restarting, AgentStatus::Unknown, AgentState::Normal).is_active());
        assert!(
            rec("d", Restarting, AgentStatus::TooManyRetry, AgentState::PausedBySystem).is_active(),
            "failed hosts keep their slot"
        );
        assert!(!rec("d", Restarting, AgentStatus::Unknown, AgentState::PausedByUser).is_active());
        assert!(!AgentRecord::fresh(id("d"), true).is_active(), "first deploys are not capped");
        assert!(rec("d", ServingBuild, AgentStatus::Succeeded, AgentState::Stop).is_active());
    }
}
