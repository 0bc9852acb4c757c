//! The audit history on a real Postgres: every configuration write and every applied command
//! leaves one row, in its own transaction, naming who did it, before and after; a refused
//! write leaves none.

mod common;

use common::{NOW, build, deploy, id, stage};
use schema::bus::{Command, CommandEnvelope, CommandOutcome};
use schema::model::{ConstraintInput, EnvWebHooksInput, EnvironInput, ScheduleInput, StringMap};
use schema::rules::access::GrantScope;
use schema::{AccessRole, CapacityType};
use store::testing::TestDatabase;
use store::{HistoryEntry, HistoryQuery, StageMap, Subject, history_kind as kind};

fn everything(page_size: i64) -> HistoryQuery {
    HistoryQuery { page_index: 1, page_size, ..Default::default() }
}

/// `(kind, action, operator)` of each row, newest first.
fn summary(rows: &[HistoryEntry]) -> Vec<(&str, &str, &str)> {
    rows.iter().map(|r| (r.kind.as_str(), r.action.as_str(), r.operator.as_str())).collect()
}

#[tokio::test]
async fn every_write_to_a_stage_leaves_a_row_with_before_and_after() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let (env, prod) = (id("web"), id("prod"));
    stage(s, "web", "prod", r#"{"description": "first"}"#).await;
    let input: EnvironInput = serde_json::from_str(r#"{"description": "second"}"#).unwrap();
    s.update_stage(&env, &prod, input, "bob", NOW + 1).await.unwrap();
    s.set_capacity(&env, &prod, CapacityType::Host, &["h1".into()], "bob", NOW + 2).await.unwrap();
    let vars: StringMap = serde_json::from_str(r#"{"PORT": "8080"}"#).unwrap();
    s.set_stage_map(&env, &prod, StageMap::ScriptConfigs, &vars, "carol", NOW + 3).await.unwrap();
    let schedule: ScheduleInput =
        serde_json::from_str(r#"{"totalSessions": 2, "cooldownTimes": "5,5", "hostNumbers": "1,1"}"#).unwrap();
    s.set_schedule(&env, &prod, schedule, "carol", NOW + 4).await.unwrap();
    let constraint: ConstraintInput = serde_json::from_str(
        r#"{"constraintKey": "az", "maxParallel": 1, "constraintType": "ALL_GROUPS_IN_PARALLEL"}"#,
    )
    .unwrap();
    s.set_constraint(&env, &prod, constraint, "dave", NOW + 5).await.unwrap();
    s.delete_constraint(&env, &prod, "dave", NOW + 6).await.unwrap();

    let rows = s.stage_history(&env, &prod, 1, 100).await.unwrap();
    assert_eq!(
        summary(&rows),
        [
            (kind::CONSTRAINT, "delete", "dave"),
            (kind::CONSTRAINT, "create", "dave"),
            (kind::SCHEDULE, "create", "carol"),
            (kind::SCRIPT, "update", "carol"),
            (kind::HOST_CAPACITY, "update", "bob"),
            (kind::STAGE, "update", "bob"),
            (kind::STAGE, "create", "alice"),
        ]
    );
    let update = &rows[5];
    assert_eq!(update.before.as_ref().unwrap()["description"], "first");
    assert_eq!(update.config_change.as_ref().unwrap()["description"], "second");
    assert_eq!(update.created_time, NOW + 1);
    assert_eq!((update.env_name.as_deref(), update.stage_name.as_deref()), (Some("web"), Some("prod")));
    assert_eq!(rows[4].before, Some(serde_json::json!([])));
    assert_eq!(rows[4].config_change, Some(serde_json::json!(["h1"])));
    assert_eq!(rows[3].config_change, Some(serde_json::json!({"PORT": "8080"})));
    assert!(rows[0].config_change.is_none() && rows[0].before.is_some(), "a removal keeps what was removed");
    let page2 = s.stage_history(&env, &prod, 2, 3).await.unwrap();
    assert_eq!(page2, rows[3..6], "pages follow one another");

    // A refused write leaves nothing behind, its row included.
    let bad: EnvironInput = serde_json::from_str(r#"{"maxParallelPct": 500}"#).unwrap();
    assert!(s.update_stage(&env, &prod, bad, "mallory", NOW + 7).await.is_err());
    assert!(matches!(s.delete_stage(&env, &prod, "mallory", NOW + 7).await, Err(store::Error::Conflict(_))));
    assert_eq!(s.stage_history(&env, &prod, 1, 100).await.unwrap(), rows);

    // A deleted stage's rows stay, found by its names.
    s.set_capacity(&env, &prod, CapacityType::Host, &[], "bob", NOW + 8).await.unwrap();
    s.delete_stage(&env, &prod, "erin", NOW + 9).await.unwrap();
    let q = HistoryQuery { env_name: Some("web".into()), ..everything(100) };
    let all = s.history(&q).await.unwrap();
    assert_eq!(summary(&all[..1]), [(kind::STAGE, "delete", "erin")]);
    assert_eq!(all[0].before.as_ref().unwrap()["description"], "second");
    assert_eq!(all.len(), rows.len() + 2);
}

#[tokio::test]
async fn applied_commands_leave_a_row_and_refused_ones_none() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let b = build(s, "web").await;
    let d = deploy(s, "cmd-1", "web", "prod", &b.id, NOW + 1).await;

    let refused = CommandEnvelope {
        request_id: None,
        id: "cmd-2".into(),
        attempt: 1,
        issued_at: NOW,
        operator: "mallory".into(),
        command: Command::CreateDeployV1 {
            env_name: id("web"),
            stage_name: id("prod"),
            build_id: id("no-such-build"),
            description: None,
        },
    };
    assert!(matches!(s.apply_command(&refused, NOW + 2).await.unwrap(), CommandOutcome::Err { .. }));

    let rows = s.stage_history(&e.env_name, &e.stage_name, 1, 100).await.unwrap();
    assert_eq!(summary(&rows), [(kind::ACTION, "DEPLOY", "alice"), (kind::STAGE, "create", "alice")]);
    let row = &rows[0];
    assert_eq!(row.command_id.as_deref(), Some("cmd-1"));
    let after = row.config_change.as_ref().unwrap();
    assert_eq!(after["result"]["id"], d.id.as_str(), "the row names the deploy it made");
    assert_eq!(after["command"]["buildId"], b.id.as_str());

    let builds = HistoryQuery { kind: Some(kind::BUILD.into()), ..everything(10) };
    let published = s.history(&builds).await.unwrap();
    assert_eq!(summary(&published), [(kind::BUILD, "publish", "ci")]);
    assert_eq!(published[0].config_change.as_ref().unwrap()["id"], b.id.as_str());
    assert_eq!(published[0].env_name, None);
}

#[tokio::test]
async fn roles_principals_and_tokens_are_audited_without_secrets() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let web = GrantScope::Env(id("web"));
    s.set_grant(Subject::Principal, "alice", &web, AccessRole::Operator, "root", NOW).await.unwrap();
    s.set_grant(Subject::Group, "sre", &GrantScope::System, AccessRole::Reader, "root", NOW + 1).await.unwrap();
    s.delete_grant(Subject::Principal, "alice", &web, "root", NOW + 2).await.unwrap();
    let (script, token, secret) =
        s.create_script("ci@web", &web, AccessRole::Publisher, None, "root", NOW + 3).await.unwrap();
    s.revoke_token(&token.id, "root", NOW + 4).await.unwrap();
    assert_eq!(script.role, AccessRole::Publisher);

    let rows = s.history(&HistoryQuery { operator: Some("root".into()), ..everything(100) }).await.unwrap();
    assert_eq!(
        summary(&rows),
        [
            (kind::TOKEN, "revoke", "root"),
            (kind::TOKEN, "create script", "root"),
            (kind::ROLE, "revoke", "root"),
            (kind::ROLE, "grant", "root"),
            (kind::ROLE, "grant", "root"),
        ]
    );
    assert_eq!(rows[2].before.as_ref().unwrap()["grant"]["role"], "OPERATOR");
    assert_eq!(rows[2].env_name.as_deref(), Some("web"));
    assert_eq!(rows[3].env_name, None, "a system grant belongs to no environment");
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains(&secret), "the history never holds a token's secret");
    let env_rows = s.history(&HistoryQuery { env_name: Some("web".into()), ..everything(100) }).await.unwrap();
    assert_eq!(env_rows.len(), 3, "the env's grants, its script and its token's revocation");
}

#[tokio::test]
async fn a_webhook_secret_never_reaches_the_history() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let secret = "0123456789abcdef-secret";
    let input = serde_json::json!({"postDeployHooks": [{"url": "https://h/x"}], "secret": secret});
    let (config, change) = serde_json::from_value::<EnvWebHooksInput>(input).unwrap().validate().unwrap();
    s.set_webhooks(&e.env_name, &e.stage_name, &config, &change, "alice", NOW).await.unwrap();
    let rows = s.stage_history(&e.env_name, &e.stage_name, 1, 10).await.unwrap();
    assert_eq!(summary(&rows[..1]), [(kind::WEBHOOK, "update", "alice")]);
    assert_eq!(rows[0].config_change.as_ref().unwrap()["hasSecret"], true);
    assert!(!serde_json::to_string(&rows).unwrap().contains(secret));
}
