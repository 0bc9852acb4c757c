//! The artifact policy at `POST /v1/builds`: the production default requires `artifactSha256`
//! and refuses `file://`; an allow-list refuses URLs off it, compared as parsed locations; the
//! sidecar setting lets the digest be omitted. Refusals are 400s naming the field.

mod common;

use common::{SOME_SHA256, spawn_app, spawn_app_with_artifacts};
use reqwest::StatusCode;
use schema::artifact::{AllowedLocation, ArtifactPolicy, ChecksumPolicy};
use serde_json::{Value, json};

fn build(url: &str, sha256: Option<&str>) -> Value {
    let mut b =
        json!({"name": "web", "artifactUrl": url, "repo": "org/web", "branch": "main", "commit": "abcdef12345"});
    if let Some(s) = sha256 {
        b["artifactSha256"] = json!(s);
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_requires_the_sha256_and_refuses_file_urls() {
    let app = spawn_app().await;
    let url = "https://artifacts.example.com/web/1.tar.gz";

    let (code, message) = app.post("/v1/builds", &build(url, None)).await.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(code, "bad_request");
    assert!(message.starts_with("artifactSha256: is required"), "{message}");
    let (_, message) = app.post("/v1/builds", &build(url, Some("abc"))).await.expect_error(StatusCode::BAD_REQUEST);
    assert!(message.starts_with("artifactSha256:"), "{message}");

    let (_, message) = app
        .post("/v1/builds", &build("file:///srv/web.tgz", Some(SOME_SHA256)))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(message.starts_with("artifactUrl:") && message.contains("file://"), "{message}");
    let (_, message) = app
        .post("/v1/builds", &build("https://ci@artifacts.example.com/web/1.tgz", Some(SOME_SHA256)))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(message.starts_with("artifactUrl:"), "{message}");
    assert_eq!(app.get("/v1/builds?name=web").await.expect(StatusCode::OK), json!([]), "nothing was stored");

    let published = app.post("/v1/builds", &build(url, Some(SOME_SHA256))).await.expect(StatusCode::CREATED);
    assert_eq!(published["artifactSha256"], SOME_SHA256);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_refuses_urls_off_it_and_the_sidecar_setting_lets_the_sha256_be_omitted() {
    let policy = ArtifactPolicy {
        allowed: AllowedLocation::parse_list("https://artifacts.example.com/web/").unwrap(),
        allow_file: false,
        checksum: ChecksumPolicy::Sidecar,
    };
    let app = spawn_app_with_artifacts(policy).await;
    for url in [
        "https://artifacts.example.com/webby/1.tgz",
        "https://artifacts.example.com.evil.org/web/1.tgz",
        "https://artifacts.example.com@evil.org/web/1.tgz",
        "https://artifacts.example.com:8443/web/1.tgz",
        "http://artifacts.example.com/web/1.tgz",
    ] {
        let reply = app.post("/v1/builds", &build(url, Some(SOME_SHA256))).await;
        let (_, message) = reply.expect_error(StatusCode::BAD_REQUEST);
        assert!(message.starts_with("artifactUrl:"), "{url}: {message}");
    }
    let (_, message) = app
        .post("/v1/builds", &build("https://elsewhere.example.org/1.tgz", Some(SOME_SHA256)))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("https://artifacts.example.com/web/"), "the allowed locations are named: {message}");

    // Under the list, with or without a digest (the agent then needs the sidecar).
    let with = app
        .post("/v1/builds", &build("https://ARTIFACTS.example.com/web/1.tgz", Some(SOME_SHA256)))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(with["artifactSha256"], SOME_SHA256);
    let without = app
        .post("/v1/builds", &build("https://artifacts.example.com/web/2.tgz", None))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(without["artifactSha256"], Value::Null);
    app.stop().await;
}
