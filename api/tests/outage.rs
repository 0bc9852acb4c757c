//! Dependency outages: the API and the gateway reach Postgres and RabbitMQ through proxies the
//! tests cut and restore. While a dependency is away the API answers 503 with the JSON error
//! and `Retry-After` (never a 500), the gateway keeps answering pings from memory, and once
//! the dependency is back the same requests succeed, without restarting anything.

mod common;

use std::future::Future;
use std::time::Duration;

use common::proxy::{Proxy, authority, through};
use common::{App, Body, Detour, Host, PATIENCE, Reply, SOME_SHA256, eventually, report_on, spawn_app_through, str_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The proxies in front of the test's Postgres and RabbitMQ, and an app behind them whose API
/// answers every request within `request_timeout`.
async fn app_behind_proxies(request_timeout: Duration) -> (App, Proxy, Proxy) {
    let database = Proxy::start(authority(&store::testing::server_url(), 5432)).await;
    let broker = Proxy::start(authority(&bus::testing::broker_url(), 5672)).await;
    let detour =
        Detour { database: database.addr(), broker: broker.addr(), timeout: Duration::from_secs(2), request_timeout };
    (spawn_app_through(&detour).await, database, broker)
}

/// Long enough that a loaded machine never makes a request of these tests run out of time.
const PATIENT: Duration = Duration::from_secs(60);

/// One request of the API and what it answers when all is well.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    ok: &'static [StatusCode],
}

impl Call {
    fn new(method: Method, path: impl Into<String>, body: Option<Value>, ok: &'static [StatusCode]) -> Call {
        Call { method, path: path.into(), body, ok }
    }

    async fn send(&self, app: &App) -> Reply {
        let body = self.body.as_ref().map_or(Body::None, Body::Json);
        app.admin(self.method.clone(), &self.path, body).await
    }

    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

const OK: &[StatusCode] = &[StatusCode::OK];
const NO_CONTENT: &[StatusCode] = &[StatusCode::NO_CONTENT];
const CREATED: &[StatusCode] = &[StatusCode::CREATED];
/// A deploy: the worker's answer, or 202 when it is slow.
const DEPLOYED: &[StatusCode] = &[StatusCode::CREATED, StatusCode::ACCEPTED];

/// Reads and writes of the API, each of which needs Postgres.
fn database_calls(build_id: &str) -> Vec<Call> {
    vec![
        Call::new(Method::GET, "/v1/envs/web/prod", None, OK),
        Call::new(Method::GET, "/v1/envs?envName=web", None, OK),
        Call::new(Method::GET, "/v1/envs/web/prod/deploys/current", None, OK),
        Call::new(Method::GET, format!("/v1/builds/{build_id}"), None, OK),
        Call::new(Method::GET, "/v1/envs/web/prod/history", None, OK),
        Call::new(Method::PUT, "/v1/envs/web/prod", Some(json!({"description": "still here"})), NO_CONTENT),
        Call::new(Method::PUT, "/v1/envs/web/prod/capacity?capacityType=GROUP", Some(json!(["web"])), NO_CONTENT),
        Call::new(Method::POST, "/v1/builds", Some(build("def5678")), CREATED),
        Call::new(Method::POST, format!("/v1/envs/web/prod/deploys?buildId={build_id}"), None, DEPLOYED),
    ]
}

fn build(commit: &str) -> Value {
    json!({
        "name": "web",
        "artifactUrl": format!("https://artifacts.example.com/web/{commit}.tar.gz"),
        "artifactSha256": SOME_SHA256,
        "repo": "org/web",
        "branch": "main",
        "commit": commit,
    })
}

/// Asserts the answer of a dependency outage: 503, the JSON error shape, `Retry-After`;
/// returns the message.
#[track_caller]
fn assert_unavailable(reply: &Reply, what: &str) -> String {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {}", reply.text);
    let (code, message) = reply.expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code, "unavailable", "{what}: {message}");
    assert_eq!(reply.retry_after.as_deref(), Some("5"), "{what}: a 503 says when to try again");
    message
}

/// A stage with a host group, a build, a deploy the host got from the gateway; returns the
/// host, the build id and the gateway's answer with the deploy's first goal.
async fn a_deployed_stage(app: &App) -> (Host, String, Value) {
    let host = Host::new("web-1", "web");
    app.create_stage("web", "prod").await;
    app.set_capacity("web", "prod", "GROUP", &["web"]).await;
    let build = app.publish_build("web", "abc1234").await;
    let build_id = str_of(&build, "id").to_string();
    app.deploy("web", "prod", &build_id).await;
    let goal = eventually("the gateway to hand out the deploy", || async {
        let answer = app.ping(&host.ping_body(&[])).await.expect(StatusCode::OK);
        if answer["opCode"] == "NOOP" { Err(answer.to_string()) } else { Ok(answer) }
    })
    .await;
    (host, build_id, goal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_cut_the_api_answers_503_json_and_after_it_is_back_the_same_calls_succeed() {
    let (app, database, _broker) = app_behind_proxies(PATIENT).await;
    let (host, build_id, goal) = a_deployed_stage(&app).await;
    let calls = database_calls(&build_id);

    database.cut().await;
    for call in &calls {
        assert_unavailable(&call.send(&app).await, &call.name());
    }
    let ready = app.call(Method::GET, &format!("{}/readyz", app.api), None, Body::None).await;
    assert_unavailable(&ready, "the API's readiness");
    // The gateway answers from memory: the host goes on with its deploy.
    let report = report_on(&goal["deployGoal"], "SUCCEEDED");
    let next = app.ping(&host.ping_body(std::slice::from_ref(&report))).await.expect(StatusCode::OK);
    assert_ne!(next["deployGoal"], Value::Null, "the next step, from memory: {next}");

    database.restore().await;
    eventually("the API to answer again", || async {
        let reply = app.get("/v1/envs/web/prod").await;
        assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "never a 500: {}", reply.text);
        if reply.status == StatusCode::OK { Ok(()) } else { Err(format!("{} {}", reply.status, reply.text)) }
    })
    .await;
    for call in &calls {
        let reply = call.send(&app).await;
        assert!(call.ok.contains(&reply.status), "{} after the outage: {} {}", call.name(), reply.status, reply.text);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_rabbitmq_is_cut_a_deploy_answers_503_json_and_after_it_is_back_it_deploys() {
    let (app, _database, broker) = app_behind_proxies(PATIENT).await;
    let (host, build_id, _) = a_deployed_stage(&app).await;
    let deploy = Call::new(Method::POST, format!("/v1/envs/web/prod/deploys?buildId={build_id}"), None, DEPLOYED);

    // A deploy sent with an idempotency key, as the CLI sends them.
    let keyed = || async {
        let url = format!("{}/v1/envs/web/prod/deploys?buildId={build_id}", app.api);
        let req = app.http.post(url).header("Authorization", format!("token {}", app.admin_token));
        let resp = req.header("Idempotency-Key", "outage-retry").send().await.unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap_or(Value::Null))
    };

    broker.cut().await;
    for _ in 0..3 {
        assert_unavailable(&deploy.send(&app).await, "a deploy while the broker is away");
    }
    let (status, refused) = keyed().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    // What needs only Postgres still works, and so does the gateway.
    app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);
    app.put("/v1/envs/web/prod", &json!({"description": "no broker"})).await.expect(StatusCode::NO_CONTENT);
    app.ping(&host.ping_body(&[])).await.expect(StatusCode::OK);

    broker.restore().await;
    let deployed = eventually("a deploy to go through again", || async {
        let reply = deploy.send(&app).await;
        assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "never a 500: {}", reply.text);
        if deploy.ok.contains(&reply.status) { Ok(reply) } else { Err(format!("{} {}", reply.status, reply.text)) }
    })
    .await;
    if deployed.status == StatusCode::CREATED {
        assert_eq!(deployed.body["buildId"], build_id.as_str(), "{}", deployed.text);
    }
    // The keyed request that found the broker away is sent again when retried, then answered
    // from its outcome.
    let (status, first) = keyed().await;
    assert!(status == StatusCode::CREATED || status == StatusCode::ACCEPTED, "{status} {first}");
    let again = eventually("the keyed deploy's outcome", || async {
        let (status, body) = keyed().await;
        if status == StatusCode::CREATED { Ok(body) } else { Err(format!("{status} {body}")) }
    })
    .await;
    if status == StatusCode::CREATED {
        assert_eq!(again["id"], first["id"], "the same deploy, not a second one");
    }
    app.stop().await;
}

/// The answer to `request`; fails the test when there is none within [`PATIENCE`] (the
/// request hangs: some wait has no bound).
async fn answered(what: &str, request: impl Future<Output = Reply>) -> Reply {
    match tokio::time::timeout(PATIENCE, request).await {
        Ok(reply) => reply,
        Err(_) => panic!("{what}: no answer within {PATIENCE:?}; the request hangs"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_postgres_and_rabbitmq_swallow_every_byte_requests_still_answer_503_in_bounded_time() {
    // Short, because each request of this test waits for it once.
    let (app, database, broker) = app_behind_proxies(Duration::from_secs(8)).await;
    app.create_stage("web", "prod").await;
    let build = app.publish_build("web", "abc1234").await;
    let deploy =
        Call::new(Method::POST, format!("/v1/envs/web/prod/deploys?buildId={}", str_of(&build, "id")), None, DEPLOYED);

    // Opens the command client's connection.
    let reply = deploy.send(&app).await;
    assert!(deploy.ok.contains(&reply.status), "a first deploy: {} {}", reply.status, reply.text);

    // The API's pooled connections stay open and nothing comes back on them: the request's
    // deadline answers.
    database.silence().await;
    let reply = answered("a read", app.get("/v1/envs/web/prod")).await;
    assert_unavailable(&reply, "a read while Postgres is silent");
    let reply = answered("a write", app.put("/v1/envs/web/prod", &json!({"description": "lost"}))).await;
    assert_unavailable(&reply, "a write while Postgres is silent");
    database.restore().await;
    eventually("the API to answer again", || async {
        let reply = app.get("/v1/envs/web/prod").await;
        assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "never a 500: {}", reply.text);
        if reply.status == StatusCode::OK { Ok(()) } else { Err(format!("{} {}", reply.status, reply.text)) }
    })
    .await;
    let stage = app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);
    assert_ne!(stage["description"], "lost", "the write that timed out left nothing behind");

    // The command client's connection stays open and no confirm comes: the broker's timeout
    // answers, well before the request's deadline; the next deploy opens a connection that is
    // never answered, and the broker's timeout answers again.
    broker.silence().await;
    let reply = answered("a deploy", deploy.send(&app)).await;
    let message = assert_unavailable(&reply, "a deploy while RabbitMQ is silent");
    assert!(message.contains("broker"), "the confirm's timeout answered: {message}");
    let reply = answered("another deploy", deploy.send(&app)).await;
    let message = assert_unavailable(&reply, "a deploy on a new connection while RabbitMQ is silent");
    assert!(message.contains("broker"), "the connection's timeout answered: {message}");
    broker.restore().await;
    eventually("a deploy to go through again", || async {
        let reply = deploy.send(&app).await;
        assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "never a 500: {}", reply.text);
        if deploy.ok.contains(&reply.status) { Ok(()) } else { Err(format!("{} {}", reply.status, reply.text)) }
    })
    .await;
    app.stop().await;
}

#[test]
fn urls_are_pointed_through_the_proxy() {
    let proxy = "127.0.0.1:40000".parse().unwrap();
    let pg = "postgres://teletraan:teletraan@127.0.0.1:5432/teletraan_test_1?sslmode=disable";
    assert_eq!(authority(pg, 5432), "127.0.0.1:5432");
    assert_eq!(through(pg, proxy), "postgres://teletraan:teletraan@127.0.0.1:40000/teletraan_test_1?sslmode=disable");
    let amqp = "amqp://guest:guest@localhost/%2f";
    assert_eq!(authority(amqp, 5672), "localhost:5672");
    assert_eq!(through(amqp, proxy), "amqp://guest:guest@127.0.0.1:40000/%2f");
}
