//! The goal table, case by case.

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
        deploy: Some(CurrentDeploy { id: id(deploy), deploy_type: DeployType::Regular, alias: None, build: build() }),
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
fn script_variables_reach_the_goal_but_never_a_debug_print() {
    let mut s = stage("d1");
    s.script_variables.insert("DB_PASSWORD".into(), "hunter2-s3cret".into());
    let p = run(Some(&s), None, None);
    let goal = p.response.deploy_goal.as_ref().unwrap();
    assert_eq!(goal.script_variables.as_ref().unwrap()["DB_PASSWORD"], "hunter2-s3cret", "the host gets it");
    for shown in [format!("{s:?}"), format!("{goal:?}"), format!("{:?}", p.response), format!("{p:?}")] {
        assert!(shown.contains("DB_PASSWORD") && !shown.contains("hunter2"), "{shown}");
    }
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
        EnvInput { env_id: &lo_id, stage: Some(&lo), report: None, record: None, env_installed: false, names: None },
        EnvInput { env_id: &hi_id, stage: Some(&hi), report: None, record: None, env_installed: false, names: None },
    ];
    let p = plan(&inputs, |_, _| true);
    assert_eq!(p.chosen, Some(hi_id.clone()));

    // When the high one is refused admission, the low one proceeds.
    let p = plan(&inputs, |e, _| e == &lo_id);
    assert_eq!(p.chosen, Some(lo_id.clone()));

    let stop = rec("d2", ServingBuild, AgentStatus::Succeeded, AgentState::Stop);
    let inputs = [
        EnvInput { env_id: &hi_id, stage: Some(&hi), report: None, record: None, env_installed: false, names: None },
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
    let configs: StringMap = [("max_retry", "3"), ("RESTARTING.max_retry", "5"), ("PRE_RESTART.process_timeout", "10")]
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
    assert!(
        !rec("d", Restarting, AgentStatus::Unknown, AgentState::Unreachable).is_active(),
        "a silent host does not hold up the rollout"
    );
    assert!(!AgentRecord::fresh(id("d"), true).is_active(), "first deploys are not capped");
    assert!(rec("d", ServingBuild, AgentStatus::Succeeded, AgentState::Stop).is_active());
}
