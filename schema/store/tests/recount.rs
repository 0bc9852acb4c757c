//! The counts a deploy stores are a recount of its stage's agent records, whatever the fleet.

mod common;

use common::{NOW, build, deploy, id, stage, update};
use proptest::prelude::*;
use schema::bus::ReportBatch;
use schema::rules::goal::AgentRecord;
use schema::{AgentState, AgentStatus, DeployId, DeployStage};
use store::testing::TestDatabase;

fn record() -> impl Strategy<Value = (bool, DeployStage, AgentState)> {
    (any::<bool>(), prop::sample::select(DeployStage::ALL.to_vec()), prop::sample::select(AgentState::ALL.to_vec()))
}

#[test]
fn stored_progress_is_a_recount_of_the_records() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDatabase::new());
    let s = db.store.clone();
    let case = std::sync::atomic::AtomicUsize::new(0);
    let config = ProptestConfig { cases: 24, ..ProptestConfig::default() };
    proptest!(config, |(fleet in prop::collection::vec(record(), 0..40))| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let stage_name = format!("s{n}");
        let (expected, stored) = rt.block_on(async {
            let e = stage(&s, "web", &stage_name, r#"{"envState":"NORMAL"}"#).await;
            let b = build(&s, "web").await;
            let d = deploy(&s, &format!("c{n}"), "web", &stage_name, &b.id, NOW).await;
            let old: DeployId = id("old");
            let records: Vec<AgentRecord> = fleet
                .iter()
                .map(|(on_current, stage, state)| AgentRecord {
                    stage: *stage,
                    state: *state,
                    status: AgentStatus::Succeeded,
                    ..AgentRecord::fresh(if *on_current { d.id.clone() } else { old.clone() }, false)
                })
                .collect();
            let batch = ReportBatch {
                agents: records.iter().enumerate().map(|(i, r)| update(&format!("h{i}"), &e.id, r.clone(), NOW + 1)).collect(),
                ..Default::default()
            };
            s.apply_report_batch(&batch).await.unwrap();
            s.refresh_stage(&e.id, NOW + 2).await.unwrap();
            let mine = records.iter().filter(|r| r.deploy_id == d.id);
            let succeeded = mine
                .clone()
                .filter(|r| matches!(r.stage, DeployStage::ServingBuild | DeployStage::Stopped) && r.state != AgentState::PausedByUser)
                .count() as i32;
            let failed = mine.filter(|r| r.state == AgentState::PausedBySystem).count() as i32;
            let stored = s.deploy(&d.id).await.unwrap();
            ((records.len() as i32, succeeded, failed), (stored.total, stored.success_total, stored.fail_total))
        });
        prop_assert_eq!(stored, expected);
    });
}
