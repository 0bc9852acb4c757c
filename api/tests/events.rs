//! `GET /v1/events`: a stage's deploy and agent records, live, as workers change them.

mod common;

use std::time::Duration;

use common::{App, Host, PATIENCE, eventually, spawn_app, spawn_app_with_request_timeout, str_of};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::{Method, StatusCode};
use schema::bus::{AgentView, LiveEvent, StageAgents};
use schema::{AgentState, AgentStatus, DeployStage, EnvId, EnvName, HostId, HostName, StageName};
use serde_json::Value;

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<u64>,
    data: Value,
}

/// A client of `GET /v1/events`, reading the stream as it comes.
struct Events {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: String,
    /// Every event read so far.
    seen: Vec<Sse>,
}

impl Events {
    /// Opens the stream with the admin token; fails unless it answers 200 with SSE.
    async fn open(app: &App, query: &str, last_event_id: Option<&str>) -> Events {
        let mut req = app
            .http
            .get(format!("{}/v1/events{query}", app.api))
            .header("Authorization", format!("token {}", app.admin_token));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("open the event stream");
        assert_eq!(resp.status(), StatusCode::OK);
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let body = resp.bytes_stream().map(|chunk| chunk.map(|b| b.to_vec())).boxed();
        Events { body, buf: String::new(), seen: Vec::new() }
    }

    /// The next event (comments are skipped), within [`PATIENCE`].
    async fn next(&mut self) -> Sse {
        tokio::time::timeout(PATIENCE, self.read()).await.unwrap_or_else(|_| {
            panic!("no event within {PATIENCE:?}; seen so far: {:#?}", self.seen);
        })
    }

    async fn read(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    self.seen.push(event.clone());
                    return event;
                }
                continue;
            }
            let chunk = self.body.next().await.expect("the stream ended").expect("the stream failed");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until an event of kind `event` for which `wanted` holds.
    async fn until(&mut self, event: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no such {event} event; seen: {:#?}", self.seen);
            let e = self.next().await;
            if e.event == event && wanted(&e.data) {
                return e.data;
            }
        }
    }
}

/// An event block; `None` for a comment (the keep-alive).
fn parse(block: &str) -> Option<Sse> {
    let (mut event, mut id, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim_start().to_string());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim_start().parse().expect("a numeric id"));
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    let event = event?;
    let data = serde_json::from_str(&data.join("\n")).expect("JSON data");
    Some(Sse { event, id, data })
}

async fn fed(app: &App) {
    eventually("the API's event feed to be bound", || async {
        if app.events.is_fed() { Ok(()) } else { Err("not yet".to_string()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_page_follows_its_deploy_and_hosts_live() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.create_stage("web", "canary").await;
    app.set_capacity("web", "prod", "GROUP", &["web-prod"]).await;
    app.set_capacity("web", "canary", "GROUP", &["web-canary"]).await;
    fed(&app).await;
    let mut prod = Events::open(&app, "?env=web&stage=prod", None).await;
    let mut web = Events::open(&app, "?env=web", None).await;

    let build = app.publish_build("web", "aaaaaaa1111").await;
    let canary_deploy = app.deploy("web", "canary", str_of(&build, "id")).await;
    let prod_deploy = app.deploy("web", "prod", str_of(&build, "id")).await;
    let (canary_id, prod_id) = (str_of(&canary_deploy, "id"), str_of(&prod_deploy, "id"));

    // The new deploy, as soon as the worker applied it.
    let started = prod.until("deploy", |d| d["deploy"]["id"] == prod_id).await;
    assert_eq!((started["envName"].as_str(), started["stageName"].as_str()), (Some("web"), Some("prod")));
    assert_eq!(started["envId"], prod_deploy["envId"]);
    assert_eq!(started["deploy"]["buildId"], build["id"]);
    // The environment's stream has both stages, in the order the deploys were made.
    web.until("deploy", |d| d["deploy"]["id"] == canary_id && d["stageName"] == "canary").await;
    web.until("deploy", |d| d["deploy"]["id"] == prod_id).await;

    // A host comes, deploys and serves: its record at each report, then the deploy succeeding.
    let host = Host::new("web-prod-1", "web-prod");
    app.serve_deploy(&host, prod_id).await;
    let serving = prod
        .until("agents", |a| {
            a["agents"].as_array().is_some_and(|hosts| {
                hosts.iter().any(|h| h["hostName"] == host.name.as_str() && h["deployStage"] == "SERVING_BUILD")
            })
        })
        .await;
    let record = serving["agents"].as_array().unwrap().iter().find(|h| h["hostName"] == host.name.as_str()).unwrap();
    assert_eq!(record["hostId"], host.id.as_str());
    assert_eq!(record["deployId"], prod_id);
    assert_eq!((record["state"].as_str(), record["status"].as_str()), (Some("NORMAL"), Some("SUCCEEDED")));
    assert_eq!((record["lastErrNo"].as_i64(), record["removed"].as_bool()), (Some(0), Some(false)));
    assert!(record["lastUpdateDate"].as_i64().is_some_and(|t| t > 0), "{record}");
    prod.until("deploy", |d| d["deploy"]["id"] == prod_id && d["deploy"]["state"] == "SUCCEEDING").await;

    // Nothing of the other stage reached the stage's stream; ids only go up.
    for e in &prod.seen {
        assert!(e.event == "deploy" || e.event == "agents", "{e:?}");
        assert_eq!((e.data["envName"].as_str(), e.data["stageName"].as_str()), (Some("web"), Some("prod")), "{e:?}");
    }
    let ids: Vec<u64> = prod.seen.iter().map(|e| e.id.expect("live events have ids")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // The streams are still open: stopping must end them.
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_is_told_to_resync_and_bad_requests_are_refused() {
    let app = spawn_app().await;
    let mut again = Events::open(&app, "?env=web&stage=prod", Some("41")).await;
    let first = again.next().await;
    assert_eq!(first.event, "resync");
    assert!(first.data["reason"].as_str().is_some_and(|r| r.contains("not replayed")), "{:?}", first.data);
    assert_eq!(first.id, None);

    for query in ["?env=no%20pe", "?stage=prod", "?env=web&stage=a.b", "?env="] {
        let reply = app.get(&format!("/v1/events{query}")).await;
        let (code, _) = reply.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(code, "bad_request", "{query}");
    }
    let url = format!("{}/v1/events?env=web", app.api);
    app.call(Method::GET, &url, None, common::Body::None).await.expect_error(StatusCode::UNAUTHORIZED);
    // An agent's token holds no role.
    let agent = app.call(Method::GET, &url, Some(&app.agent_token), common::Body::None).await;
    agent.expect_error(StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_the_request_deadline() {
    let deadline = Duration::from_secs(1);
    let app = spawn_app_with_request_timeout(deadline).await;
    let mut events = Events::open(&app, "?env=web&stage=prod", None).await;
    // The deadline bounds the time to the answer's head, not the stream.
    tokio::time::sleep(deadline * 3).await;
    let id = app.events.publish(LiveEvent::AgentsV1(StageAgents {
        env_id: EnvId::parse("e_prod").unwrap(),
        env_name: EnvName::parse("web").unwrap(),
        stage_name: StageName::parse("prod").unwrap(),
        agents: vec![AgentView {
            host_id: HostId::parse("i-1").unwrap(),
            host_name: HostName::parse("web-1").unwrap(),
            deploy_id: schema::DeployId::parse("d_1").unwrap(),
            deploy_stage: DeployStage::Staging,
            state: AgentState::Normal,
            status: AgentStatus::Succeeded,
            last_err_no: 0,
            last_update_date: 5,
            removed: false,
        }],
    }));
    let e = events.next().await;
    assert_eq!((e.event.as_str(), e.id), ("agents", Some(id)));
    assert_eq!(e.data["agents"][0]["deployStage"], "STAGING");
    app.stop().await;
}
