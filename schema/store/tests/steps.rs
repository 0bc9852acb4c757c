//! The log of hosts' step changes on a real Postgres: the database writes a row for every change
//! of a record (report, admission, user action) and none for a report that repeats it; a deploy's
//! hosts come page by page with their steps; a host's deploys sum its changes up; retention cuts
//! the log by age.

mod common;

use common::{NOW, build, deploy, id, stage, update};
use schema::bus::{AgentUpdate, Command, CommandEnvelope, CommandOutcome, ReportBatch};
use schema::model::{AgentStep, DeploySteps};
use schema::rules::goal::AgentRecord;
use schema::{AgentState, AgentStatus, DeployId, DeployStage, EnvId, HostName};
use store::Store;
use store::testing::TestDatabase;

const MINUTE: i64 = 60_000;

async fn report(
    s: &Store,
    env: &EnvId,
    host: &str,
    deploy: &DeployId,
    step: DeployStage,
    status: AgentStatus,
    at: i64,
) {
    let control_seq =
        s.stage_load(env).await.unwrap().1.iter().find(|r| r.host_id.as_str() == host).map_or(0, |r| r.control_seq);
    let record = AgentRecord { stage: step, status, ..AgentRecord::fresh(deploy.clone(), false) };
    let u = AgentUpdate { control_seq, ..update(host, env, record, at) };
    s.apply_report_batch(&ReportBatch { agents: vec![u], ..Default::default() }).await.unwrap();
}

fn trail(steps: &[AgentStep]) -> Vec<(String, &'static str, &'static str, &'static str)> {
    steps.iter().map(|s| (s.operator.clone(), s.deploy_stage.as_str(), s.status.as_str(), s.state.as_str())).collect()
}

async fn pause(s: &Store, host: &str, at: i64) {
    let command = Command::HostActionV1 {
        env_name: id("web"),
        stage_name: id("prod"),
        action: AgentState::PausedByUser,
        host_ids: vec![id(host)],
    };
    let envelope = CommandEnvelope {
        request_id: None,
        id: format!("pause-{host}"),
        attempt: 1,
        issued_at: at,
        operator: "bob".into(),
        command,
    };
    assert!(matches!(s.apply_command(&envelope, at).await.unwrap(), CommandOutcome::Ok { .. }));
}

#[tokio::test]
async fn every_change_of_a_record_is_logged_once_whoever_made_it() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":5}"#).await;
    let b0 = build(s, "web").await;
    let b1 = build(s, "web").await;
    let d0 = deploy(s, "c0", "web", "prod", &b0.id, NOW).await;
    report(s, &e.id, "h1", &d0.id, DeployStage::ServingBuild, AgentStatus::Succeeded, NOW + MINUTE).await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW + 2 * MINUTE).await;
    s.refresh_stage(&e.id, NOW + 2 * MINUTE).await.unwrap();
    let mut at = NOW + 3 * MINUTE;
    for (step, status) in [
        (DeployStage::Downloading, AgentStatus::Unknown),
        (DeployStage::Downloading, AgentStatus::Unknown), // a repeat: nothing logged
        (DeployStage::Downloading, AgentStatus::ScriptFailed),
        (DeployStage::Downloading, AgentStatus::Succeeded),
        (DeployStage::ServingBuild, AgentStatus::Succeeded),
        (DeployStage::ServingBuild, AgentStatus::Succeeded), // a repeat
    ] {
        report(s, &e.id, "h1", &d1.id, step, status, at).await;
        at += MINUTE;
    }
    pause(s, "h1", at).await;

    let page = s.deploy_steps(&d1.id, None, 10).await.unwrap();
    assert_eq!(page.total_hosts, 1);
    assert_eq!(page.next, None);
    let (name, steps) = (&page.hosts[0].host_name, &page.hosts[0].steps);
    assert_eq!(name.as_str(), "h1");
    assert_eq!(
        trail(steps),
        vec![
            ("system".into(), "PRE_DOWNLOAD", "UNKNOWN", "NORMAL"),
            ("system".into(), "DOWNLOADING", "UNKNOWN", "NORMAL"),
            ("system".into(), "DOWNLOADING", "SCRIPT_FAILED", "NORMAL"),
            ("system".into(), "DOWNLOADING", "SUCCEEDED", "NORMAL"),
            ("system".into(), "SERVING_BUILD", "SUCCEEDED", "NORMAL"),
            ("bob".into(), "SERVING_BUILD", "SUCCEEDED", "PAUSED_BY_USER"),
        ],
        "admission, each report that changed the record and the user's pause, in order"
    );
    assert!(steps.windows(2).all(|w| w[0].seq < w[1].seq && w[0].date <= w[1].date));
    assert_eq!(steps[1].date, NOW + 3 * MINUTE, "a change is dated by its report");

    let history = s.host_deploys(&id::<HostName>("h1"), 10).await.unwrap();
    let summary: Vec<_> = history
        .iter()
        .map(|h| (h.deploy_id.clone(), h.build_id.clone(), h.last_stage, h.last_state, h.failures))
        .collect();
    assert_eq!(
        summary,
        vec![
            (d1.id.clone(), Some(b1.id.clone()), DeployStage::ServingBuild, AgentState::PausedByUser, 1),
            (d0.id.clone(), Some(b0.id.clone()), DeployStage::ServingBuild, AgentState::Normal, 0),
        ],
        "the latest deploy first, with its build, where the host ended and its failures"
    );
    assert_eq!(history[0].first_date, NOW + 2 * MINUTE);
    let latest = s.host_steps(&id::<HostName>("h1"), None, 2).await.unwrap();
    assert_eq!(latest.iter().map(|s| s.state).collect::<Vec<_>>(), [AgentState::PausedByUser, AgentState::Normal]);
    let older = s.host_steps(&id::<HostName>("h1"), Some(latest[1].seq), 100).await.unwrap();
    assert_eq!(older.len(), 5, "the rest of d1's changes and d0's one");
}

#[tokio::test]
async fn a_deploys_hosts_come_page_by_page() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let b = build(s, "web").await;
    let d = deploy(s, "c0", "web", "prod", &b.id, NOW).await;
    for (i, host) in ["h3", "h1", "h2"].into_iter().enumerate() {
        report(s, &e.id, host, &d.id, DeployStage::Downloading, AgentStatus::Unknown, NOW + i as i64).await;
        report(s, &e.id, host, &d.id, DeployStage::ServingBuild, AgentStatus::Succeeded, NOW + 10 + i as i64).await;
    }
    let first = s.deploy_steps(&d.id, None, 2).await.unwrap();
    let names = |p: &DeploySteps| p.hosts.iter().map(|h| h.host_name.as_str().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&first), ["h1", "h2"]);
    assert!(first.hosts.iter().all(|h| h.steps.len() == 2));
    assert_eq!(first.total_hosts, 3);
    assert_eq!(first.next.as_ref().map(HostName::as_str), Some("h2"));
    let second = s.deploy_steps(&d.id, first.next.as_ref(), 2).await.unwrap();
    assert_eq!(names(&second), ["h3"]);
    assert_eq!(second.next, None);
    let other = s.deploy_steps(&id::<DeployId>("no-such-deploy"), None, 2).await.unwrap();
    assert_eq!(other, DeploySteps::default());
}

#[tokio::test]
async fn retention_cuts_the_log_by_age() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let b = build(s, "web").await;
    let d = deploy(s, "c0", "web", "prod", &b.id, NOW).await;
    const DAY: i64 = 86_400_000;
    for (i, host) in ["old-1", "old-2", "old-3"].into_iter().enumerate() {
        report(s, &e.id, host, &d.id, DeployStage::ServingBuild, AgentStatus::Succeeded, NOW - 40 * DAY + i as i64)
            .await;
    }
    report(s, &e.id, "new", &d.id, DeployStage::ServingBuild, AgentStatus::Succeeded, NOW - DAY).await;
    assert_eq!(s.purge_steps(NOW, 30, 2, || true).await.unwrap(), 0, "stopped before it began");
    assert_eq!(s.purge_steps(NOW, 30, 2, || false).await.unwrap(), 3, "in batches of two");
    assert_eq!(s.purge_steps(NOW, 30, 2, || false).await.unwrap(), 0);
    let left = s.deploy_steps(&d.id, None, 10).await.unwrap();
    assert_eq!(left.hosts.iter().map(|h| h.host_name.as_str()).collect::<Vec<_>>(), ["new"]);
}
