//! The audit history through the REST API: the rows of an end-to-end rollout name the
//! principals that acted (a CI script publishing, the automation promoting, a person
//! deploying, the admin configuring), filters and pages work, and bad queries are refused.

mod common;

use common::{Body, eventually, spawn_app_with, str_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `(type, action, operator)` of each row.
fn summary(rows: &Value) -> Vec<(String, String, String)> {
    rows.as_array()
        .expect("a list of history rows")
        .iter()
        .map(|r| (str_of(r, "type").into(), str_of(r, "action").into(), str_of(r, "operator").into()))
        .collect()
}

fn row(rows: &Value, kind: &str, action: &str) -> Option<Value> {
    rows.as_array()?.iter().find(|r| r["type"] == kind && r["action"] == action).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_of_a_rollout_name_the_principals_that_acted() {
    let app = spawn_app_with(|c| c.jobs.set_periods("auto-promote=1s").unwrap()).await;
    for stage in ["beta", "canary"] {
        let body = json!({"envName": "web", "stageName": stage, "branch": "main"});
        app.post("/v1/envs", &body).await.expect(StatusCode::CREATED);
    }
    app.put("/v1/envs/web/beta/promotes", &json!({"type": "AUTO", "predStage": "BUILD"})).await.expect(StatusCode::OK);
    let ci = app.post("/v1/envs/web/token_roles", &json!({"name": "ci", "role": "PUBLISHER"})).await;
    let ci_token = ci.expect(StatusCode::CREATED)["token"].as_str().unwrap().to_string();
    app.post("/v1/principals", &json!({"name": "olivia"})).await.expect(StatusCode::CREATED);
    app.post("/v1/envs/web/user_roles", &json!({"name": "olivia", "role": "OPERATOR"}))
        .await
        .expect(StatusCode::CREATED);
    let made = app.post("/v1/tokens", &json!({"principal": "olivia"})).await.expect(StatusCode::CREATED);
    let olivia = made["token"].as_str().unwrap().to_string();

    // CI publishes; the automation deploys it on beta; a person deploys it on canary.
    let build = json!({
        "name": "web", "artifactUrl": "https://artifacts.example.com/web/1.tar.gz",
        "repo": "org/web", "branch": "main", "commit": "abcdef12345", "artifactSha256": common::SOME_SHA256,
    });
    let url = format!("{}/v1/builds", app.api);
    let build = app.call(Method::POST, &url, Some(&ci_token), Body::Json(&build)).await.expect(StatusCode::CREATED);
    let build_id = str_of(&build, "id");
    let beta = eventually("the automation to deploy on beta", || async {
        let rows = app.get("/v1/envs/web/beta/history").await.expect(StatusCode::OK);
        row(&rows, "Env Action", "AUTO_PROMOTE").ok_or(format!("{:?}", summary(&rows)))
    })
    .await;
    assert_eq!(beta["operator"], "AutoPromoter");
    assert_eq!(beta["configChange"]["buildId"], build_id);
    let url = format!("{}/v1/envs/web/canary/deploys?buildId={build_id}", app.api);
    let deploy = app.call(Method::POST, &url, Some(&olivia), Body::None).await.expect(StatusCode::CREATED);

    let canary = app.get("/v1/envs/web/canary/history").await.expect(StatusCode::OK);
    let deployed = row(&canary, "Env Action", "DEPLOY").expect("canary's deploy row");
    assert_eq!(deployed["operator"], "olivia");
    assert_eq!(deployed["configChange"]["result"]["id"], deploy["id"]);
    assert!(deployed["commandId"].as_str().is_some_and(|c| !c.is_empty()), "{deployed}");
    let created = row(&canary, "Env General Config", "create").expect("canary's creation row");
    assert_eq!(created["operator"], "admin");
    assert!(canary.as_array().unwrap().iter().all(|r| r["stageName"] == "canary"), "{canary}");

    let builds = app.get("/v1/history?type=Build").await.expect(StatusCode::OK);
    assert_eq!(summary(&builds), [("Build".into(), "publish".into(), "ci@web".into())]);
    let by_admin = app.get("/v1/history?envName=web&operator=admin").await.expect(StatusCode::OK);
    for (kind, action) in [("Role", "grant"), ("Token", "create script"), ("Env Promote Config", "update")] {
        assert!(row(&by_admin, kind, action).is_some(), "{kind} {action} in {:?}", summary(&by_admin));
    }
    assert!(summary(&by_admin).iter().all(|(_, _, who)| who == "admin"));

    // Newest first, page after page.
    let all = app.get("/v1/history?pageSize=500").await.expect(StatusCode::OK);
    let ids: Vec<i64> = all.as_array().unwrap().iter().map(|r| r["changeId"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let second = app.get("/v1/history?pageIndex=2&pageSize=2").await.expect(StatusCode::OK);
    assert_eq!(second.as_array().unwrap()[..], all.as_array().unwrap()[2..4]);

    // A person with a role on the environment reads it; nobody without a token does.
    let url = format!("{}/v1/envs/web/canary/history", app.api);
    app.call(Method::GET, &url, Some(&olivia), Body::None).await.expect(StatusCode::OK);
    app.call(Method::GET, &url, None, Body::None).await.expect_error(StatusCode::UNAUTHORIZED);
    for bad in
        ["/v1/history?pageSize=0", "/v1/history?pageSize=501", "/v1/history?pageIndex=x", "/v1/history?envName=a%20b"]
    {
        app.get(bad).await.expect_error(StatusCode::BAD_REQUEST);
    }
    app.get("/v1/envs/web/nope/history").await.expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}
