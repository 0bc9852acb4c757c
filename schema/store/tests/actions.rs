//! Deploy and host actions, schedules and constraints, applied by the store on a real Postgres.

mod common;

use common::{NOW, build, deploy, deploy_command, id, serving, stage, update};
use schema::bus::{AgentUpdate, Command, CommandEnvelope, CommandError, CommandOutcome, HostFacts, ReportBatch};
use schema::model::{Agent, ConstraintBean, ConstraintInput, Deploy, Environ, PromoteInput, ScheduleInput};
use schema::rules::goal::AgentRecord;
use schema::{
    AcceptanceStatus, AgentState, AgentStatus, DeployAction, DeployConstraintType, DeployId, DeployStage, DeployState,
    DeployType, EnvState, PromoteType, ScheduleState,
};
use store::Store;
use store::testing::TestDatabase;

fn envelope(id: &str, command: Command) -> CommandEnvelope {
    CommandEnvelope { request_id: None, id: id.into(), attempt: 1, issued_at: NOW, operator: "bob".into(), command }
}

async fn run(s: &Store, id: &str, command: Command, now: i64) -> Result<serde_json::Value, CommandError> {
    match s.apply_command(&envelope(id, command), now).await.unwrap() {
        CommandOutcome::Ok { result } => Ok(result),
        CommandOutcome::Err { error } => Err(error),
    }
}

fn action(action: DeployAction, from: Option<&DeployId>, to: Option<&DeployId>) -> Command {
    Command::DeployActionV1 {
        env_name: id("web"),
        stage_name: id("prod"),
        action,
        from_deploy_id: from.cloned(),
        to_deploy_id: to.cloned(),
        description: None,
        mark_bad: false,
    }
}

fn host_action(state: AgentState, hosts: &[&str]) -> Command {
    Command::HostActionV1 {
        env_name: id("web"),
        stage_name: id("prod"),
        action: state,
        host_ids: hosts.iter().map(|h| id(h)).collect(),
    }
}

async fn agents(s: &Store, e: &Environ) -> Vec<Agent> {
    s.agents_of_stage(&e.id).await.unwrap()
}

async fn agent(s: &Store, e: &Environ, host: &str) -> Agent {
    agents(s, e).await.into_iter().find(|a| a.host_id.as_str() == host).unwrap()
}

/// `n` hosts serving `deploy` on the stage, seen now.
async fn serve(s: &Store, e: &Environ, deploy: &DeployId, hosts: &[&str], at: i64) {
    let batch = ReportBatch {
        agents: hosts.iter().map(|h| update(h, &e.id, serving(deploy), at)).collect(),
        heartbeats: hosts.iter().map(|h| schema::bus::Heartbeat { host_id: id(h), at: workers_now() }).collect(),
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();
}

fn workers_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A host finishing what it was admitted to (its gateway knows the admission's sequence).
async fn finish(s: &Store, e: &Environ, host: &str, at: i64) {
    let a = agent(s, e, host).await;
    let record =
        AgentRecord { stage: DeployStage::ServingBuild, status: AgentStatus::Succeeded, ..serving(&a.deploy_id) };
    let control_seq =
        s.stage_load(&e.id).await.unwrap().1.iter().find(|r| r.host_id.as_str() == host).unwrap().control_seq;
    let u = AgentUpdate { control_seq, ..update(host, &e.id, record, at) };
    s.apply_report_batch(&ReportBatch { agents: vec![u], ..Default::default() }).await.unwrap();
    s.refresh_stage(&e.id, at).await.unwrap();
}

fn on(agents: &[Agent], deploy: &DeployId) -> usize {
    agents.iter().filter(|a| &a.deploy_id == deploy).count()
}

/// Host `h` of group `g`, tagged `zone` = `zone`, seen now.
fn in_zone(h: &str, zone: &str) -> HostFacts {
    HostFacts {
        host_id: id(h),
        host_name: id(h),
        ip: None,
        groups: vec![id("g")],
        agent_version: "1".into(),
        autoscaling_group: None,
        availability_zone: None,
        tags: [("zone".to_string(), zone.to_string())].into_iter().collect(),
        seen_at: NOW,
    }
}

/// `web/prod` at 100 % with `hosts` serving a first deploy, the facts of `zones` (host, zone)
/// stored, and a GROUP_BY_GROUP constraint on `zone`, one host per zone. Returns the stage,
/// the first deploy and the constraint as set.
async fn zoned_stage(s: &Store, zones: &[(&str, &str)], hosts: &[&str]) -> (Environ, Deploy, ConstraintBean) {
    let e = stage(s, "web", "prod", r#"{"maxParallelPct":100}"#).await;
    let d1 = deploy(s, "c1", "web", "prod", &build(s, "web").await.id, NOW).await;
    let facts: Vec<HostFacts> = zones.iter().map(|(h, z)| in_zone(h, z)).collect();
    s.upsert_hosts(&facts).await.unwrap();
    serve(s, &e, &d1.id, hosts, NOW + 1).await;
    let c = ConstraintInput {
        constraint_key: Some("zone".into()),
        max_parallel: Some(1),
        constraint_type: Some(DeployConstraintType::GroupByGroup),
    };
    let bean = s.set_constraint(&e.env_name, &e.stage_name, c, "alice", NOW).await.unwrap();
    (e, d1, bean)
}

#[tokio::test]
async fn promote_restart_and_rollback_create_typed_deploys() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":5}"#).await;
    stage(s, "web", "canary", "{}").await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let canary = deploy(s, "c0", "web", "canary", &b2.id, NOW).await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW + 1).await;

    let promoted: Deploy = serde_json::from_value(
        run(s, "c2", action(DeployAction::Promote, Some(&canary.id), None), NOW + 2).await.unwrap(),
    )
    .unwrap();
    assert_eq!((promoted.deploy_type, &promoted.build_id), (DeployType::Regular, &b2.id));
    assert_eq!(promoted.from_deploy_id.as_ref(), Some(&canary.id));
    assert_eq!(run(s, "c3", action(DeployAction::Promote, None, None), NOW).await.unwrap_err().status, 400);

    let restart: Deploy =
        serde_json::from_value(run(s, "c4", action(DeployAction::Restart, None, None), NOW + 3).await.unwrap())
            .unwrap();
    assert_eq!((restart.deploy_type, &restart.build_id), (DeployType::Restart, &b2.id));

    // Rolling back to d1 by id.
    let rollback: Deploy = serde_json::from_value(
        run(s, "c5", action(DeployAction::Rollback, None, Some(&d1.id)), NOW + 4).await.unwrap(),
    )
    .unwrap();
    assert_eq!((rollback.deploy_type, &rollback.build_id), (DeployType::Rollback, &b1.id));
    assert_eq!(rollback.alias.as_ref(), Some(&d1.id));
    assert_eq!(s.current_deploy(&e.env_name, &e.stage_name).await.unwrap().id, rollback.id);
    let err = run(s, "c6", action(DeployAction::Rollback, None, Some(&canary.id)), NOW + 5).await.unwrap_err();
    assert_eq!(err.status, 400, "a deploy of another stage is no rollback target: {err}");
    let err = run(s, "c7", action(DeployAction::Rollback, None, Some(&rollback.id)), NOW + 5).await.unwrap_err();
    assert_eq!(err.status, 409, "{err}");
}

#[tokio::test]
async fn rollback_without_target_goes_to_the_last_success_and_leaves_its_hosts_alone() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallelPct":100}"#).await;
    let good = build(s, "web").await;
    let bad = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &good.id, NOW).await;
    serve(s, &e, &d1.id, &["h1", "h2", "h3"], NOW + 1).await;
    s.refresh_stage(&e.id, NOW + 2).await.unwrap();
    let d2 = deploy(s, "c2", "web", "prod", &bad.id, NOW + 3).await;
    assert_eq!(s.deploy(&d1.id).await.unwrap().state, DeployState::Succeeded);
    // h1 moved to the bad build; h2 and h3 still serve d1 (the cap is 100 %, but say they had
    // not started: put them back).
    finish(s, &e, "h1", NOW + 4).await;
    let back = ReportBatch {
        agents: ["h2", "h3"]
            .iter()
            .map(|h| AgentUpdate { control_seq: 100, ..update(h, &e.id, serving(&d1.id), NOW + 5) })
            .collect(),
        ..Default::default()
    };
    s.apply_report_batch(&back).await.unwrap();

    let rb: Deploy =
        serde_json::from_value(run(s, "c3", action(DeployAction::Rollback, None, None), NOW + 6).await.unwrap())
            .unwrap();
    assert_eq!(rb.alias.as_ref(), Some(&d1.id), "the automatic target keeps the alias");
    assert_eq!(rb.build_id, good.id);
    let after = agents(s, &e).await;
    assert_eq!(agent(s, &e, "h1").await.deploy_id, rb.id, "the host on the bad build is admitted");
    for h in ["h2", "h3"] {
        let a = after.iter().find(|a| a.host_id.as_str() == h).unwrap();
        assert_eq!(a.deploy_id, d1.id, "{h} serves the rollback's target and is left alone");
    }
    assert_eq!(s.deploy(&d2.id).await.unwrap().state, DeployState::Aborted);
}

#[tokio::test]
async fn pause_holds_admission_and_resume_continues() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":1}"#).await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    serve(s, &e, &d1.id, &["h1", "h2"], NOW + 1).await;
    run(s, "p", action(DeployAction::Pause, None, None), NOW + 2).await.unwrap();
    assert_eq!(s.stage(&e.env_name, &e.stage_name).await.unwrap().env_state, EnvState::Paused);
    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + 3).await;
    assert_eq!(on(&agents(s, &e).await, &d2.id), 0, "nobody is admitted while paused");
    s.refresh_stage(&e.id, NOW + 4).await.unwrap();
    assert_eq!(on(&agents(s, &e).await, &d2.id), 0);
    // The deploy's state is frozen while paused, even past the stuck threshold.
    s.refresh_stage(&e.id, NOW + 3 + 3_600_000).await.unwrap();
    assert_eq!(s.deploy(&d2.id).await.unwrap().state, DeployState::Running);

    let current = run(s, "r", action(DeployAction::Resume, None, None), NOW + 5).await.unwrap();
    assert_eq!(current["id"], d2.id.as_str(), "resume answers with the current deploy");
    assert_eq!(on(&agents(s, &e).await, &d2.id), 1, "one host admitted as soon as it resumes");
}

#[tokio::test]
async fn host_actions_hold_reset_and_release_hosts() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":1}"#).await;
    let b1 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    serve(s, &e, &d1.id, &["h1", "h2"], NOW + 1).await;

    run(s, "a1", host_action(AgentState::PausedByUser, &["h1"]), NOW + 2).await.unwrap();
    assert_eq!(agent(s, &e, "h1").await.state, AgentState::PausedByUser);
    let err = run(s, "a2", host_action(AgentState::PausedByUser, &["nope"]), NOW + 2).await.unwrap_err();
    assert_eq!(err.status, 404, "{err}");
    assert_eq!(agent(s, &e, "h1").await.state, AgentState::PausedByUser, "a refused action changes nothing");

    // A reset of a serving host needs admission, and stays a reset once admitted so that the
    // gateway runs the deploy again.
    run(s, "a3", host_action(AgentState::Reset, &["h2"]), NOW + 3).await.unwrap();
    let h2 = agent(s, &e, "h2").await;
    assert_eq!((h2.state, h2.deploy_stage), (AgentState::Reset, DeployStage::PreDownload));
    run(s, "a4", host_action(AgentState::Normal, &["h1"]), NOW + 4).await.unwrap();
    assert_eq!(agent(s, &e, "h1").await.state, AgentState::Normal);
    let err = run(s, "a5", host_action(AgentState::Delete, &["h1"]), NOW + 4).await.unwrap_err();
    assert_eq!(err.status, 400, "{err}");
}

#[tokio::test]
async fn reset_failed_resets_only_the_failed_hosts() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallelPct":100}"#).await;
    let b1 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let failed = AgentRecord {
        stage: DeployStage::Restarting,
        status: AgentStatus::TooManyRetry,
        state: AgentState::PausedBySystem,
        ..AgentRecord::fresh(d1.id.clone(), false)
    };
    let batch = ReportBatch {
        agents: vec![update("bad", &e.id, failed, NOW + 1), update("good", &e.id, serving(&d1.id), NOW + 1)],
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();
    let command = Command::ResetFailedV1 { env_name: id("web"), stage_name: id("prod"), deploy_id: d1.id.clone() };
    assert_eq!(run(s, "r", command, NOW + 2).await.unwrap()["updated"], 1);
    assert_eq!(agent(s, &e, "bad").await.state, AgentState::Reset);
    assert_eq!(agent(s, &e, "good").await.state, AgentState::Normal);
}

#[tokio::test]
async fn stopping_a_host_stops_it_on_every_stage() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let other = stage(s, "logs", "prod", "{}").await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "logs").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let d2 = deploy(s, "c2", "logs", "prod", &b2.id, NOW).await;
    serve(s, &e, &d1.id, &["h1"], NOW + 1).await;
    serve(s, &other, &d2.id, &["h1"], NOW + 1).await;
    s.upsert_hosts(&[HostFacts {
        host_id: id("h1"),
        host_name: id("h1"),
        ip: None,
        groups: vec![id("g")],
        agent_version: "1".into(),
        autoscaling_group: None,
        availability_zone: None,
        tags: Default::default(),
        seen_at: NOW,
    }])
    .await
    .unwrap();
    let command =
        Command::StopHostsV1 { env_name: id("web"), stage_name: id("prod"), host_ids: vec![id("h1")], replace: false };
    run(s, "s", command, NOW + 2).await.unwrap();
    assert_eq!(agent(s, &e, "h1").await.state, AgentState::Stop);
    assert_eq!(agent(s, &other, "h1").await.state, AgentState::Stop);
}

#[tokio::test]
async fn verdicts_follow_the_acceptance_machine() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"acceptanceType":"MANUAL"}"#).await;
    let b1 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let verdict = |status, cmd: &str| {
        (
            cmd.to_string(),
            Command::UpdateDeployV1 { deploy_id: d1.id.clone(), acceptance_status: Some(status), description: None },
        )
    };
    serve(s, &e, &d1.id, &["h1"], NOW + 1).await;
    s.refresh_stage(&e.id, NOW + 2).await.unwrap();
    assert_eq!(s.deploy(&d1.id).await.unwrap().acceptance_status, AcceptanceStatus::Outstanding);
    let (c, cmd) = verdict(AcceptanceStatus::Rejected, "v2");
    run(s, &c, cmd, NOW + 3).await.unwrap();
    assert_eq!(s.deploy(&d1.id).await.unwrap().acceptance_status, AcceptanceStatus::Rejected);
    let (c, cmd) = verdict(AcceptanceStatus::Accepted, "v3");
    assert_eq!(run(s, &c, cmd, NOW + 4).await.unwrap_err().status, 409, "a verdict is final");
    let (c, cmd) = verdict(AcceptanceStatus::Terminated, "v4");
    assert_eq!(run(s, &c, cmd, NOW + 4).await.unwrap_err().status, 400, "not a verdict");
}

#[tokio::test]
async fn a_verdict_that_comes_early_is_kept_and_applied_when_the_deploy_succeeds() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"acceptanceType":"MANUAL"}"#).await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let verdict = |deploy: &DeployId, status| Command::UpdateDeployV1 {
        deploy_id: deploy.clone(),
        acceptance_status: Some(status),
        description: None,
    };
    // The test system accepts before the deploy succeeded: kept, not refused.
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let kept: Deploy =
        serde_json::from_value(run(s, "v1", verdict(&d1.id, AcceptanceStatus::Accepted), NOW).await.unwrap()).unwrap();
    assert_eq!(
        (kept.acceptance_status, kept.pending_verdict),
        (AcceptanceStatus::PendingDeploy, Some(AcceptanceStatus::Accepted))
    );
    // A later "testing" does not undo the decision.
    run(s, "v2", verdict(&d1.id, AcceptanceStatus::PendingAccept), NOW).await.unwrap();
    assert_eq!(s.deploy(&d1.id).await.unwrap().pending_verdict, Some(AcceptanceStatus::Accepted));
    serve(s, &e, &d1.id, &["h1"], NOW + 1).await;
    s.refresh_stage(&e.id, NOW + 2).await.unwrap();
    let d = s.deploy(&d1.id).await.unwrap();
    assert_eq!(
        (d.acceptance_status, d.pending_verdict),
        (AcceptanceStatus::Accepted, None),
        "applied at the first success"
    );

    // An early rejection counts the same way; a deploy retired before it succeeds never takes it.
    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + 3).await;
    run(s, "v3", verdict(&d2.id, AcceptanceStatus::Rejected), NOW + 3).await.unwrap();
    let d3 = deploy(s, "c3", "web", "prod", &b1.id, NOW + 4).await;
    let retired = s.deploy(&d2.id).await.unwrap();
    assert_eq!(retired.acceptance_status, AcceptanceStatus::Terminated);
    assert_eq!(
        run(s, "v4", verdict(&d2.id, AcceptanceStatus::Accepted), NOW + 5).await.unwrap_err().status,
        409,
        "too late"
    );
    run(s, "v5", verdict(&d3.id, AcceptanceStatus::Rejected), NOW + 5).await.unwrap();
    // h1 finishes what it was on (d2), is admitted to d3, and finishes it.
    finish(s, &e, "h1", NOW + 6).await;
    finish(s, &e, "h1", NOW + 7).await;
    assert_eq!(agent(s, &e, "h1").await.deploy_id, d3.id);
    assert_eq!(s.deploy(&d3.id).await.unwrap().acceptance_status, AcceptanceStatus::Rejected);
}

#[tokio::test]
async fn a_schedule_admits_session_by_session() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallelPct":100}"#).await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let hosts = ["h1", "h2", "h3", "h4", "h5", "h6"];
    serve(s, &e, &d1.id, &hosts, NOW + 1).await;
    let input = ScheduleInput {
        total_sessions: Some(2),
        host_numbers: Some("1,50%".into()),
        cooldown_times: Some("1,-1".into()),
    };
    let bean = s.set_schedule(&e.env_name, &e.stage_name, input, "alice", NOW).await.unwrap().unwrap();
    assert_eq!(bean.state, ScheduleState::NotStarted);

    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + 10).await;
    let sched = s.schedule(&e.env_name, &e.stage_name).await.unwrap().unwrap();
    assert_eq!((sched.state, sched.current_session), (ScheduleState::Running, 1));
    let started: Vec<String> =
        agents(s, &e).await.into_iter().filter(|a| a.deploy_id == d2.id).map(|a| a.host_id.to_string()).collect();
    assert_eq!(started.len(), 1, "session 1 lets one host in, though the cap is 100 %");

    finish(s, &e, &started[0], NOW + 20).await;
    let sched = s.schedule(&e.env_name, &e.stage_name).await.unwrap().unwrap();
    assert_eq!(sched.state, ScheduleState::CoolingDown);
    assert_eq!(on(&agents(s, &e).await, &d2.id), 1, "nobody starts while cooling down");

    s.refresh_stage(&e.id, NOW + 20 + 60_000).await.unwrap();
    let sched = s.schedule(&e.env_name, &e.stage_name).await.unwrap().unwrap();
    assert_eq!((sched.state, sched.current_session), (ScheduleState::Running, 2));
    assert_eq!(on(&agents(s, &e).await, &d2.id), 3, "session 2: 50 % of 6 hosts in all");

    // Session 2's cooldown waits for an operator; overriding the wrong session is refused.
    for h in
        agents(s, &e).await.into_iter().filter(|a| a.deploy_id == d2.id && a.deploy_stage != DeployStage::ServingBuild)
    {
        finish(s, &e, h.host_id.as_str(), NOW + 100_000).await;
    }
    s.refresh_stage(&e.id, NOW + 10_000_000).await.unwrap();
    assert_eq!(s.schedule(&e.env_name, &e.stage_name).await.unwrap().unwrap().state, ScheduleState::CoolingDown);
    let over = |session| Command::OverrideScheduleV1 { env_name: id("web"), stage_name: id("prod"), session };
    assert_eq!(run(s, "o1", over(1), NOW + 10_000_001).await.unwrap_err().status, 409);
    run(s, "o2", over(2), NOW + 10_000_001).await.unwrap();
    assert_eq!(s.schedule(&e.env_name, &e.stage_name).await.unwrap().unwrap().state, ScheduleState::Final);
    assert_eq!(on(&agents(s, &e).await, &d2.id), 6, "after the last session the rest of the fleet proceeds");
}

#[tokio::test]
async fn a_group_by_group_constraint_rolls_one_zone_at_a_time() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let zones = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")];
    let (e, _, _) = zoned_stage(s, &zones, &zones.map(|(h, _)| h)).await;
    let d2 = deploy(s, "c2", "web", "prod", &build(s, "web").await.id, NOW + 10).await;
    let mut order = Vec::new();
    let mut now = NOW + 20;
    loop {
        let active: Vec<Agent> = agents(s, &e)
            .await
            .into_iter()
            .filter(|a| a.deploy_id == d2.id && a.deploy_stage != DeployStage::ServingBuild)
            .collect();
        if active.is_empty() {
            break;
        }
        assert_eq!(active.len(), 1, "one host per zone, and one zone at a time: {active:?}");
        let host = active[0].host_id.to_string();
        order.push(zones.iter().find(|(h, _)| *h == host).unwrap().1);
        now += 1000;
        finish(s, &e, &host, now).await;
    }
    assert_eq!(order, ["a", "a", "b", "b", "c"]);
    assert_eq!(on(&agents(s, &e).await, &d2.id), 5);
}

/// A host's record reaches the store at once and its tags (with its facts) up to a heartbeat
/// round later. Until they do, its zone may be the first: GROUP_BY_GROUP starts nobody, the
/// constraint says PROCESSING, and the batch that brings the tags marks the stage for the
/// re-evaluation that starts the rollout, with that host's zone first.
#[tokio::test]
async fn a_group_by_group_constraint_waits_for_every_hosts_tags() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let (e, d1, bean) = zoned_stage(s, &[("a1", "a"), ("b1", "b")], &["a1", "b1", "late"]).await;
    assert_eq!(bean.state, "PROCESSING", "late's tags are not stored yet");

    let d2 = deploy(s, "c2", "web", "prod", &build(s, "web").await.id, NOW + 10).await;
    assert_eq!(on(&agents(s, &e).await, &d2.id), 0, "late may be of a zone before a");

    let tags = ReportBatch { hosts: vec![in_zone("late", "0")], ..Default::default() };
    let applied = s.apply_report_batch(&tags).await.unwrap();
    assert!(applied.stages.contains(&e.id), "the stage is marked for re-evaluation: {:?}", applied.stages);
    assert_eq!(s.constraint(&e.env_name, &e.stage_name).await.unwrap().unwrap().state, "FINISHED");
    s.refresh_stage(&e.id, NOW + 20).await.unwrap();
    assert_eq!(agent(s, &e, "late").await.deploy_id, d2.id, "zone 0 first");
    assert_eq!(on(&agents(s, &e).await, &d2.id), 1);

    // A host reporting its facts without the tag is known to have none: it holds nobody up.
    let untagged = HostFacts { tags: Default::default(), ..in_zone("bare", "-") };
    serve(s, &e, &d1.id, &["bare"], NOW + 30).await;
    s.apply_report_batch(&ReportBatch { hosts: vec![untagged], ..Default::default() }).await.unwrap();
    finish(s, &e, "late", NOW + 40).await;
    assert_eq!(agent(s, &e, "a1").await.deploy_id, d2.id, "then zone a");
    assert_eq!(agent(s, &e, "bare").await.deploy_id, d1.id, "a host without the tag never starts");
}

#[tokio::test]
async fn a_dead_lettered_command_fails_only_while_pending() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    let b1 = build(s, "web").await;
    let done = deploy_command("c1", "web", "prod", &b1.id);
    s.apply_command(&done, NOW).await.unwrap();
    assert!(
        !s.fail_dead_command("c1", Some(&done), "late", NOW + 1).await.unwrap(),
        "an applied command keeps its outcome"
    );
    assert_eq!(s.command("c1").await.unwrap().unwrap().status, "DONE");
    assert!(
        !s.fail_dead_command("nobody", None, "lost", NOW).await.unwrap(),
        "no envelope, no record: nothing to mark"
    );
    assert!(s.command("nobody").await.unwrap().is_none());

    let lost = deploy_command("c2", "web", "prod", &b1.id);
    assert!(s.fail_dead_command("c2", Some(&lost), "boom", NOW + 2).await.unwrap());
    let status = s.command("c2").await.unwrap().unwrap();
    assert_eq!((status.status.as_str(), status.error.unwrap().code.as_str()), ("FAILED", "dead_lettered"));
    // Delivered again later (an operator replays the dead queue): its stored outcome stands.
    match s.apply_command(&lost, NOW + 3).await.unwrap() {
        CommandOutcome::Err { error } => assert_eq!(error.code, "dead_lettered"),
        CommandOutcome::Ok { result } => panic!("a failed command must not be applied: {result}"),
    }
    assert_eq!(s.deploys_of_stage(&s.stage(&id("web"), &id("prod")).await.unwrap().id, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_host_lost_mid_deploy_does_not_hold_up_the_next_zone() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let (e, d1, bean) = zoned_stage(s, &[("a1", "a"), ("b1", "b")], &["a1", "b1"]).await;
    assert_eq!(bean.state, "FINISHED", "every host's tags are stored");
    let d2 = deploy(s, "c2", "web", "prod", &build(s, "web").await.id, NOW + 10).await;
    assert_eq!(agent(s, &e, "a1").await.deploy_id, d2.id, "zone a first");
    assert_eq!(agent(s, &e, "b1").await.deploy_id, d1.id);

    // a1 goes silent mid-deploy: the janitor marks it (store/tests/janitor.rs tests that part).
    let marked = db
        .client()
        .await
        .execute("UPDATE agents SET state = 'UNREACHABLE' WHERE host_id = 'a1' AND env_id = $1", &[&e.id.as_str()])
        .await
        .unwrap();
    assert_eq!(marked, 1);
    assert_eq!(agent(s, &e, "a1").await.state, AgentState::Unreachable);
    s.refresh_stage(&e.id, NOW + 20).await.unwrap();
    assert_eq!(agent(s, &e, "b1").await.deploy_id, d2.id, "zone b goes on without the lost host");
}

/// A refused command keeps nothing of what it did before it was refused: a person's deploy
/// first switches the stage's auto-promotion off (a person took over), then is refused for a
/// build that does not exist; the switch goes with it.
#[tokio::test]
async fn a_refused_command_keeps_nothing_it_did_before_the_refusal() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", r#"{"maxParallel":5}"#).await;
    let auto: PromoteInput =
        serde_json::from_value(serde_json::json!({"type": "AUTO", "predStage": "BUILD", "disablePolicy": "AUTO"}))
            .unwrap();
    s.set_promote(&id("web"), &id("prod"), auto, "alice", NOW).await.unwrap();

    let deploy = Command::CreateDeployV1 {
        env_name: id("web"),
        stage_name: id("prod"),
        build_id: id("no-such-build"),
        description: None,
    };
    let refused = run(s, "c1", deploy, NOW).await.expect_err("an unknown build is refused");
    assert_eq!((refused.status, refused.code.as_str()), (404, "not_found"), "{refused:?}");
    let promote = s.promote(&id("web"), &id("prod")).await.unwrap();
    assert_eq!(promote.promote_type, PromoteType::Auto, "the refused deploy switched auto-promotion off: {promote:?}");
}
