//! What the store hands the deploy board: the records a report batch wrote, a stage's deploy
//! after its re-evaluation, and what a command changed.

use std::collections::BTreeMap;

use schema::bus::{AgentUpdate, AgentView, LiveEvent, ReportBatch, StageAgents};
use schema::rules::goal::AgentRecord;
use schema::{DeployStage, EnvId};
use store::CommandStage;
use store::testing::TestDatabase;

mod common;

use common::{NOW, build, deploy, id, serving, stage, update};

fn removal(host: &str, env: &EnvId, at: i64) -> AgentUpdate {
    AgentUpdate { record: None, ..update(host, env, serving(&id("d_none")), at) }
}

/// The hosts of each stage's group, by stage name: (host, deploy stage, removed).
fn by_stage(live: &[StageAgents]) -> BTreeMap<String, Vec<(String, DeployStage, bool)>> {
    live.iter()
        .map(|s| {
            let hosts = s.agents.iter().map(|a| (a.host_name.to_string(), a.deploy_stage, a.removed)).collect();
            (s.stage_name.to_string(), hosts)
        })
        .collect()
}

#[tokio::test]
async fn a_report_batch_returns_exactly_the_rows_it_wrote_grouped_by_stage() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let prod = stage(s, "web", "prod", r#"{"maxParallel":1}"#).await;
    let canary = stage(s, "web", "canary", "{}").await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let c1 = deploy(s, "c2", "web", "canary", &b1.id, NOW).await;
    let first = ReportBatch {
        agents: vec![
            update("h1", &prod.id, serving(&d1.id), NOW + 1),
            update("h2", &prod.id, serving(&d1.id), NOW + 1),
            update("h4", &canary.id, serving(&c1.id), NOW + 1),
        ],
        ..Default::default()
    };
    let applied = s.apply_report_batch(&first).await.unwrap();
    assert_eq!(applied.live.len(), 2, "one group per stage");
    let web = |stage: &StageAgents| (stage.env_name.to_string(), stage.env_id.clone());
    assert!(applied.live.iter().all(|g| web(g).0 == "web"));
    assert!(applied.live.iter().any(|g| g.env_id == prod.id) && applied.live.iter().any(|g| g.env_id == canary.id));

    // A new deploy admits one host of prod (maxParallel 1): its record is the workers' now.
    let d2 = deploy(s, "c3", "web", "prod", &b2.id, NOW + 2).await;
    let admitted = s.agents_of_stage(&prod.id).await.unwrap().into_iter().find(|a| a.deploy_id == d2.id).unwrap();
    let other = if admitted.host_name.as_str() == "h1" { "h2" } else { "h1" };

    let at = |stage| AgentRecord { stage, ..AgentRecord::fresh(d1.id.clone(), false) };
    let batch = ReportBatch {
        agents: vec![
            // Stale: computed before the admission; skipped.
            update(admitted.host_id.as_str(), &prod.id, serving(&d1.id), NOW + 3),
            // Written.
            update(other, &prod.id, at(DeployStage::Staging), NOW + 3),
            // Older than what is stored: skipped.
            update("h4", &canary.id, at(DeployStage::Downloading), NOW),
            // A host new to canary, and a record removed.
            update("h3", &canary.id, at(DeployStage::PreDownload), NOW + 3),
            removal("h4", &canary.id, NOW + 3),
            // Nothing to remove.
            removal("h9", &canary.id, NOW + 3),
        ],
        ..Default::default()
    };
    let applied = s.apply_report_batch(&batch).await.unwrap();
    assert_eq!((applied.written, applied.skipped, applied.deleted), (2, 1, 1));
    let want: BTreeMap<String, Vec<(String, DeployStage, bool)>> = [
        (
            "canary".to_string(),
            vec![("h3".into(), DeployStage::PreDownload, false), ("h4".into(), DeployStage::ServingBuild, true)],
        ),
        ("prod".to_string(), vec![(other.into(), DeployStage::Staging, false)]),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_stage(&applied.live), want);

    // A written row is the record as stored.
    let stored =
        s.agents_of_stage(&prod.id).await.unwrap().into_iter().find(|a| a.host_name.as_str() == other).unwrap();
    let prod_group = applied.live.iter().find(|g| g.env_id == prod.id).unwrap();
    assert_eq!(prod_group.agents, vec![AgentView::from(&stored)]);
    assert_eq!(stored.last_update_date, NOW + 3);
}

#[tokio::test]
async fn a_refresh_returns_the_deploy_and_the_hosts_it_admitted() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":1}"#).await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let batch = ReportBatch {
        agents: vec![update("h1", &e.id, serving(&d1.id), NOW + 1), update("h2", &e.id, serving(&d1.id), NOW + 1)],
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();
    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + 2).await;

    // The deploy admitted its first host when it was made: the deploy, nobody more admitted.
    let refreshed = s.refresh_stage_if_free(&e.id, NOW + 3).await.unwrap().expect("the stage is free");
    let deploy = refreshed.deploy.as_ref().expect("a current deploy");
    assert_eq!((deploy.deploy.id.clone(), deploy.stage_name.as_str()), (d2.id.clone(), "prod"));
    assert_eq!(refreshed.admitted, None);
    // Again at once: nothing moved.
    let again = s.refresh_stage_if_free(&e.id, NOW + 3).await.unwrap().expect("the stage is free");
    assert!(!again.deploy_changed, "{again:?}");

    // The admitted host finishes: the next one is admitted, and told.
    let admitted = s.agents_of_stage(&e.id).await.unwrap().into_iter().find(|a| a.deploy_id == d2.id).unwrap();
    let done = AgentUpdate { control_seq: 1, ..update(admitted.host_id.as_str(), &e.id, serving(&d2.id), NOW + 4) };
    s.apply_report_batch(&ReportBatch { agents: vec![done], ..Default::default() }).await.unwrap();
    let refreshed = s.refresh_stage_if_free(&e.id, NOW + 5).await.unwrap().expect("the stage is free");
    assert!(refreshed.deploy_changed, "one host more succeeded");
    let next = refreshed.admitted.clone().expect("one more admitted");
    assert_eq!(next.agents.len(), 1);
    assert_ne!(next.agents[0].host_id, admitted.host_id);
    assert_eq!(
        (next.agents[0].deploy_id.clone(), next.agents[0].deploy_stage),
        (d2.id.clone(), DeployStage::PreDownload)
    );
    let kinds: Vec<&str> = refreshed.into_live().iter().map(LiveEvent::what).collect();
    assert_eq!(kinds, ["deploy", "agents"]);
}

#[tokio::test]
async fn after_a_command_the_board_gets_the_deploy_and_the_records_it_stamped() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":1}"#).await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let batch = ReportBatch {
        agents: vec![update("h1", &e.id, serving(&d1.id), NOW + 1), update("h2", &e.id, serving(&d1.id), NOW + 1)],
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();
    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + 2).await;

    let (env, stage) = (id("web"), id("prod"));
    let live = s.live_after_command(CommandStage::Names(&env, &stage), NOW + 2).await.unwrap();
    let [LiveEvent::DeployV1(deploy), LiveEvent::AgentsV1(agents)] = live.as_slice() else { panic!("{live:?}") };
    assert_eq!((deploy.env_id.clone(), deploy.deploy.id.clone()), (e.id.clone(), d2.id.clone()));
    assert_eq!(agents.agents.len(), 1, "the one host the deploy admitted");
    assert_eq!(agents.agents[0].deploy_id, d2.id);

    // A verdict names the deploy only; it stamps no record.
    let live = s.live_after_command(CommandStage::OfDeploy(&d2.id), NOW + 3).await.unwrap();
    assert!(
        matches!(live.as_slice(), [LiveEvent::DeployV1(d)] if d.deploy.id == d2.id && d.stage_name.as_str() == "prod")
    );

    let gone = s.live_after_command(CommandStage::Names(&env, &id("nope")), NOW + 3).await.unwrap();
    assert!(gone.is_empty());
}

#[tokio::test]
async fn the_board_reads_a_page_of_records_and_counts_them_grouped() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let prod = stage(s, "web", "prod", "{}").await;
    let b1 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let hosts: Vec<String> = (1..=5).map(|i| format!("h{i}")).collect();
    let batch = ReportBatch {
        agents: hosts.iter().map(|h| update(h, &prod.id, serving(&d1.id), NOW + 1)).collect(),
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();

    let (page, total) = s.agents_page(&prod.id, 2, 2).await.unwrap();
    assert_eq!(total, 5);
    let names: Vec<&str> = page.iter().map(|a| a.host_name.as_str()).collect();
    assert_eq!(names, ["h3", "h4"], "by host name, after the offset");
    let (past, total) = s.agents_page(&prod.id, 10, 2).await.unwrap();
    assert!(past.is_empty() && total == 5, "past the end: no record, still the count");

    let tallies = s.agent_tallies(&prod.id).await.unwrap();
    assert_eq!(tallies.iter().map(|t| t.count).sum::<i64>(), 5);
    assert!(tallies.iter().all(|t| t.deploy_id == d1.id && t.deploy_stage == DeployStage::ServingBuild));
}
