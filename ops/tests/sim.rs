//! The fleet simulator against a scripted fake gateway (the protocol, failures, DELETE and the
//! CLI) and against the real server (`teletraan up`): 20 simulated hosts take a first deploy,
//! then a second one rolls within `maxParallelPct: 10` as the agents themselves see it, and a
//! host told to fail RESTARTING ends PAUSED_BY_SYSTEM on the server.

mod support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use schema::model::Build;
use schema::ping::{PingRequest, PingResponse};
use schema::{AgentState, AgentStatus, DeployStage};
use serde_json::json;
use support::{AGENT, DEADLINE, Server};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::{Fleet, SimConfig, numbered_hosts};
use tokio::process::Command;

// ---------------------------------------------------------------------------------------------
// A fake gateway: Teletraan's stage sequence for one deploy `d1` of env `web`, from the reports.

#[derive(Default)]
struct Fake {
    /// Answer this many first pings with 503.
    refuse: usize,
    /// Answer DELETE to hosts that serve the build.
    delete: bool,
    requests: Vec<(Option<String>, PingRequest)>,
}

fn goal(stage: DeployStage) -> PingResponse {
    let mut g = json!({"deployId": "d1", "deployType": "REGULAR", "envId": "e1", "envName": "web",
        "stageName": "prod", "stageType": "PRODUCTION", "deployStage": stage.as_str(), "firstDeploy": true,
        "isDocker": false, "deployAlias": "alias-1"});
    if stage == DeployStage::Downloading {
        g["build"] = json!({"id": "b1", "name": "web", "artifactUrl": "https://x.example.com/web.tgz",
            "type": "GitHub", "repo": "o/web", "branch": "main", "commit": "abcdef0123", "commitShort": "abcdef0",
            "commitDate": 1, "publishInfo": null, "publisher": "ci", "publishDate": 1});
    }
    let op = if stage == DeployStage::Unknown { "DELETE" } else { "DEPLOY" };
    serde_json::from_value(json!({"opCode": op, "deployGoal": g})).unwrap()
}

async fn fake_ping(State(fake): State<Arc<Mutex<Fake>>>, headers: HeaderMap, body: String) -> Response {
    let mut f = fake.lock().unwrap();
    let req: PingRequest = serde_json::from_str(&body).expect("the simulator sends a valid ping");
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(String::from);
    f.requests.push((auth, req.clone()));
    if f.requests.len() <= f.refuse {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response();
    }
    let report = req.reports.unwrap_or_default().into_iter().find(|r| r.env_id.as_deref() == Some("e1"));
    let answer = match report {
        None if f.delete => PingResponse::noop(),
        None => goal(DeployStage::PreDownload),
        Some(r) => {
            let stage = r.deploy_stage.unwrap();
            match r.agent_status.unwrap() {
                AgentStatus::Succeeded if stage == DeployStage::ServingBuild && f.delete => goal(DeployStage::Unknown),
                AgentStatus::Succeeded if stage == DeployStage::ServingBuild => PingResponse::noop(),
                AgentStatus::Succeeded => goal(DeployStage::ALL[stage as usize + 1]),
                s if s.is_fatal() => PingResponse::noop(),
                _ => goal(stage),
            }
        }
    };
    axum::Json(answer).into_response()
}

async fn fake_gateway(fake: Fake) -> (String, Arc<Mutex<Fake>>) {
    let fake = Arc::new(Mutex::new(fake));
    let app = Router::new().route("/v1/system/ping", post(fake_ping)).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fake)
}

#[tokio::test]
async fn virtual_agents_speak_the_protocol_fail_on_demand_and_forget_on_delete() {
    let (url, fake) = fake_gateway(Fake { refuse: 2, ..Fake::default() }).await;
    let hosts = numbered_hosts("fake", 3, &["web".to_string()], &[("zone".into(), vec!["a".into(), "b".into()])]);
    let config = SimConfig {
        gateway: url,
        token: "fake-token".into(),
        hosts,
        ping_interval: Duration::from_millis(50),
        ..SimConfig::default()
    }
    .fail_host("fake-03", DeployStage::Restarting);
    let fleet = Fleet::start(config).unwrap();

    let served = |f: &Fleet| f.hosts().iter().filter(|h| h.envs.first().is_some_and(|e| e.serving.is_some())).count();
    let settled = fleet
        .wait_until(
            |f| {
                served(f) == 2
                    && f.host("fake-03")
                        .unwrap()
                        .envs
                        .first()
                        .is_some_and(|e| e.agent_status == AgentStatus::TooManyRetry)
            },
            DEADLINE,
        )
        .await;
    assert!(settled, "hosts: {:?}", fleet.hosts());
    let c = fleet.counters();
    assert!(c.errors >= 2, "the 503 answers were counted: {c:?}");
    assert!(c.last_error.as_deref().unwrap().contains("503"), "{c:?}");
    assert_eq!(c.failed_steps, 4, "three SCRIPT_FAILED, then TOO_MANY_RETRY");
    for h in ["fake-01", "fake-02"] {
        let e = &fleet.host(h).unwrap().envs[0];
        assert_eq!(
            (e.serving.as_deref(), e.deploy_stage, e.agent_status),
            (Some("b1"), DeployStage::ServingBuild, AgentStatus::Succeeded)
        );
    }
    {
        let f = fake.lock().unwrap();
        assert!(f.requests.iter().all(|(auth, _)| auth.as_deref() == Some("token fake-token")));
        let (_, first) = &f.requests[0];
        assert_eq!(first.groups.as_deref(), Some(&["web".to_string()][..]));
        let tags: serde_json::Value = serde_json::from_str(first.ec2_tags.as_ref().unwrap().as_str().unwrap()).unwrap();
        assert!(tags["zone"] == "a" || tags["zone"] == "b", "ec2Tags is a JSON object in a string: {tags}");
        let reports: Vec<_> = f.requests.iter().flat_map(|(_, r)| r.reports.clone().unwrap_or_default()).collect();
        assert!(reports.iter().all(|r| r.deploy_alias.as_deref() == Some("alias-1")), "deployAlias is echoed");
        assert!(reports.iter().all(|r| r.error_code.is_some() && r.fail_count.is_some()), "every field is sent");
        let failures: Vec<(AgentStatus, i32, i32)> = f
            .requests
            .iter()
            .filter(|(_, r)| r.host_id.as_deref() == Some("fake-03"))
            .flat_map(|(_, r)| r.reports.clone().unwrap_or_default())
            .filter(|r| {
                r.deploy_stage == Some(DeployStage::Restarting) && r.agent_status != Some(AgentStatus::Succeeded)
            })
            .map(|r| (r.agent_status.unwrap(), r.error_code.unwrap(), r.fail_count.unwrap()))
            .collect();
        assert_eq!(
            failures.iter().filter(|f| f.0 != AgentStatus::Unknown).copied().collect::<Vec<_>>().first(),
            Some(&(AgentStatus::ScriptFailed, 1, 1))
        );
        assert_eq!(failures.last(), Some(&(AgentStatus::TooManyRetry, 1, 4)), "{failures:?}");
    }
    let timeline = fleet.timeline();
    assert!(timeline.windows(2).all(|w| w[0].at <= w[1].at), "the timeline is in time order");
    assert!(timeline.iter().any(|e| &*e.host == "fake-03" && e.status == AgentStatus::TooManyRetry));
    let r = fleet.rollout("d1").unwrap();
    assert_eq!(
        (r.hosts_started, r.hosts_taken_out, r.hosts_done, r.max_out),
        (3, 0, 2, 0),
        "first deploys are not capped"
    );

    // DELETE: the serving hosts forget the environment; the paused one only ever gets NOOP.
    fake.lock().unwrap().delete = true;
    assert!(fleet.heal("fake-03"));
    assert!(!fleet.heal("nobody"));
    let forgotten = fleet.wait_until(|f| f.hosts().iter().filter(|h| h.envs.is_empty()).count() == 2, DEADLINE).await;
    assert!(forgotten, "hosts: {:?}", fleet.hosts());
    assert_eq!(fleet.counters().deletes, 2);
    fleet.stop().await;
    let pings = fleet.counters().pings;
    tokio::time::sleep(Duration::from_millis(200)).await; // not a synchronisation: proves silence
    assert_eq!(fleet.counters().pings, pings, "no task pings after stop");
}

#[tokio::test]
async fn a_silenced_host_holds_its_pings_and_goes_on_where_it_stopped() {
    let (url, fake) = fake_gateway(Fake::default()).await;
    let config = SimConfig {
        gateway: url,
        token: "fake-token".into(),
        hosts: numbered_hosts("quiet", 2, &["web".to_string()], &[]),
        ping_interval: Duration::from_millis(50),
        ..SimConfig::default()
    }
    .stage_duration(DeployStage::Restarting, Duration::from_millis(300));
    let fleet = Fleet::start(config).unwrap();
    let pings_of =
        |host: &str| fake.lock().unwrap().requests.iter().filter(|(_, r)| r.host_id.as_deref() == Some(host)).count();
    // Silenced while it restarts: the step ends, its result is not sent.
    let restarting =
        |f: &Fleet| f.host("quiet-01").unwrap().envs.first().is_some_and(|e| e.deploy_stage == DeployStage::Restarting);
    assert!(fleet.wait_until(restarting, DEADLINE).await, "{:?}", fleet.hosts());
    assert!(fleet.silence("quiet-01"));
    assert!(!fleet.silence("nobody"));
    let before = pings_of("quiet-01");
    let other = pings_of("quiet-02");
    assert!(fleet.wait_until(|_| pings_of("quiet-02") >= other + 10, DEADLINE).await, "the other host goes on");
    assert!(pings_of("quiet-01") <= before + 1, "a silent host sends nothing (one ping may have been on its way)");
    assert!(fleet.host("quiet-01").unwrap().envs[0].serving.is_none(), "and so never finished");
    assert!(fleet.revive("quiet-01"));
    let served =
        |f: &Fleet| f.host("quiet-01").unwrap().envs.first().is_some_and(|e| e.serving.as_deref() == Some("b1"));
    assert!(fleet.wait_until(served, DEADLINE).await, "revived, it finishes: {:?}", fleet.hosts());
    fleet.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The CLI.

fn sim_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_teletraan"));
    cmd.arg("sim").env("RUST_LOG", "warn").kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("TELETRAAN_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

#[tokio::test]
async fn the_cli_runs_a_fleet_and_refuses_bad_flags() {
    let (url, _fake) = fake_gateway(Fake::default()).await;
    let out = sim_command()
        .args(["--gateway", &url, "--hosts", "3", "--ping-interval", "0.1", "--duration", "1.5"])
        .args(["--report-every", "0.5", "--tag", "zone=a,b,c", "--cap", "1"])
        .env("TELETRAAN_AGENT_TOKEN", "cli-agent-token")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("3 hosts:") && stdout.contains("pings/s"), "{stdout}");
    assert!(stdout.contains("deploy d1: 3 host(s) started (0 taken out of service), 3 done"), "{stdout}");
    assert!(stdout.contains("cap check: passed"), "{stdout}");

    let gw = url.as_str();
    for (args, needle) in [
        (vec!["--gateway", gw, "--hosts", "0"], "--hosts"),
        (vec!["--gateway", gw, "--hosts", "2", "--stage-duration", "WARMING=1"], "WARMING"),
        (vec!["--gateway", gw, "--hosts", "2", "--fail", "sim-99=RESTARTING"], "sim-99"),
        (vec!["--gateway", gw, "--hosts", "2", "--jitter", "1.5"], "--jitter"),
        (vec!["--gateway", "ftp://x", "--hosts", "2"], "ftp://x"),
    ] {
        let out = sim_command()
            .args(["--token", "cli-agent-token"])
            .args(&args)
            .stdout(Stdio::null())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let out = sim_command().args(["--gateway", &url, "--hosts", "2"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "the token is required");
}

// ---------------------------------------------------------------------------------------------
// Against the real server.

/// Hosts whose (only) environment serves `build`.
fn serving(fleet: &Fleet, build: &Build) -> usize {
    fleet.hosts().iter().filter(|h| h.envs.iter().any(|e| e.serving.as_deref() == Some(build.id.as_str()))).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_simulated_hosts_roll_out_within_a_percentage_cap() {
    let server = Server::start().await;
    let api = &server.api;
    let gateway_url = server.gateway.clone();
    api.stage("sim", "prod", "sim", json!({})).await;
    let b1 =
        api.publish("sim", "https://artifacts.example.com/sim-1.tar.gz", "1111111abc", Some(UNDOWNLOADED_SHA256)).await;
    let b2 =
        api.publish("sim", "https://artifacts.example.com/sim-2.tar.gz", "2222222abc", Some(UNDOWNLOADED_SHA256)).await;

    let zones = vec![("zone".to_string(), vec!["a".to_string(), "b".into(), "c".into()])];
    let config = SimConfig {
        gateway: gateway_url,
        token: AGENT.into(),
        hosts: numbered_hosts("sim", 20, &["sim".to_string()], &zones),
        ping_interval: Duration::from_millis(300),
        jitter: 0.2,
        ..SimConfig::default()
    }
    .stage_duration(DeployStage::Restarting, Duration::from_millis(100));
    let fleet = Fleet::start(config).unwrap();

    // First deploy: new hosts are not capped, every host installs at once.
    let d1 = api.deploy("sim", "prod", &b1).await;
    assert!(fleet.wait_until(|f| serving(f, &b1) == 20, DEADLINE).await, "first deploy: {:?}", fleet.hosts());
    let r1 = fleet.rollout(d1.id.as_str()).unwrap();
    assert_eq!((r1.hosts_started, r1.hosts_taken_out, r1.hosts_done, r1.max_out), (20, 0, 20, 0));
    // Let the server record it too: a host whose last report has not reached Postgres would
    // still count as a first deploy there (and skip the cap).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let agents = api.agents("sim", "prod").await;
        let settled = agents.iter().filter(|a| a.deploy_id == d1.id && !a.first_deploy).count();
        if settled == 20 && agents.iter().all(|a| a.deploy_stage == DeployStage::ServingBuild) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "server rows of the first deploy: {agents:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Second deploy within 10% of 20 hosts; one host fails its restart for good.
    api.configure("sim", "prod", json!({"maxParallelPct": 10})).await;
    assert!(fleet.fail("sim-07", DeployStage::Restarting));
    let d2 = api.deploy("sim", "prod", &b2).await;
    let failed = |f: &Fleet| {
        f.host("sim-07").unwrap().envs.iter().any(|e| e.deploy_id == d2.id.as_str() && e.agent_status.is_fatal())
    };
    let done = fleet.wait_until(|f| serving(f, &b2) == 19 && failed(f), DEADLINE).await;
    assert!(done, "second deploy: {:?}\n{:?}", fleet.rollout(d2.id.as_str()), fleet.hosts());

    let r2 = fleet.rollout(d2.id.as_str()).unwrap();
    assert!(r2.max_out <= 2, "the agents saw {} hosts out of service at once (cap 2): {r2:?}", r2.max_out);
    assert!(r2.max_out >= 1, "the check saw no host out of service: {r2:?}");
    assert_eq!((r2.hosts_taken_out, r2.hosts_done, r2.out_now), (20, 19, 1), "{r2:?}");
    assert_eq!(r2.hosts_taken_out_as_first, 0, "no serving host was sent as a first deploy: {r2:?}");
    assert!(r2.tags.iter().all(|t| t.max_out <= r2.max_out) && r2.tags.len() == 3, "{r2:?}");

    // The server agrees: 19 hosts serve the new deploy, the failed one is paused by the system.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let agents = api.agents("sim", "prod").await;
        let serving_d2 =
            agents.iter().filter(|a| a.deploy_id == d2.id && a.deploy_stage == DeployStage::ServingBuild).count();
        let paused = agents.iter().find(|a| a.host_name.as_str() == "sim-07").is_some_and(|a| {
            a.deploy_id == d2.id && a.state == AgentState::PausedBySystem && a.deploy_stage == DeployStage::Restarting
        });
        if serving_d2 == 19 && paused {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "server rows never settled: {agents:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = fleet.counters();
    assert!(c.pings > 0 && c.goals > 0 && c.failed_steps == 4 && c.ping_p99.is_some(), "{c:?}");
    fleet.stop().await;

    server.stop().await;
}
