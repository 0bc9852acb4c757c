//! End to end with the real binaries: `teletraan up` on its own database and broker
//! namespace, three `teletraan-agent` processes in temp dirs, artifacts served over HTTP.
//! Build A reaches every host; build B then rolls with `maxParallel: 1`, and neither the
//! server's records nor the hosts' own hook timestamps ever show two hosts out of service.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use schema::model::{Agent, Build, Deploy};
use serde_json::json;
use store::testing::TestDatabase;
use teletraan::sample;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use workers::testing::TestBus;

const ADMIN: &str = "e2e-admin-token";
const AGENT: &str = "e2e-agent-token";
const HOSTS: [&str; 3] = ["e2e-1", "e2e-2", "e2e-3"];
const DEADLINE: Duration = Duration::from_secs(90);

fn binary(name: &str) -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_teletraan"));
    let path = server.with_file_name(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// Every hook appends one line: step|start ns|end ns|the build the script came from|then the
/// environment it saw.
fn hook(step: &str, version: &str) -> String {
    let pause = if step == "RESTARTING" { "sleep 1\n" } else { "" };
    format!(
        "#!/bin/sh\nstart=$(date +%s%N)\n{pause}echo \"$DEPLOY_STEP|$start|$(date +%s%N)|{version}|$BUILD_ID|$DEPLOY_ID|$ENV_NAME|$STAGE_NAME|$DEPLOY_TYPE|$OPCODE|${{FIRST_DEPLOY:-}}|${{E2E_VAR:-}}|$BUILD_NAME|$BUILD_COMMIT|$BUILD_URL|$TARGET\" >> \"$(dirname \"$TARGET\")/../hooks.log\"\n"
    )
}

fn hooks(version: &str) -> Vec<(&'static str, String)> {
    ["PRE_DOWNLOAD", "POST_DOWNLOAD", "PRE_RESTART", "RESTARTING", "POST_RESTART"]
        .iter()
        .map(|s| (*s, hook(s, version)))
        .collect()
}

#[derive(Debug, Clone)]
struct HookRun {
    step: String,
    script_of: String,
    start: u128,
    end: u128,
    vars: HashMap<&'static str, String>,
}

fn hook_runs(dir: &Path) -> Vec<HookRun> {
    let text = std::fs::read_to_string(dir.join("hooks.log")).unwrap_or_default();
    let names = [
        "BUILD_ID",
        "DEPLOY_ID",
        "ENV_NAME",
        "STAGE_NAME",
        "DEPLOY_TYPE",
        "OPCODE",
        "FIRST_DEPLOY",
        "E2E_VAR",
        "BUILD_NAME",
        "BUILD_COMMIT",
        "BUILD_URL",
        "TARGET",
    ];
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 4 + names.len(), "hook line {l:?}");
            HookRun {
                step: f[0].to_string(),
                start: f[1].parse().unwrap(),
                end: f[2].parse().unwrap(),
                script_of: f[3].to_string(),
                vars: names.iter().zip(&f[4..]).map(|(n, v)| (*n, v.to_string())).collect(),
            }
        })
        .collect()
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).header("Authorization", format!("token {ADMIN}"))
    }

    async fn ok(&self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let resp = req.send().await.expect("API reachable");
        let status = resp.status();
        assert!(status.is_success(), "{status}: {}", resp.text().await.unwrap_or_default());
        resp
    }

    async fn agents(&self) -> Vec<Agent> {
        self.ok(self.req(reqwest::Method::GET, "/v1/envs/e2e/prod/agents")).await.json().await.unwrap()
    }

    async fn deploy(&self, build: &Build) -> Deploy {
        let path = format!("/v1/envs/e2e/prod/deploys?buildId={}", build.id);
        let resp = self.ok(self.req(reqwest::Method::POST, &path)).await;
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }

    async fn publish(&self, artifact_url: String, bytes: &[u8], commit: &str) -> Build {
        let body = json!({"name": "e2e", "artifactUrl": artifact_url, "artifactSha256": sample::sha256_hex(bytes),
            "repo": "org/e2e", "branch": "main", "commit": commit});
        self.ok(self.req(reqwest::Method::POST, "/v1/builds").json(&body)).await.json().await.unwrap()
    }

    /// Waits until every host serves `deploy` and the deploy is SUCCEEDING.
    async fn wait_rolled_out(&self, deploy: &Deploy) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let agents = self.agents().await;
            let d: Deploy = self
                .ok(self.req(reqwest::Method::GET, &format!("/v1/deploys/{}", deploy.id)))
                .await
                .json()
                .await
                .unwrap();
            let all = agents.len() == HOSTS.len()
                && agents.iter().all(|a| a.deploy_id == deploy.id && a.deploy_stage.as_str() == "SERVING_BUILD");
            if all && d.state.as_str() == "SUCCEEDING" && d.success_total == 3 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "rollout of {} not done: {d:?} {agents:?}", deploy.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn serve_artifacts(a: Vec<u8>, b: Vec<u8>) -> String {
    let app = Router::new()
        .route("/a.tar.gz", get(move || async move { a }))
        .route("/b.tar.gz", get(move || async move { b }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn start_server(db: &TestDatabase, bus: &TestBus) -> (Child, String, String) {
    let mut child = Command::new(binary("teletraan"))
        .arg("up")
        .env("TELETRAAN_DATABASE_URL", &db.url)
        .env("TELETRAAN_AMQP_URL", &bus.config.url)
        .env("TELETRAAN_NAMESPACE", &bus.config.namespace)
        .env("TELETRAAN_API_LISTEN", "127.0.0.1:0")
        .env("TELETRAAN_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("TELETRAAN_ADMIN_TOKEN", ADMIN)
        .env("TELETRAAN_AGENT_TOKEN", AGENT)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start teletraan up");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut gateway) = (None, None);
    while api.is_none() || gateway.is_none() {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("server announces itself")
            .unwrap()
            .expect("server output");
        if let Some(url) = line.strip_prefix("teletraan: api ") {
            api = Some(url.to_string());
        }
        if let Some(url) = line.strip_prefix("teletraan: gateway ") {
            gateway = Some(url.to_string());
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, api.unwrap(), gateway.unwrap())
}

fn start_agent(gateway: &str, host: &str, dir: &Path) -> Child {
    Command::new(binary("teletraan-agent"))
        .arg("run")
        .args(["--server", gateway, "--host-id", host, "--host-name", host, "--groups", "e2e", "--ping-interval", "1"])
        .arg("--dir")
        .arg(dir)
        .env("TELETRAAN_AGENT_TOKEN", AGENT)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start teletraan-agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_builds_roll_out_to_three_real_agents_within_the_cap() {
    let db = TestDatabase::new().await;
    let bus = TestBus::new();
    let tmp = std::env::temp_dir().join(format!("teletraan-e2e-{}", uuid::Uuid::new_v4().simple()));
    let a_bytes = sample::artifact("A", &hooks("A")).unwrap();
    let b_bytes = sample::artifact("B", &hooks("B")).unwrap();
    let artifacts = serve_artifacts(a_bytes.clone(), b_bytes.clone()).await;

    let (mut server, api_url, gateway_url) = start_server(&db, &bus).await;
    let api = Api { http: reqwest::Client::new(), base: api_url };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while api.http.get(format!("{gateway_url}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(tokio::time::Instant::now() < deadline, "gateway never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let created =
        api.ok(api.req(reqwest::Method::POST, "/v1/envs").json(&json!({"envName": "e2e", "stageName": "prod"}))).await;
    assert_eq!(created.status(), 201);
    api.ok(api.req(reqwest::Method::PUT, "/v1/envs/e2e/prod/capacity?capacityType=GROUP").json(&json!(["e2e"]))).await;
    api.ok(api.req(reqwest::Method::PUT, "/v1/envs/e2e/prod/script_configs").json(&json!({"E2E_VAR": "hello"}))).await;
    let a = api.publish(format!("{artifacts}/a.tar.gz"), &a_bytes, "aaaaaaa111").await;
    let b = api.publish(format!("{artifacts}/b.tar.gz"), &b_bytes, "bbbbbbb222").await;

    let dirs: Vec<PathBuf> = HOSTS.iter().map(|h| tmp.join(h)).collect();
    let mut agents: Vec<Child> = HOSTS.iter().zip(&dirs).map(|(h, d)| start_agent(&gateway_url, h, d)).collect();

    // Build A: new hosts, so every host deploys at once.
    let deploy_a = api.deploy(&a).await;
    api.wait_rolled_out(&deploy_a).await;
    for dir in &dirs {
        let link = std::fs::read_link(dir.join("targets/e2e")).expect("the target symlink");
        assert!(link.ends_with(format!("builds/{}", a.id)), "{} -> {}", dir.display(), link.display());
        let runs = hook_runs(dir);
        let steps: Vec<&str> = runs.iter().map(|r| r.step.as_str()).collect();
        assert_eq!(
            steps,
            ["PRE_RESTART", "RESTARTING", "POST_RESTART"],
            "a first deploy runs the new build's hooks once each"
        );
        for r in &runs {
            assert_eq!(r.script_of, "A");
            let v = &r.vars;
            assert_eq!(v["BUILD_ID"], a.id.as_str());
            assert_eq!(v["DEPLOY_ID"], deploy_a.id.as_str());
            assert_eq!((v["ENV_NAME"].as_str(), v["STAGE_NAME"].as_str()), ("e2e", "prod"));
            assert_eq!((v["DEPLOY_TYPE"].as_str(), v["OPCODE"].as_str()), ("REGULAR", "DEPLOY"));
            assert_eq!(v["FIRST_DEPLOY"], "True");
            assert_eq!(v["E2E_VAR"], "hello", "script variables reach the hooks");
            assert_eq!((v["BUILD_NAME"].as_str(), v["BUILD_COMMIT"].as_str()), ("e2e", "aaaaaaa111"));
            assert_eq!(v["BUILD_URL"], format!("{artifacts}/a.tar.gz"));
            assert_eq!(Path::new(&v["TARGET"]), dir.join("targets/e2e"));
        }
    }

    // Build B, one host at a time.
    api.ok(api.req(reqwest::Method::PUT, "/v1/envs/e2e/prod").json(&json!({"maxParallel": 1}))).await;
    let most_out = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let most_out = most_out.clone();
        let api = Api { http: api.http.clone(), base: api.base.clone() };
        tokio::spawn(async move {
            loop {
                let out = api.agents().await.iter().filter(|a| a.deploy_stage.as_str() != "SERVING_BUILD").count();
                most_out.fetch_max(out, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let deploy_b = api.deploy(&b).await;
    api.wait_rolled_out(&deploy_b).await;
    sampler.abort();
    assert_eq!(most_out.load(Ordering::SeqCst), 1, "the sampler saw a host out of service, and never two");
    assert_eq!(
        api.ok(api.req(reqwest::Method::GET, &format!("/v1/deploys/{}", deploy_a.id)))
            .await
            .json::<Deploy>()
            .await
            .unwrap()
            .state
            .as_str(),
        "SUCCEEDED"
    );

    let mut windows = Vec::new();
    for dir in &dirs {
        let link = std::fs::read_link(dir.join("targets/e2e")).unwrap();
        assert!(link.ends_with(format!("builds/{}", b.id)), "{} -> {}", dir.display(), link.display());
        let runs: Vec<HookRun> = hook_runs(dir).into_iter().skip(3).collect();
        let steps: Vec<(&str, &str, &str)> =
            runs.iter().map(|r| (r.step.as_str(), r.script_of.as_str(), r.vars["BUILD_ID"].as_str())).collect();
        // PRE_DOWNLOAD and POST_DOWNLOAD run the live (old) build's scripts, as Teletraan's agent
        // does; the BUILD_* variables describe the old build only until the download.
        assert_eq!(
            steps,
            [
                ("PRE_DOWNLOAD", "A", a.id.as_str()),
                ("POST_DOWNLOAD", "A", b.id.as_str()),
                ("PRE_RESTART", "B", b.id.as_str()),
                ("RESTARTING", "B", b.id.as_str()),
                ("POST_RESTART", "B", b.id.as_str()),
            ]
        );
        assert!(runs.iter().all(|r| r.vars["DEPLOY_ID"] == deploy_b.id.as_str() && r.vars["FIRST_DEPLOY"].is_empty()));
        windows.push((runs.first().unwrap().start, runs.last().unwrap().end));
    }
    // From the hosts' side: the out-of-service windows of B never overlap.
    windows.sort();
    for w in windows.windows(2) {
        assert!(w[0].1 <= w[1].0, "two hosts were out of service at once: {windows:?}");
    }

    for agent in &mut agents {
        agent.kill().await.unwrap();
    }
    // A clean stop on SIGTERM.
    let pid = server.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status =
        tokio::time::timeout(Duration::from_secs(20), server.wait()).await.expect("server stops on SIGTERM").unwrap();
    assert!(status.success(), "server exit: {status}");
    let _ = std::fs::remove_dir_all(&tmp);
}
