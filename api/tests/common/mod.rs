//! The harness of the API tests: every role of the deploy system (workers, gateway, API) in the
//! test's own runtime, wired as `ops/src/serve.rs` wires them, on a database and a broker
//! namespace of the test's own. Plus small HTTP helpers, fixtures and Teletraan-shaped pings.

#![allow(dead_code)]

pub mod proxy;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::auth::TrustedHeaders;
use api::gateway::GatewayConfig;
use api::rest::ApiState;
use bus::BusConfig;
use bus::rpc::CommandClient;
use bus::testing::TestBus;
use reqwest::{Method, StatusCode};
use schema::model::ArtifactPolicy;
use serde_json::{Value, json};
use store::testing::TestDatabase;
use store::{Store, StoreOptions, TokenKind};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use workers::WorkerConfig;

/// A well-formed SHA-256 for builds that no agent downloads in these tests.
pub const SOME_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/// Longest a test waits for something asynchronous (a worker, a change event) to happen.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// Longest the roles may take to stop once asked.
const STOP_PATIENCE: Duration = Duration::from_secs(20);

/// Everything one test runs against.
pub struct App {
    /// `http://127.0.0.1:<port>` of the REST API.
    pub api: String,
    /// `http://127.0.0.1:<port>` of the gateway.
    pub gateway: String,
    /// A token of the ADMIN role, named `admin`.
    pub admin_token: String,
    /// A token of the AGENT role, named `agent`.
    pub agent_token: String,
    /// The test's database.
    pub store: Store,
    /// The API's live events, fed from the test's namespace.
    pub events: api::events::Hub,
    /// The HTTP client.
    pub http: reqwest::Client,
    shutdown: watch::Sender<bool>,
    // Field order is drop order: on a panic the tasks are aborted before the database and the
    // namespace they use are deleted.
    tasks: JoinSet<()>,
    /// The broker namespace of this app.
    pub bus: TestBus,
    db: TestDatabase,
}

/// Starts workers, gateway and API for one test and waits until the gateway is ready.
pub async fn spawn_app() -> App {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with the workers' settings changed by `tune` (short webhook backoffs…).
pub async fn spawn_app_with(tune: impl FnOnce(&mut WorkerConfig)) -> App {
    spawn_app_trusting(tune, TrustedHeaders::default()).await
}

/// Like [`spawn_app_with`], the API trusting an SSO proxy's headers as `trusted` says.
pub async fn spawn_app_trusting(tune: impl FnOnce(&mut WorkerConfig), trusted: TrustedHeaders) -> App {
    start(tune, trusted, None, ArtifactPolicy::default(), None).await
}

/// Like [`spawn_app`], the API answering 503 to a request that has not answered within
/// `request_timeout` (deploys wait for their worker half of it).
pub async fn spawn_app_with_request_timeout(request_timeout: Duration) -> App {
    start(|_| {}, TrustedHeaders::default(), None, ArtifactPolicy::default(), Some(request_timeout)).await
}

/// Like [`spawn_app`], the API applying `artifacts` to published builds instead of the
/// production default (no allow-list, no `file://`, `artifactSha256` required).
pub async fn spawn_app_with_artifacts(artifacts: ArtifactPolicy) -> App {
    start(|_| {}, TrustedHeaders::default(), None, artifacts, None).await
}

/// Where the API and the gateway reach Postgres and RabbitMQ instead of directly (the
/// addresses of a test's [`proxy::Proxy`]s), and how long they wait for them.
pub struct Detour {
    /// Stands for the Postgres server.
    pub database: SocketAddr,
    /// Stands for the RabbitMQ server.
    pub broker: SocketAddr,
    /// Connect, pool and broker timeouts of the API and the gateway (short, so that a test
    /// of an outage does not wait for the production defaults).
    pub timeout: Duration,
    /// The API's request timeout; a deploy waits for its worker half of it.
    pub request_timeout: Duration,
}

/// Like [`spawn_app`], with the API and the gateway reaching Postgres and RabbitMQ through
/// `detour` (the workers and the test's own store connect directly).
pub async fn spawn_app_through(detour: &Detour) -> App {
    start(|_| {}, TrustedHeaders::default(), Some(detour), ArtifactPolicy::default(), None).await
}

async fn start(
    tune: impl FnOnce(&mut WorkerConfig),
    trusted: TrustedHeaders,
    detour: Option<&Detour>,
    artifacts: ArtifactPolicy,
    request_timeout: Option<Duration>,
) -> App {
    let db = TestDatabase::new().await;
    let bus = TestBus::new();
    let store = db.store.clone();
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    let agent_token = uuid::Uuid::new_v4().simple().to_string();
    let now = schema::time::now_ms();
    store.seed_token("admin", TokenKind::Api, &admin_token, now).await.expect("seed the admin token");
    store.seed_token("agent", TokenKind::Agent, &agent_token, now).await.expect("seed the agent token");

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut worker_config = WorkerConfig::new(bus.config.clone(), db.url.clone());
    tune(&mut worker_config);
    workers::spawn(worker_config, store.clone(), shutdown_rx.clone(), &mut tasks);

    // What the API and the gateway use: the test's store and namespace, or the same through
    // the detour.
    let (role_store, role_bus) = match detour {
        None => (store.clone(), bus.config.clone()),
        Some(d) => {
            let options = StoreOptions {
                max_connections: 8,
                connect_timeout: d.timeout,
                pool_timeout: d.timeout,
                ..StoreOptions::default()
            };
            let detoured =
                Store::connect_with(&proxy::through(&db.url, d.database), &options).expect("a store through the proxy");
            let bus =
                BusConfig { url: proxy::through(&bus.config.url, d.broker), timeout: d.timeout, ..bus.config.clone() };
            (detoured, bus)
        }
    };

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the gateway");
    let gateway = format!("http://{}", listener.local_addr().expect("gateway address"));
    let gw =
        api::gateway::start(GatewayConfig::new(role_bus.clone()), role_store.clone(), shutdown_rx.clone(), &mut tasks);
    tasks.spawn(serve(listener, api::gateway_router(gw, role_store.clone()), shutdown_rx.clone()));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the api");
    let api = format!("http://{}", listener.local_addr().expect("api address"));
    // Generous: a deploy answered 202 because a loaded machine was slow is not what these
    // tests are about.
    let (command_wait, request_timeout) = match (detour, request_timeout) {
        (Some(d), _) => (d.request_timeout / 2, d.request_timeout),
        (None, Some(t)) => (t / 2, t),
        (None, None) => (Duration::from_secs(20), Duration::from_secs(120)),
    };
    let events = api::events::Hub::default();
    events.spawn_feed(role_bus.clone(), shutdown_rx.clone(), &mut tasks);
    let state = ApiState {
        store: role_store,
        commands: Arc::new(CommandClient::new(role_bus)),
        artifacts: Arc::new(artifacts),
        command_wait,
        request_timeout,
        events: events.clone(),
    };
    tasks.spawn(serve(listener, api::api_router(state, trusted), shutdown_rx));

    let app = App {
        api,
        gateway,
        admin_token,
        agent_token,
        store,
        events,
        http: reqwest::Client::new(),
        shutdown,
        tasks,
        bus,
        db,
    };
    let ready = format!("{}/readyz", app.gateway);
    eventually("the gateway to be ready", || {
        let (http, ready) = (&app.http, &ready);
        async move {
            match http.get(ready).send().await {
                Ok(r) if r.status() == StatusCode::OK => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    app
}

impl App {
    /// Starts one more gateway on the same database and broker (as a second replica behind a
    /// load balancer would be) and returns its base URL once it is ready.
    pub async fn start_gateway(&mut self) -> String {
        self.start_gateway_with(|_| {}).await
    }

    /// [`App::start_gateway`] with its configuration changed by `tune`.
    pub async fn start_gateway_with(&mut self, tune: impl FnOnce(&mut GatewayConfig)) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind another gateway");
        let url = format!("http://{}", listener.local_addr().expect("gateway address"));
        let shutdown = self.shutdown.subscribe();
        let mut config = GatewayConfig::new(self.bus.config.clone());
        tune(&mut config);
        let gw = api::gateway::start(config, self.store.clone(), shutdown.clone(), &mut self.tasks);
        self.tasks.spawn(serve(listener, api::gateway_router(gw, self.store.clone()), shutdown));
        let ready = format!("{url}/readyz");
        eventually("the other gateway to be ready", || {
            let (http, ready) = (&self.http, &ready);
            async move {
                match http.get(ready).send().await {
                    Ok(r) if r.status() == StatusCode::OK => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        url
    }

    /// A router of the API on this test's store and namespace, built as the listener's is, to
    /// drive in-process (`tower::ServiceExt::oneshot`): a handler's panic then reaches the test.
    pub fn api_router(&self) -> axum::Router {
        let state = ApiState {
            store: self.store.clone(),
            commands: Arc::new(CommandClient::new(self.bus.config.clone())),
            artifacts: Arc::new(ArtifactPolicy::default()),
            command_wait: Duration::from_secs(20),
            request_timeout: Duration::from_secs(120),
            events: self.events.clone(),
        };
        api::api_router(state, TrustedHeaders::default())
    }

    /// Pings a given gateway with the agent token.
    pub async fn ping_at(&self, gateway: &str, body: &Value) -> Reply {
        let url = format!("{gateway}/v1/system/ping");
        self.call(Method::POST, &url, Some(&self.agent_token), Body::Json(body)).await
    }
}

async fn serve(listener: TcpListener, router: axum::Router, mut shutdown: watch::Receiver<bool>) {
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(stop).await {
        panic!("server failed: {e}");
    }
}

/// What a body to send is.
pub enum Body<'a> {
    /// No body.
    None,
    /// A JSON document.
    Json(&'a Value),
    /// Bytes as given, labelled `application/json` (for malformed input).
    Raw(&'a str),
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// `Location` header.
    pub location: Option<String>,
    /// `Retry-After` header.
    pub retry_after: Option<String>,
    /// The body as text.
    pub text: String,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub body: Value,
}

impl Reply {
    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        self.body
    }

    /// Asserts an error answer: this status, and the stable shape `{"code", "message"}`.
    #[track_caller]
    pub fn expect_error(&self, status: StatusCode) -> (String, String) {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        let code = self.body["code"].as_str();
        let message = self.body["message"].as_str();
        match (code, message) {
            (Some(c), Some(m)) if !c.is_empty() && !m.is_empty() => (c.to_string(), m.to_string()),
            _ => panic!("an error must answer {{\"code\", \"message\"}}; got {:?}", self.text),
        }
    }
}

impl App {
    /// Any request.
    pub async fn call(&self, method: Method, url: &str, token: Option<&str>, body: Body<'_>) -> Reply {
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("token {t}"));
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(v),
            Body::Raw(s) => req.header("Content-Type", "application/json").body(s.to_string()),
        };
        let resp = req.send().await.unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
        let status = resp.status();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (location, retry_after) = (header("location"), header("retry-after"));
        let text = resp.text().await.unwrap_or_else(|e| panic!("body of {url} unreadable: {e}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, location, retry_after, text, body }
    }

    /// A request to the API with the admin token; `path` starts with `/`.
    pub async fn admin(&self, method: Method, path: &str, body: Body<'_>) -> Reply {
        self.call(method, &format!("{}{path}", self.api), Some(&self.admin_token), body).await
    }

    /// `GET` on the API as admin.
    pub async fn get(&self, path: &str) -> Reply {
        self.admin(Method::GET, path, Body::None).await
    }

    /// `POST` of JSON on the API as admin.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.admin(Method::POST, path, Body::Json(body)).await
    }

    /// `PUT` of JSON on the API as admin.
    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.admin(Method::PUT, path, Body::Json(body)).await
    }

    /// `DELETE` on the API as admin.
    pub async fn delete(&self, path: &str) -> Reply {
        self.admin(Method::DELETE, path, Body::None).await
    }

    /// A ping to the gateway with the agent token.
    pub async fn ping(&self, body: &Value) -> Reply {
        let url = format!("{}/v1/system/ping", self.gateway);
        self.call(Method::POST, &url, Some(&self.agent_token), Body::Json(body)).await
    }

    /// Creates a stage with the defaults; returns it.
    pub async fn create_stage(&self, env: &str, stage: &str) -> Value {
        self.post("/v1/envs", &json!({"envName": env, "stageName": stage})).await.expect(StatusCode::CREATED)
    }

    /// Replaces a stage's capacity (`GROUP` or `HOST`).
    pub async fn set_capacity(&self, env: &str, stage: &str, kind: &str, names: &[&str]) {
        let path = format!("/v1/envs/{env}/{stage}/capacity?capacityType={kind}");
        self.put(&path, &json!(names)).await.expect(StatusCode::NO_CONTENT);
    }

    /// Publishes a build (with an `artifactSha256`, as the default policy requires); returns it.
    pub async fn publish_build(&self, name: &str, commit: &str) -> Value {
        let build = json!({
            "name": name,
            "artifactUrl": format!("https://artifacts.example.com/{name}/{commit}.tar.gz"),
            "artifactSha256": SOME_SHA256,
            "type": "GitHub",
            "repo": format!("org/{name}"),
            "branch": "main",
            "commit": commit,
        });
        self.post("/v1/builds", &build).await.expect(StatusCode::CREATED)
    }

    /// Deploys a build on a stage; returns the deploy (the worker's answer).
    pub async fn deploy(&self, env: &str, stage: &str, build_id: &str) -> Value {
        let path = format!("/v1/envs/{env}/{stage}/deploys?buildId={build_id}");
        self.admin(Method::POST, &path, Body::None).await.expect(StatusCode::CREATED)
    }

    /// A deploy by id.
    pub async fn deploy_by_id(&self, id: &str) -> Value {
        self.get(&format!("/v1/deploys/{id}")).await.expect(StatusCode::OK)
    }

    /// When the workers last stored a heartbeat of a host.
    pub async fn last_seen(&self, host_id: &str) -> Option<i64> {
        self.db.last_seen(host_id).await
    }

    /// Runs `statement` on this test's database and returns the rows it changed: for a test
    /// that changes rows behind the roles' backs (as a lost message would leave them).
    pub async fn sql(&self, statement: &str) -> u64 {
        self.db.client().await.execute(statement, &[]).await.expect(statement)
    }

    /// Stops every role and waits for them; fails the test when they do not stop in time.
    /// The database and the namespace are deleted afterwards.
    pub async fn stop(self) {
        let App { http, shutdown, mut tasks, bus, db, store, .. } = self;
        // Idle keep-alive connections must not hold the servers' graceful shutdown.
        drop(http);
        let _ = shutdown.send(true);
        let mut panicked = Vec::new();
        let drained = tokio::time::timeout(STOP_PATIENCE, async {
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done {
                    panicked.push(e.to_string());
                }
            }
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            panic!("the roles did not stop within {STOP_PATIENCE:?} of being asked to");
        }
        assert!(panicked.is_empty(), "background tasks failed: {panicked:?}");
        drop(store);
        drop(bus);
        drop(db);
    }
}

/// Polls `probe` until it answers `Ok`, every 50 ms, for at most [`PATIENCE`]; the last `Err`
/// (what was seen instead) is in the failure message.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {PATIENCE:?} waiting for {what}; last seen: {seen}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A simulated host, as Teletraan's agent describes itself.
#[derive(Debug, Clone)]
pub struct Host {
    /// `hostId`.
    pub id: String,
    /// `hostName`.
    pub name: String,
    /// Its only group.
    pub group: String,
}

impl Host {
    /// A host `name` (id `i-<name>`) in `group`.
    pub fn new(name: &str, group: &str) -> Host {
        Host { id: format!("i-{name}"), name: name.to_string(), group: group.to_string() }
    }

    /// A ping body exactly as Teletraan's agent 1.2.76 sends it.
    pub fn ping_body(&self, reports: &[Value]) -> Value {
        json!({
            "hostId": self.id,
            "hostName": self.name,
            "hostIp": "10.1.2.3",
            "autoscalingGroup": self.group,
            "availabilityZone": "us-east-1a",
            "agentVersion": "1.2.76",
            "groups": [self.group],
            "normandieStatus": "ERROR",
            "knoxStatus": "ERROR",
            "reports": reports,
        })
    }
}

/// One report as Teletraan's agent sends it: every field present, unused ones `null`.
pub fn report(deploy_id: &str, env_id: &str, stage: &str, status: &str) -> Value {
    json!({
        "deployId": deploy_id,
        "envId": env_id,
        "deployStage": stage,
        "agentStatus": status,
        "errorCode": 0,
        "errorMessage": null,
        "failCount": 0,
        "deployAlias": null,
        "containerHealthStatus": null,
        "agentState": null,
    })
}

/// The report of having run a goal with `status`.
pub fn report_on(goal: &Value, status: &str) -> Value {
    report(str_of(goal, "deployId"), str_of(goal, "envId"), str_of(goal, "deployStage"), status)
}

/// A string field of a JSON object, or a failure naming it.
#[track_caller]
pub fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

/// Teletraan's stage sequence of one host's deploy.
pub const STAGES: [&str; 8] = [
    "PRE_DOWNLOAD",
    "DOWNLOADING",
    "POST_DOWNLOAD",
    "STAGING",
    "PRE_RESTART",
    "RESTARTING",
    "POST_RESTART",
    "SERVING_BUILD",
];

impl App {
    /// Walks `host` through the current deploy of its stage, through the gateway, until it
    /// serves it, then waits for the deploy `deploy_id` to be SUCCEEDING.
    pub async fn serve_deploy(&self, host: &Host, deploy_id: &str) {
        let first = eventually("the gateway to hand out the deploy", || async move {
            let answer = self.ping(&host.ping_body(&[])).await.expect(StatusCode::OK);
            if answer["opCode"] == "NOOP" { Err(answer.to_string()) } else { Ok(answer) }
        })
        .await;
        let mut last = report_on(&first["deployGoal"], "SUCCEEDED");
        for _ in 0..20 {
            let answer = self.ping(&host.ping_body(std::slice::from_ref(&last))).await.expect(StatusCode::OK);
            if answer["opCode"] == "NOOP" {
                break;
            }
            last = report_on(&answer["deployGoal"], "SUCCEEDED");
        }
        eventually("the deploy to be SUCCEEDING", || async {
            let d = self.deploy_by_id(deploy_id).await;
            if d["state"] == "SUCCEEDING" { Ok(()) } else { Err(d.to_string()) }
        })
        .await;
    }
}
