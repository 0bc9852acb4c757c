//! The rollout engine on real services (`teletraan up`, Postgres, RabbitMQ) with fleets of
//! simulated agents speaking the real protocol: rollback, pause and resume, a schedule's
//! sessions, a zone-by-zone constraint. The cap is checked from the agents' side.

mod support;

use std::time::Duration;

use schema::DeployStage;
use schema::model::Build;
use serde_json::json;
use support::{AGENT, Api, DEADLINE, Server};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::{EventKind, Fleet, SimConfig, numbered_hosts};

/// A stage `web/prod` on group `g` and a fleet of `n` simulated hosts (tag `zone` dealt over
/// `zones`), quick pings, a short RESTARTING so hosts stay out of service a moment.
async fn setup(server: &Server, n: usize, zones: &[&str], settings: serde_json::Value) -> Fleet {
    server.api.stage("web", "prod", "g", settings).await;
    let tags = if zones.is_empty() {
        vec![]
    } else {
        vec![("zone".to_string(), zones.iter().map(|z| z.to_string()).collect())]
    };
    let config = SimConfig {
        gateway: server.gateway.clone(),
        token: AGENT.into(),
        hosts: numbered_hosts("h", n, &["g".to_string()], &tags),
        ping_interval: Duration::from_millis(250),
        jitter: 0.2,
        ..SimConfig::default()
    }
    .stage_duration(DeployStage::Restarting, Duration::from_millis(150));
    Fleet::start(config).expect("a fleet")
}

async fn publish(api: &Api, n: u32) -> Build {
    api.publish(
        "web",
        &format!("https://artifacts.example.com/web-{n}.tar.gz"),
        &format!("{n}{n}{n}{n}{n}{n}{n}abc"),
        Some(UNDOWNLOADED_SHA256),
    )
    .await
}

fn serving(fleet: &Fleet, build: &Build) -> usize {
    fleet.hosts().iter().filter(|h| h.envs.iter().any(|e| e.serving.as_deref() == Some(build.id.as_str()))).count()
}

/// Deploys `build` to every host of a fresh fleet and waits until the server agrees.
async fn first_deploy(server: &Server, fleet: &Fleet, build: &Build, n: usize) -> schema::model::Deploy {
    let d = server.api.deploy("web", "prod", build).await;
    assert!(fleet.wait_until(|f| serving(f, build) == n, DEADLINE).await, "first deploy: {:?}", fleet.hosts());
    server.api.wait_state(d.id.as_str(), "SUCCEEDING").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_leaves_hosts_on_its_target_untouched() {
    let server = Server::start().await;
    let api = &server.api;
    let fleet = setup(&server, 6, &[], json!({"maxParallel": 1})).await;
    let (good, bad) = (publish(api, 1).await, publish(api, 2).await);
    let d1 = first_deploy(&server, &fleet, &good, 6).await;

    // The bad build reaches two hosts (one at a time), then the stage rolls back.
    let d2 = api.deploy("web", "prod", &bad).await;
    assert!(fleet.wait_until(|f| serving(f, &bad) >= 2, DEADLINE).await, "{:?}", fleet.rollout(d2.id.as_str()));
    let rollback = api.action("web", "prod", "ROLLBACK", "").await;
    assert_eq!(rollback["alias"], d1.id.as_str(), "the default target is the last deploy that succeeded");
    let rb = rollback["id"].as_str().unwrap().to_string();
    assert!(fleet.wait_until(|f| serving(f, &good) == 6, DEADLINE).await, "{:?}", fleet.hosts());
    api.wait_state(&rb, "SUCCEEDING").await;

    // Only the hosts that had left the good build went through the rollback; the others never
    // got a goal of it, and the server counts them done all the same.
    let report = fleet.rollout(&rb).expect("the hosts on the bad build went through the rollback");
    let moved = fleet
        .timeline()
        .iter()
        .filter(|e| {
            e.kind == EventKind::Goal && e.deploy.as_ref() == d2.id.as_str() && e.stage == DeployStage::PreDownload
        })
        .map(|e| e.host.to_string())
        .collect::<std::collections::BTreeSet<_>>();
    assert!(moved.len() >= 2 && moved.len() < 6, "{moved:?}");
    assert!(report.hosts_taken_out as usize <= moved.len(), "{report:?} vs {moved:?}");
    let rolled: std::collections::BTreeSet<String> = fleet
        .timeline()
        .iter()
        .filter(|e| {
            e.kind == EventKind::Goal && e.stage == DeployStage::PreDownload && e.deploy.as_ref() == rb.as_str()
        })
        .map(|e| e.host.to_string())
        .collect();
    assert!(rolled.is_subset(&moved), "hosts still on the target were redeployed: {rolled:?} vs {moved:?}");
    assert!(report.max_out <= 1, "{report:?}");
    let d = api.deploy_by_id(&rb).await;
    assert_eq!((d.success_total, d.total), (6, 6));
    fleet.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_admission_and_resume_continues() {
    let server = Server::start().await;
    let api = &server.api;
    let fleet = setup(&server, 5, &[], json!({"maxParallel": 1})).await;
    let (b1, b2) = (publish(api, 1).await, publish(api, 2).await);
    first_deploy(&server, &fleet, &b1, 5).await;

    api.action("web", "prod", "PAUSE", "").await;
    let d2 = api.deploy("web", "prod", &b2).await;
    // While paused, every host pings several times and none starts the new deploy.
    let pings = fleet.counters().pings;
    assert!(fleet.wait_until(|f| f.counters().pings >= pings + 5 * 6, DEADLINE).await);
    assert_eq!(fleet.rollout(d2.id.as_str()).map(|r| r.hosts_started).unwrap_or(0), 0, "paused: nobody starts");
    assert_eq!(api.deploy_by_id(d2.id.as_str()).await.state.as_str(), "RUNNING");

    api.action("web", "prod", "RESUME", "").await;
    assert!(fleet.wait_until(|f| serving(f, &b2) == 5, DEADLINE).await, "{:?}", fleet.rollout(d2.id.as_str()));
    let r = fleet.rollout(d2.id.as_str()).unwrap();
    assert_eq!((r.hosts_taken_out, r.max_out), (5, 1), "{r:?}");
    api.wait_state(d2.id.as_str(), "SUCCEEDING").await;
    fleet.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentage_caps_hold_on_twenty_hosts() {
    let server = Server::start().await;
    let api = &server.api;
    let fleet = setup(&server, 20, &[], json!({"maxParallelPct": 25})).await;
    let (b1, b2) = (publish(api, 1).await, publish(api, 2).await);
    first_deploy(&server, &fleet, &b1, 20).await;
    let d2 = api.deploy("web", "prod", &b2).await;
    assert!(fleet.wait_until(|f| serving(f, &b2) == 20, DEADLINE).await);
    let r = fleet.rollout(d2.id.as_str()).unwrap();
    assert!(r.max_out <= 5, "25 % of 20 hosts is 5; the agents saw {}", r.max_out);
    assert!(r.max_out >= 2, "the hosts went in parallel: {r:?}");
    assert_eq!((r.hosts_taken_out, r.hosts_taken_out_as_first), (20, 0), "{r:?}");
    fleet.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_session_gates_the_rollout_until_it_is_overridden() {
    let server = Server::start().await;
    let api = &server.api;
    let fleet = setup(&server, 8, &[], json!({"maxParallelPct": 100})).await;
    let (b1, b2) = (publish(api, 1).await, publish(api, 2).await);
    first_deploy(&server, &fleet, &b1, 8).await;
    let schedule = json!({"totalSessions": 2, "hostNumbers": "2,50%", "cooldownTimes": "-1,0"});
    api.call(reqwest::Method::PUT, "/v1/schedules/web/prod/schedules", Some(schedule)).await;

    let d2 = api.deploy("web", "prod", &b2).await;
    // Session 1 lets two hosts in; then the schedule waits for an operator.
    assert!(fleet.wait_until(|f| serving(f, &b2) == 2, DEADLINE).await);
    support::wait_for("the session to end", || async {
        let s: serde_json::Value =
            api.call(reqwest::Method::GET, "/v1/schedules/web/prod/current", None).await.json().await.unwrap();
        s["state"] == "COOLING_DOWN"
    })
    .await;
    let pings = fleet.counters().pings;
    assert!(fleet.wait_until(|f| f.counters().pings >= pings + 8 * 6, DEADLINE).await);
    assert_eq!(fleet.rollout(d2.id.as_str()).unwrap().hosts_started, 2, "nobody else starts while cooling down");

    api.call(reqwest::Method::PUT, "/v1/schedules/web/prod/override?sessionNumber=1", None).await;
    assert!(fleet.wait_until(|f| serving(f, &b2) == 8, DEADLINE).await, "{:?}", fleet.rollout(d2.id.as_str()));
    let s: serde_json::Value =
        api.call(reqwest::Method::GET, "/v1/schedules/web/prod/current", None).await.json().await.unwrap();
    assert_eq!(s["state"], "FINAL");
    fleet.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_constraint_rolls_one_zone_at_a_time() {
    let server = Server::start().await;
    let api = &server.api;
    let fleet = setup(&server, 9, &["us-a", "us-b", "us-c"], json!({"maxParallelPct": 100})).await;
    let (b1, b2) = (publish(api, 1).await, publish(api, 2).await);
    first_deploy(&server, &fleet, &b1, 9).await;
    let constraint = json!({"constraintKey": "zone", "maxParallel": 2, "constraintType": "GROUP_BY_GROUP"});
    api.call(reqwest::Method::POST, "/v1/envs/web/prod/deploy_constraint", Some(constraint)).await;

    let d2 = api.deploy("web", "prod", &b2).await;
    assert!(fleet.wait_until(|f| serving(f, &b2) == 9, DEADLINE).await, "{:?}", fleet.rollout(d2.id.as_str()));
    let r = fleet.rollout(d2.id.as_str()).unwrap();
    assert_eq!(
        r.tag_order,
        vec![("zone".to_string(), vec!["us-a".to_string(), "us-b".into(), "us-c".into()])],
        "{r:?}"
    );
    assert!(r.tags.iter().all(|t| t.max_out <= 2), "at most two hosts per zone at once: {:?}", r.tags);
    assert!(r.max_out <= 2, "one zone at a time, two hosts each: {r:?}");
    // Zone by zone: a zone starts only once the previous one is done.
    let starts: Vec<(String, Duration)> = r.tags.iter().map(|t| (t.value.clone(), t.first_start.unwrap())).collect();
    let done_of = |zone: &str| {
        fleet
            .timeline()
            .iter()
            .filter(|e| {
                e.kind == EventKind::Goal && e.deploy.as_ref() == d2.id.as_str() && e.stage == DeployStage::ServingBuild
            })
            .filter(|e| fleet.host(&e.host).is_some_and(|_| host_zone(&e.host) == zone))
            .map(|e| e.at)
            .max()
            .unwrap()
    };
    for pair in [("us-a", "us-b"), ("us-b", "us-c")] {
        let next_start = starts.iter().find(|(z, _)| z == pair.1).unwrap().1;
        assert!(done_of(pair.0) <= next_start, "{} started before {} was done", pair.1, pair.0);
    }
    fleet.stop().await;
    server.stop().await;
}

/// The zone `numbered_hosts` gives host `h-N` (values dealt round-robin from 1).
fn host_zone(host: &str) -> &'static str {
    let n: usize = host.trim_start_matches("h-").parse().unwrap_or(1);
    ["us-a", "us-b", "us-c"][(n - 1) % 3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_host_runs_stopping_then_stopped_and_frees_nothing_else() {
    let server = Server::start().await;
    let api = &server.api;
    let fleet = setup(&server, 3, &[], json!({"maxParallel": 1})).await;
    let b1 = publish(api, 1).await;
    first_deploy(&server, &fleet, &b1, 3).await;
    let stopped = fleet.hosts().into_iter().next().unwrap();
    api.call(reqwest::Method::DELETE, "/v1/envs/web/prod/hosts?replaceHost=false", Some(json!([stopped.id]))).await;
    let done =
        |f: &Fleet| f.host(&stopped.id).is_some_and(|h| h.envs.iter().any(|e| e.deploy_stage == DeployStage::Stopped));
    assert!(fleet.wait_until(done, DEADLINE).await, "{:?}", fleet.host(&stopped.id));
    let steps: Vec<DeployStage> = fleet
        .timeline()
        .iter()
        .filter(|e| e.kind == EventKind::Goal && e.host.as_ref() == stopped.name.as_str())
        .map(|e| e.stage)
        .filter(|s| matches!(s, DeployStage::Stopping | DeployStage::Stopped))
        .collect();
    assert_eq!(steps, [DeployStage::Stopping, DeployStage::Stopped]);
    support::wait_for("the server to record the stop", || async {
        let agents = api.agents("web", "prod").await;
        agents.iter().any(|a| {
            a.host_id.as_str() == stopped.id && a.state.as_str() == "STOP" && a.deploy_stage == DeployStage::Stopped
        })
    })
    .await;
    // The other hosts keep serving.
    let others = fleet.hosts().into_iter().filter(|h| h.id != stopped.id);
    assert!(others.into_iter().all(|h| h.envs.iter().all(|e| e.serving.as_deref() == Some(b1.id.as_str()))));
    fleet.stop().await;
    server.stop().await;
}
