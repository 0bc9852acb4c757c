//! Secret script variables through the API and the gateway: hosts receive them with the other
//! script variables; no API read returns them (to readers or admins), nor does the history.

mod common;

use common::{Body, Host, eventually, spawn_app, str_of};
use reqwest::{Method, StatusCode};
use serde_json::json;

const SECRET: &str = "hunter2-s3cret-value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_hosts_and_no_api_read() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.set_capacity("web", "prod", "GROUP", &["web-g"]).await;
    app.put("/v1/envs/web/prod/script_configs", &json!({"PORT": "8080", "DB_PASSWORD": "plain"}))
        .await
        .expect(StatusCode::NO_CONTENT);
    let names = app.put("/v1/envs/web/prod/script_secrets", &json!({"DB_PASSWORD": SECRET, "API_KEY": "k-1"})).await;
    assert_eq!(names.expect(StatusCode::OK), json!(["API_KEY", "DB_PASSWORD"]));
    let names = app.put("/v1/envs/web/prod/script_secrets", &json!({"API_KEY": null})).await;
    assert_eq!(names.expect(StatusCode::OK), json!(["DB_PASSWORD"]), "null removes one, the others stay");

    // A host gets them, a secret winning over a plain variable of the same name.
    let build = app.publish_build("web", "abcdef12345").await;
    app.deploy("web", "prod", str_of(&build, "id")).await;
    let host = Host::new("web-1", "web-g");
    let goal = eventually("the gateway to hand out the deploy", || async {
        let answer = app.ping(&host.ping_body(&[])).await.expect(StatusCode::OK);
        if answer["opCode"] == "DEPLOY" { Ok(answer["deployGoal"].clone()) } else { Err(answer.to_string()) }
    })
    .await;
    assert_eq!(goal["scriptVariables"], json!({"PORT": "8080", "DB_PASSWORD": SECRET}));

    // No read returns the value: not to an admin, not to a reader.
    app.post("/v1/principals", &json!({"name": "rita"})).await.expect(StatusCode::CREATED);
    app.post("/v1/system/user_roles", &json!({"name": "rita", "role": "READER"})).await.expect(StatusCode::CREATED);
    let rita = app.post("/v1/tokens", &json!({"principal": "rita"})).await.expect(StatusCode::CREATED);
    let rita = rita["token"].as_str().unwrap().to_string();
    let reads = [
        "/v1/envs/web/prod/script_secrets",
        "/v1/envs/web/prod/script_configs",
        "/v1/envs/web/prod",
        "/v1/envs?envName=web",
        "/v1/envs/web/prod/history",
        "/v1/history",
        "/v1/envs/web/prod/deploys/current",
        "/v1/envs/web/prod/deploys/current/progress",
    ];
    for path in reads {
        for token in [&app.admin_token, &rita] {
            let reply = app.call(Method::GET, &format!("{}{path}", app.api), Some(token), Body::None).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
            assert!(
                !reply.text.contains(SECRET) && !reply.text.contains("k-1"),
                "{path} shows a secret: {}",
                reply.text
            );
        }
    }
    let url = format!("{}/v1/envs/web/prod/script_secrets", app.api);
    let names = app.call(Method::GET, &url, Some(&rita), Body::None).await;
    assert_eq!(names.expect(StatusCode::OK), json!(["DB_PASSWORD"]));
    let history = app.get("/v1/envs/web/prod/history").await.expect(StatusCode::OK);
    let row = history.as_array().unwrap().iter().find(|r| r["type"] == "Env Script Secrets").unwrap().clone();
    assert_eq!(row["configChange"]["names"], json!(["DB_PASSWORD"]));

    // Only an operator writes them; bad input is refused.
    let body = json!({"X": "y"});
    app.call(Method::PUT, &url, Some(&rita), Body::Json(&body)).await.expect_error(StatusCode::FORBIDDEN);
    for bad in [json!({}), json!({"A B": "x"}), json!({"A": 5}), json!(["A"])] {
        app.put("/v1/envs/web/prod/script_secrets", &bad).await.expect_error(StatusCode::BAD_REQUEST);
    }
    app.put("/v1/envs/web/nope/script_secrets", &body).await.expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}
