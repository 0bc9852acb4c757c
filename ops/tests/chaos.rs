//! The chaos suite: a rollout of simulated hosts on separate role processes (an API, two
//! gateways behind HAProxy, two workers) over a Postgres and a three-node RabbitMQ cluster of
//! the suite's own, during which faults are injected one at a time and then together. Each
//! round deploys a new build to the fleet, injects its fault once a fifth of the hosts are
//! done, heals it, and checks:
//!
//! * the rollout completes (every host SERVING_BUILD on it);
//! * hosts out of service never exceeded the cap, from the simulator's recorded timeline of
//!   every goal every host received (not a sample), and every host was admitted exactly once;
//! * the work queues drain;
//! * every command the API answered 201/202 for was applied exactly once: a driver keeps
//!   deploying to a second stage throughout, each request with an `Idempotency-Key`, retried
//!   with the same key until it is answered (and, when the API is killed, a burst of such
//!   requests is in flight); after each round, with the driver paused, each key answered so
//!   far has exactly one deploy, no deploy exists that no answer was given for, and every
//!   command is DONE;
//! * no deploy of the fleet's stage is duplicated, and the dead-letter queues are empty.
//!
//! It prints a table: fault, time to recover (from the heal until the rollout made progress
//! again), rollout time, and each invariant held or not after that round; then fails if any
//! did not hold.
//!
//! The short form (the default, run by `ops/test.sh` in CI) uses 100 hosts and a cap of 20 %;
//! `ops/chaos/run.sh` runs the full form (1,000 hosts, a cap of 10 %, longer faults). Settings:
//! `CHAOS_HOSTS`, `CHAOS_CAP_PCT`, `CHAOS_HOLD_SECS` (how long each fault lasts), `CHAOS_FAULTS`
//! (a comma list of fault names, default all), `CHAOS_REPORT` (a file to write the table to).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::Cluster;
use support::pool::{Haproxy, rollout_check};
use support::postgres::Postgres;
use support::proxy::{Mode, Proxy};
use support::{ADMIN, AGENT, Api, binary};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::{Fleet, SimConfig, numbered_hosts};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The stage the fleet deploys.
const ENV: &str = "web";
/// The stage the command driver deploys to (no hosts).
const SIDE: &str = "side";

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Which dependency connections of a role go through proxies the suite controls.
#[derive(Default)]
struct Links {
    postgres: Option<Proxy>,
    /// One per broker node, in the order of the URL list.
    broker: Vec<Proxy>,
}

impl Links {
    fn set(&self, postgres: Option<Mode>, broker: Option<Mode>) {
        if let (Some(p), Some(m)) = (&self.postgres, postgres) {
            p.set(m);
        }
        if let Some(m) = broker {
            for p in &self.broker {
                p.set(m);
            }
        }
    }
}

/// One role process, restartable on the same port.
struct Role {
    kind: &'static str,
    name: String,
    port: u16,
    links: Links,
    child: Option<Child>,
}

/// Everything the suite runs.
struct Rig {
    dir: PathBuf,
    pg: Postgres,
    cluster: Cluster,
    namespace: String,
    db_url: String,
    broker_ports: Vec<u16>,
    api: Role,
    gateways: Vec<Role>,
    workers: Vec<Role>,
}

impl Rig {
    async fn start(dir: &Path) -> Rig {
        std::fs::create_dir_all(dir).unwrap();
        let pg = Postgres::start();
        pg.create_db("teletraan");
        let cluster = Cluster::start();
        let broker_ports: Vec<u16> = cluster
            .urls
            .split(',')
            .map(|u| u.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap())
            .collect();
        let namespace = format!("chaos{}", std::process::id());
        let mut rig = Rig {
            dir: dir.to_path_buf(),
            db_url: pg.url("teletraan"),
            pg,
            cluster,
            namespace,
            broker_ports,
            api: Role { kind: "api", name: "api".into(), port: free_port(), links: Links::default(), child: None },
            gateways: Vec::new(),
            workers: Vec::new(),
        };
        // The API's link to the broker, a gateway's and a worker's to both Postgres and the broker
        // go through proxies: the faults that cut or partition a role act on them.
        rig.api.links = rig.links(false, true).await;
        for i in 0..2 {
            let links = if i == 1 { rig.links(false, true).await } else { Links::default() };
            rig.gateways.push(Role {
                kind: "gateway",
                name: format!("gateway{i}"),
                port: free_port(),
                links,
                child: None,
            });
        }
        for i in 0..2 {
            let links = if i == 0 { rig.links(true, true).await } else { Links::default() };
            rig.workers.push(Role {
                kind: "worker",
                name: format!("worker{i}"),
                port: free_port(),
                links,
                child: None,
            });
        }
        // The API first: it prepares the database.
        let mut api = std::mem::replace(&mut rig.api, placeholder());
        rig.spawn(&mut api).await;
        rig.api = api;
        for i in 0..2 {
            let mut g = std::mem::replace(&mut rig.gateways[i], placeholder());
            rig.spawn(&mut g).await;
            rig.gateways[i] = g;
            let mut w = std::mem::replace(&mut rig.workers[i], placeholder());
            rig.spawn(&mut w).await;
            rig.workers[i] = w;
        }
        rig
    }

    async fn links(&self, postgres: bool, broker: bool) -> Links {
        let mut links = Links::default();
        if postgres {
            links.postgres = Some(Proxy::start(self.pg.addr()).await);
        }
        if broker {
            for port in &self.broker_ports {
                links.broker.push(Proxy::start(SocketAddr::from(([127, 0, 0, 1], *port))).await);
            }
        }
        links
    }

    fn amqp_url(&self, links: &Links) -> String {
        let addrs: Vec<String> = if links.broker.is_empty() {
            self.broker_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
        } else {
            links.broker.iter().map(|p| p.addr.to_string()).collect()
        };
        addrs.iter().map(|a| format!("amqp://guest:guest@{a}/%2f")).collect::<Vec<_>>().join(",")
    }

    fn database_url(&self, links: &Links) -> String {
        match &links.postgres {
            Some(p) => format!("postgres://postgres@{}/teletraan", p.addr),
            None => self.db_url.clone(),
        }
    }

    /// Starts a role and waits until it is ready (a worker: until its health port answers).
    /// A role that exits at once (its dependency still coming back) is started again.
    async fn spawn(&self, role: &mut Role) {
        let listen = match role.kind {
            "api" => "TELETRAAN_API_LISTEN",
            "gateway" => "TELETRAAN_GATEWAY_LISTEN",
            _ => "TELETRAAN_WORKER_LISTEN",
        };
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{}/readyz", role.port);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(format!("{}.log", role.name)))
                .unwrap();
            let mut child = Command::new(binary("teletraan"))
                .arg(role.kind)
                .env("TELETRAAN_DATABASE_URL", self.database_url(&role.links))
                .env("TELETRAAN_AMQP_URL", self.amqp_url(&role.links))
                .env("TELETRAAN_NAMESPACE", &self.namespace)
                .env(listen, format!("127.0.0.1:{}", role.port))
                .env("TELETRAAN_ADMIN_TOKEN", ADMIN)
                .env("TELETRAAN_AGENT_TOKEN", AGENT)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("start teletraan {}: {e}", role.kind));
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(Instant::now() < deadline, "{} keeps exiting ({status}); see its log", role.name);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
                if http.get(&ready).send().await.is_ok_and(|r| r.status() == 200) {
                    role.child = Some(child);
                    return;
                }
                assert!(Instant::now() < deadline, "{} not ready in time; see its log", role.name);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Sends SIGKILL to a role.
    async fn kill(role: &mut Role) {
        if let Some(mut c) = role.child.take() {
            c.kill().await.expect("kill the role");
        }
    }

    /// Every queue of the suite's namespace with messages in it, as a live node sees it.
    fn queues_with_messages(&self, node: u16) -> BTreeMap<String, u64> {
        let out = self.cluster.ctl(node, &["list_queues", "name", "messages", "--no-table-headers"]);
        out.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (name, n) = (it.next()?, it.next()?.parse::<u64>().ok()?);
                (name.starts_with(&format!("{}.", self.namespace)) && n > 0).then(|| (name.to_string(), n))
            })
            .collect()
    }

    fn psql(&self, sql: &str) -> String {
        let out = std::process::Command::new("psql")
            .args(["-qAtX", "-F", "\t", &self.db_url, "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn placeholder() -> Role {
    Role { kind: "", name: String::new(), port: 0, links: Links::default(), child: None }
}

/// The faults, by name.
const FAULTS: &[&str] = &[
    "kill-worker",
    "kill-gateway",
    "kill-api",
    "restart-rabbitmq",
    "lose-broker-node",
    "restart-postgres",
    "cut-worker-from-postgres",
    "cut-api-from-rabbitmq",
    "partition-gateway-from-rabbitmq",
    "all-together",
];

/// What the command driver saw: each key and its answer.
#[derive(Default)]
struct Driven {
    /// Keys answered 201 or 202, with the status.
    answered: BTreeMap<String, u16>,
    /// Keys answered with anything else final (a 4xx): none is expected.
    refused: BTreeMap<String, String>,
    /// Attempts that got no answer or a 5xx (retried).
    retries: u64,
    /// Keys that needed more than one attempt.
    retried: BTreeSet<String>,
}

/// Sends one deploy of `build` to the side stage with `key` as its `Idempotency-Key`, again
/// with the same key until it is answered.
async fn send_until_answered(http: &reqwest::Client, api: &str, build: &str, key: &str, driven: &Mutex<Driven>) {
    loop {
        let url = format!("{api}/v1/envs/{SIDE}/prod/deploys?buildId={build}&description={key}");
        let sent = http
            .post(&url)
            .header("Authorization", format!("token {ADMIN}"))
            .header("Idempotency-Key", key)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 201 || r.status() == 202 => {
                driven.lock().unwrap().answered.insert(key.to_string(), r.status().as_u16());
                return;
            }
            Ok(r) if r.status().is_client_error() => {
                let text = r.text().await.unwrap_or_default();
                driven.lock().unwrap().refused.insert(key.to_string(), text);
                return;
            }
            _ => {
                {
                    let mut d = driven.lock().unwrap();
                    d.retries += 1;
                    d.retried.insert(key.to_string());
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

fn command_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Deploys builds to the side stage until told to stop, one key at a time, each taken while
/// holding `gate` (the checks between rounds hold it to pause the driver).
async fn drive_commands(
    api: String,
    build: String,
    driven: Arc<Mutex<Driven>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let http = command_client();
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let turn = gate.lock().await;
        send_until_answered(&http, &api, &build, &format!("chaos-{n}"), &driven).await;
        drop(turn);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Starts `n` deploys to the side stage at once (keys `<prefix>-<i>`), each sent until
/// answered: when the API is killed right after, some of them are in flight.
fn burst(
    api: &str,
    build: &str,
    prefix: &str,
    n: usize,
    driven: &Arc<Mutex<Driven>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let (api, build, key, driven) =
                (api.to_string(), build.to_string(), format!("{prefix}-{i}"), driven.clone());
            tokio::spawn(async move { send_until_answered(&command_client(), &api, &build, &key, &driven).await })
        })
        .collect()
}

/// The checks of the commands and deploys, at a moment when no command is being sent and the
/// queues have drained: every key answered so far has exactly one deploy, no deploy exists
/// that no answer was given for, nothing was refused, every command is DONE; the fleet's stage
/// has exactly the deploys made; the dead-letter queues are empty.
fn check_commands(rig: &Rig, driven: &Driven, fleet_deploys: usize) -> Checks {
    let side: BTreeMap<String, u64> = rig
        .psql(&format!(
            "SELECT d.description, count(*) FROM deploys d JOIN environs e ON e.env_id = d.env_id
             WHERE e.env_name = '{SIDE}' GROUP BY d.description"
        ))
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(k, n)| (k.to_string(), n.parse().unwrap_or(0))))
        .collect();
    let mut problems = Vec::new();
    for key in driven.answered.keys() {
        match side.get(key) {
            Some(1) => {}
            Some(n) => problems.push(format!("{key}: {n} deploys")),
            None => problems.push(format!("{key}: answered but never applied")),
        }
    }
    for key in side.keys().filter(|k| !driven.answered.contains_key(*k)) {
        problems.push(format!("{key}: a deploy nobody was answered for"));
    }
    if let Some((key, why)) = driven.refused.iter().next() {
        problems.push(format!("{} refused, the first: {key}: {why}", driven.refused.len()));
    }
    let not_done = rig.psql("SELECT count(*) FROM commands WHERE status <> 'DONE'");
    if not_done.trim() != "0" {
        problems.push(format!("{} commands not DONE", not_done.trim()));
    }
    let stored = rig.psql(&format!(
        "SELECT count(*) FROM deploys d JOIN environs e ON e.env_id = d.env_id WHERE e.env_name = '{ENV}'"
    ));
    let duplicated = if stored.trim() == fleet_deploys.to_string() {
        Ok(())
    } else {
        Err(format!("{} deploys of the fleet's stage stored, {fleet_deploys} made", stored.trim()))
    };
    let dead: BTreeMap<String, u64> =
        rig.queues_with_messages(1).into_iter().filter(|(q, _)| q.ends_with(".dead")).collect();
    Checks {
        commands: if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) },
        duplicated,
        dead_letters: if dead.is_empty() { Ok(()) } else { Err(format!("{dead:?}")) },
    }
}

/// The command, deploy and dead-letter checks of one moment.
struct Checks {
    commands: Result<(), String>,
    duplicated: Result<(), String>,
    dead_letters: Result<(), String>,
}

/// Waits until no queue of the suite holds a message but dead letters (up to 30 s).
async fn drain(rig: &Rig) -> Result<(), String> {
    let mut drained = Err(String::new());
    for _ in 0..60 {
        let left: BTreeMap<String, u64> =
            rig.queues_with_messages(1).into_iter().filter(|(q, _)| !q.ends_with(".dead")).collect();
        drained = if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) };
        if drained.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drained
}

/// One round's outcome.
struct Row {
    fault: String,
    recovered: Option<Duration>,
    rollout: Duration,
    completed: Result<(), String>,
    cap: Result<u32, String>,
    drained: Result<(), String>,
    checks: Checks,
    /// Commands that reached the API before it was killed, applied, and answered only on a
    /// retry (kill-api, all-together).
    in_flight: Option<usize>,
}

fn mark<T>(r: &Result<T, String>) -> &'static str {
    if r.is_ok() { "held" } else { "BROKEN" }
}

async fn success_total(api: &Api, deploy: &str) -> Option<i64> {
    let r = api.http.get(format!("{}/v1/deploys/{deploy}", api.base)).header("Authorization", format!("token {ADMIN}"));
    let v: Value = r.send().await.ok()?.json().await.ok()?;
    v.get("successTotal")?.as_i64()
}

async fn state_of(api: &Api, deploy: &str) -> Option<String> {
    let r = api.http.get(format!("{}/v1/deploys/{deploy}", api.base)).header("Authorization", format!("token {ADMIN}"));
    let v: Value = r.send().await.ok()?.json().await.ok()?;
    Some(v.get("state")?.as_str()?.to_string())
}

/// Retries a setup call while the system warms up.
async fn call(api: &Api, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    for _ in 0..200 {
        let mut req = api.http.request(method.clone(), format!("{}{path}", api.base));
        req = req.header("Authorization", format!("token {ADMIN}"));
        if let Some(b) = &body {
            req = req.json(b);
        }
        if let Ok(r) = req.send().await
            && r.status().is_success()
        {
            return r.json().await.unwrap_or(Value::Null);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{path} kept failing");
}

/// Injects a fault; returns when it is healed.
async fn inject(rig: &mut Rig, fault: &str, hold: Duration) {
    match fault {
        "kill-worker" => {
            Rig::kill(&mut rig.workers[1]).await;
            tokio::time::sleep(hold).await;
            let mut w = std::mem::replace(&mut rig.workers[1], placeholder());
            rig.spawn(&mut w).await;
            rig.workers[1] = w;
        }
        "kill-gateway" => {
            Rig::kill(&mut rig.gateways[0]).await;
            tokio::time::sleep(hold).await;
            let mut g = std::mem::replace(&mut rig.gateways[0], placeholder());
            rig.spawn(&mut g).await;
            rig.gateways[0] = g;
        }
        "kill-api" => {
            Rig::kill(&mut rig.api).await;
            tokio::time::sleep(hold).await;
            let mut a = std::mem::replace(&mut rig.api, placeholder());
            rig.spawn(&mut a).await;
            rig.api = a;
        }
        "restart-rabbitmq" => {
            for node in [2u16, 1, 0] {
                rig.cluster.ctl(node, &["stop_app"]);
            }
            tokio::time::sleep(hold).await;
            // All three at once: each waits for the others to form the cluster again.
            let starts: Vec<_> = (0..3u16)
                .map(|node| {
                    let name = rig.cluster.node(node);
                    std::thread::spawn(move || {
                        std::process::Command::new("rabbitmqctl").args(["-q", "-n", &name, "start_app"]).output()
                    })
                })
                .collect();
            for s in starts {
                let out = s.join().unwrap().expect("rabbitmqctl start_app");
                assert!(out.status.success(), "start_app: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        "lose-broker-node" => {
            rig.cluster.ctl(0, &["stop_app"]);
            tokio::time::sleep(hold).await;
            rig.cluster.ctl(0, &["start_app"]);
        }
        "restart-postgres" => {
            rig.pg.stop();
            tokio::time::sleep(hold).await;
            rig.pg.start_again();
        }
        "cut-worker-from-postgres" => {
            rig.workers[0].links.set(Some(Mode::Cut), None);
            tokio::time::sleep(hold).await;
            rig.workers[0].links.set(Some(Mode::Pass), None);
        }
        "cut-api-from-rabbitmq" => {
            rig.api.links.set(None, Some(Mode::Cut));
            tokio::time::sleep(hold).await;
            rig.api.links.set(None, Some(Mode::Pass));
        }
        "partition-gateway-from-rabbitmq" => {
            rig.gateways[1].links.set(None, Some(Mode::Partition));
            tokio::time::sleep(hold * 2).await;
            rig.gateways[1].links.set(None, Some(Mode::Pass));
        }
        "all-together" => {
            Rig::kill(&mut rig.workers[1]).await;
            Rig::kill(&mut rig.gateways[0]).await;
            Rig::kill(&mut rig.api).await;
            rig.cluster.ctl(0, &["stop_app"]);
            rig.workers[0].links.set(Some(Mode::Cut), None);
            rig.gateways[1].links.set(None, Some(Mode::Partition));
            rig.pg.stop();
            tokio::time::sleep(hold).await;
            rig.pg.start_again();
            rig.workers[0].links.set(Some(Mode::Pass), None);
            rig.gateways[1].links.set(None, Some(Mode::Pass));
            rig.cluster.ctl(0, &["start_app"]);
            let mut a = std::mem::replace(&mut rig.api, placeholder());
            rig.spawn(&mut a).await;
            rig.api = a;
            let mut g = std::mem::replace(&mut rig.gateways[0], placeholder());
            rig.spawn(&mut g).await;
            rig.gateways[0] = g;
            let mut w = std::mem::replace(&mut rig.workers[1], placeholder());
            rig.spawn(&mut w).await;
            rig.workers[1] = w;
        }
        other => panic!("unknown fault {other}; the faults: {FAULTS:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_survive_every_fault_one_at_a_time_and_together() {
    let hosts: usize = setting("CHAOS_HOSTS", 100);
    let cap_pct: u32 = setting("CHAOS_CAP_PCT", 20);
    let hold = Duration::from_secs(setting("CHAOS_HOLD_SECS", 3));
    let faults: Vec<String> = std::env::var("CHAOS_FAULTS")
        .ok()
        .filter(|f| !f.is_empty())
        .map(|f| f.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| FAULTS.iter().map(|f| f.to_string()).collect());
    let cap = (hosts as u32 * cap_pct / 100).max(1);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{}", std::process::id()));
    let mut rig = Rig::start(&dir).await;
    let api = Api { http: reqwest::Client::new(), base: format!("http://127.0.0.1:{}", rig.api.port) };

    let gateways: Vec<String> = rig.gateways.iter().map(|g| format!("http://127.0.0.1:{}", g.port)).collect();
    let lb = Haproxy::start(&gateways.iter().map(String::as_str).collect::<Vec<_>>()).await;
    call(
        &api,
        reqwest::Method::POST,
        "/v1/envs",
        Some(json!({"envName": ENV, "stageName": "prod", "maxParallelPct": cap_pct})),
    )
    .await;
    call(&api, reqwest::Method::PUT, &format!("/v1/envs/{ENV}/prod/capacity?capacityType=GROUP"), Some(json!(["g"])))
        .await;
    call(&api, reqwest::Method::POST, "/v1/envs", Some(json!({"envName": SIDE, "stageName": "prod"}))).await;
    let config = SimConfig {
        gateway: lb.url.clone(),
        token: AGENT.into(),
        hosts: numbered_hosts("c", hosts, &["g".to_string()], &[]),
        ping_interval: Duration::from_millis(1000),
        jitter: 0.2,
        request_timeout: Duration::from_secs(10),
        // Every goal of every round kept: the cap is checked from the whole timeline.
        timeline_capacity: hosts * 40 * (faults.len() + 2),
        ..SimConfig::default()
    }
    // A restart outlasts the spread of the hosts' next pings (interval ± 20 %), so the hosts
    // admitted together are out of service together: the timeline sees any excess over the cap.
    .stage_duration(schema::DeployStage::Restarting, Duration::from_millis(1500));
    let fleet = Fleet::start(config).expect("a fleet");

    let publish = |name: &'static str, n: usize| {
        let api = &api;
        async move {
            let body = json!({"name": name, "artifactUrl": format!("https://artifacts.example.com/{name}-{n}.tgz"),
                "repo": format!("org/{name}"), "branch": "main", "commit": format!("{n:07}abc"), "artifactSha256": UNDOWNLOADED_SHA256});
            call(api, reqwest::Method::POST, "/v1/builds", Some(body)).await["id"].as_str().unwrap().to_string()
        }
    };
    // The first deploy makes every host a serving one.
    let b0 = publish(ENV, 0).await;
    let d0 = call(&api, reqwest::Method::POST, &format!("/v1/envs/{ENV}/prod/deploys?buildId={b0}"), None).await;
    let d0 = d0["id"].as_str().unwrap().to_string();
    support::wait_for("the first deploy to reach every host", || async {
        state_of(&api, &d0).await.as_deref() == Some("SUCCEEDING")
    })
    .await;

    // The command driver runs through every round.
    let side_build = publish(SIDE, 1).await;
    let driven = Arc::new(Mutex::new(Driven::default()));
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let (stop_driver, stop_rx) = watch::channel(false);
    let driver =
        tokio::spawn(drive_commands(api.base.clone(), side_build.clone(), driven.clone(), gate.clone(), stop_rx));

    let mut rows = Vec::new();
    let mut fleet_deploys = vec![d0];
    for (round, fault) in faults.iter().enumerate() {
        let build = publish(ENV, round + 2).await;
        let started = Instant::now();
        let deploy =
            call(&api, reqwest::Method::POST, &format!("/v1/envs/{ENV}/prod/deploys?buildId={build}"), None).await;
        let deploy = deploy["id"].as_str().expect("a deploy id").to_string();
        fleet_deploys.push(deploy.clone());
        support::wait_for("a fifth of the rollout", || async {
            success_total(&api, &deploy).await.unwrap_or(0) >= (hosts / 5) as i64
        })
        .await;
        eprintln!("chaos: {fault} at {:.1} s", started.elapsed().as_secs_f64());
        // Commands in flight when the API dies: a burst, then the kill while it is answered.
        let burst_keys = format!("burst-{round}");
        let bursting = if fault == "kill-api" || fault == "all-together" {
            let tasks = burst(&api.base, &side_build, &burst_keys, 20, &driven);
            // The kill comes once the first of them is applied: the others are then waiting
            // in the API for their turn on the stage (a stage's commands go one at a time).
            let applied = format!(
                "SELECT count(*) FROM deploys d JOIN environs e ON e.env_id = d.env_id
                 WHERE e.env_name = '{SIDE}' AND d.description LIKE '{burst_keys}-%'"
            );
            let since = Instant::now();
            while rig.psql(&applied).trim() == "0" && since.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tasks
        } else {
            Vec::new()
        };
        let in_burst = bursting.len();
        inject(&mut rig, fault, hold).await;
        let healed = Instant::now();
        let healed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let after_heal = success_total(&api, &deploy).await.unwrap_or(0);
        let mut recovered = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        let completed = loop {
            let done = success_total(&api, &deploy).await;
            if recovered.is_none() && done.is_some_and(|d| d > after_heal || d >= hosts as i64) {
                recovered = Some(healed.elapsed());
            }
            if state_of(&api, &deploy).await.as_deref() == Some("SUCCEEDING") {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err(format!("not SUCCEEDING after 300 s ({done:?} of {hosts} done)"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let rollout = started.elapsed();
        let cap_held = rollout_check(&fleet, &deploy, hosts, cap);
        // The burst is answered, the driver paused: then the queues drain and nothing is sent
        // while the commands are checked.
        for task in bursting {
            task.await.expect("a burst command");
        }
        let paused = gate.lock().await;
        let drained = drain(&rig).await;
        let checks = check_commands(&rig, &driven.lock().unwrap(), fleet_deploys.len());
        drop(paused);
        // Burst commands that reached the API before it died (their deploy was made while it
        // was down) and were answered only on a retry: in flight at the kill.
        let in_flight = (in_burst > 0).then(|| {
            let made_while_down = rig.psql(&format!(
                "SELECT d.description FROM deploys d JOIN environs e ON e.env_id = d.env_id
                 WHERE e.env_name = '{SIDE}' AND d.description LIKE '{burst_keys}-%'
                   AND d.start_date < to_timestamp({healed_at})"
            ));
            let retried = &driven.lock().unwrap().retried;
            made_while_down.lines().filter(|k| retried.contains(*k)).count()
        });
        rows.push(Row {
            fault: fault.clone(),
            recovered,
            rollout,
            completed,
            cap: cap_held,
            drained,
            checks,
            in_flight,
        });
    }
    let _ = stop_driver.send(true);
    driver.await.unwrap();

    // Once more after the last round, with the driver stopped.
    let drained = drain(&rig).await;
    let driven = std::mem::take(&mut *driven.lock().unwrap());
    let Checks { commands, duplicated, dead_letters } = check_commands(&rig, &driven, fleet_deploys.len());
    let commands = drained.and(commands);

    // The table.
    let mut table = String::new();
    let _ = writeln!(
        table,
        "chaos suite: {hosts} hosts, cap {cap}, faults held {} s; {} commands answered ({} retried attempts)",
        hold.as_secs(),
        driven.answered.len(),
        driven.retries
    );
    let _ = writeln!(
        table,
        "| fault | recovered in | rollout | completed | cap (max out) | queues drained | commands applied once | \
         no deploy duplicated | no dead letters |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {:.1} s | {} | {} | {} | {} | {} | {} |",
            r.fault,
            r.recovered.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
            r.rollout.as_secs_f64(),
            mark(&r.completed),
            match &r.cap {
                Ok(max) => format!("held ({max}/{cap})"),
                Err(_) => "BROKEN".into(),
            },
            mark(&r.drained),
            match (r.in_flight, &r.checks.commands) {
                (Some(n), Ok(())) => format!("held ({n} in flight at the kill)"),
                (_, res) => mark(res).to_string(),
            },
            mark(&r.checks.duplicated),
            mark(&r.checks.dead_letters),
        );
    }
    let _ = writeln!(table, "\nafter the last round: every answered command applied exactly once: {}", mark(&commands));
    let _ = writeln!(table, "no deploy duplicated: {}", mark(&duplicated));
    let _ = writeln!(table, "dead-letter queues empty: {}", mark(&dead_letters));
    eprintln!("\n{table}");
    if let Ok(path) = std::env::var("CHAOS_REPORT") {
        std::fs::write(path, &table).expect("write the report");
    }
    let mut failures = Vec::new();
    for r in &rows {
        for (what, res) in [
            ("completed", r.completed.as_ref().map(|_| ())),
            ("cap", r.cap.as_ref().map(|_| ())),
            ("drained", r.drained.as_ref().map(|_| ())),
            ("commands", r.checks.commands.as_ref().map(|_| ())),
            ("deploys", r.checks.duplicated.as_ref().map(|_| ())),
            ("dead letters", r.checks.dead_letters.as_ref().map(|_| ())),
        ] {
            if let Err(e) = res {
                failures.push(format!("{}: {what}: {e}", r.fault));
            }
        }
    }
    for (what, res) in [("commands", &commands), ("deploys", &duplicated), ("dead letters", &dead_letters)] {
        if let Err(e) = res {
            failures.push(format!("{what}: {e}"));
        }
    }
    fleet.stop().await;
    drop(lb);
    assert!(failures.is_empty(), "invariants broken (logs in {}):\n{}", dir.display(), failures.join("\n"));
    drop(rig);
    let _ = std::fs::remove_dir_all(&dir);
}
