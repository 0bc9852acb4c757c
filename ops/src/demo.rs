//! `teletraan up --demo`: three local agents and two sample builds, so a newcomer watches a
//! real rollout: build v1 reaches every host at once (first deploys are not capped), then v2
//! rolls one host at a time (`maxParallel: 1`). A line is printed whenever a host moves.
//!
//! The sample builds are served over HTTP on loopback, as an artifact store would serve them,
//! and published with their SHA-256: the demo runs under the production artifact policy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use schema::artifact::{AllowedLocation, ArtifactPolicy};
use schema::model::{Agent, Build, Deploy};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::sample;
use crate::serve::Running;

const ENV: &str = "demo";
const STAGE: &str = "prod";
const HOSTS: [&str; 3] = ["demo-1", "demo-2", "demo-3"];

/// The versions the demo publishes.
const VERSIONS: [&str; 2] = ["v1", "v2"];

/// The demo's sample builds, served at `http://127.0.0.1:<port>/demo/<version>.tar.gz`.
pub struct Artifacts {
    base: String,
    files: Arc<HashMap<String, Vec<u8>>>,
    server: JoinHandle<()>,
}

impl Artifacts {
    /// Builds the sample artifacts and serves them on a free loopback port.
    pub async fn serve() -> anyhow::Result<Artifacts> {
        let mut files = HashMap::new();
        for version in VERSIONS {
            let bytes = sample::artifact(version, &sample::demo_hooks(version))?;
            files.insert(format!("{version}.tar.gz"), bytes);
        }
        let files = Arc::new(files);
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot serve the demo's artifacts")?;
        let base = format!("http://{}/demo", listener.local_addr()?);
        let served = files.clone();
        let app = axum::Router::new().route(
            "/demo/{file}",
            get(move |UrlPath(file): UrlPath<String>| {
                let served = served.clone();
                async move {
                    match served.get(&file) {
                        Some(bytes) => bytes.clone().into_response(),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        );
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("demo: the artifact server stopped: {e}");
            }
        });
        Ok(Artifacts { base, files, server })
    }

    /// Lets the server's policy take the demo's builds: with an allow-list configured, the
    /// demo's own location is added to it (without one, any http URL is accepted already).
    pub fn allow_in(&self, policy: &mut ArtifactPolicy) -> anyhow::Result<()> {
        if !policy.allowed.is_empty() {
            policy.allowed.push(AllowedLocation::parse(&format!("{}/", self.base))?);
        }
        Ok(())
    }

    fn url(&self, version: &str) -> String {
        format!("{}/{version}.tar.gz", self.base)
    }

    fn bytes(&self, version: &str) -> &[u8] {
        self.files.get(&format!("{version}.tar.gz")).map(Vec::as_slice).unwrap_or_default()
    }
}

/// The running demo.
pub struct Demo {
    agents: Vec<Child>,
    watcher: JoinHandle<()>,
    artifacts: Artifacts,
    home: PathBuf,
}

impl Demo {
    /// Stops the agents, the progress printer and the artifact server, and removes the demo's
    /// files.
    pub async fn stop(mut self) {
        self.watcher.abort();
        self.artifacts.server.abort();
        for a in &mut self.agents {
            let _ = a.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.header("Authorization", format!("token {}", self.token)).send().await?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            bail!("{status}: {body}");
        }
        Ok(resp)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Sets up the demo stage and builds, starts the agents and the first deploy, and prints the
/// rollout as it happens.
pub async fn start(running: &Running, artifacts: Artifacts) -> anyhow::Result<Demo> {
    let (Some(api_addr), Some(gateway_addr), Some(admin), Some(agent_token)) =
        (running.api_addr, running.gateway_addr, running.admin_token.clone(), running.agent_token.clone())
    else {
        bail!("the demo needs the API, the gateway and both tokens");
    };
    let agent_bin = agent_binary()?;
    let api = Api { http: reqwest::Client::new(), base: format!("http://{api_addr}"), token: admin.clone() };
    let home = std::env::temp_dir().join(format!("teletraan-demo-{}", std::process::id()));
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;

    // The stage: one host at a time, capacity = the group the demo agents report.
    let created = api.send(api.http.post(api.url("/v1/envs")).json(&json!({"envName": ENV, "stageName": STAGE}))).await;
    if let Err(e) = created
        && !e.to_string().starts_with("409")
    {
        return Err(e.context("cannot create the demo stage"));
    }
    api.send(api.http.put(api.url(&format!("/v1/envs/{ENV}/{STAGE}"))).json(&json!({"maxParallel": 1}))).await?;
    api.send(
        api.http.put(api.url(&format!("/v1/envs/{ENV}/{STAGE}/capacity?capacityType=GROUP"))).json(&json!(["demo"])),
    )
    .await?;
    api.send(
        api.http
            .put(api.url(&format!("/v1/envs/{ENV}/{STAGE}/script_configs")))
            .json(&json!({"GREETING": "hello from the demo stage"})),
    )
    .await?;

    let v1 = publish(&api, &artifacts, "v1").await?;
    let v2 = publish(&api, &artifacts, "v2").await?;

    let mut agents = Vec::new();
    for host in HOSTS {
        let dir = home.join("agents").join(host);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(home.join(format!("{host}.log")))?;
        let child = Command::new(&agent_bin)
            .arg("run")
            .args(["--server", &format!("http://{gateway_addr}")])
            .args(["--host-id", host, "--host-name", host, "--groups", "demo", "--ping-interval", "2"])
            .arg("--dir")
            .arg(&dir)
            .env("TELETRAAN_AGENT_TOKEN", &agent_token)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", agent_bin.display()))?;
        agents.push(child);
    }

    println!();
    println!("demo: three agents ({}) run in {}", HOSTS.join(", "), home.join("agents").display());
    println!("demo: their logs are {}", home.join("demo-N.log").display());
    println!("demo: look around while it runs:");
    // This very binary is the command line.
    let me = std::env::current_exe().map_or_else(|_| "teletraan".into(), |p| p.display().to_string());
    println!("  export TELETRAAN_URL={} TELETRAAN_TOKEN={admin}", api.base);
    println!("  {me} status {ENV} {STAGE} --watch   # the rollout's progress, live");
    println!("  {me} hosts {ENV} {STAGE}            # every host's step and build");
    println!("  {me} history {ENV} {STAGE}          # the deploys");
    println!("  ls -l {}/demo-1/targets/", home.join("agents").display());
    println!("demo: watch it on the deploy board: {}/envs/{ENV}/{STAGE} (log in with the admin token above)", api.base);
    println!("demo: deploying {} (v1) to every host: new hosts are not held by maxParallel", v1.id);
    println!();

    let deploy = api
        .send(
            api.http.post(api.url(&format!("/v1/envs/{ENV}/{STAGE}/deploys?buildId={}&description=demo%20v1", v1.id))),
        )
        .await?
        .json::<Deploy>()
        .await?;
    let watcher = tokio::spawn(async move {
        if let Err(e) = watch(&api, deploy, &v1, &v2).await {
            eprintln!("demo: {e:#}");
        }
    });
    Ok(Demo { agents, watcher, artifacts, home })
}

fn agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let candidate = exe.with_file_name("teletraan-agent");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!("teletraan-agent not found next to {}; build it with `cargo build --bins`", exe.display())
}

async fn publish(api: &Api, artifacts: &Artifacts, version: &str) -> anyhow::Result<Build> {
    let build = json!({
        "name": ENV,
        "artifactUrl": artifacts.url(version),
        "artifactSha256": sample::sha256_hex(artifacts.bytes(version)),
        "repo": "example/demo",
        "branch": "main",
        "commit": format!("{:0<40}", if version == "v1" { "1111111" } else { "2222222" }),
        "publishInfo": "teletraan up --demo",
    });
    Ok(api.send(api.http.post(api.url("/v1/builds")).json(&build)).await?.json().await?)
}

/// Seconds between the demo's later rollouts (so the board always has one to show).
const PAUSE_BETWEEN_ROLLOUTS: Duration = Duration::from_secs(30);

/// Prints a line per host change; deploys v2 once v1 serves everywhere, then the other build
/// again every [`PAUSE_BETWEEN_ROLLOUTS`] until stopped.
async fn watch(api: &Api, mut deploy: Deploy, v1: &Build, v2: &Build) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut seen: HashMap<String, (String, String, String)> = HashMap::new();
    let mut labels: HashMap<String, &'static str> = HashMap::from([(deploy.id.to_string(), "v1")]);
    let mut state = String::new();
    let mut rollouts = 1;
    let mut next_rollout: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Ok(resp) = api.send(api.http.get(api.url(&format!("/v1/envs/{ENV}/{STAGE}/agents")))).await else {
            continue;
        };
        let agents: Vec<Agent> = resp.json().await.unwrap_or_default();
        for a in &agents {
            let now = (a.deploy_id.to_string(), a.deploy_stage.to_string(), a.status.to_string());
            if seen.get(a.host_name.as_str()) != Some(&now) {
                let out_of_service = agents.iter().filter(|x| x.deploy_stage.as_str() != "SERVING_BUILD").count();
                println!(
                    "[{:>5.1}s] {:<7} {}  {:<13} {:<9}  ({} of {} out of service)",
                    started.elapsed().as_secs_f64(),
                    a.host_name.as_str(),
                    labels.get(a.deploy_id.as_str()).copied().unwrap_or("v1"),
                    a.deploy_stage.as_str(),
                    a.status.as_str(),
                    out_of_service,
                    agents.len()
                );
                seen.insert(a.host_name.to_string(), now);
            }
        }
        if let Some(at) = next_rollout
            && Instant::now() >= at
        {
            let (build, label) = if rollouts % 2 == 0 { (v1, "v1") } else { (v2, "v2") };
            println!();
            println!("demo: deploying {} ({label}) again, one host at a time", build.id);
            println!();
            let url =
                api.url(&format!("/v1/envs/{ENV}/{STAGE}/deploys?buildId={}&description=demo%20{label}", build.id));
            deploy = api.send(api.http.post(url)).await?.json().await?;
            labels.insert(deploy.id.to_string(), label);
            rollouts += 1;
            next_rollout = None;
            state.clear();
            continue;
        }
        if let Ok(resp) = api.send(api.http.get(api.url(&format!("/v1/deploys/{}", deploy.id)))).await
            && let Ok(d) = resp.json::<Deploy>().await
        {
            if d.state.as_str() != state {
                state = d.state.to_string();
                println!(
                    "[{:>5.1}s] deploy {} is {} ({}/{} hosts done)",
                    started.elapsed().as_secs_f64(),
                    d.id,
                    state,
                    d.success_total,
                    d.total
                );
            }
            let everyone_serving = agents.len() == HOSTS.len()
                && agents.iter().all(|a| a.deploy_id == d.id && a.deploy_stage.as_str() == "SERVING_BUILD");
            if !everyone_serving || d.state.as_str() != "SUCCEEDING" || next_rollout.is_some() {
                continue;
            }
            if rollouts == 1 {
                println!();
                println!("demo: v1 serves everywhere; deploying {} (v2) one host at a time (maxParallel 1)", v2.id);
                println!();
                let url = api.url(&format!("/v1/envs/{ENV}/{STAGE}/deploys?buildId={}&description=demo%20v2", v2.id));
                deploy = api.send(api.http.post(url)).await?.json().await?;
                labels.insert(deploy.id.to_string(), "v2");
                rollouts += 1;
                state.clear();
            } else {
                if rollouts == 2 {
                    println!();
                    println!(
                        "demo: done in {:.0}s: every host serves v2 ({}). To keep the board lively, the demo deploys \
                         the other build every {} s; Ctrl-C stops everything.",
                        started.elapsed().as_secs_f64(),
                        v2.id,
                        PAUSE_BETWEEN_ROLLOUTS.as_secs()
                    );
                }
                next_rollout = Some(Instant::now() + PAUSE_BETWEEN_ROLLOUTS);
            }
        }
    }
}
