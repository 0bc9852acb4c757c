//! Pipelines on a real Postgres with the clock passed in: auto-promotion from new builds and
//! from another stage, with delay, queue size, a cron window, bad builds skipped and every fail
//! policy; a person taking over switches AUTO off (or not, by policy); settings that name an
//! unknown stage or close a loop are refused; a rollback can mark the build it leaves bad; a
//! verdict that does not come in time rejects the deploy.

mod common;

use common::{NOW, build, deploy, deploy_command, id, stage};
use schema::bus::{Command, CommandEnvelope, CommandOutcome};
use schema::model::{AUTO_PROMOTER, ArtifactPolicy, Build, BuildInput, Deploy, NewTag, PromoteInput};
use schema::{
    AcceptanceStatus, DeployAction, DeployId, DeployState, DeployType, EnvId, EnvName, PromoteType, StageName,
    TagTargetType, TagValue,
};
use store::testing::TestDatabase;
use store::{PromoteOutcome, Store};

const MIN: i64 = 60_000;
/// NOW (2027-01-15T08:00:00Z) is on the hour.
const BUFFER: i64 = 2 * MIN;

async fn build_at(store: &Store, commit: &str, at: i64) -> Build {
    let input: BuildInput = serde_json::from_value(serde_json::json!({
        "name": "web", "artifactUrl": "https://a/x.tgz", "repo": "org/web", "branch": "main", "commit": commit,
        "commitDate": at
    }))
    .unwrap();
    let b = Build::publish(input, &ArtifactPolicy::permissive(), "ci", at).unwrap();
    store.insert_build(&b).await.unwrap();
    b
}

async fn pipeline(store: &Store, stage: &str, json: serde_json::Value) -> Result<schema::model::Promote, store::Error> {
    let input: PromoteInput = serde_json::from_value(json).unwrap();
    store.set_promote(&id::<EnvName>("web"), &id::<StageName>(stage), input, "alice", NOW).await
}

async fn current(store: &Store, stage: &str) -> Deploy {
    store.current_deploy(&id("web"), &id(stage)).await.unwrap()
}

/// The deploy succeeds and is accepted (as its hosts and the test system would make it).
async fn accept(db: &TestDatabase, deploy: &DeployId) {
    db.client()
        .await
        .execute(
            "UPDATE deploys SET state = 'SUCCEEDING', acc_status = 'ACCEPTED', suc_date = start_date WHERE deploy_id = $1",
            &[&deploy.as_str()],
        )
        .await
        .unwrap();
}

async fn set_state(db: &TestDatabase, deploy: &DeployId, state: &str, acceptance: &str) {
    db.client()
        .await
        .execute(
            "UPDATE deploys SET state = $2, acc_status = $3 WHERE deploy_id = $1",
            &[&deploy.as_str(), &state, &acceptance],
        )
        .await
        .unwrap();
}

fn promoted(outcome: PromoteOutcome) -> DeployId {
    match outcome {
        PromoteOutcome::Promoted(d) => d,
        other => panic!("expected a promotion, got {other:?}"),
    }
}

async fn tag(store: &Store, build: &Build, value: TagValue) {
    let t = NewTag { value, target_type: TagTargetType::Build, target_id: build.id.as_str().into(), comments: None };
    store.insert_tag(&t, "qa", NOW).await.unwrap();
}

async fn beta_from_builds(s: &Store, settings: serde_json::Value) -> EnvId {
    let e = stage(s, "web", "beta", r#"{"branch":"main"}"#).await;
    let mut json = serde_json::json!({"type": "AUTO", "predStage": "BUILD"});
    json.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    pipeline(s, "beta", json).await.unwrap();
    e.id
}

#[tokio::test]
async fn new_builds_are_promoted_once_old_enough_and_only_past_a_settled_deploy() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let beta = beta_from_builds(s, serde_json::json!({"delay": 10})).await;
    let b1 = build_at(s, "1111111aaa", NOW - 30 * MIN).await;
    let b2 = build_at(s, "2222222aaa", NOW - 5 * MIN).await;
    let d = promoted(s.auto_promote(&beta, NOW, BUFFER).await.unwrap());
    let d = s.deploy(&d).await.unwrap();
    assert_eq!((d.build_id.clone(), d.operator.as_str()), (b1.id.clone(), AUTO_PROMOTER), "b2 is too young");
    assert_eq!(d.description.as_deref(), Some(format!("Auto promote build {}", b1.id).as_str()));
    assert_eq!(d.deploy_type, DeployType::Regular);
    assert_eq!(s.auto_promote(&beta, NOW, BUFFER).await.unwrap(), PromoteOutcome::Waiting, "b1 is still rolling out");
    accept(&db, &d.id).await;
    assert_eq!(s.auto_promote(&beta, NOW, BUFFER).await.unwrap(), PromoteOutcome::NothingToDo);
    let d2 = promoted(s.auto_promote(&beta, NOW + 6 * MIN, BUFFER).await.unwrap());
    assert_eq!(s.deploy(&d2).await.unwrap().build_id, b2.id);
    assert_eq!(s.promote(&id("web"), &id("beta")).await.unwrap().promote_type, PromoteType::Auto, "still AUTO");
}

#[tokio::test]
async fn a_queue_waits_for_that_many_candidates() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let beta = beta_from_builds(s, serde_json::json!({"queueSize": 2})).await;
    let b1 = build_at(s, "1111111aaa", NOW - 30 * MIN).await;
    assert_eq!(s.auto_promote(&beta, NOW, BUFFER).await.unwrap(), PromoteOutcome::NothingToDo);
    let b2 = build_at(s, "2222222aaa", NOW - 20 * MIN).await;
    let d = promoted(s.auto_promote(&beta, NOW, BUFFER).await.unwrap());
    assert_eq!(s.deploy(&d).await.unwrap().build_id, b1.id, "the older of the two newest");
    accept(&db, &d).await;
    assert_eq!(s.auto_promote(&beta, NOW, BUFFER).await.unwrap(), PromoteOutcome::NothingToDo, "only b2 is newer");
    build_at(s, "3333333aaa", NOW - 10 * MIN).await;
    let d = promoted(s.auto_promote(&beta, NOW, BUFFER).await.unwrap());
    assert_eq!(s.deploy(&d).await.unwrap().build_id, b2.id);
}

#[tokio::test]
async fn bad_builds_and_their_successors_on_the_branch_are_skipped_until_a_good_one() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let beta = beta_from_builds(s, serde_json::json!({})).await;
    let b1 = build_at(s, "1111111aaa", NOW - 30 * MIN).await;
    let b2 = build_at(s, "2222222aaa", NOW - 20 * MIN).await;
    let b3 = build_at(s, "3333333aaa", NOW - 10 * MIN).await;
    tag(s, &b2, TagValue::BadBuild).await;
    let d = promoted(s.auto_promote(&beta, NOW, BUFFER).await.unwrap());
    assert_eq!(s.deploy(&d).await.unwrap().build_id, b1.id, "b2 is bad and b3 came after it on main");
    assert_eq!(s.effective_tag(&b3.id).await.unwrap().map(|t| t.value), Some(TagValue::BadBuild));
    accept(&db, &d).await;
    assert_eq!(s.auto_promote(&beta, NOW, BUFFER).await.unwrap(), PromoteOutcome::NothingToDo);
    tag(s, &b3, TagValue::GoodBuild).await;
    let d = promoted(s.auto_promote(&beta, NOW, BUFFER).await.unwrap());
    assert_eq!(s.deploy(&d).await.unwrap().build_id, b3.id);
}

#[tokio::test]
async fn a_schedule_promotes_only_in_its_window() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let beta = beta_from_builds(s, serde_json::json!({"schedule": "0 0 * * * ?"})).await;
    let b1 = build_at(s, "1111111aaa", NOW - 90 * MIN).await;
    assert_eq!(s.auto_promote(&beta, NOW - 30 * MIN, BUFFER).await.unwrap(), PromoteOutcome::NothingToDo, "07:30");
    assert_eq!(s.auto_promote(&beta, NOW + 3 * MIN, BUFFER).await.unwrap(), PromoteOutcome::NothingToDo, "08:03");
    let d = promoted(s.auto_promote(&beta, NOW + MIN, BUFFER).await.unwrap());
    assert_eq!(s.deploy(&d).await.unwrap().build_id, b1.id, "08:01, inside the window");
}

#[tokio::test]
async fn accepted_deploys_of_the_previous_stage_are_promoted_with_their_origin() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "beta", "{}").await;
    let canary = stage(s, "web", "canary", "{}").await;
    pipeline(s, "canary", serde_json::json!({"type": "AUTO", "predStage": "beta"})).await.unwrap();
    let b1 = build_at(s, "1111111aaa", NOW - 60 * MIN).await;
    let beta1 = deploy(s, "c1", "web", "beta", &b1.id, NOW - 50 * MIN).await;
    assert_eq!(s.auto_promote(&canary.id, NOW, BUFFER).await.unwrap(), PromoteOutcome::NothingToDo, "not accepted");
    accept(&db, &beta1.id).await;
    let d = promoted(s.auto_promote(&canary.id, NOW, BUFFER).await.unwrap());
    let d = s.deploy(&d).await.unwrap();
    assert_eq!((d.build_id.clone(), d.from_deploy_id.clone()), (b1.id.clone(), Some(beta1.id.clone())));
    assert_eq!(d.description.as_deref(), Some(format!("Auto promote deploy {}", beta1.id).as_str()));
    accept(&db, &d.id).await;
    assert_eq!(s.auto_promote(&canary.id, NOW, BUFFER).await.unwrap(), PromoteOutcome::NothingToDo, "already here");
    let b2 = build_at(s, "2222222aaa", NOW - 40 * MIN).await;
    let beta2 = deploy(s, "c2", "web", "beta", &b2.id, NOW - 30 * MIN).await;
    accept(&db, &beta2.id).await;
    let d = promoted(s.auto_promote(&canary.id, NOW, BUFFER).await.unwrap());
    assert_eq!(s.deploy(&d).await.unwrap().from_deploy_id, Some(beta2.id));
}

#[tokio::test]
async fn a_failed_deploy_follows_the_fail_policy() {
    for policy in ["CONTINUE", "DISABLE", "ROLLBACK"] {
        let db = TestDatabase::new().await;
        let s = &db.store;
        let beta = beta_from_builds(s, serde_json::json!({"failPolicy": policy})).await;
        let b1 = build_at(s, "1111111aaa", NOW - 30 * MIN).await;
        let good = promoted(s.auto_promote(&beta, NOW - 29 * MIN, BUFFER).await.unwrap());
        accept(&db, &good).await;
        let b2 = build_at(s, "2222222aaa", NOW - 20 * MIN).await;
        let bad = promoted(s.auto_promote(&beta, NOW - 19 * MIN, BUFFER).await.unwrap());
        assert_eq!(s.deploy(&bad).await.unwrap().build_id, b2.id);
        // The first one is retired as SUCCEEDED; the second fails.
        assert_eq!(s.deploy(&good).await.unwrap().state, DeployState::Succeeded);
        set_state(&db, &bad, "FAILING", "PENDING_DEPLOY").await;
        let b3 = build_at(s, "3333333aaa", NOW - 10 * MIN).await;
        let outcome = s.auto_promote(&beta, NOW, BUFFER).await.unwrap();
        let promote = s.promote(&id("web"), &id("beta")).await.unwrap();
        match policy {
            "CONTINUE" => {
                assert_eq!(s.deploy(&promoted(outcome)).await.unwrap().build_id, b3.id, "a newer build goes on");
                assert_eq!(promote.promote_type, PromoteType::Auto);
            }
            "DISABLE" => {
                assert_eq!(outcome, PromoteOutcome::Disabled);
                assert_eq!(
                    (promote.promote_type, promote.last_operator.as_str()),
                    (PromoteType::Manual, AUTO_PROMOTER)
                );
                assert_eq!(current(s, "beta").await.id, bad, "the failed deploy stays");
            }
            _ => {
                let PromoteOutcome::RolledBack(Some(rb)) = outcome else { panic!("{outcome:?}") };
                let rb = s.deploy(&rb).await.unwrap();
                assert_eq!(
                    (rb.deploy_type, rb.alias.clone(), rb.build_id.clone(), rb.operator.as_str()),
                    (DeployType::Rollback, Some(good.clone()), b1.id.clone(), AUTO_PROMOTER)
                );
                assert_eq!(promote.promote_type, PromoteType::Manual);
            }
        }
    }
}

async fn person_deploys(s: &Store, build: &Build) -> CommandOutcome {
    s.apply_command(&deploy_command(&uuid::Uuid::new_v4().to_string(), "web", "beta", &build.id), NOW).await.unwrap()
}

#[tokio::test]
async fn a_person_deploying_switches_auto_off_unless_the_policy_says_otherwise() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    beta_from_builds(s, serde_json::json!({"disablePolicy": "MANUAL"})).await;
    let b1 = build_at(s, "1111111aaa", NOW - 30 * MIN).await;
    person_deploys(s, &b1).await;
    assert_eq!(s.promote(&id("web"), &id("beta")).await.unwrap().promote_type, PromoteType::Auto);
    pipeline(s, "beta", serde_json::json!({"disablePolicy": "AUTO"})).await.unwrap();
    person_deploys(s, &b1).await;
    let p = s.promote(&id("web"), &id("beta")).await.unwrap();
    assert_eq!((p.promote_type, p.last_operator.as_str()), (PromoteType::Manual, "alice"));
}

#[tokio::test]
async fn settings_that_name_no_stage_or_close_a_loop_are_refused() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    for name in ["beta", "canary", "prod"] {
        stage(s, "web", name, "{}").await;
    }
    stage(s, "api", "qa", "{}").await;
    let field = |r: Result<schema::model::Promote, store::Error>| match r {
        Err(store::Error::Invalid(i)) => (i.field, i.message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (f, m) = field(pipeline(s, "canary", serde_json::json!({"type": "AUTO", "predStage": "qa"})).await);
    assert_eq!(f, "predStage");
    assert!(m.contains("no stage \"qa\""), "{m}");
    let (f, _) = field(pipeline(s, "canary", serde_json::json!({"type": "AUTO", "predStage": "canary"})).await);
    assert_eq!(f, "predStage");
    pipeline(s, "canary", serde_json::json!({"type": "AUTO", "predStage": "beta"})).await.unwrap();
    pipeline(s, "prod", serde_json::json!({"type": "AUTO", "predStage": "canary"})).await.unwrap();
    let (f, m) = field(pipeline(s, "beta", serde_json::json!({"type": "MANUAL", "predStage": "prod"})).await);
    assert_eq!(f, "predStage");
    assert!(m.contains("beta ← prod ← canary ← beta"), "{m}");
    let (f, _) = field(pipeline(s, "beta", serde_json::json!({"schedule": "0 0 25 * * ?"})).await);
    assert_eq!(f, "schedule");
    assert!(matches!(pipeline(s, "nope", serde_json::json!({"type": "MANUAL"})).await, Err(store::Error::NotFound(_))));
}

#[tokio::test]
async fn a_paused_or_disabled_stage_is_not_promoted_into() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let beta = beta_from_builds(s, serde_json::json!({})).await;
    build_at(s, "1111111aaa", NOW - 30 * MIN).await;
    s.update_stage(&id("web"), &id("beta"), serde_json::from_str(r#"{"state":"DISABLED"}"#).unwrap(), "a", NOW)
        .await
        .unwrap();
    assert_eq!(s.auto_promote(&beta, NOW, BUFFER).await.unwrap(), PromoteOutcome::Skipped);
}

#[tokio::test]
async fn a_frozen_system_is_not_promoted_into_until_the_freeze_is_lifted() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let beta = beta_from_builds(s, serde_json::json!({})).await;
    build_at(s, "1111111aaa", NOW - 30 * MIN).await;
    s.switch_freeze(schema::EnvironAction::Disable, Some("holidays"), "rm", NOW).await.unwrap();
    assert_eq!(s.auto_promote(&beta, NOW, BUFFER).await.unwrap(), PromoteOutcome::Skipped);
    s.switch_freeze(schema::EnvironAction::Enable, None, "rm", NOW).await.unwrap();
    assert!(matches!(s.auto_promote(&beta, NOW, BUFFER).await.unwrap(), PromoteOutcome::Promoted(_)));
}

#[tokio::test]
async fn a_rollback_can_mark_the_build_it_leaves_bad() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "beta", r#"{"branch":"main"}"#).await;
    let b1 = build_at(s, "1111111aaa", NOW - 30 * MIN).await;
    let b2 = build_at(s, "2222222aaa", NOW - 20 * MIN).await;
    let d1 = deploy(s, "c1", "web", "beta", &b1.id, NOW - 29 * MIN).await;
    accept(&db, &d1.id).await;
    deploy(s, "c2", "web", "beta", &b2.id, NOW - 19 * MIN).await;
    let rollback = |mark_bad: bool, cmd: &str| CommandEnvelope {
        request_id: None,
        id: cmd.into(),
        attempt: 1,
        issued_at: NOW,
        operator: "oncall".into(),
        command: Command::DeployActionV1 {
            env_name: id("web"),
            stage_name: id("beta"),
            action: DeployAction::Rollback,
            from_deploy_id: None,
            to_deploy_id: None,
            description: None,
            mark_bad,
        },
    };
    let CommandOutcome::Ok { result } = s.apply_command(&rollback(true, "rb"), NOW).await.unwrap() else {
        panic!("the rollback was refused")
    };
    let rb: Deploy = serde_json::from_value(result).unwrap();
    assert_eq!((rb.alias, rb.build_id), (Some(d1.id.clone()), b1.id.clone()));
    let t = s.effective_tag(&b2.id).await.unwrap().expect("b2 is tagged");
    assert_eq!(
        (t.value, t.operator.as_str(), t.build_id.as_deref()),
        (TagValue::BadBuild, "oncall", Some(b2.id.as_str()))
    );
    let b3 = build_at(s, "3333333aaa", NOW).await;
    assert_eq!(s.effective_tag(&b3.id).await.unwrap().map(|t| t.value), Some(TagValue::BadBuild), "later on main too");
    assert_eq!(s.effective_tag(&b1.id).await.unwrap(), None, "the build rolled back to is not");
    // Rolling back to a deploy of the build it would mark is refused, and nothing is kept.
    let CommandOutcome::Err { error } = s.apply_command(&rollback(true, "rb2"), NOW).await.unwrap() else {
        panic!("marking the target's own build bad must be refused")
    };
    assert_eq!(error.status, 409, "{error:?}");
}

#[tokio::test]
async fn a_verdict_that_does_not_come_in_time_rejects_the_deploy() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "beta", r#"{"acceptanceType":"MANUAL","acceptanceTimeout":60}"#).await;
    let b1 = build(s, "web").await;
    let d = deploy(s, "c1", "web", "beta", &b1.id, NOW).await;
    db.client()
        .await
        .execute(
            "UPDATE deploys SET state = 'SUCCEEDING', acc_status = 'OUTSTANDING', suc_date = $2 WHERE deploy_id = $1",
            &[
                &d.id.as_str(),
                &std::time::SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(NOW as u64)).unwrap(),
            ],
        )
        .await
        .unwrap();
    s.refresh_stage(&e.id, NOW + 59_000).await.unwrap();
    assert_eq!(s.deploy(&d.id).await.unwrap().acceptance_status, AcceptanceStatus::Outstanding);
    s.refresh_stage(&e.id, NOW + 60_000).await.unwrap();
    assert_eq!(s.deploy(&d.id).await.unwrap().acceptance_status, AcceptanceStatus::Rejected);
}

#[tokio::test]
async fn a_rollback_by_fail_policy_never_goes_back_to_a_bad_build() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let beta = beta_from_builds(s, serde_json::json!({"failPolicy": "ROLLBACK"})).await;
    let b1 = build_at(s, "1111111aaa", NOW - 30 * MIN).await;
    let first = promoted(s.auto_promote(&beta, NOW - 29 * MIN, BUFFER).await.unwrap());
    accept(&db, &first).await;
    build_at(s, "2222222aaa", NOW - 20 * MIN).await;
    let failed = promoted(s.auto_promote(&beta, NOW - 19 * MIN, BUFFER).await.unwrap());
    set_state(&db, &failed, "FAILING", "PENDING_DEPLOY").await;
    // The only deploy that succeeded runs a build found bad since.
    tag(s, &b1, TagValue::BadBuild).await;
    assert_eq!(s.auto_promote(&beta, NOW, BUFFER).await.unwrap(), PromoteOutcome::RolledBack(None));
    assert_eq!(current(s, "beta").await.id, failed, "no rollback to a bad build");
    assert_eq!(s.promote(&id("web"), &id("beta")).await.unwrap().promote_type, PromoteType::Manual);
}
