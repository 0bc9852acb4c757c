//! Disabled stages and the system-wide change freeze on a real Postgres: new builds are
//! refused with the reason (who, since when, why) wherever deploys are made, rollbacks and
//! restarts are not, and each switch leaves a tag and a history row.

mod common;

use common::{NOW, build, deploy, id, stage};
use schema::bus::{Command, CommandEnvelope, CommandError, CommandOutcome};
use schema::{DeployAction, DeployId, EnvironAction, EnvironState, TagValue};
use store::testing::TestDatabase;
use store::{HistoryQuery, Store};

fn envelope(id: &str, command: Command) -> CommandEnvelope {
    CommandEnvelope { request_id: None, id: id.into(), attempt: 1, issued_at: NOW, operator: "bob".into(), command }
}

async fn run(s: &Store, id: &str, command: Command) -> Result<serde_json::Value, CommandError> {
    match s.apply_command(&envelope(id, command), NOW).await.unwrap() {
        CommandOutcome::Ok { result } => Ok(result),
        CommandOutcome::Err { error } => Err(error),
    }
}

fn action(stage: &str, action: DeployAction, from: Option<&DeployId>) -> Command {
    Command::DeployActionV1 {
        env_name: id("web"),
        stage_name: id(stage),
        action,
        from_deploy_id: from.cloned(),
        to_deploy_id: None,
        description: None,
        mark_bad: false,
    }
}

fn deploy_of(stage: &str, build: &schema::BuildId) -> Command {
    Command::CreateDeployV1 { env_name: id("web"), stage_name: id(stage), build_id: build.clone(), description: None }
}

#[tokio::test]
async fn a_disabled_stage_refuses_new_builds_with_the_reason_until_it_is_enabled() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    stage(s, "web", "beta", "{}").await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let on_beta = deploy(s, "c2", "web", "beta", &b2.id, NOW).await;

    let disabled = s.switch_stage(&id("web"), &id("prod"), EnvironAction::Disable, Some("release"), "carol", NOW).await;
    assert_eq!(disabled.unwrap().state, EnvironState::Disabled);
    let refused = run(s, "c3", deploy_of("prod", &b2.id)).await.unwrap_err();
    assert_eq!(refused.status, 409);
    assert!(
        refused.message.starts_with("Environment web/prod is disabled (since 2027-01-15T08:00:00Z by carol: release)"),
        "{}",
        refused.message
    );
    let promote = run(s, "c4", action("prod", DeployAction::Promote, Some(&on_beta.id))).await.unwrap_err();
    assert_eq!(promote.status, 409, "{}", promote.message);
    assert_eq!(s.current_deploy(&id("web"), &id("prod")).await.unwrap().id, d1.id, "nothing was deployed");
    // What runs may still be restarted; other stages are not affected.
    run(s, "c5", action("prod", DeployAction::Restart, None)).await.unwrap();
    run(s, "c6", deploy_of("beta", &b1.id)).await.unwrap();

    s.switch_stage(&id("web"), &id("prod"), EnvironAction::Enable, None, "carol", NOW + 1).await.unwrap();
    run(s, "c7", deploy_of("prod", &b2.id)).await.unwrap();

    let tags: Vec<TagValue> = s.tags_of_target(e.id.as_str(), 10).await.unwrap().iter().map(|t| t.value).collect();
    assert_eq!(tags, [TagValue::EnableEnv, TagValue::DisableEnv], "newest first");
    let rows = s.stage_history(&id("web"), &id("prod"), 1, 30).await.unwrap();
    let actions: Vec<(&str, &str)> = rows.iter().map(|r| (r.action.as_str(), r.operator.as_str())).collect();
    assert!(actions.contains(&("DISABLE", "carol")) && actions.contains(&("ENABLE", "carol")), "{actions:?}");
    // c1 and c7 deployed; the refused c3 and c4 left no row.
    assert_eq!(actions.iter().filter(|(a, _)| *a == "DEPLOY").count(), 2, "{actions:?}");
    assert!(!actions.iter().any(|(a, _)| *a == "PROMOTE"), "{actions:?}");
}

#[tokio::test]
async fn a_freeze_refuses_new_builds_everywhere_but_not_rollbacks_and_keeps_stage_switches() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    stage(s, "web", "beta", "{}").await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    // The first deploy succeeds, so there is something to roll back to.
    db.client().await.execute("UPDATE deploys SET state = 'SUCCEEDED'", &[]).await.unwrap();
    deploy(s, "c2", "web", "prod", &b2.id, NOW + 1).await;
    s.switch_stage(&id("web"), &id("beta"), EnvironAction::Disable, None, "carol", NOW).await.unwrap();

    assert_eq!(s.change_freeze().await.unwrap(), None);
    s.switch_freeze(EnvironAction::Disable, Some("end of year"), "rm", NOW + 2).await.unwrap();
    let f = s.change_freeze().await.unwrap().unwrap();
    assert_eq!((f.operator.as_str(), f.description.as_deref()), ("rm", Some("end of year")));
    for (i, stage) in ["prod", "beta"].iter().enumerate() {
        let refused = run(s, &format!("f{i}"), deploy_of(stage, &b1.id)).await.unwrap_err();
        assert_eq!(refused.status, 409);
        assert!(
            refused.message.starts_with(
                "deploys of new builds are frozen system-wide (since 2027-01-15T08:00:00Z by rm: end of year)"
            ),
            "{}",
            refused.message
        );
    }
    let rolled = run(s, "r1", action("prod", DeployAction::Rollback, None)).await.unwrap();
    assert_eq!(rolled["type"], "ROLLBACK");

    s.switch_freeze(EnvironAction::Enable, Some("back to work"), "rm", NOW + 3).await.unwrap();
    assert_eq!(s.change_freeze().await.unwrap(), None);
    run(s, "d1", deploy_of("prod", &b2.id)).await.unwrap();
    let still = run(s, "d2", deploy_of("beta", &b1.id)).await.unwrap_err();
    assert!(
        still.message.starts_with("Environment web/beta is disabled"),
        "the stage's own switch stays: {}",
        still.message
    );

    let tags: Vec<TagValue> = s.tags_of_target("TELETRAAN", 10).await.unwrap().iter().map(|t| t.value).collect();
    assert_eq!(tags, [TagValue::EnableEnv, TagValue::DisableEnv]);
    let q = HistoryQuery { operator: Some("rm".into()), page_index: 1, page_size: 10, ..Default::default() };
    let rows = s.history(&q).await.unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["ENABLE", "DISABLE"]);
    assert_eq!(rows[1].config_change.as_ref().unwrap()["description"], "end of year");
}
