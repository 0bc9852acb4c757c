//! Retention on a real Postgres, with the clock passed in: old deploys beyond a stage's limits
//! go, oldest first, but never the current one, one a host still names, the target of the
//! current rollback, or the last that succeeded; unreferenced builds beyond a count and an
//! age go; finished commands past their days go.

mod common;

use common::{NOW, build, deploy, id, serving, stage, update};
use schema::bus::{Command, CommandEnvelope};
use schema::model::{ArtifactPolicy, Build, BuildInput, Deploy};
use schema::{DeployAction, DeployId};
use store::Store;
use store::testing::TestDatabase;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

async fn build_at(store: &Store, name: &str, commit: &str, at: i64) -> Build {
    let input: BuildInput = serde_json::from_value(serde_json::json!({
        "name": name, "artifactUrl": "https://a/x.tgz", "repo": "org/x", "branch": "main", "commit": commit
    }))
    .unwrap();
    let b = Build::publish(input, &ArtifactPolicy::permissive(), "ci", at).unwrap();
    store.insert_build(&b).await.unwrap();
    b
}

async fn ids(store: &Store, env: &schema::EnvId) -> Vec<DeployId> {
    let mut d: Vec<Deploy> = store.deploys_of_stage(env, 100).await.unwrap();
    d.sort_by_key(|d| d.start_date);
    d.into_iter().map(|d| d.id).collect()
}

#[tokio::test]
async fn old_deploys_go_but_what_is_current_or_referenced_stays() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxDeployNum":3,"maxDeployDay":1}"#).await;
    let b = build(s, "web").await;
    let start = NOW - 10 * DAY;
    let mut d = Vec::new();
    for i in 0..7 {
        d.push(deploy(s, &format!("c{i}"), "web", "prod", &b.id, start + i * HOUR).await.id);
    }
    // d1 and d2 succeeded (d2 is the last that did), a host still serves d3, and the stage
    // rolls back to d4: the rollback is current.
    let client = db.client().await;
    client
        .execute(
            "UPDATE deploys SET state = 'SUCCEEDED' WHERE deploy_id = ANY($1)",
            &[&vec![d[1].as_str(), d[2].as_str()]],
        )
        .await
        .unwrap();
    let rollback = CommandEnvelope {
        request_id: None,
        id: "rb".into(),
        attempt: 1,
        issued_at: start,
        operator: "alice".into(),
        command: Command::DeployActionV1 {
            env_name: id("web"),
            stage_name: id("prod"),
            action: DeployAction::Rollback,
            from_deploy_id: None,
            to_deploy_id: Some(d[4].clone()),
            description: None,
            mark_bad: false,
        },
    };
    s.apply_command(&rollback, start + 8 * HOUR).await.unwrap();
    // (After the rollback, or it would have admitted the host.)
    let batch = schema::bus::ReportBatch {
        gateway: "t".into(),
        sent_at: start,
        agents: vec![update("h1", &e.id, serving(&d[3]), start + 9 * HOUR)],
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();
    let all = ids(s, &e.id).await;
    assert_eq!(all.len(), 8);
    let current = all[7].clone();

    // Young deploys stay whatever their number.
    assert_eq!(s.purge_deploys(start + 9 * HOUR, 2, || false).await.unwrap(), 0);
    // Ten days on, the old ones beyond three go, oldest first, two per transaction.
    assert_eq!(s.purge_deploys(NOW, 2, || false).await.unwrap(), 4);
    let left = ids(s, &e.id).await;
    assert_eq!(left, [d[2].clone(), d[3].clone(), d[4].clone(), current], "d0, d1, d5 and d6 went");
    assert_eq!(s.purge_deploys(NOW, 2, || false).await.unwrap(), 0, "nothing more to do");
    // A stop request is honoured between batches.
    assert_eq!(s.purge_deploys(NOW, 2, || true).await.unwrap(), 0);
}

#[tokio::test]
async fn builds_beyond_count_and_age_go_unless_deployed() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    let mut old = Vec::new();
    for i in 0..4 {
        old.push(build_at(s, "web", &format!("a{i}aaaaaa"), NOW - 200 * DAY + i * HOUR).await);
    }
    let young = [build_at(s, "web", "b0bbbbbb", NOW).await, build_at(s, "web", "b1bbbbbb", NOW).await];
    let other = build_at(s, "api", "c0cccccc", NOW - 300 * DAY).await;
    deploy(s, "c1", "web", "prod", &old[1].id, NOW).await;

    assert_eq!(s.purge_builds(NOW, 2, 180, 1, || false).await.unwrap(), 3);
    for b in [&old[0], &old[2], &old[3]] {
        assert!(s.build(&b.id).await.is_err(), "{} should be gone", b.id);
    }
    for b in [&old[1], &young[0], &young[1], &other] {
        assert!(s.build(&b.id).await.is_ok(), "{} should stay", b.id);
    }
}

#[tokio::test]
async fn finished_commands_and_history_go_after_their_days() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    let b = build(s, "web").await;
    deploy(s, "old", "web", "prod", &b.id, NOW - 40 * DAY).await;
    deploy(s, "new", "web", "prod", &b.id, NOW - DAY).await;
    assert!(s.purge_records(NOW, 30, 7, 365, 1000, || false).await.unwrap() >= 1);
    assert!(s.command("old").await.unwrap().is_none());
    assert!(s.command("new").await.unwrap().is_some());
    let actions = |h: Vec<store::HistoryEntry>| h.iter().filter(|r| r.action == "DEPLOY").count();
    let (env, prod) = (id("web"), id("prod"));
    let history = || s.stage_history(&env, &prod, 1, 100);
    assert_eq!(actions(history().await.unwrap()), 2, "the audit history outlives the commands");
    s.purge_records(NOW, 30, 7, 30, 1000, || false).await.unwrap();
    assert_eq!(actions(history().await.unwrap()), 1, "but not its own retention");
}
