//! The host janitor's pass (`workers::jobs::host_janitor::sweep`) on a real Postgres: silence
//! is measured from the freshest heartbeat stored, so an outage of the whole report path marks
//! nobody; and hosts lost mid-deploy free at most a cap of slots, so a build that makes its
//! hosts go silent stops spreading.

use std::time::Duration;

use schema::bus::{AgentUpdate, Command, CommandEnvelope, CommandOutcome, Heartbeat, ReportBatch};
use schema::model::{ArtifactPolicy, Build, BuildInput, Deploy, Environ, EnvironInput};
use schema::rules::goal::AgentRecord;
use schema::{AgentState, AgentStatus, DeployStage, EnvId, EnvName, HostId, HostName, StageName};
use store::Store;
use store::testing::TestDatabase;
use workers::jobs::host_janitor::{JanitorConfig, sweep};

const NOW: i64 = 1_800_000_000_000;
const SEC: i64 = 1000;

fn config() -> JanitorConfig {
    JanitorConfig { min_stale: Duration::from_secs(150), max_stale: Duration::from_secs(600), batch: 100 }
}

async fn stage(s: &Store) -> Environ {
    let input: EnvironInput =
        serde_json::from_value(serde_json::json!({"envName": "web", "stageName": "prod"})).unwrap();
    let e = Environ::create(EnvId::generate(), input, "alice", NOW).unwrap();
    s.create_stage(&e).await.unwrap();
    e
}

async fn deploy(s: &Store, id: &str, commit: &str) -> Deploy {
    let input: BuildInput = serde_json::from_value(serde_json::json!({
        "name": "web", "artifactUrl": "https://a/x.tgz", "repo": "org/web", "branch": "main", "commit": commit
    }))
    .unwrap();
    let b = Build::publish(input, &ArtifactPolicy::permissive(), "ci", NOW).unwrap();
    s.insert_build(&b).await.unwrap();
    let cmd = CommandEnvelope {
        request_id: None,
        id: id.into(),
        attempt: 1,
        issued_at: NOW,
        operator: "alice".into(),
        command: Command::CreateDeployV1 {
            env_name: EnvName::parse("web").unwrap(),
            stage_name: StageName::parse("prod").unwrap(),
            build_id: b.id,
            description: None,
        },
    };
    match s.apply_command(&cmd, NOW).await.unwrap() {
        CommandOutcome::Ok { result } => serde_json::from_value(result).unwrap(),
        CommandOutcome::Err { error } => panic!("{error}"),
    }
}

/// Hosts serving `record`, heard of at `at`.
async fn report(s: &Store, e: &Environ, hosts: &[String], record: &AgentRecord, at: i64) {
    let batch = ReportBatch {
        gateway: "t".into(),
        sent_at: at,
        agents: hosts
            .iter()
            .map(|h| AgentUpdate {
                host_id: HostId::parse(h.as_str()).unwrap(),
                host_name: HostName::parse(h.as_str()).unwrap(),
                env_id: e.id.clone(),
                at,
                record: Some(record.clone()),
                control_seq: 0,
                error_message: None,
            })
            .collect(),
        heartbeats: hosts.iter().map(|h| Heartbeat { host_id: HostId::parse(h.as_str()).unwrap(), at }).collect(),
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();
}

fn serving(deploy: &Deploy) -> AgentRecord {
    AgentRecord {
        stage: DeployStage::ServingBuild,
        status: AgentStatus::Succeeded,
        ..AgentRecord::fresh(deploy.id.clone(), false)
    }
}

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("h{i:02}")).collect()
}

#[tokio::test]
async fn when_no_heartbeat_arrives_at_all_nobody_is_marked() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s).await;
    let d1 = deploy(s, "c1", "1111111aaa").await;
    report(s, &e, &hosts(3), &serving(&d1), NOW).await;
    // Ten minutes later, with no heartbeat stored since (the report path was down): the hosts
    // are as fresh as anything Postgres knows.
    let later = NOW + 600 * SEC;
    let pass = sweep(s, &config(), later, || false).await.unwrap();
    assert_eq!(pass.unreachable, 0, "{pass:?}");
    // One host's heartbeat arrives: the path works again, and the others are silent.
    s.record_heartbeats(&[Heartbeat { host_id: HostId::parse("h01").unwrap(), at: later }]).await.unwrap();
    let pass = sweep(s, &config(), later, || false).await.unwrap();
    assert_eq!(pass.unreachable, 2, "{pass:?}");
}

#[tokio::test]
async fn hosts_lost_mid_deploy_free_at_most_a_cap_of_slots() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s).await;
    let fleet = hosts(6);
    let d1 = deploy(s, "c1", "1111111aaa").await;
    report(s, &e, &fleet, &serving(&d1), NOW).await;
    let d2 = deploy(s, "c2", "2222222aaa").await;
    let on_d2 = || async {
        s.agents_of_stage(&e.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.deploy_id == d2.id)
            .map(|a| (a.host_id, a.state))
            .collect::<Vec<(HostId, AgentState)>>()
    };
    // Every host the build touches goes silent; the others keep pinging.
    let mut t = NOW;
    let mut lost = Vec::new();
    for round in 1..=3 {
        let started: Vec<HostId> =
            on_d2().await.into_iter().filter(|(_, st)| *st == AgentState::Normal).map(|(h, _)| h).collect();
        assert_eq!(started.len(), usize::from(round <= 2), "round {round}: {:?}", on_d2().await);
        lost.extend(started);
        t += 200 * SEC;
        let alive: Vec<String> =
            fleet.iter().filter(|h| !lost.iter().any(|l| l.as_str() == h.as_str())).cloned().collect();
        let beats: Vec<Heartbeat> =
            alive.iter().map(|h| Heartbeat { host_id: HostId::parse(h.as_str()).unwrap(), at: t }).collect();
        s.record_heartbeats(&beats).await.unwrap();
        sweep(s, &config(), t, || false).await.unwrap();
    }
    // The cap is 1: the first lost host freed its slot, the second took it back.
    let states = on_d2().await;
    assert_eq!(states.len(), 2, "the build reached two hosts and stopped: {states:?}");
    assert!(states.iter().all(|(_, st)| *st == AgentState::Unreachable));
}
