//! The report consumer (`workers::reports::ReportHandler`) and the stage refresh after it
//! (`workers::refresh::Refresher`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bus::WorkQueue;
use bus::testing::TestBus;
use schema::bus::{Command, Heartbeat, HostFacts, ReportBatch, ReportMessage};
use schema::model::{Deploy, Environ};
use schema::rules::goal::AgentRecord;
use schema::time::{EpochMs, now_ms};
use schema::{AgentStatus, DeployId, DeployStage};
use store::testing::TestDatabase;
use workers::refresh::Refresher;
use workers::reports::ReportHandler;

use crate::support::dump::{Dump, Table, assert_same, dump};
use crate::support::{
    Conduit, Message, apply, batch, build, envelope, facts, id, record, seeds, stage, twice_shuffled,
};

/// The steps a host reports after its admission, as its agent runs them (each report a
/// record that changed, as a gateway publishes them); `w2`'s download fails twice first.
fn script(host: &str) -> Vec<(DeployStage, AgentStatus, i32, &'static str)> {
    use AgentStatus::{RetryableAgentFailed as Failed, Succeeded};
    use DeployStage::*;
    let mut steps = vec![(PreDownload, Succeeded, 0, "")];
    if host == "w2" {
        steps.push((Downloading, Failed, 1, "download failed: HTTP 503"));
        steps.push((Downloading, Failed, 2, "download failed: connection reset by peer"));
    }
    steps.extend([
        (Downloading, Succeeded, 0, ""),
        (PostDownload, Succeeded, 0, ""),
        (Staging, Succeeded, 0, ""),
        (PreRestart, Succeeded, 0, ""),
        (Restarting, Succeeded, 0, ""),
        (PostRestart, Succeeded, 0, ""),
        (ServingBuild, Succeeded, 0, ""),
    ]);
    steps
}

/// How often the simulated gateway publishes a host's last ping when nothing else does
/// (`TELETRAAN_HEARTBEAT_SECONDS=20`).
const HEARTBEAT_MS: i64 = 20_000;
/// The new host, which the gateway starts on its first deploy itself.
const NEW_HOST: &str = "w5";

/// The two stages' deploys, and the hosts of each.
struct Rollout {
    prod: Environ,
    canary: Environ,
    d1: Deploy,
    k1: Deploy,
}

/// Two stages whose hosts serve a first deploy, then a second deploy of each: prod rolls one
/// host at a time (four hosts), canary both at once. Waiting hosts were last heard of before
/// the rollout, each at its own time (the admission takes the freshest first).
async fn two_rollouts() -> (TestDatabase, Rollout) {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let now = now_ms();
    let prod = stage(s, "web", "prod", "web", 1, now).await;
    let canary = stage(s, "web", "canary", "canary", 2, now).await;
    let b0 = build(s, "web", "a0a0a0a0a0", now).await;
    let b1 = build(s, "web", "b1b1b1b1b1", now).await;
    let deploy = |name: &str, stage: &str, build: &schema::BuildId| {
        envelope(
            name,
            now,
            Command::CreateDeployV1 {
                env_name: id("web"),
                stage_name: id(stage),
                build_id: build.clone(),
                description: None,
            },
        )
    };
    let d0: Deploy = serde_json::from_value(apply(s, &deploy("setup-prod", "prod", &b0.id), now).await).unwrap();
    let k0: Deploy = serde_json::from_value(apply(s, &deploy("setup-canary", "canary", &b0.id), now).await).unwrap();
    let serving = |deploy: &DeployId| record(deploy, DeployStage::ServingBuild, AgentStatus::Succeeded);
    for (i, host) in ["w1", "w2", "w3", "w4"].iter().enumerate() {
        let at = now - 60_000 + 1_000 * i as i64;
        let b = batch(
            vec![facts(host, "web", "1.0", at)],
            vec![crate::support::update(host, &prod.id, serving(&d0.id), 0, at)],
            at,
        );
        s.apply_report_batch(&b).await.unwrap();
    }
    for host in ["c1", "c2"] {
        let at = now - 60_000;
        let b = batch(
            vec![facts(host, "canary", "1.0", at)],
            vec![crate::support::update(host, &canary.id, serving(&k0.id), 0, at)],
            at,
        );
        s.apply_report_batch(&b).await.unwrap();
    }
    s.refresh_stage(&prod.id, now).await.unwrap();
    s.refresh_stage(&canary.id, now).await.unwrap();
    let d1: Deploy = serde_json::from_value(apply(s, &deploy("prod-b1", "prod", &b1.id), now).await).unwrap();
    let k1: Deploy = serde_json::from_value(apply(s, &deploy("canary-b1", "canary", &b1.id), now).await).unwrap();
    (db, Rollout { prod, canary, d1, k1 })
}

fn body(b: ReportBatch) -> Vec<u8> {
    serde_json::to_vec(&ReportMessage::ReportsV1(b)).unwrap()
}

/// Runs both rollouts to their end on `db`, one report batch at a time, as a gateway would
/// publish them: each round (a second of the gateway's clock) every admitted host reports its
/// next step (with the control sequence the gateway learnt from the admission), the new host
/// starts its first deploy on the third round, hosts that restarted report their new agent
/// version, and hosts heard of by nothing else for 20 s have their heartbeat published. Hosts
/// waiting for admission send nothing (their pings are idle, and their next heartbeat is not
/// due within the rollout's minute). Each batch is handled and the stages it touched refreshed
/// before the next is made; a batch made after an admission is marked to come after the batch
/// that triggered it. Returns the batches in the order they were applied.
async fn play_in_order(db: &TestDatabase, r: &Rollout, conduit: &Conduit) -> Vec<Message> {
    let refresher = Arc::new(Refresher::default());
    let handler = ReportHandler::new(db.store.clone(), refresher.clone());
    let mut messages: Vec<Message> = Vec::new();
    let mut trigger: Option<usize> = None;
    let mut progress: BTreeMap<&str, usize> = BTreeMap::new();
    let mut heard: BTreeMap<&str, EpochMs> = BTreeMap::new();
    let start = now_ms();
    let mut finished = None;
    // Each host's record as the database holds it: its deploy and control sequence.
    let client = db.client().await;
    let records = async || -> BTreeMap<String, (String, i64)> {
        let rows = client.query("SELECT host_id, deploy_id, control_seq FROM agents", &[]).await.unwrap();
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect()
    };
    let hosts: [(&str, &Environ, &Deploy, &str); 7] = [
        ("w1", &r.prod, &r.d1, "web"),
        ("w2", &r.prod, &r.d1, "web"),
        ("w3", &r.prod, &r.d1, "web"),
        ("w4", &r.prod, &r.d1, "web"),
        (NEW_HOST, &r.prod, &r.d1, "web"),
        ("c1", &r.canary, &r.k1, "canary"),
        ("c2", &r.canary, &r.k1, "canary"),
    ];
    for round in 0..200 {
        let t = start + 1_000 * round;
        let known = records().await;
        let mut per_stage: BTreeMap<&str, ReportBatch> = BTreeMap::new();
        let mut new_facts: Vec<HostFacts> = Vec::new();
        for &(host, env, deploy, group) in &hosts {
            let (on, seq) = known.get(host).cloned().unwrap_or_default();
            if host == NEW_HOST && round == 2 {
                // A new machine's first ping: the gateway starts its first deploy itself.
                let fresh = AgentRecord::fresh(deploy.id.clone(), true);
                per_stage
                    .entry(env.stage_name.as_str())
                    .or_default()
                    .agents
                    .push(crate::support::update(host, &env.id, fresh, 0, t));
                new_facts.push(facts(host, group, "1.0", t));
                progress.insert(host, 0);
                heard.insert(host, t);
                continue;
            }
            if !progress.contains_key(host) && on == deploy.id.as_str() && host != NEW_HOST {
                progress.insert(host, 0);
            }
            let Some(step) = progress.get_mut(host) else { continue };
            let steps = script(host);
            let batch = per_stage.entry(env.stage_name.as_str()).or_default();
            if let Some(&(stage_now, status, err_no, error)) = steps.get(*step) {
                let mut rec = record(&deploy.id, stage_now, status);
                rec.err_no = if status == AgentStatus::Succeeded { 0 } else { 1 };
                rec.fail_count = err_no;
                rec.first_deploy = host == NEW_HOST && stage_now != DeployStage::ServingBuild;
                let mut u = crate::support::update(host, &env.id, rec, seq, t);
                u.error_message = (!error.is_empty()).then(|| error.to_string());
                batch.agents.push(u);
                if stage_now == DeployStage::Restarting {
                    // The agent restarted with the build: a new agent version.
                    new_facts.push(facts(host, group, "1.1", t));
                }
                *step += 1;
                heard.insert(host, t);
            } else if t - heard.get(host).copied().unwrap_or(t) >= HEARTBEAT_MS {
                batch.heartbeats.push(Heartbeat { host_id: id(host), at: t });
                heard.insert(host, t);
            }
        }
        let done = hosts.iter().all(|(h, ..)| progress.get(h).is_some_and(|&s| s >= script(h).len()));
        let mut batches: Vec<ReportBatch> = per_stage.into_values().filter(|b| !b.is_empty()).collect();
        if !new_facts.is_empty() {
            batches.push(batch(new_facts, Vec::new(), t));
        }
        for mut b in batches {
            b.gateway = "gw-1".into();
            b.sent_at = t;
            messages.push(Message { body: body(b), after: trigger.into_iter().collect() });
            let i = messages.len() - 1;
            let before: i64 = records().await.values().map(|(_, seq)| seq).sum();
            conduit
                .deliver(&handler, &messages, &[vec![i]], async || {
                    refresher.refresh_marked(&db.store).await;
                })
                .await;
            let after: i64 = records().await.values().map(|(_, seq)| seq).sum();
            if after != before {
                trigger = Some(i);
            }
        }
        // Done: a few more rounds, so every host's heartbeat is published after its last step.
        if done {
            finished.get_or_insert(round);
        }
        if finished.is_some_and(|f| round > f + HEARTBEAT_MS / 1_000) {
            break;
        }
    }
    assert!(finished.is_some(), "the rollouts never ended");
    messages
}

/// What reports change, canonical. Left out: records' `start_date` (the worker's clock when it
/// admitted the host, or for a record a report created, the time of the first report stored:
/// a later one when the first came late), `changed` (whether the record's last write changed
/// it, which a redelivered copy by definition does not) and `first_deploy_time` (checked on
/// its own: see the test); hosts' `create_date` (the time of the first facts stored, like a
/// record's `start_date`); deploys' `last_update` and `suc_date` (the worker's clock); the
/// outbox's `id`, `created_at`, `leased_until` and its events' times (a sequence and the
/// worker's clock).
const REPORT_TABLES: &[Table] = &[
    Table {
        name: "agents",
        query: "SELECT * FROM agents",
        drop: &["start_date", "changed", "first_deploy_time"],
        drop_nested: &[],
    },
    Table { name: "agent_errors", query: "SELECT * FROM agent_errors", drop: &[], drop_nested: &[] },
    Table { name: "hosts", query: "SELECT * FROM hosts", drop: &["create_date"], drop_nested: &[] },
    Table { name: "host_groups", query: "SELECT * FROM host_groups", drop: &[], drop_nested: &[] },
    Table { name: "host_tags", query: "SELECT * FROM host_tags", drop: &[], drop_nested: &[] },
    Table { name: "host_heartbeats", query: "SELECT * FROM host_heartbeats", drop: &[], drop_nested: &[] },
    Table { name: "deploys", query: "SELECT * FROM deploys", drop: &["last_update", "suc_date"], drop_nested: &[] },
    Table { name: "environs", query: "SELECT * FROM environs", drop: &[], drop_nested: &[] },
    Table {
        name: "outbox",
        query: "SELECT * FROM outbox",
        drop: &["id", "created_at", "leased_until"],
        drop_nested: &["at", "startDate", "lastUpdateDate", "successDate"],
    },
];

async fn dump_reports(db: &TestDatabase) -> Dump {
    dump(db, REPORT_TABLES, &[]).await
}

/// Each record's logged steps in order: (deploy, step, state, status, error number, by whom).
async fn steps(db: &TestDatabase) -> BTreeMap<(String, String), Vec<String>> {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT host_id, env_id, jsonb_build_array(deploy_id, deploy_stage, state, status, err_no, operator)::text
             FROM agent_steps ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in &rows {
        out.entry((r.get(0), r.get(1))).or_default().push(r.get(2));
    }
    out
}

/// When each first deploy ended, per record.
async fn first_deploy_times(db: &TestDatabase) -> BTreeMap<String, Option<String>> {
    let client = db.client().await;
    let rows = client.query("SELECT host_id, first_deploy_time::text FROM agents", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Whether `part` is `whole` with some entries left out, in the same order.
fn is_subsequence(part: &[String], whole: &[String]) -> bool {
    let mut rest = whole.iter();
    part.iter().all(|p| rest.any(|w| w == p))
}

/// A rollout's report batches delivered twice and out of order, each followed by the stage
/// refresh, end as single in-order delivery does. Reports are ordered by the design, not by
/// the bus: an older report of a record is refused once a newer one is stored (`report_at`),
/// and one computed before an admission is refused after it (`control_seq`). So:
///
/// * records, hosts' facts, groups and tags, heartbeats, hosts' last errors, deploys (state,
///   counts, acceptance), stages (their versions: the same admissions, in the same order) and
///   what the gateways and the board are told (the outbox) are exactly as in order (columns
///   left out: see `REPORT_TABLES`);
/// * each record's log of steps is the in-order log with some steps left out, in the same
///   order and ending the same: a step whose report came after a newer one was never stored,
///   so it is not logged; nothing is logged twice;
/// * a first deploy's end (`first_deploy_time`) is the one in order, or unknown when the
///   host's final report was the first of its reports stored (its earlier steps, which say the
///   deploy was a first one, came after and were refused).
///
/// The order is free but for causes: a batch made after an admission comes after (its first
/// copy after the first copy of) the batch whose refresh made it, since the gateway learns
/// the admission from that refresh; every second copy comes at any later time. Batches a
/// worker handles at once are not covered here: a stage's reports are handled one at a time
/// (its partition), and two batches touching one record at once serialise on its row lock.
/// Hosts waiting for admission are silent during the rollout, so the host an admission picks
/// (the most recently seen first) is the same in both histories: which waiting host goes
/// first is not promised under reordering of heartbeats.
#[tokio::test]
async fn report_batches_delivered_twice_out_of_order_end_as_delivered_once_in_order() {
    let tb = TestBus::new();
    let conduit = Conduit::open(&tb.config, WorkQueue::Reports).await;
    let (base, rollout) = two_rollouts().await;
    let once = base.fork().await;
    let messages = play_in_order(&once, &rollout, &conduit).await;
    let expected = dump_reports(&once).await;
    let expected_steps = steps(&once).await;
    let expected_times = first_deploy_times(&once).await;
    // Not vacuous: both rollouts ended, one host at a time on prod, with failures and facts.
    let d1 = once.store.deploy(&rollout.d1.id).await.unwrap();
    assert_eq!((d1.state.as_str(), d1.success_total, d1.total), ("SUCCEEDING", 5, 5), "{d1:?}");
    let k1 = once.store.deploy(&rollout.k1.id).await.unwrap();
    assert_eq!((k1.state.as_str(), k1.success_total), ("SUCCEEDING", 2), "{k1:?}");
    let triggers: std::collections::BTreeSet<usize> = messages.iter().flat_map(|m| m.after.clone()).collect();
    assert_eq!(triggers.len(), 3, "three admissions after the deploy's first");
    assert_eq!(expected.0["agent_errors"].len(), 1, "{:?}", expected.0["agent_errors"]);
    assert!(expected.0["hosts"].iter().filter(|h| h.contains(r#""agent_version":"1.1""#)).count() == 7);
    assert!(expected_times[NEW_HOST].is_some(), "the new host's first deploy ended");

    for seed in seeds() {
        let twice = base.fork().await;
        let refresher = Arc::new(Refresher::default());
        let handler = ReportHandler::new(twice.store.clone(), refresher.clone());
        let schedule = twice_shuffled(&messages, seed, 0);
        conduit
            .deliver(&handler, &messages, &schedule, async || {
                refresher.refresh_marked(&twice.store).await;
            })
            .await;
        assert_same(&expected, &dump_reports(&twice).await, &format!("reports, seed {seed}"));
        let got = steps(&twice).await;
        assert_eq!(got.keys().collect::<Vec<_>>(), expected_steps.keys().collect::<Vec<_>>(), "seed {seed}");
        for (record, logged) in &got {
            let all = &expected_steps[record];
            assert!(is_subsequence(logged, all), "seed {seed}: steps of {record:?}: {logged:#?}\nin order: {all:#?}");
            assert_eq!(logged.last(), all.last(), "seed {seed}: the last step of {record:?}");
            assert!(logged.windows(2).all(|w| w[0] != w[1]), "seed {seed}: a step logged twice: {logged:#?}");
        }
        for (host, time) in first_deploy_times(&twice).await {
            assert!(time.is_none() || time == expected_times[&host], "seed {seed}: {host}: {time:?}");
        }
    }
}
