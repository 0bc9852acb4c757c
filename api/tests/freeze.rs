//! Stage enable/disable and the system-wide change freeze through the REST API: refused
//! deploys answer 409 with the reason, the switches are tags Teletraan's board reads, and bad
//! switches are 400s.

mod common;

use common::{Body, spawn_app, str_of};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_stage_refuses_new_builds_with_409_until_enabled() {
    let app = spawn_app().await;
    let stage = app.create_stage("web", "prod").await;
    let build = app.publish_build("web", "aaaaaaa1111").await;
    let deploy_path = format!("/v1/envs/web/prod/deploys?buildId={}", str_of(&build, "id"));

    let r = app
        .admin(Method::POST, "/v1/envs/web/prod/actions?actionType=disable&description=release%20day", Body::None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(app.get("/v1/envs/web/prod").await.expect(StatusCode::OK)["state"], "DISABLED");
    let (code, message) = app.admin(Method::POST, &deploy_path, Body::None).await.expect_error(StatusCode::CONFLICT);
    assert_eq!(code, "conflict");
    assert!(message.contains("web/prod is disabled") && message.contains("by admin: release day"), "{message}");
    let tag = app.get(&format!("/v1/tags/targets/{}/latest", str_of(&stage, "id"))).await.expect(StatusCode::OK);
    assert_eq!((tag["value"].as_str(), tag["targetType"].as_str()), (Some("DISABLE_ENV"), Some("ENVIRONMENT")));

    app.admin(Method::POST, "/v1/envs/web/prod/actions?actionType=ENABLE", Body::None)
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/envs/web/prod").await.expect(StatusCode::OK)["state"], "NORMAL");
    app.deploy("web", "prod", str_of(&build, "id")).await;

    // Bad switches.
    for (path, status, words) in [
        ("/v1/envs/web/prod/actions", StatusCode::BAD_REQUEST, "actionType"),
        ("/v1/envs/web/prod/actions?actionType=PAUSE", StatusCode::BAD_REQUEST, "PAUSE"),
        ("/v1/envs/web/prod/actions?actionType=ENABLE&color=red", StatusCode::BAD_REQUEST, "color"),
        ("/v1/envs/web/nope/actions?actionType=ENABLE", StatusCode::NOT_FOUND, "web/nope"),
    ] {
        let (_, message) = app.admin(Method::POST, path, Body::None).await.expect_error(status);
        assert!(message.contains(words), "{path}: {message}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_freeze_holds_back_every_stage_and_needs_a_reason() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.create_stage("api", "prod").await;
    let web = app.publish_build("web", "aaaaaaa1111").await;
    let api = app.publish_build("api", "bbbbbbb2222").await;

    let (_, message) = app
        .admin(Method::POST, "/v1/envs/actions?actionType=DISABLE", Body::None)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("description"), "{message}");
    // An operator of one environment may not freeze them all.
    app.post("/v1/principals", &json!({"name": "olga"})).await.expect(StatusCode::CREATED);
    app.post("/v1/envs/web/user_roles", &json!({"name": "olga", "role": "OPERATOR"})).await.expect(StatusCode::CREATED);
    let token = app.post("/v1/tokens", &json!({"principal": "olga"})).await.expect(StatusCode::CREATED);
    let url = format!("{}/v1/envs/actions?actionType=DISABLE&description=mine", app.api);
    app.call(Method::POST, &url, token["token"].as_str(), Body::None).await.expect_error(StatusCode::FORBIDDEN);

    app.admin(Method::POST, "/v1/envs/actions?actionType=DISABLE&description=end+of+year", Body::None)
        .await
        .expect(StatusCode::NO_CONTENT);
    for (env, build) in [("web", &web), ("api", &api)] {
        let path = format!("/v1/envs/{env}/prod/deploys?buildId={}", str_of(build, "id"));
        let (_, message) = app.admin(Method::POST, &path, Body::None).await.expect_error(StatusCode::CONFLICT);
        assert!(message.contains("frozen system-wide") && message.contains("by admin: end of year"), "{message}");
    }
    let tag = app.get("/v1/tags/targets/TELETRAAN/latest").await.expect(StatusCode::OK);
    assert_eq!((tag["value"].as_str(), tag["comments"].as_str()), (Some("DISABLE_ENV"), Some("end of year")));
    assert_eq!(
        app.get("/v1/envs/web/prod").await.expect(StatusCode::OK)["state"],
        "NORMAL",
        "stages keep their switch"
    );

    app.admin(Method::POST, "/v1/envs/actions?actionType=ENABLE&description=done", Body::None)
        .await
        .expect(StatusCode::NO_CONTENT);
    app.deploy("web", "prod", str_of(&web, "id")).await;
    app.stop().await;
}
