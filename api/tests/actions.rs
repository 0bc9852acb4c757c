//! The deploy and host actions, schedules, constraints and read models through the REST API,
//! with the workers applying the commands.

mod common;

use common::{App, Body, Host, eventually, report, spawn_app, str_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `web/prod` with one host `h1` serving a first deploy (walked through the gateway), and the
/// deploy.
async fn serving_stage(app: &App) -> (Value, Value) {
    let stage = app.create_stage("web", "prod").await;
    app.set_capacity("web", "prod", "GROUP", &["g"]).await;
    let build = app.publish_build("web", "aaaaaaa1111").await;
    let deploy = app.deploy("web", "prod", str_of(&build, "id")).await;
    // The first goal comes once the gateway learnt of the deploy.
    app.serve_deploy(&Host::new("h1", "g"), str_of(&deploy, "id")).await;
    (stage, deploy)
}

fn action_path(kind: &str, extra: &str) -> String {
    format!("/v1/envs/web/prod/deploys/current/actions?actionType={kind}{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_actions_answer_like_teletraan() {
    let app = spawn_app().await;
    let (_, first) = serving_stage(&app).await;
    let first_id = str_of(&first, "id").to_string();

    let restart = app.admin(Method::POST, &action_path("RESTART", ""), Body::None).await.expect(StatusCode::CREATED);
    assert_eq!((restart["type"].as_str(), restart["buildId"].as_str()), (Some("RESTART"), first["buildId"].as_str()));

    let paused = app.admin(Method::POST, &action_path("PAUSE", ""), Body::None).await.expect(StatusCode::OK);
    assert_eq!(paused["id"], restart["id"], "PAUSE answers with the current deploy, not the stage id");
    assert_eq!(app.get("/v1/envs/web/prod").await.expect(StatusCode::OK)["envState"], "PAUSED");
    app.admin(Method::POST, &action_path("resume", ""), Body::None).await.expect(StatusCode::OK);
    assert_eq!(app.get("/v1/envs/web/prod").await.expect(StatusCode::OK)["envState"], "NORMAL");

    let rollback = app
        .admin(Method::POST, &action_path("ROLLBACK", &format!("&toDeployId={first_id}&description=oops")), Body::None)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(rollback["type"], "ROLLBACK");
    assert_eq!(rollback["alias"], first_id.as_str());
    assert_eq!(rollback["description"], "oops");

    // Refusals are 4xx with the JSON shape.
    let r = app.admin(Method::POST, &action_path("PROMOTE", ""), Body::None).await;
    let (code, message) = r.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(code, "bad_request");
    assert!(message.contains("fromDeployId"), "{message}");
    app.admin(Method::POST, &action_path("LAUNCH", ""), Body::None).await.expect_error(StatusCode::BAD_REQUEST);
    app.admin(Method::POST, "/v1/envs/web/prod/deploys/current/actions", Body::None)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    app.admin(Method::POST, &action_path("ROLLBACK", "&toDeployId=nope"), Body::None)
        .await
        .expect_error(StatusCode::NOT_FOUND);
    app.admin(Method::POST, "/v1/envs/web/nope/deploys/current/actions?actionType=RESTART", Body::None)
        .await
        .expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_actions_and_agent_updates_change_the_hosts_state() {
    let app = spawn_app().await;
    let (_, deploy) = serving_stage(&app).await;
    let agent = |rows: Value| rows.as_array().unwrap()[0].clone();

    app.put("/v1/envs/web/prod/deploys/hostactions?actionType=PAUSED_BY_USER", &json!(["i-h1"]))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(agent(app.get("/v1/envs/web/prod/agents").await.expect(StatusCode::OK))["state"], "PAUSED_BY_USER");
    app.put("/v1/envs/web/prod/agents/i-h1", &json!({"state": "NORMAL"})).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(agent(app.get("/v1/envs/web/prod/agents").await.expect(StatusCode::OK))["state"], "NORMAL");

    app.put("/v1/envs/web/prod/deploys/hostactions?actionType=DELETE", &json!(["i-h1"]))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    app.put("/v1/envs/web/prod/deploys/hostactions?actionType=RESET", &json!([]))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    app.put("/v1/envs/web/prod/deploys/hostactions?actionType=RESET", &json!(["ghost"]))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    app.put("/v1/envs/web/prod/agents/i-h1", &json!({"state": "UNREACHABLE"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    app.put("/v1/envs/web/prod/agents/i-h1", &json!({})).await.expect_error(StatusCode::BAD_REQUEST);

    let path = format!("/v1/envs/web/prod/agents/reset_failed_agents/{}", str_of(&deploy, "id"));
    app.admin(Method::PUT, &path, Body::None).await.expect(StatusCode::NO_CONTENT);

    app.admin(Method::DELETE, "/v1/envs/web/prod/hosts?replaceHost=false", Body::Json(&json!(["i-h1"])))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(agent(app.get("/v1/envs/web/prod/agents").await.expect(StatusCode::OK))["state"], "STOP");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_search_progress_and_counts() {
    let app = spawn_app().await;
    let (stage, deploy) = serving_stage(&app).await;
    let id = str_of(&deploy, "id");

    // An AUTO stage accepted the deploy already: a verdict on it is a conflict.
    let r = app.put(&format!("/v1/deploys/{id}"), &json!({"acceptanceStatus": "REJECTED"})).await;
    r.expect_error(StatusCode::CONFLICT);
    app.put(&format!("/v1/deploys/{id}"), &json!({"description": "fine"})).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.deploy_by_id(id).await["description"], "fine");
    app.put(&format!("/v1/deploys/{id}"), &json!({})).await.expect_error(StatusCode::BAD_REQUEST);
    app.put("/v1/deploys/nope", &json!({"description": "x"})).await.expect_error(StatusCode::NOT_FOUND);

    let env_id = str_of(&stage, "id");
    let page =
        app.get(&format!("/v1/deploys?envId={env_id}&deployState=SUCCEEDING&pageSize=10")).await.expect(StatusCode::OK);
    assert_eq!(page["total"], 1);
    assert_eq!(page["deploys"][0]["id"], id);
    assert_eq!(page["truncated"], false);
    let none = app.get(&format!("/v1/deploys?envId={env_id}&deployState=FAILING")).await.expect(StatusCode::OK);
    assert_eq!(none["total"], 0);
    app.get("/v1/deploys?deployState=SOON").await.expect_error(StatusCode::BAD_REQUEST);
    app.get("/v1/deploys?pageIndex=0").await.expect_error(StatusCode::BAD_REQUEST);
    app.get("/v1/deploys?colour=red").await.expect_error(StatusCode::BAD_REQUEST);

    let progress = app.get("/v1/envs/web/prod/deploys/current/progress").await.expect(StatusCode::OK);
    assert_eq!(progress["agents"].as_array().unwrap().len(), 1);
    assert_eq!(progress["missingHosts"], json!([]));
    let put_progress = app.admin(Method::PUT, "/v1/envs/web/prod/deploys/current/progress", Body::None).await;
    assert_eq!(
        put_progress.expect(StatusCode::OK)["agents"],
        progress["agents"],
        "PUT reads too, as Teletraan's board calls it"
    );
    app.set_capacity("web", "prod", "HOST", &["not-yet-pinging"]).await;
    let progress = app.get("/v1/envs/web/prod/deploys/current/progress").await.expect(StatusCode::OK);
    assert_eq!(progress["missingHosts"], json!(["not-yet-pinging"]));

    assert_eq!(app.get("/v1/envs/web/prod/agents/count?actionType=SERVING").await.expect(StatusCode::OK), 1);
    assert_eq!(app.get("/v1/envs/web/prod/agents/count?actionType=FIRST_DEPLOY").await.expect(StatusCode::OK), 0);
    app.get("/v1/envs/web/prod/agents/count?actionType=ALL").await.expect_error(StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_and_constraints_are_configured_and_validated() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let schedule = app
        .put(
            "/v1/schedules/web/prod/schedules",
            &json!({"totalSessions": 2, "hostNumbers": "1,50%", "cooldownTimes": "5,-1"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!((schedule["state"].as_str(), schedule["currentSession"].as_i64()), (Some("NOT_STARTED"), Some(0)));
    let id = str_of(&schedule, "id");
    assert_eq!(app.get(&format!("/v1/schedules/web/prod/{id}")).await.expect(StatusCode::OK), schedule);
    app.get("/v1/schedules/web/prod/other").await.expect_error(StatusCode::NOT_FOUND);
    app.put(
        "/v1/schedules/web/prod/schedules",
        &json!({"totalSessions": 2, "hostNumbers": "1", "cooldownTimes": "5,5"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST);
    app.admin(Method::PUT, "/v1/schedules/web/prod/override?sessionNumber=1", Body::None)
        .await
        .expect_error(StatusCode::CONFLICT);
    let removed =
        app.put("/v1/schedules/web/prod/schedules", &json!({"totalSessions": 0})).await.expect(StatusCode::OK);
    assert_eq!(removed, Value::Null);
    app.admin(Method::PUT, "/v1/schedules/web/prod/override?sessionNumber=1", Body::None)
        .await
        .expect_error(StatusCode::NOT_FOUND);

    assert_eq!(app.get("/v1/envs/web/prod/deploy_constraint").await.expect(StatusCode::OK), Value::Null);
    let c = app
        .post(
            "/v1/envs/web/prod/deploy_constraint",
            &json!({"constraintKey": "zone", "maxParallel": 1, "constraintType": "GROUP_BY_GROUP"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!((c["constraintKey"].as_str(), c["constraintType"].as_str()), (Some("zone"), Some("GROUP_BY_GROUP")));
    assert_eq!(app.get("/v1/envs/web/prod/deploy_constraint").await.expect(StatusCode::OK), c);
    app.post("/v1/envs/web/prod/deploy_constraint", &json!({"constraintKey": "zone", "maxParallel": 0}))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    app.post(
        "/v1/envs/web/prod/deploy_constraint",
        &json!({"constraintKey": "zone", "maxParallel": 1, "constraintType": "X"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST);
    app.delete("/v1/envs/web/prod/deploy_constraint").await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/envs/web/prod/deploy_constraint").await.expect(StatusCode::OK), Value::Null);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_leaves_the_capacity_is_told_to_forget_the_stage() {
    let app = spawn_app().await;
    let (stage, _) = serving_stage(&app).await;
    app.set_capacity("web", "prod", "GROUP", &[]).await;
    let host = Host::new("h1", "g");
    let rows = app.get("/v1/envs/web/prod/agents").await.expect(StatusCode::OK);
    let serving = &rows.as_array().unwrap()[0];
    let report = report(str_of(serving, "deployId"), str_of(&stage, "id"), "SERVING_BUILD", "SUCCEEDED");
    let answer = eventually("a DELETE goal once the gateway saw the capacity change", || {
        let (app, host, report) = (&app, &host, &report);
        async move {
            let answer = app.ping(&host.ping_body(std::slice::from_ref(report))).await.expect(StatusCode::OK);
            if answer["opCode"] == "DELETE" { Ok(answer) } else { Err(answer.to_string()) }
        }
    })
    .await;
    assert_eq!(answer["deployGoal"]["envId"], stage["id"]);
    assert_eq!(answer["deployGoal"]["envName"], "web", "the names are known, so they are sent");
    // The agent forgets the stage and stops reporting it: its record goes.
    app.ping(&host.ping_body(&[])).await.expect(StatusCode::OK);
    eventually("the record to be removed", || async {
        let rows = app.get("/v1/envs/web/prod/agents").await.expect(StatusCode::OK);
        if rows.as_array().unwrap().is_empty() { Ok(()) } else { Err(rows.to_string()) }
    })
    .await;
    app.stop().await;
}
