//! Shared by the tests that run the real `teletraan up`: a server on a database and broker
//! namespace of its own, and an API client as an admin.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bus::testing::TestBus;
use schema::DeployStage;
use schema::model::{Agent, Build, Deploy};
use serde_json::{Value, json};
use store::testing::TestDatabase;
use teletraan::sim::{SimConfig, numbered_hosts};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod cluster;
pub mod pool;
pub mod postgres;
pub mod proxy;
pub mod webdriver;

/// The admin token the server is started with.
pub const ADMIN: &str = "test-admin-token";
/// The agent token the server is started with.
pub const AGENT: &str = "test-agent-token";
/// Longest a test waits for something asynchronous.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A binary of the workspace (built before the tests run).
pub fn binary(name: &str) -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_teletraan"));
    let path = server.with_file_name(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// A running `teletraan up` with its own database and broker namespace.
pub struct Server {
    child: Child,
    /// The REST API, `http://127.0.0.1:<port>`.
    pub api: Api,
    /// The gateway, `http://127.0.0.1:<port>`.
    pub gateway: String,
    /// The broker the server uses.
    pub amqp_url: String,
    // Dropped after the child: the server stops before its database and namespace go.
    _bus: TestBus,
    /// The server's database (for what no endpoint shows, such as job runs).
    pub db: TestDatabase,
}

impl Server {
    /// Starts the server and waits until its gateway is ready.
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// Starts the server with more settings (`TELETRAAN_*` variables).
    pub async fn start_with(settings: &[(&str, &str)]) -> Server {
        Server::launch(settings, TestBus::new(), reqwest::Client::new(), false, None).await
    }

    /// Starts the server with more settings, its log (standard error) going to `log` and its
    /// standard output to `log` with the extension `stdout`.
    pub async fn start_logging(settings: &[(&str, &str)], log: &Path) -> Server {
        Server::launch(settings, TestBus::new(), reqwest::Client::new(), false, Some(log)).await
    }

    /// Starts the server with TLS to its services: Postgres with `sslmode=verify-full` and
    /// RabbitMQ over `amqps://`, both trusting the test CA (ops/lib/services.sh). `settings`
    /// give the API and gateway their certificate; `http` must trust its CA.
    pub async fn start_tls(settings: &[(&str, &str)], http: reqwest::Client) -> Server {
        Server::launch(settings, TestBus::tls(), http, true, None).await
    }

    async fn launch(
        settings: &[(&str, &str)],
        bus: TestBus,
        http: reqwest::Client,
        tls: bool,
        log: Option<&Path>,
    ) -> Server {
        let db = TestDatabase::new().await;
        let mut child = Command::new(binary("teletraan"));
        let mut database_url = db.url.clone();
        if tls {
            let ca = store::testing::test_ca();
            database_url = format!("{}?sslmode=verify-full&sslrootcert={}", db.url, ca.display());
            child.env("TELETRAAN_AMQP_CA_FILE", &ca);
        }
        if let Some(log) = log {
            child.stderr(std::fs::File::create(log).expect("the log file"));
        }
        let mut child = child
            .arg("up")
            .env("TELETRAAN_DATABASE_URL", &database_url)
            .env("TELETRAAN_AMQP_URL", &bus.config.url)
            .env("TELETRAAN_NAMESPACE", &bus.config.namespace)
            .env("TELETRAAN_API_LISTEN", "127.0.0.1:0")
            .env("TELETRAAN_GATEWAY_LISTEN", "127.0.0.1:0")
            .env("TELETRAAN_ADMIN_TOKEN", ADMIN)
            .env("TELETRAAN_AGENT_TOKEN", AGENT)
            .env("RUST_LOG", "warn")
            // The test's settings last: they may change any of the above.
            .envs(settings.iter().copied())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start teletraan up");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut stdout = log.map(|l| std::fs::File::create(l.with_extension("stdout")).expect("the stdout file"));
        let mut keep = move |line: &str| {
            if let Some(out) = stdout.as_mut() {
                use std::io::Write;
                writeln!(out, "{line}").expect("write the server's stdout");
            }
        };
        let (mut api, mut gateway) = (None, None);
        while api.is_none() || gateway.is_none() {
            let line = tokio::time::timeout(DEADLINE, lines.next_line())
                .await
                .expect("the server announces itself")
                .expect("server output")
                .expect("the server exited before announcing itself");
            keep(&line);
            if let Some(url) = line.strip_prefix("teletraan: api ") {
                api = Some(url.to_string());
            }
            if let Some(url) = line.strip_prefix("teletraan: gateway ") {
                gateway = Some(url.to_string());
            }
        }
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&line);
            }
        });
        let api = Api { http, base: api.unwrap_or_default() };
        let gateway = gateway.unwrap_or_default();
        let ready = format!("{gateway}/readyz");
        wait_for("the gateway to be ready", || async {
            api.http.get(&ready).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        let amqp_url = settings
            .iter()
            .find(|(k, _)| *k == "TELETRAAN_AMQP_URL")
            .map_or_else(|| bus.config.url.clone(), |(_, v)| v.to_string());
        Server { child, api, gateway, amqp_url, _bus: bus, db }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server runs")
    }

    /// The server's memory now, from `/proc/<pid>/status`.
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    /// Stops the server with SIGTERM and checks it exits cleanly.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("the server runs").to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the server stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "server exit: {status}");
    }
}

/// A process's memory as Linux counts it in `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub rss_kib: u64,
    /// The most it was ever resident (`VmHWM`, the high-water mark).
    pub peak_kib: u64,
}

impl Memory {
    /// Reads process `pid`'s.
    pub fn of(pid: u32) -> Memory {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {path}"))
        };
        Memory { rss_kib: field("VmRSS:"), peak_kib: field("VmHWM:") }
    }

    /// Resets process `pid`'s high-water mark to what it holds now (`5` into
    /// `/proc/<pid>/clear_refs`, Linux 4.0 and later), so that a later `peak_kib` is the peak
    /// of what happened since. False if the kernel refused: the peak then still counts from
    /// the start of the process, which only overstates a growth measured against it.
    pub fn reset_peak(pid: u32) -> bool {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
    }
}

/// A fleet's configuration: `n` simulated hosts `<prefix>-NN` of `group`, pinging the server's
/// gateway with the agent token every `ping` (± 20 %), each RESTARTING taking `restart`.
pub fn fleet_config(
    server: &Server,
    prefix: &str,
    n: usize,
    group: &str,
    ping: Duration,
    restart: Duration,
) -> SimConfig {
    SimConfig {
        gateway: server.gateway.clone(),
        token: AGENT.into(),
        hosts: numbered_hosts(prefix, n, &[group.to_string()], &[]),
        ping_interval: ping,
        jitter: 0.2,
        ..SimConfig::default()
    }
    .stage_duration(DeployStage::Restarting, restart)
}

/// Polls `check` until it holds, failing the test after [`DEADLINE`].
pub async fn wait_for<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for_within(what, DEADLINE, check).await
}

/// [`wait_for`] with a deadline of its own (for the big tests, whose pace is the machine's).
pub async fn wait_for_within<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `probe` until it gives a value, failing the test after [`DEADLINE`].
#[allow(dead_code)]
pub async fn wait_for_value<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The REST API as an admin.
pub struct Api {
    /// The client.
    pub http: reqwest::Client,
    /// Base URL.
    pub base: String,
}

impl Api {
    /// A request; the answer must be a success.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req =
            self.http.request(method, format!("{}{path}", self.base)).header("Authorization", format!("token {ADMIN}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("API reachable");
        let status = resp.status();
        assert!(status.is_success(), "{path}: {status}: {}", resp.text().await.unwrap_or_default());
        resp
    }

    /// A stage with group capacity `group` and the given settings.
    pub async fn stage(&self, env: &str, stage: &str, group: &str, settings: Value) {
        let mut body = json!({"envName": env, "stageName": stage});
        if let (Some(b), Some(s)) = (body.as_object_mut(), settings.as_object()) {
            b.extend(s.clone());
        }
        self.call(reqwest::Method::POST, "/v1/envs", Some(body)).await;
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/envs/{env}/{stage}/capacity?capacityType=GROUP"),
            Some(json!([group])),
        )
        .await;
    }

    /// Changes a stage's settings.
    pub async fn configure(&self, env: &str, stage: &str, settings: Value) {
        self.call(reqwest::Method::PUT, &format!("/v1/envs/{env}/{stage}"), Some(settings)).await;
    }

    /// Publishes a build of `name` at `url`; without `sha256` only a server in sidecar mode
    /// (`TELETRAAN_ARTIFACT_CHECKSUM=sidecar`) takes it.
    pub async fn publish(&self, name: &str, url: &str, commit: &str, sha256: Option<&str>) -> Build {
        let mut body = json!({"name": name, "artifactUrl": url, "repo": format!("org/{name}"), "branch": "main", "commit": commit});
        if let Some(s) = sha256 {
            body["artifactSha256"] = json!(s);
        }
        self.call(reqwest::Method::POST, "/v1/builds", Some(body)).await.json().await.expect("a build")
    }

    /// Deploys a build (the worker's 201).
    pub async fn deploy(&self, env: &str, stage: &str, build: &Build) -> Deploy {
        let resp = self
            .call(reqwest::Method::POST, &format!("/v1/envs/{env}/{stage}/deploys?buildId={}", build.id), None)
            .await;
        assert_eq!(resp.status(), 201);
        resp.json().await.expect("a deploy")
    }

    /// A deploy action (`PROMOTE`, `RESTART`, `ROLLBACK`, `PAUSE`, `RESUME`) with extra query.
    pub async fn action(&self, env: &str, stage: &str, action: &str, extra: &str) -> Value {
        let path = format!("/v1/envs/{env}/{stage}/deploys/current/actions?actionType={action}{extra}");
        self.call(reqwest::Method::POST, &path, None).await.json().await.expect("JSON")
    }

    /// The agent records of a stage.
    pub async fn agents(&self, env: &str, stage: &str) -> Vec<Agent> {
        self.call(reqwest::Method::GET, &format!("/v1/envs/{env}/{stage}/agents"), None)
            .await
            .json()
            .await
            .expect("agents")
    }

    /// A deploy.
    pub async fn deploy_by_id(&self, id: &str) -> Deploy {
        self.call(reqwest::Method::GET, &format!("/v1/deploys/{id}"), None).await.json().await.expect("a deploy")
    }

    /// Waits until a deploy reaches `state`.
    pub async fn wait_state(&self, deploy: &str, state: &str) -> Deploy {
        self.wait_state_within(deploy, state, DEADLINE).await
    }

    /// Waits until a deploy reaches `state`, up to `limit`.
    pub async fn wait_state_within(&self, deploy: &str, state: &str, limit: Duration) -> Deploy {
        wait_for_within(&format!("deploy {deploy} to be {state}"), limit, || async {
            self.deploy_by_id(deploy).await.state.as_str() == state
        })
        .await;
        self.deploy_by_id(deploy).await
    }
}

/// Serves artifacts over HTTP as CI publishes them: `/<name>` answers its bytes and
/// `/<name>.sha256` its digest, as `sha256sum` writes it. Returns the base URL.
pub async fn serve_artifacts(files: Vec<(&'static str, Vec<u8>)>) -> String {
    let mut app = axum::Router::new();
    for (name, bytes) in files {
        let sidecar = format!("{}  {name}\n", teletraan::sample::sha256_hex(&bytes));
        app = app.route(&format!("/{name}"), axum::routing::get(move || async move { bytes }));
        app = app.route(&format!("/{name}.sha256"), axum::routing::get(move || async move { sidecar }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the artifact server");
    let addr = listener.local_addr().expect("the artifact server's address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}
