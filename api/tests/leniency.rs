//! What Teletraan's server accepts and so must we: a trailing slash on any path (with the
//! route's role still enforced), and integers sent as JSON strings or as floats without a
//! fraction (`5`, `"5"`, `5.0`; `5.5` and `"x"` are a 400 naming the field).

mod common;

use common::{Body, Host, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_slash_reaches_the_same_route_with_the_same_role() {
    let app = spawn_app().await;
    let made = app.post("/v1/envs/", &json!({"envName": "web", "stageName": "prod"})).await;
    assert_eq!(made.location.as_deref(), Some("/v1/envs/web/prod"));
    made.expect(StatusCode::CREATED);
    assert_eq!(app.get("/v1/envs/web/prod/").await.expect(StatusCode::OK)["stageName"], "prod");
    assert_eq!(app.get("/v1/envs/?envName=web").await.expect(StatusCode::OK).as_array().map(Vec::len), Some(1));
    app.admin(Method::PUT, "/v1/envs/web/prod/capacity/?capacityType=GROUP", Body::Json(&json!(["g"])))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/envs/web/prod/capacity").await.expect(StatusCode::OK), json!(["g"]));
    let ping = Host::new("h1", "g").ping_body(&[]);
    let url = format!("{}/v1/system/ping/", app.gateway);
    app.call(Method::POST, &url, Some(&app.agent_token), Body::Json(&ping)).await.expect(StatusCode::OK);

    // The role of the route without the slash is required with it.
    app.post("/v1/principals", &json!({"name": "rita"})).await.expect(StatusCode::CREATED);
    app.post("/v1/system/user_roles", &json!({"name": "rita", "role": "READER"})).await.expect(StatusCode::CREATED);
    let token = app.post("/v1/tokens", &json!({"principal": "rita"})).await.expect(StatusCode::CREATED);
    let disable = format!("{}/v1/envs/web/prod/actions/?actionType=DISABLE", app.api);
    app.call(Method::POST, &disable, token["token"].as_str(), Body::None).await.expect_error(StatusCode::FORBIDDEN);
    app.call(Method::POST, &disable, Some(&app.admin_token), Body::None).await.expect(StatusCode::NO_CONTENT);
    let (code, _) = app.get("/v1/nothing/").await.expect_error(StatusCode::NOT_FOUND);
    assert_eq!(code, "not_found");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_may_come_as_strings_or_floats_without_fraction() {
    let app = spawn_app().await;
    let stage = app
        .post(
            "/v1/envs",
            &json!({"envName": "web", "stageName": "prod", "maxParallel": "5", "successThreshold": 9000.0}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!((&stage["maxParallel"], &stage["successThreshold"]), (&json!(5), &json!(9000)));
    app.put("/v1/envs/web/prod", &json!({"stuckThreshold": " 900 ", "maxDeployNum": 10e2}))
        .await
        .expect(StatusCode::NO_CONTENT);
    let stage = app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);
    assert_eq!((&stage["stuckThreshold"], &stage["maxDeployNum"]), (&json!(900), &json!(1000)));
    let promote = json!({"type": "MANUAL", "queueSize": "2", "delay": 3.0});
    app.put("/v1/envs/web/prod/promotes", &promote).await.expect(StatusCode::OK);
    assert_eq!(app.get("/v1/envs/web/prod/promotes").await.expect(StatusCode::OK)["queueSize"], 2);
    assert!(app.get("/v1/history?pageSize=10.0").await.expect(StatusCode::OK).is_array());
    assert!(app.get("/v1/deploys?pageSize=5.0").await.expect(StatusCode::OK)["deploys"].is_array());

    for (body, field) in [
        (json!({"maxParallel": 5.5}), "maxParallel"),
        (json!({"maxParallel": "x"}), "maxParallel"),
        (json!({"successThreshold": true}), "successThreshold"),
        (json!({"maxDeployDay": "99999999999"}), "maxDeployDay"),
    ] {
        let (_, message) = app.put("/v1/envs/web/prod", &body).await.expect_error(StatusCode::BAD_REQUEST);
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let (_, message) =
        app.put("/v1/envs/web/prod/promotes", &json!({"queueSize": "2.5"})).await.expect_error(StatusCode::BAD_REQUEST);
    assert!(message.starts_with("queueSize"), "{message}");
    let (_, message) = app.get("/v1/history?pageSize=1.5").await.expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("pageSize"), "{message}");
    let (_, message) = app.get("/v1/deploys?pageIndex=one").await.expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("pageIndex"), "{message}");
    app.stop().await;
}
