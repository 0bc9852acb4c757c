//! The host janitor on real services (`teletraan up`, Postgres, RabbitMQ) with a simulated
//! fleet and short thresholds (UNREACHABLE after 3 s of silence, forgotten after 8 s): with
//! `maxParallel: 1`, the admitted host stops pinging in the middle of its RESTARTING step; it
//! turns UNREACHABLE after the first threshold, the rollout goes on to the other hosts one at
//! a time, the host is forgotten after the second threshold (and the deploy succeeds without
//! it), and when it pings again it finishes its deploy like any other host.

mod support;

use std::time::{Duration, Instant};

use schema::model::Agent;
use schema::{AgentState, DeployStage};
use serde_json::json;
use support::{AGENT, DEADLINE, Server, wait_for};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::{EventKind, Fleet, SimConfig, numbered_hosts};

const MIN_STALE: Duration = Duration::from_secs(3);

fn agent<'a>(agents: &'a [Agent], host: &str) -> Option<&'a Agent> {
    agents.iter().find(|a| a.host_id.as_str() == host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_goes_silent_mid_rollout_is_passed_over_then_forgotten_then_welcomed_back() {
    let server = Server::start_with(&[
        ("TELETRAAN_MIN_STALE_HOST_SECONDS", "3"),
        ("TELETRAAN_MAX_STALE_HOST_SECONDS", "8"),
        ("TELETRAAN_HEARTBEAT_SECONDS", "1"),
        ("TELETRAAN_JOBS", "host-janitor=1s,deploy-state=1s"),
    ])
    .await;
    let api = &server.api;
    api.stage("web", "prod", "g", json!({"maxParallel": 1})).await;
    let config = SimConfig {
        gateway: server.gateway.clone(),
        token: AGENT.into(),
        hosts: numbered_hosts("h", 4, &["g".to_string()], &[]),
        ping_interval: Duration::from_millis(200),
        jitter: 0.2,
        ..SimConfig::default()
    }
    .stage_duration(DeployStage::Restarting, Duration::from_millis(1500));
    let fleet = Fleet::start(config).expect("a fleet");
    let b1 =
        api.publish("web", "https://artifacts.example.com/web-1.tgz", "1111111abc", Some(UNDOWNLOADED_SHA256)).await;
    let b2 =
        api.publish("web", "https://artifacts.example.com/web-2.tgz", "2222222abc", Some(UNDOWNLOADED_SHA256)).await;
    let serving = |f: &Fleet, b: &str, host: &str| {
        f.host(host).is_some_and(|h| h.envs.iter().any(|e| e.serving.as_deref() == Some(b)))
    };
    let hosts = ["h-01", "h-02", "h-03", "h-04"];
    let d1 = api.deploy("web", "prod", &b1).await;
    assert!(fleet.wait_until(|f| hosts.iter().all(|h| serving(f, b1.id.as_str(), h)), DEADLINE).await);
    api.wait_state(d1.id.as_str(), "SUCCEEDING").await;

    // The first host admitted to b2 goes silent while it restarts.
    let d2 = api.deploy("web", "prod", &b2).await;
    let mut silent = None;
    let restarting = |f: &Fleet| {
        hosts.into_iter().find(|h| {
            f.host(h).is_some_and(|s| {
                s.envs.iter().any(|e| e.deploy_id == d2.id.as_str() && e.deploy_stage == DeployStage::Restarting)
            })
        })
    };
    assert!(
        fleet
            .wait_until(
                |f| {
                    silent = restarting(f);
                    silent.is_some()
                },
                DEADLINE
            )
            .await
    );
    let silent = silent.unwrap();
    assert!(fleet.silence(silent));
    let silenced_at = Instant::now();

    wait_for("the silent host to be UNREACHABLE", || async {
        agent(&api.agents("web", "prod").await, silent).is_some_and(|a| a.state == AgentState::Unreachable)
    })
    .await;
    assert!(
        silenced_at.elapsed() >= MIN_STALE - Duration::from_millis(500),
        "marked after {:?}, before the threshold",
        silenced_at.elapsed()
    );
    let others: Vec<&str> = hosts.into_iter().filter(|h| *h != silent).collect();
    assert!(
        fleet.wait_until(|f| others.iter().all(|h| serving(f, b2.id.as_str(), h)), DEADLINE).await,
        "the rollout went on without it: {:?}",
        fleet.hosts()
    );
    wait_for("the server to count the three hosts done", || async {
        api.deploy_by_id(d2.id.as_str()).await.success_total == 3
    })
    .await;
    let d = api.deploy_by_id(d2.id.as_str()).await;
    if d.total == 4 {
        // (Unless the second threshold has passed meanwhile on a slow machine.)
        assert_eq!(d.state.as_str(), "RUNNING", "the silent host counts as not done: {d:?}");
    }

    // Past the second threshold it is forgotten, and the deploy succeeds without it.
    wait_for("the silent host to be forgotten", || async { agent(&api.agents("web", "prod").await, silent).is_none() })
        .await;
    let d = api.wait_state(d2.id.as_str(), "SUCCEEDING").await;
    assert_eq!((d.success_total, d.total), (3, 3));

    // Among the hosts that kept pinging, one at a time was out of service.
    let timeline = fleet.timeline();
    let mut intervals: Vec<(Duration, Duration)> = Vec::new();
    for h in &others {
        let of = |stage: DeployStage| {
            timeline
                .iter()
                .find(|e| {
                    &*e.host == *h
                        && e.kind == EventKind::Goal
                        && e.deploy.as_ref() == d2.id.as_str()
                        && e.stage == stage
                })
                .map(|e| e.at)
        };
        intervals.push((of(DeployStage::PreDownload).unwrap(), of(DeployStage::ServingBuild).unwrap()));
    }
    intervals.sort();
    for w in intervals.windows(2) {
        assert!(w[1].0 >= w[0].1, "two live hosts out of service at once: {intervals:?}");
    }

    // Back again, it is a host like any other: it finishes its deploy and is counted.
    assert!(fleet.revive(silent));
    assert!(fleet.wait_until(|f| serving(f, b2.id.as_str(), silent), DEADLINE).await, "{:?}", fleet.host(silent));
    wait_for("the host to be back in the stage", || async {
        agent(&api.agents("web", "prod").await, silent).is_some_and(|a| {
            a.state == AgentState::Normal && a.deploy_stage == DeployStage::ServingBuild && a.deploy_id == d2.id
        })
    })
    .await;
    // Its identity is known again too (the gateway was told it had been forgotten).
    let client = server.db.client().await;
    wait_for("the host's identity to be stored again", || async {
        client.query_one("SELECT count(*) FROM hosts WHERE host_id = $1", &[&silent]).await.unwrap().get::<_, i64>(0)
            == 1
    })
    .await;
    let d = api.wait_state(d2.id.as_str(), "SUCCEEDING").await;
    wait_for("the deploy to count it", || async { api.deploy_by_id(d2.id.as_str()).await.success_total == 4 }).await;
    assert_eq!(d.state.as_str(), "SUCCEEDING");
    fleet.stop().await;
    server.stop().await;
}

/// With the janitor off, a rollout whose only admitted host went silent gets no report at
/// all: the deploy-state job still moves it to FAILING once `stuckThreshold` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_without_progress_turns_failing_though_no_report_arrives() {
    let server = Server::start_with(&[("TELETRAAN_JOBS", "host-janitor=off,deploy-state=1s")]).await;
    let api = &server.api;
    api.stage("web", "prod", "g", json!({"maxParallel": 1, "stuckThreshold": 2})).await;
    let config = SimConfig {
        gateway: server.gateway.clone(),
        token: AGENT.into(),
        hosts: numbered_hosts("h", 2, &["g".to_string()], &[]),
        ping_interval: Duration::from_millis(200),
        ..SimConfig::default()
    }
    .stage_duration(DeployStage::Restarting, Duration::from_millis(800));
    let fleet = Fleet::start(config).expect("a fleet");
    let b1 =
        api.publish("web", "https://artifacts.example.com/web-1.tgz", "1111111abc", Some(UNDOWNLOADED_SHA256)).await;
    let b2 =
        api.publish("web", "https://artifacts.example.com/web-2.tgz", "2222222abc", Some(UNDOWNLOADED_SHA256)).await;
    let d1 = api.deploy("web", "prod", &b1).await;
    api.wait_state(d1.id.as_str(), "SUCCEEDING").await;
    let d2 = api.deploy("web", "prod", &b2).await;
    let mut silent = None;
    assert!(
        fleet
            .wait_until(
                |f| {
                    silent = ["h-01", "h-02"].into_iter().find(|h| {
                        f.host(h).is_some_and(|s| {
                            s.envs
                                .iter()
                                .any(|e| e.deploy_id == d2.id.as_str() && e.deploy_stage == DeployStage::Restarting)
                        })
                    });
                    silent.is_some()
                },
                DEADLINE
            )
            .await
    );
    assert!(fleet.silence(silent.unwrap()));
    let failing = api.wait_state(d2.id.as_str(), "FAILING").await;
    assert_eq!(failing.success_total, 0);
    fleet.stop().await;
    server.stop().await;
}
