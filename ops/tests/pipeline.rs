//! A three-stage pipeline on real services (`teletraan up`, Postgres, RabbitMQ) with a
//! simulated fleet per stage: beta takes new builds, canary takes beta's accepted deploys, prod
//! takes canary's, all on AUTO. One publish ends with every stage serving the build, deployed
//! by the automation; a build marked bad while it rolls out on beta goes no further.

mod support;

use std::time::Duration;

use schema::DeployStage;
use schema::model::{AUTO_PROMOTER, Build, Deploy};
use serde_json::json;
use support::{AGENT, Api, DEADLINE, Server, wait_for};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::{Fleet, SimConfig, numbered_hosts};

const STAGES: [&str; 3] = ["beta", "canary", "prod"];

async fn current(api: &Api, stage: &str) -> Option<Deploy> {
    let resp = api
        .http
        .get(format!("{}/v1/envs/web/{stage}/deploys/current", api.base))
        .header("Authorization", format!("token {}", support::ADMIN))
        .send()
        .await
        .expect("API reachable");
    if resp.status() == 404 {
        return None;
    }
    Some(resp.json().await.expect("a deploy"))
}

fn serving(fleet: &Fleet, stage: &str, build: &Build) -> bool {
    let prefix = format!("{stage}-");
    let hosts: Vec<_> = fleet.hosts().into_iter().filter(|h| h.id.starts_with(&prefix)).collect();
    !hosts.is_empty() && hosts.iter().all(|h| h.envs.iter().any(|e| e.serving.as_deref() == Some(build.id.as_str())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_flows_through_every_stage_and_a_bad_build_stops_where_it_is() {
    let server = Server::start_with(&[("TELETRAAN_JOBS", "auto-promote=1s,deploy-state=1s")]).await;
    let api = &server.api;
    for stage in STAGES {
        api.stage("web", stage, stage, json!({"maxParallel": 1, "branch": "main"})).await;
    }
    let pipeline = [("beta", "BUILD"), ("canary", "beta"), ("prod", "canary")];
    for (stage, pred) in pipeline {
        api.call(
            reqwest::Method::PUT,
            &format!("/v1/envs/web/{stage}/promotes"),
            Some(json!({"type": "AUTO", "predStage": pred})),
        )
        .await;
    }
    let mut hosts = Vec::new();
    for stage in STAGES {
        hosts.extend(numbered_hosts(stage, 2, &[stage.to_string()], &[]));
    }
    let config = SimConfig {
        gateway: server.gateway.clone(),
        token: AGENT.into(),
        hosts,
        ping_interval: Duration::from_millis(200),
        jitter: 0.2,
        ..SimConfig::default()
    }
    .stage_duration(DeployStage::Restarting, Duration::from_millis(200));
    let fleet = Fleet::start(config).expect("a fleet");

    // One publish, and nothing else: every stage ends up serving it, deployed by the automation.
    let b1 =
        api.publish("web", "https://artifacts.example.com/web-1.tgz", "1111111abc", Some(UNDOWNLOADED_SHA256)).await;
    assert!(fleet.wait_until(|f| STAGES.iter().all(|s| serving(f, s, &b1)), DEADLINE).await, "{:?}", fleet.hosts());
    let mut previous = None;
    for stage in STAGES {
        let d = current(api, stage).await.expect("a deploy");
        assert_eq!((d.build_id.as_str(), d.operator.as_str()), (b1.id.as_str(), AUTO_PROMOTER), "{stage}");
        assert_eq!(d.from_deploy_id, previous, "{stage} was promoted from the stage before it");
        previous = Some(d.id.clone());
        api.wait_state(d.id.as_str(), "SUCCEEDING").await;
    }

    // The next build reaches beta and is marked bad while it rolls out there.
    let b2 =
        api.publish("web", "https://artifacts.example.com/web-2.tgz", "2222222abc", Some(UNDOWNLOADED_SHA256)).await;
    wait_for("beta to take b2", || async { current(api, "beta").await.is_some_and(|d| d.build_id == b2.id) }).await;
    api.call(
        reqwest::Method::POST,
        "/v1/tags",
        Some(json!({"value": "BAD_BUILD", "targetType": "BUILD", "targetId": b2.id.as_str(), "comments": "breaks login"})),
    )
    .await;
    assert!(fleet.wait_until(|f| serving(f, "beta", &b2), DEADLINE).await, "{:?}", fleet.hosts());
    let beta = api.wait_state(current(api, "beta").await.unwrap().id.as_str(), "SUCCEEDING").await;
    assert_eq!(beta.acceptance_status.as_str(), "ACCEPTED", "canary could take it, were it not bad");
    // Several more rounds of the auto-promoter (each once a second) leave canary and prod alone.
    let runs = || async { server.db.store.job_runs("auto-promote", 1000).await.unwrap().len() };
    let before = runs().await;
    wait_for("three more auto-promote rounds", || async { runs().await >= before + 3 }).await;
    for stage in ["canary", "prod"] {
        assert_eq!(current(api, stage).await.unwrap().build_id, b1.id, "{stage} stays on b1");
        assert!(serving(&fleet, stage, &b1));
    }
    fleet.stop().await;
    server.stop().await;
}
