//! The rollout engine driven by simulated agents: the test plays Teletraan's agent, POSTing
//! `/v1/system/ping` bodies shaped exactly as it sends them, against a real gateway, real
//! workers, Postgres and RabbitMQ.

mod common;

use std::time::Duration;

use common::{App, Host, PATIENCE, STAGES, eventually, report_on, spawn_app, str_of};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

/// A simulated agent: it reports what it last did, as Teletraan's agent does on every ping.
struct Agent {
    host: Host,
    last: Option<Value>,
}

impl Agent {
    fn new(name: &str) -> Agent {
        Agent { host: Host::new(name, GROUP), last: None }
    }

    /// Pings and returns the answer (which must be a 200).
    async fn ping(&self, app: &App) -> Value {
        app.ping(&self.host.ping_body(self.last.as_slice())).await.expect(StatusCode::OK)
    }

    /// Runs `goal`'s step with `status` (the report of the next ping).
    fn ran(&mut self, goal: &Value, status: &str) {
        self.last = Some(report_on(goal, status));
    }
}

const GROUP: &str = "web-g";

/// `web/prod` with group capacity [`GROUP`], script variables and a deploy of a fresh build.
struct Setup {
    env_id: String,
    build: Value,
    deploy: Value,
    scripts: Value,
}

async fn stage_with_a_deploy(app: &App) -> Setup {
    let stage = app.create_stage("web", "prod").await;
    app.set_capacity("web", "prod", "GROUP", &[GROUP]).await;
    let scripts = json!({"JAVA_OPTS": "-Xmx1g", "PORT": "8080"});
    app.put("/v1/envs/web/prod/script_configs", &scripts).await.expect(StatusCode::NO_CONTENT);
    let build = app.publish_build("web", "fabe9af6ac4c").await;
    let deploy = app.deploy("web", "prod", str_of(&build, "id")).await;
    Setup { env_id: str_of(&stage, "id").to_string(), build, deploy, scripts }
}

fn is_noop(answer: &Value) -> bool {
    *answer == json!({"opCode": "NOOP", "deployGoal": null})
}

/// The goal of a DEPLOY answer, checked against what every goal of `setup`'s stage carries.
#[track_caller]
fn goal_of(answer: &Value, setup: &Setup, deploy_id: &str) -> Value {
    assert_eq!(answer["opCode"], "DEPLOY", "{answer}");
    let goal = answer["deployGoal"].clone();
    assert_eq!(goal["deployId"], deploy_id, "{goal}");
    assert_eq!(goal["deployType"], "REGULAR", "{goal}");
    assert_eq!(goal["envId"], setup.env_id.as_str(), "{goal}");
    assert_eq!((&goal["envName"], &goal["stageName"]), (&json!("web"), &json!("prod")), "{goal}");
    goal
}

/// The first ping of the first agent, repeated until the gateway has heard of the deploy
/// through the workers' change events.
async fn first_goal(app: &App, agent: &Agent) -> Value {
    eventually("the gateway to hand out the new deploy", || async move {
        let answer = agent.ping(app).await;
        if is_noop(&answer) { Err(answer.to_string()) } else { Ok(answer) }
    })
    .await
}

/// Walks three fresh hosts through their first deploy, step by step and side by side, checking
/// every goal; returns the agents, each having reported SERVING_BUILD and been answered NOOP.
async fn walk_first_deploy(app: &App, setup: &Setup) -> Vec<Agent> {
    let deploy_id = str_of(&setup.deploy, "id");
    let mut agents: Vec<Agent> = ["web-1", "web-2", "web-3"].into_iter().map(Agent::new).collect();

    // Fresh hosts are first deploys: each starts at once, though maxParallel is 1.
    let mut goals = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let answer = if i == 0 { first_goal(app, agent).await } else { agent.ping(app).await };
        let goal = goal_of(&answer, setup, deploy_id);
        assert_eq!(goal["deployStage"], "PRE_DOWNLOAD", "{goal}");
        assert_eq!(goal["firstDeploy"], true, "{goal}");
        assert_eq!(goal["scriptVariables"], setup.scripts, "PRE_DOWNLOAD carries the script variables: {goal}");
        assert!(goal.get("build").is_none(), "only DOWNLOADING carries the build: {goal}");
        goals.push(goal);
    }

    for next in &STAGES[1..] {
        for (agent, goal) in agents.iter_mut().zip(goals.iter_mut()) {
            agent.ran(goal, "SUCCEEDED");
            let answer = agent.ping(app).await;
            *goal = goal_of(&answer, setup, deploy_id);
            assert_eq!(goal["deployStage"], *next, "after {}: {goal}", agent.last.as_ref().unwrap()["deployStage"]);
            assert_eq!(goal["firstDeploy"], true, "{goal}");
            assert!(goal.get("scriptVariables").is_none(), "only PRE_DOWNLOAD carries script variables: {goal}");
            if *next == "DOWNLOADING" {
                assert_eq!(goal["build"]["id"], setup.build["id"], "{goal}");
                assert_eq!(goal["build"]["artifactUrl"], setup.build["artifactUrl"], "{goal}");
            } else {
                assert!(goal.get("build").is_none(), "only DOWNLOADING carries the build: {goal}");
            }
        }
    }
    for (agent, goal) in agents.iter_mut().zip(&goals) {
        agent.ran(goal, "SUCCEEDED");
        let answer = agent.ping(app).await;
        assert!(is_noop(&answer), "a host serving the current deploy has nothing to do: {answer}");
    }
    agents
}

/// Polls the API until the deploy is SUCCEEDING with `hosts` hosts done.
async fn wait_until_succeeding(app: &App, deploy_id: &str, hosts: i64) -> Value {
    eventually(&format!("deploy {deploy_id} to be SUCCEEDING on {hosts} hosts"), || async move {
        let deploy = app.deploy_by_id(deploy_id).await;
        let done = deploy["state"] == "SUCCEEDING" && deploy["successTotal"] == hosts && deploy["total"] == hosts;
        if done { Ok(deploy) } else { Err(deploy.to_string()) }
    })
    .await
}

/// Polls the agent rows of `web/prod` until `check` accepts them.
async fn wait_for_agents(app: &App, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let check = &check;
    eventually(what, || async move {
        let rows = app.get("/v1/envs/web/prod/agents").await.expect(StatusCode::OK);
        let rows = rows.as_array().cloned().unwrap_or_default();
        if check(&rows) { Ok(rows) } else { Err(json!(rows).to_string()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_hosts_start_at_once_and_walk_every_stage_until_the_deploy_is_succeeding() {
    let app = spawn_app().await;
    let setup = stage_with_a_deploy(&app).await;
    let deploy_id = str_of(&setup.deploy, "id");

    let agents = walk_first_deploy(&app, &setup).await;

    let deploy = wait_until_succeeding(&app, deploy_id, 3).await;
    assert_eq!(deploy["acceptanceStatus"], "ACCEPTED", "AUTO acceptance: {deploy}");
    assert!(deploy["successDate"].is_i64(), "{deploy}");
    wait_for_agents(&app, "three hosts serving the deploy", |rows| {
        rows.len() == 3
            && rows.iter().all(|a| {
                a["deployId"] == deploy_id
                    && a["deployStage"] == "SERVING_BUILD"
                    && a["status"] == "SUCCEEDED"
                    && a["state"] == "NORMAL"
                    && a["firstDeploy"] == false
            })
    })
    .await;
    // Idle pings change nothing.
    for agent in &agents {
        assert!(is_noop(&agent.ping(&app).await));
    }
    app.stop().await;
}

/// Where a host stands in the rollout of the second deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving the previous deploy, not admitted yet.
    Waiting,
    /// Running a step of the new deploy before SERVING_BUILD: out of service.
    Deploying,
    /// Told SERVING_BUILD: back in service, its report pending.
    Serving,
    /// Reported SERVING_BUILD and was answered NOOP.
    Done,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_deploy_takes_serving_hosts_out_of_service_one_at_a_time() {
    let app = spawn_app().await;
    let setup = stage_with_a_deploy(&app).await;
    let mut agents = walk_first_deploy(&app, &setup).await;
    let first_id = str_of(&setup.deploy, "id");
    wait_until_succeeding(&app, first_id, 3).await;

    app.put("/v1/envs/web/prod", &json!({"maxParallel": 1})).await.expect(StatusCode::NO_CONTENT);
    let build = app.publish_build("web", "0123456789ab").await;
    let second = app.deploy("web", "prod", str_of(&build, "id")).await;
    let second_id = str_of(&second, "id");
    assert_eq!(app.deploy_by_id(first_id).await["state"], "SUCCEEDED", "a succeeding deploy retires as SUCCEEDED");

    // Every round each agent pings once, reporting what it last did, and runs the step it is
    // given. A step therefore spans rounds, so hosts admitted together would be seen deploying
    // together. Teletraan counts a host told SERVING_BUILD as back in service (its row holds
    // the stage it was told), so the cap applies to the steps before it.
    let mut phases = [Phase::Waiting; 3];
    let mut started = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while phases.iter().any(|p| *p != Phase::Done) {
        assert!(Instant::now() < deadline, "the rollout did not finish within {PATIENCE:?}: {phases:?}");
        for (i, agent) in agents.iter_mut().enumerate() {
            let answer = agent.ping(&app).await;
            if is_noop(&answer) {
                match phases[i] {
                    Phase::Waiting | Phase::Done => {}
                    Phase::Serving => phases[i] = Phase::Done,
                    Phase::Deploying => panic!("{} got NOOP in the middle of its deploy", agent.host.name),
                }
                continue;
            }
            let goal = goal_of(&answer, &setup, second_id);
            let stage = str_of(&goal, "deployStage").to_string();
            if phases[i] == Phase::Waiting {
                assert_eq!(stage, "PRE_DOWNLOAD", "a host starts the new deploy from scratch: {goal}");
                assert_eq!(goal["firstDeploy"], false, "{goal}");
                assert_eq!(goal["scriptVariables"], setup.scripts, "{goal}");
                started.push(agent.host.name.clone());
            }
            phases[i] = if stage == "SERVING_BUILD" { Phase::Serving } else { Phase::Deploying };
            agent.ran(&goal, "SUCCEEDED");
            let deploying = phases.iter().filter(|p| **p == Phase::Deploying).count();
            assert!(deploying <= 1, "maxParallel is 1 but {deploying} hosts are deploying at once: {phases:?}");
        }
        // The pause of an idle agent between pings (Teletraan's is 30 s); waiting hosts are
        // admitted by the workers in the meantime.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.sort();
    assert_eq!(started, ["web-1", "web-2", "web-3"], "every host started the new deploy once");

    wait_until_succeeding(&app, second_id, 3).await;
    wait_for_agents(&app, "three hosts serving the new deploy", |rows| {
        rows.len() == 3 && rows.iter().all(|a| a["deployId"] == second_id && a["deployStage"] == "SERVING_BUILD")
    })
    .await;
    app.stop().await;
}

/// One fresh host walked through its first deploy up to the step `until` (its goal is returned).
async fn one_host_at(app: &App, setup: &Setup, until: &str) -> (Agent, Value) {
    let deploy_id = str_of(&setup.deploy, "id");
    let mut agent = Agent::new("web-1");
    let mut goal = goal_of(&first_goal(app, &agent).await, setup, deploy_id);
    while goal["deployStage"] != until {
        agent.ran(&goal, "SUCCEEDED");
        goal = goal_of(&agent.ping(app).await, setup, deploy_id);
    }
    (agent, goal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_status_pauses_the_host_and_it_gets_nothing_more() {
    let app = spawn_app().await;
    let setup = stage_with_a_deploy(&app).await;
    let deploy_id = str_of(&setup.deploy, "id");
    let (mut agent, goal) = one_host_at(&app, &setup, "RESTARTING").await;

    let mut failed = report_on(&goal, "TOO_MANY_RETRY");
    failed["errorCode"] = json!(1);
    failed["errorMessage"] = json!("RESTARTING failed 3 times");
    failed["failCount"] = json!(3);
    agent.last = Some(failed);
    for _ in 0..3 {
        let answer = agent.ping(&app).await;
        assert!(is_noop(&answer), "a host failed for good gets nothing: {answer}");
    }

    wait_for_agents(&app, "the host to be PAUSED_BY_SYSTEM", |rows| {
        rows.len() == 1
            && rows[0]["state"] == "PAUSED_BY_SYSTEM"
            && rows[0]["status"] == "TOO_MANY_RETRY"
            && rows[0]["deployStage"] == "RESTARTING"
            && rows[0]["lastErrno"] == 1
    })
    .await;
    eventually("the deploy to count the host as failed", || async {
        let deploy = app.deploy_by_id(deploy_id).await;
        if deploy["state"] == "FAILING" && deploy["failTotal"] == 1 { Ok(()) } else { Err(deploy.to_string()) }
    })
    .await;
    // Still nothing once the workers have caught up.
    assert!(is_noop(&agent.ping(&app).await));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_report_shows_up_under_the_hosts_errors_and_the_step_is_repeated() {
    let app = spawn_app().await;
    let setup = stage_with_a_deploy(&app).await;
    let (mut agent, goal) = one_host_at(&app, &setup, "PRE_RESTART").await;
    let errors = "/v1/envs/web/prod/agents/errors/web-1";
    let none = app.get(errors).await.expect(StatusCode::OK);
    assert_eq!(none["errorMessage"], Value::Null, "no error yet: {none}");

    let text = "PRE_RESTART exited with 2\ncp: cannot create '/var/app': No space left on device";
    let mut failed = report_on(&goal, "SCRIPT_FAILED");
    failed["errorCode"] = json!(2);
    failed["errorMessage"] = json!(text);
    failed["failCount"] = json!(1);
    agent.last = Some(failed);
    let answer = agent.ping(&app).await;
    let again = goal_of(&answer, &setup, str_of(&setup.deploy, "id"));
    assert_eq!(again["deployStage"], "PRE_RESTART", "a retryable failure repeats the step: {answer}");

    let shown = eventually("the error to show up", || async {
        let shown = app.get(errors).await.expect(StatusCode::OK);
        if shown["errorMessage"] == text { Ok(shown) } else { Err(shown.to_string()) }
    })
    .await;
    assert_eq!(shown["hostId"], agent.host.id.as_str());
    assert_eq!(shown["hostName"], "web-1");
    assert_eq!(shown["envId"], setup.env_id.as_str());
    let rows = wait_for_agents(&app, "the failed step on the agent row", |rows| {
        rows.len() == 1 && rows[0]["status"] == "SCRIPT_FAILED"
    })
    .await;
    assert_eq!((&rows[0]["lastErrno"], &rows[0]["state"]), (&json!(2), &json!("NORMAL")), "{}", rows[0]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_message_with_a_nul_byte_does_not_lose_the_report() {
    let app = spawn_app().await;
    let setup = stage_with_a_deploy(&app).await;
    let (mut agent, goal) = one_host_at(&app, &setup, "PRE_RESTART").await;

    // Hook output is arbitrary bytes; Teletraan's agent sends the tail of stderr as it is.
    let mut failed = report_on(&goal, "SCRIPT_FAILED");
    failed["errorCode"] = json!(2);
    failed["errorMessage"] = json!("binary garbage \u{0} then: No space left on device");
    agent.last = Some(failed);
    agent.ping(&app).await;

    wait_for_agents(&app, "the failed step on the agent row", |rows| {
        rows.len() == 1 && rows[0]["status"] == "SCRIPT_FAILED" && rows[0]["lastErrno"] == 2
    })
    .await;
    eventually("the error to show up", || async {
        let shown = app.get("/v1/envs/web/prod/agents/errors/web-1").await.expect(StatusCode::OK);
        let text = shown["errorMessage"].as_str().unwrap_or_default();
        if text.contains("No space left on device") { Ok(()) } else { Err(shown.to_string()) }
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_another_deploy_restarts_a_host_mid_deploy_on_the_current_one() {
    // A host that reports an older deploy id while the stage has moved on is not held by the
    // cap: it is not serving, so it starts the current deploy from scratch at once.
    let app = spawn_app().await;
    let setup = stage_with_a_deploy(&app).await;
    let (mut agent, goal) = one_host_at(&app, &setup, "STAGING").await;
    agent.ran(&goal, "SCRIPT_FAILED");

    let build = app.publish_build("web", "0123456789ab").await;
    let second = app.deploy("web", "prod", str_of(&build, "id")).await;
    let second_id = str_of(&second, "id");
    let answer = eventually("the host to be moved to the new deploy", || async {
        let answer = agent.ping(&app).await;
        if answer["deployGoal"]["deployId"] == second_id { Ok(answer) } else { Err(answer.to_string()) }
    })
    .await;
    let goal = goal_of(&answer, &setup, second_id);
    assert_eq!(goal["deployStage"], "PRE_DOWNLOAD", "{goal}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_new_to_a_gateway_still_waits_for_admission() {
    let mut app = spawn_app().await;
    // A second gateway, loaded before any host exists: it never sees the records the first
    // gateway publishes (they go to Postgres, not to other gateways).
    let other = app.start_gateway().await;
    let setup = stage_with_a_deploy(&app).await;
    let agents = walk_first_deploy(&app, &setup).await;
    wait_until_succeeding(&app, str_of(&setup.deploy, "id"), 3).await;

    app.put("/v1/envs/web/prod", &json!({"maxParallel": 1})).await.expect(StatusCode::NO_CONTENT);
    let build = app.publish_build("web", "0123456789ab").await;
    let second = app.deploy("web", "prod", str_of(&build, "id")).await;

    // Every host now pings the other gateway, reporting the deploy it serves. Only the host
    // the workers admitted may start; none is taken for a new host on its first deploy.
    let started = eventually("the admitted host to start through the other gateway", || {
        let (app, agents, other) = (&app, &agents, &other);
        async move {
            let mut started = Vec::new();
            for agent in agents {
                let answer =
                    app.ping_at(other, &agent.host.ping_body(agent.last.as_slice())).await.expect(StatusCode::OK);
                if !is_noop(&answer) {
                    assert_eq!(answer["deployGoal"]["firstDeploy"], false, "{answer}");
                    started.push(agent.host.name.clone());
                }
            }
            assert!(started.len() <= 1, "maxParallel is 1 but {started:?} were sent to deploy at once");
            if started.len() == 1 { Ok(started) } else { Err("nobody started yet".to_string()) }
        }
    })
    .await;
    let rows = app.get("/v1/envs/web/prod/agents").await.expect(StatusCode::OK);
    let on_second: Vec<&Value> = rows.as_array().unwrap().iter().filter(|a| a["deployId"] == second["id"]).collect();
    assert_eq!(on_second.len(), 1, "exactly the admitted host moved to the new deploy: {rows}");
    assert_eq!(on_second[0]["hostName"], started[0].as_str());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_as_soon_as_the_host_is_admitted() {
    let app = spawn_app().await;
    let setup = stage_with_a_deploy(&app).await;
    let mut agents = walk_first_deploy(&app, &setup).await;
    wait_until_succeeding(&app, str_of(&setup.deploy, "id"), 3).await;
    app.put("/v1/envs/web/prod", &json!({"maxParallel": 1})).await.expect(StatusCode::NO_CONTENT);
    let build = app.publish_build("web", "0123456789ab").await;
    let second = app.deploy("web", "prod", str_of(&build, "id")).await;
    let second_id = str_of(&second, "id").to_string();

    // One host is admitted; which one, its record says.
    let rows = app.get("/v1/envs/web/prod/agents").await.expect(StatusCode::OK);
    let admitted: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["deployId"] == second_id.as_str())
        .map(|a| a["hostName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(admitted.len(), 1, "{rows}");
    let (mut first, rest): (Vec<Agent>, Vec<Agent>) = agents.drain(..).partition(|a| a.host.name == admitted[0]);
    let mut first = first.pop().unwrap();

    // The others ask to be held up to a minute; they must come back with a goal as soon as the
    // first host is done and they are admitted, long before the minute is over.
    let held: Vec<_> = rest
        .iter()
        .map(|a| {
            let mut body = a.host.ping_body(a.last.as_slice());
            body["waitSeconds"] = json!(60);
            let (http, url, token) =
                (app.http.clone(), format!("{}/v1/system/ping", app.gateway), app.agent_token.clone());
            tokio::spawn(async move {
                let resp =
                    http.post(url).header("Authorization", format!("token {token}")).json(&body).send().await.unwrap();
                resp.json::<Value>().await.unwrap()
            })
        })
        .collect();

    // Walk the admitted host through the new deploy.
    let mut answer = eventually("the admitted host's goal", || {
        let first = &first;
        let app = &app;
        async move {
            let a = first.ping(app).await;
            if is_noop(&a) { Err(a.to_string()) } else { Ok(a) }
        }
    })
    .await;
    while !is_noop(&answer) {
        first.ran(&goal_of(&answer, &setup, &second_id), "SUCCEEDED");
        answer = first.ping(&app).await;
    }

    // A held ping comes back with the next admission within the deadline (the other stays
    // held: the cap lets one host in at a time; stopping the gateway releases it).
    let (first_back, _, still_held) =
        tokio::time::timeout(PATIENCE, futures_util::future::select_all(held)).await.expect("a held ping came back");
    let answer = first_back.unwrap();
    assert_eq!(answer["deployGoal"]["deployStage"], "PRE_DOWNLOAD", "{answer}");
    assert_eq!(answer["deployGoal"]["deployId"], second_id.as_str());
    app.stop().await;
    for h in still_held {
        let released = h.await.unwrap();
        assert!(is_noop(&released), "released by the shutdown with nothing to do: {released}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_reaches_the_workers_as_a_heartbeat() {
    let app = spawn_app().await;
    let agent = Agent::new("beat-1");
    let before = schema::time::now_ms();
    assert!(is_noop(&agent.ping(&app).await));
    let seen = eventually("the heartbeat to be stored", || async {
        app.last_seen(&agent.host.id).await.ok_or_else(|| "no heartbeat yet".to_string())
    })
    .await;
    assert!(seen >= before, "{seen} < {before}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_when_a_stage_takes_the_host_in() {
    let app = spawn_app().await;
    let setup = stage_with_a_deploy(&app).await;
    first_goal(&app, &Agent::new("web-1")).await;

    // A host of a group no stage covers asks to be held up to a minute.
    let late = Agent::new("late-1");
    let mut body = Host::new(&late.host.name, "late-g").ping_body(&[]);
    body["hostId"] = json!(late.host.id);
    body["waitSeconds"] = json!(60);
    let (http, url, token) = (app.http.clone(), format!("{}/v1/system/ping", app.gateway), app.agent_token.clone());
    let held = tokio::spawn(async move {
        let resp = http.post(url).header("Authorization", format!("token {token}")).json(&body).send().await.unwrap();
        resp.json::<Value>().await.unwrap()
    });
    // Let it register (were it to arrive after the change, it would get its goal at once).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "nothing to do yet");

    // The stage takes its group in: the held ping comes back with the first deploy, long
    // before its minute is over.
    app.set_capacity("web", "prod", "GROUP", &[GROUP, "late-g"]).await;
    let answer = tokio::time::timeout(PATIENCE, held).await.expect("the held ping came back").unwrap();
    let goal = goal_of(&answer, &setup, str_of(&setup.deploy, "id"));
    assert_eq!(goal["deployStage"], "PRE_DOWNLOAD", "{goal}");
    app.stop().await;
}

/// A second gateway on a broker namespace nobody publishes to, as if every change message
/// were lost, comparing stage versions with Postgres every `check_every`: its URL and its
/// broker configuration.
async fn deaf_gateway(app: &mut App, check_every: Duration) -> (String, bus::BusConfig) {
    let deaf = bus::BusConfig::new(app.bus.config.url.clone(), format!("deaf{}", uuid::Uuid::new_v4().simple()));
    let url = app
        .start_gateway_with(|c| {
            c.bus = deaf.clone();
            c.check_every = check_every;
        })
        .await;
    (url, deaf)
}

/// Pings `gateway` as a new host until it answers with a goal, which must be the first step
/// of `setup`'s deploy.
async fn wait_for_the_first_step(app: &App, gateway: &str, setup: &Setup, agent: &Agent, what: &str) {
    let body = agent.host.ping_body(&[]);
    let answer = eventually(what, || {
        let body = &body;
        async move {
            let answer = app.ping_at(gateway, body).await.expect(StatusCode::OK);
            if is_noop(&answer) { Err(answer.to_string()) } else { Ok(answer) }
        }
    })
    .await;
    let goal = goal_of(&answer, setup, str_of(&setup.deploy, "id"));
    assert_eq!(goal["deployStage"], "PRE_DOWNLOAD", "a new host starts at once: {goal}");
}

/// A gateway that misses every change still converges on Postgres: its periodic comparison
/// of stage versions finds the new stage and its deploy, and a host pinging it gets its goal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_misses_every_change_converges_on_postgres() {
    let mut app = spawn_app().await;
    let (lone, _) = deaf_gateway(&mut app, Duration::from_millis(500)).await;
    // Created after the lone gateway loaded: it can only learn of them by its check.
    let setup = stage_with_a_deploy(&app).await;
    wait_for_the_first_step(&app, &lone, &setup, &Agent::new("deaf-1"), "the lone gateway to hand out the deploy")
        .await;
    app.stop().await;
}

/// A gateway that sees a stage's change versions jump (the messages between were lost)
/// reloads that stage from Postgres at once, without waiting for its periodic check: here
/// the check is slowed to an hour and the gateway is deaf to the workers' changes, so only
/// the reload on the gap can tell it of the stage and its deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_a_stages_change_versions_reloads_the_stage() {
    let mut app = spawn_app().await;
    let (lone, deaf) = deaf_gateway(&mut app, Duration::from_secs(3600)).await;
    let setup = stage_with_a_deploy(&app).await;
    let answer = app.ping_at(&lone, &Agent::new("deaf-1").host.ping_body(&[])).await.expect(StatusCode::OK);
    assert!(is_noop(&answer), "the gateway loaded before the stage existed and heard nothing since: {answer}");

    // A records change far past the version the gateway holds, as if those before were lost.
    let change = json!({"kind": "agents.v1", "envId": setup.env_id, "version": 1_000_000, "agents": []});
    let message = bus::Outgoing {
        exchange: deaf.changes_exchange(),
        routing_key: String::new(),
        payload: serde_json::to_vec(&change).expect("a change message"),
    };
    bus::Publisher::new(deaf.clone()).publish(&[message]).await.expect("publish the change");
    wait_for_the_first_step(
        &app,
        &lone,
        &setup,
        &Agent::new("deaf-1"),
        "the gateway to reload the stage and hand out the deploy",
    )
    .await;
    app.stop().await;
}
/// A gateway publishes an unchanged record again once `resend_unchanged_after` has passed
/// since it last sent it, with the host's facts, so a record or facts whose batch the workers
/// lost for good (here: their rows deleted behind every role's back) are repaired by the
/// host's next pings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_record_is_published_again_after_a_while() {
    let mut app = spawn_app().await;
    let resending = app.start_gateway_with(|c| c.resend_unchanged_after = Duration::from_secs(2)).await;
    let setup = stage_with_a_deploy(&app).await;
    let agent = Agent::new("resend-1");
    let stored = |rows: &[Value]| rows.iter().any(|a| a["hostName"] == "resend-1");
    // The gateway hears of the new stage through a change event: ping until it has.
    wait_for_the_first_step(&app, &resending, &setup, &agent, "the gateway to hand out the deploy").await;
    wait_for_agents(&app, "the host's record to be stored", stored).await;

    let facts = format!("SELECT 1 FROM hosts WHERE host_id = '{}' AND facts_at IS NOT NULL", agent.host.id);
    eventually("the host's facts to be stored", || async {
        if app.sql(&facts).await == 1 { Ok(()) } else { Err("no facts row".to_string()) }
    })
    .await;
    let deleted = app.sql(&format!("DELETE FROM agents WHERE host_id = '{}'", agent.host.id)).await;
    assert_eq!(deleted, 1, "the host's one record");
    assert_eq!(app.sql(&format!("DELETE FROM hosts WHERE host_id = '{}'", agent.host.id)).await, 1, "its facts");
    eventually("the unchanged record and the facts to be published again", || {
        let (app, agent, resending, facts) = (&app, &agent, &resending, &facts);
        async move {
            app.ping_at(resending, &agent.host.ping_body(&[])).await.expect(StatusCode::OK);
            let rows = app.get("/v1/envs/web/prod/agents").await.expect(StatusCode::OK);
            let rows = rows.as_array().cloned().unwrap_or_default();
            let facts = app.sql(facts).await;
            if stored(&rows) && facts == 1 {
                Ok(())
            } else {
                Err(format!("facts rows {facts}, records {}", json!(rows)))
            }
        }
    })
    .await;
    app.stop().await;
}

/// Records what is published on a namespace's `changes` exchange from its creation on: a
/// queue of the test's own, bound as a gateway binds its own.
struct ChangeRecorder {
    _conn: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
}

impl ChangeRecorder {
    async fn bind(config: &bus::BusConfig) -> ChangeRecorder {
        use lapin::options::{QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let conn = bus::connect(config).await.expect("the broker");
        let channel = conn.create_channel().await.expect("a channel");
        bus::declare_topology(&channel, config).await.expect("the topology");
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), options, FieldTable::default()).await.expect("a queue");
        let exchange = config.changes_exchange();
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind to the changes exchange");
        ChangeRecorder { _conn: conn, channel, queue: queue.name().to_string() }
    }

    /// The messages recorded since the last call, as published.
    async fn take(&self) -> Vec<Vec<u8>> {
        let options = lapin::options::BasicGetOptions { no_ack: true };
        let mut out = Vec::new();
        while let Some(m) = self.channel.basic_get(self.queue.as_str().into(), options).await.expect("basic_get") {
            out.push(m.delivery.data.clone());
        }
        out
    }
}

/// One change of a stage as recorded: its version and the message as published.
#[derive(Debug, Clone)]
struct Recorded {
    version: i64,
    kind: String,
    body: Vec<u8>,
}

/// Reads the recorder until the stage's changes it holds reach the stage's version in
/// Postgres and no more come for a while (the workers are done); returns them in version
/// order, checked to be every version from the stage's first change on, each once.
async fn record_until_quiet(app: &App, recorder: &ChangeRecorder, env_id: &str) -> Vec<Recorded> {
    let mut changes: Vec<Recorded> = Vec::new();
    let mut quiet_since: Option<Instant> = None;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let fresh = recorder.take().await;
        let heard = !fresh.is_empty();
        for body in fresh {
            let change: Value = serde_json::from_slice(&body).expect("a change message is JSON");
            if change["envId"] == env_id {
                let version = change["version"].as_i64().expect("a stage change has a version");
                changes.push(Recorded { version, kind: str_of(&change, "kind").to_string(), body });
            }
        }
        let versions = app.store.stage_versions().await.expect("the stage versions");
        let in_postgres = versions.iter().find(|(id, _)| id.as_str() == env_id).map(|(_, v)| *v).unwrap_or(0);
        let newest = changes.iter().map(|c| c.version).max().unwrap_or(0);
        if heard || newest != in_postgres {
            quiet_since = None;
        } else if quiet_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the changes recorded (up to {newest}) never caught up with Postgres ({in_postgres})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    changes.sort_by_key(|c| c.version);
    let versions: Vec<i64> = changes.iter().map(|c| c.version).collect();
    let first = versions.first().copied().unwrap_or(1);
    assert_eq!(versions, (first..first + versions.len() as i64).collect::<Vec<_>>(), "every version published once");
    changes
}

/// Publishes messages, in this order, on a deaf gateway's `changes` exchange.
async fn deliver_changes(deaf: &bus::BusConfig, bodies: &[&[u8]]) {
    let messages: Vec<bus::Outgoing> = bodies
        .iter()
        .map(|b| bus::Outgoing { exchange: deaf.changes_exchange(), routing_key: String::new(), payload: b.to_vec() })
        .collect();
    bus::Publisher::new(deaf.clone()).publish(&messages).await.expect("publish the changes");
}

/// Makes sure a deaf gateway has applied everything delivered to it so far: a change creating
/// a stage of its own (a copy of `snapshot` taking the group `sentinel-g`) is delivered after
/// it, and a host of that group is pinged until it gets that stage's goal. A gateway applies
/// its changes one after the other, so it then has applied every change before it.
async fn wait_until_applied(app: &App, gateway: &str, deaf: &bus::BusConfig, snapshot: &Value) {
    let mut stage = snapshot.clone();
    stage["goal"]["envId"] = json!("sentinel");
    stage["goal"]["envName"] = json!("sentinel");
    stage["groups"] = json!(["sentinel-g"]);
    stage["hosts"] = json!([]);
    let change = json!({"kind": "stage.v1", "envId": "sentinel", "version": 1, "stage": stage});
    deliver_changes(deaf, &[&serde_json::to_vec(&change).expect("a change message")]).await;
    let body = Host::new("sentinel-1", "sentinel-g").ping_body(&[]);
    eventually("the gateway to apply what was delivered to it", || {
        let body = &body;
        async move {
            let answer = app.ping_at(gateway, body).await.expect(StatusCode::OK);
            if answer["deployGoal"]["envId"] == "sentinel" { Ok(()) } else { Err(answer.to_string()) }
        }
    })
    .await;
}

/// The seeds of the shuffles; `REDELIVERY_SEED=<n>` replays one (every assertion names it).
fn redelivery_seeds() -> Vec<u64> {
    match std::env::var("REDELIVERY_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => vec![1, 2, 3, 4],
    }
}

/// Every index of `0..n` twice, shuffled (Fisher-Yates on SplitMix64: the same schedule for a
/// seed on every machine).
fn twice_shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).chain(0..n).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    order
}

/// How many change messages the gateways of this process counted with `outcome` (`stale`:
/// older than or as old as the version held, so dropped).
fn changes_counted(outcome: &str) -> f64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == "teletraan_gateway_changes_total")
        .flat_map(|f| f.get_metric())
        .filter(|m| m.get_label().iter().any(|l| l.name() == "outcome" && l.value() == outcome))
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// A rollout whose stage changes were recorded as the workers published them.
struct Rollout {
    setup: Setup,
    /// The three hosts, each having last reported serving the first deploy.
    agents: Vec<Agent>,
    second_id: String,
    /// The script variables the stage ends with.
    scripts: Value,
    /// Every change of the stage, in version order.
    changes: Vec<Recorded>,
    /// The stage's last snapshot.
    snapshot: Value,
    /// The deaf gateways asked for, loaded once the first deploy existed.
    late: Vec<(String, bus::BusConfig)>,
}

/// Records a rollout: three hosts serve the first deploy; the second is rolled out one host
/// at a time; the first host admitted is paused, then resumed; the script variables change.
/// `late` deaf gateways are started once the stage and its first deploy exist.
async fn a_recorded_rollout(app: &mut App, late: usize) -> Rollout {
    let recorder = ChangeRecorder::bind(&app.bus.config).await;
    let setup = stage_with_a_deploy(app).await;
    let first_id = str_of(&setup.deploy, "id").to_string();
    // Each hears nothing but what the test delivers (its check is an hour away).
    let mut gateways = Vec::new();
    for _ in 0..late {
        gateways.push(deaf_gateway(app, Duration::from_secs(3600)).await);
    }

    let agents = walk_first_deploy(app, &setup).await;
    wait_until_succeeding(app, &first_id, 3).await;
    app.put("/v1/envs/web/prod", &json!({"maxParallel": 1})).await.expect(StatusCode::NO_CONTENT);
    let build = app.publish_build("web", "0123456789ab").await;
    let second = app.deploy("web", "prod", str_of(&build, "id")).await;
    let second_id = str_of(&second, "id").to_string();
    let rows = wait_for_agents(app, "a host admitted to the second deploy", |rows| {
        rows.iter().any(|a| a["deployId"] == second_id.as_str())
    })
    .await;
    let admitted = rows.iter().find(|a| a["deployId"] == second_id.as_str()).expect("an admitted host");
    let admitted = json!([str_of(admitted, "hostId")]);
    for action in ["PAUSED_BY_USER", "NORMAL"] {
        let path = format!("/v1/envs/web/prod/deploys/hostactions?actionType={action}");
        app.put(&path, &admitted).await.expect(StatusCode::NO_CONTENT);
    }
    let scripts = json!({"JAVA_OPTS": "-Xmx2g", "PORT": "8081"});
    app.put("/v1/envs/web/prod/script_configs", &scripts).await.expect(StatusCode::NO_CONTENT);

    let changes = record_until_quiet(app, &recorder, &setup.env_id).await;
    let kinds: Vec<&str> = changes.iter().map(|c| c.kind.as_str()).collect();
    assert!(kinds.contains(&"stage.v1") && kinds.contains(&"agents.v1"), "a realistic sequence: {kinds:?}");
    let last_stage = changes.iter().rev().find(|c| c.kind == "stage.v1").expect("a stage change");
    let snapshot = serde_json::from_slice::<Value>(&last_stage.body).expect("JSON")["stage"].clone();
    Rollout { setup, agents, second_id, scripts, changes, snapshot, late: gateways }
}

/// The answers of a gateway to each host of `rollout`, pinging once, reporting what it last
/// did, as its agent would.
async fn answers(app: &App, gateway: &str, rollout: &Rollout) -> Vec<Value> {
    let mut out = Vec::new();
    for agent in &rollout.agents {
        out.push(app.ping_at(gateway, &agent.host.ping_body(agent.last.as_slice())).await.expect(StatusCode::OK));
    }
    out
}

/// The gateway's change consumer against redelivery: gateways deaf to the workers, loaded
/// once the stage and its first deploy exist, are fed the stage's changes as the workers
/// published them (stage changes and agent records of [`a_recorded_rollout`]), one in order
/// and once each, the others every message twice in a shuffled order (including the changes
/// older than their load). Every host must then get the same answer from each, and the same as
/// from a gateway loaded from Postgres afterwards; and every copy older than (or as old as)
/// what a gateway holds must be dropped as stale, never applied over a newer one (nor reloaded
/// for: a reload would hide it here). `REDELIVERY_SEED=<n>` replays one shuffle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_messages_delivered_twice_and_out_of_order_leave_the_gateway_as_in_order_once() {
    let mut app = spawn_app().await;
    let seeds = redelivery_seeds();
    let mut rollout = a_recorded_rollout(&mut app, 1 + seeds.len()).await;
    let once = rollout.late.remove(0);
    let twice: Vec<(u64, (String, bus::BusConfig))> = seeds.into_iter().zip(rollout.late.drain(..)).collect();
    let (truth, _) = deaf_gateway(&mut app, Duration::from_secs(3600)).await;
    let (changes, snapshot) = (&rollout.changes, &rollout.snapshot);
    let bodies: Vec<&[u8]> = changes.iter().map(|c| c.body.as_slice()).collect();

    deliver_changes(&once.1, &bodies).await;
    wait_until_applied(&app, &once.0, &once.1, snapshot).await;
    for (seed, (gateway, deaf)) in &twice {
        let stale_before = changes_counted("stale");
        let order = twice_shuffled(bodies.len(), *seed);
        let shuffled: Vec<&[u8]> = order.iter().map(|&i| bodies[i]).collect();
        deliver_changes(deaf, &shuffled).await;
        wait_until_applied(&app, gateway, deaf, snapshot).await;
        // Each second copy is at most as new as what the gateway then holds (it applied the
        // first, or reloaded past it, or dropped it as older already).
        let stale = changes_counted("stale") - stale_before;
        let delivered: Vec<i64> = order.iter().map(|&i| changes[i].version).collect();
        assert!(
            stale >= bodies.len() as f64,
            "seed {seed}: {stale} of the {} copies were dropped as stale; at least the {} second copies must \
             be (versions in the order delivered: {delivered:?})",
            order.len(),
            bodies.len()
        );
    }

    let expected = answers(&app, &truth, &rollout).await;
    let told: Vec<&Value> = expected.iter().filter(|a| !is_noop(a)).collect();
    assert!((1..expected.len()).contains(&told.len()), "some hosts are told to deploy, not all: {expected:?}");
    for answer in told {
        let goal = goal_of(answer, &rollout.setup, &rollout.second_id);
        assert_eq!(goal["scriptVariables"], rollout.scripts, "the newest script variables: {goal}");
    }
    assert_eq!(answers(&app, &once.0, &rollout).await, expected, "in order, once, as from Postgres");
    for (seed, (gateway, _)) in &twice {
        assert_eq!(answers(&app, gateway, &rollout).await, expected, "seed {seed}: twice, shuffled, as in order once");
    }
    app.stop().await;
}

/// A gateway loaded before a stage existed receives the stage's newest change (a `stage.v1`)
/// before the older ones: it must reload the stage, records included, as on any gap. It used
/// to apply such a change at once for a stage it did not hold, then drop every older
/// `agents.v1` as stale; its version equal to Postgres', the periodic check saw no drift, and
/// the hosts the workers admitted were answered NOOP until the stage changed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_change_ahead_of_its_records_for_a_stage_not_held_does_not_lose_them() {
    let mut app = spawn_app().await;
    let (early, deaf) = deaf_gateway(&mut app, Duration::from_secs(3600)).await;
    let rollout = a_recorded_rollout(&mut app, 0).await;
    let (truth, _) = deaf_gateway(&mut app, Duration::from_secs(3600)).await;
    let newest = rollout.changes.last().expect("changes");
    assert_eq!(newest.kind, "stage.v1", "the rollout ends with new script variables");
    let mut bodies: Vec<&[u8]> = vec![&newest.body];
    bodies.extend(rollout.changes.iter().map(|c| c.body.as_slice()));
    deliver_changes(&deaf, &bodies).await;
    wait_until_applied(&app, &early, &deaf, &rollout.snapshot).await;
    assert_eq!(answers(&app, &early, &rollout).await, answers(&app, &truth, &rollout).await, "as from Postgres");
    app.stop().await;
}
