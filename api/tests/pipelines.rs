//! Pipelines and tags through the REST API: a stage's promote settings (defaults, changes,
//! refusals that name the field), tags on builds with the effective tag along a branch, and a
//! rollback that marks the build it leaves bad.

mod common;

use common::{Body, spawn_app, str_of};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_settings_have_defaults_and_refusals_name_the_field() {
    let app = spawn_app().await;
    app.create_stage("web", "beta").await;
    app.create_stage("web", "canary").await;
    let p = app.get("/v1/envs/web/canary/promotes").await.expect(StatusCode::OK);
    assert_eq!((p["type"].as_str(), p["queueSize"].as_i64(), p["predStage"].as_str()), (Some("MANUAL"), Some(1), None));
    assert_eq!((p["failPolicy"].as_str(), p["disablePolicy"].as_str()), (Some("CONTINUE"), Some("AUTO")));

    let p = app
        .put(
            "/v1/envs/web/canary/promotes",
            &json!({"type": "AUTO", "predStage": "beta", "schedule": "0 0/30 9-17 ? * MON-FRI"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!((p["type"].as_str(), p["predStage"].as_str()), (Some("AUTO"), Some("beta")));
    assert_eq!(p["lastOperator"], "admin");
    let again = app.get("/v1/envs/web/canary/promotes").await.expect(StatusCode::OK);
    assert_eq!(again, p);

    let refusals = [
        (json!({"predStage": "nope"}), "predStage"),
        (json!({"predStage": "canary"}), "predStage"),
        (json!({"schedule": "0 0 9 * * MOON"}), "schedule"),
        (json!({"queueSize": 42}), "queueSize"),
        (json!({"delay": -5}), "delay"),
        (json!({"type": "SOMETIMES"}), "SOMETIMES"),
    ];
    for (body, field) in refusals {
        let r = app.put("/v1/envs/web/canary/promotes", &body).await;
        let (_, message) = r.expect_error(StatusCode::BAD_REQUEST);
        assert!(message.contains(field), "{body}: {message}");
    }
    // beta ← canary is now a loop.
    let r = app.put("/v1/envs/web/beta/promotes", &json!({"predStage": "canary"})).await;
    let (_, message) = r.expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("loop"), "{message}");
    app.get("/v1/envs/web/nope/promotes").await.expect_error(StatusCode::NOT_FOUND);
    app.put("/v1/envs/web/beta/promotes", &json!([])).await.expect_error(StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_tags_are_made_read_and_spread_along_the_branch() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let b1 = app.publish_build("web", "aaaaaaa1111").await;
    let b2 = app.publish_build("web", "bbbbbbb2222").await;
    let (id1, id2) = (str_of(&b1, "id"), str_of(&b2, "id"));

    let r = app
        .post("/v1/tags", &json!({"value": "BAD_BUILD", "targetType": "BUILD", "targetId": id1, "comments": "x"}))
        .await;
    assert_eq!(r.location.as_deref().map(|l| l.starts_with("/v1/tags/")), Some(true));
    let tag = r.expect(StatusCode::CREATED);
    assert_eq!(
        (tag["targetId"].as_str(), tag["buildId"].as_str(), tag["operator"].as_str()),
        (Some("web"), Some(id1), Some("admin"))
    );
    let meta: serde_json::Value = serde_json::from_str(tag["metaInfo"].as_str().unwrap()).unwrap();
    assert_eq!(meta["id"], id1, "metaInfo holds the tagged build");
    let tag_id = str_of(&tag, "id");
    assert_eq!(app.get(&format!("/v1/tags/{tag_id}")).await.expect(StatusCode::OK), tag);
    // b2 came after b1 on the same branch: it is bad too.
    let effective = app.get(&format!("/v1/builds/{id2}/tag")).await.expect(StatusCode::OK);
    assert_eq!(effective["id"], tag["id"]);
    let listed = app.get("/v1/tags/targets/web").await.expect(StatusCode::OK);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(app.get("/v1/tags/targets/web/latest").await.expect(StatusCode::OK)["id"], tag["id"]);
    assert_eq!(app.get("/v1/tags/values/bad_build").await.expect(StatusCode::OK).as_array().map(Vec::len), Some(1));

    let good = app.post("/v1/tags", &json!({"value": "GOOD_BUILD", "targetType": "BUILD", "targetId": id2})).await;
    let good = good.expect(StatusCode::CREATED);
    assert_eq!(app.get(&format!("/v1/builds/{id2}/tag")).await.expect(StatusCode::OK)["id"], good["id"]);

    app.delete(&format!("/v1/tags/{tag_id}")).await.expect(StatusCode::NO_CONTENT);
    app.delete(&format!("/v1/tags/{tag_id}")).await.expect_error(StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("/v1/builds/{id1}/tag")).await.expect(StatusCode::OK), serde_json::Value::Null);

    let refusals = [
        (json!({"value": "ENABLE_ENV", "targetType": "BUILD", "targetId": id1}), StatusCode::BAD_REQUEST),
        (json!({"value": "BAD_BUILD", "targetType": "BUILD"}), StatusCode::BAD_REQUEST),
        (json!({"value": "NOT_A_TAG", "targetType": "BUILD", "targetId": id1}), StatusCode::BAD_REQUEST),
        (json!({"value": "BAD_BUILD", "targetType": "BUILD", "targetId": "nope_abcdef0"}), StatusCode::NOT_FOUND),
        (json!({"value": "DISABLE_ENV", "targetType": "ENVIRONMENT", "targetId": "nope"}), StatusCode::NOT_FOUND),
    ];
    for (body, status) in refusals {
        app.post("/v1/tags", &body).await.expect_error(status);
    }
    app.get("/v1/tags/values/SHINY").await.expect_error(StatusCode::BAD_REQUEST);
    app.get("/v1/tags/nope%00").await.expect_error(StatusCode::BAD_REQUEST);
    app.get("/v1/tags/unknown").await.expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_marks_the_build_it_leaves_bad_when_asked() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let b1 = app.publish_build("web", "aaaaaaa1111").await;
    let b2 = app.publish_build("web", "bbbbbbb2222").await;
    let d1 = app.deploy("web", "prod", str_of(&b1, "id")).await;
    app.deploy("web", "prod", str_of(&b2, "id")).await;
    let path = format!(
        "/v1/envs/web/prod/deploys/current/actions?actionType=ROLLBACK&toDeployId={}&markBad=true",
        str_of(&d1, "id")
    );
    let rb = app.admin(Method::POST, &path, Body::None).await.expect(StatusCode::CREATED);
    assert_eq!((rb["type"].as_str(), rb["buildId"].as_str()), (Some("ROLLBACK"), b1["id"].as_str()));
    let t = app.get(&format!("/v1/builds/{}/tag", str_of(&b2, "id"))).await.expect(StatusCode::OK);
    assert_eq!((t["value"].as_str(), t["buildId"].as_str()), (Some("BAD_BUILD"), b2["id"].as_str()));
    let bad = app
        .admin(Method::POST, "/v1/envs/web/prod/deploys/current/actions?actionType=RESTART&markBad=true", Body::None)
        .await;
    let (_, message) = bad.expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("markBad"), "{message}");
    app.admin(Method::POST, "/v1/envs/web/prod/deploys/current/actions?actionType=ROLLBACK&markBad=maybe", Body::None)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    app.stop().await;
}
