//! Builds through the REST API beyond publishing: deleting one no deploy uses, names and
//! branches, builds with their effective tags, and the search's filters.

mod common;

use common::{App, SOME_SHA256, spawn_app, str_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn publish_on(app: &App, name: &str, branch: &str, commit: &str) -> Value {
    let build = json!({"name": name, "artifactUrl": format!("https://a.example.com/{name}/{commit}.tgz"), "artifactSha256": SOME_SHA256,
                       "repo": format!("org/{name}"), "branch": branch, "commit": commit});
    app.post("/v1/builds", &build).await.expect(StatusCode::CREATED)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_is_deleted_only_while_no_deploy_uses_it() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let used = app.publish_build("web", "aaaaaaa1111").await;
    let unused = app.publish_build("web", "bbbbbbb2222").await;
    app.deploy("web", "prod", str_of(&used, "id")).await;

    let (code, message) =
        app.delete(&format!("/v1/builds/{}", str_of(&used, "id"))).await.expect_error(StatusCode::CONFLICT);
    assert_eq!(code, "conflict");
    assert!(message.contains("used by 1 deploy"), "{message}");
    app.get(&format!("/v1/builds/{}", str_of(&used, "id"))).await.expect(StatusCode::OK);

    let path = format!("/v1/builds/{}", str_of(&unused, "id"));
    let r = app.delete(&path).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    app.get(&path).await.expect_error(StatusCode::NOT_FOUND);
    app.delete(&path).await.expect_error(StatusCode::NOT_FOUND);
    app.delete("/v1/builds/a%20b").await.expect_error(StatusCode::BAD_REQUEST);
    let history = app.get("/v1/history?type=Build").await.expect(StatusCode::OK);
    let actions: Vec<&str> = history.as_array().unwrap().iter().map(|r| str_of(r, "action")).collect();
    assert_eq!(actions, ["delete", "publish", "publish"], "{history}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_names_and_branches_are_listed() {
    let app = spawn_app().await;
    publish_on(&app, "web", "main", "aaaaaaa1111").await;
    publish_on(&app, "web", "release", "bbbbbbb2222").await;
    publish_on(&app, "api", "main", "ccccccc3333").await;

    assert_eq!(app.get("/v1/builds/names").await.expect(StatusCode::OK), json!(["api", "web"]));
    assert_eq!(app.get("/v1/builds/names?filter=we").await.expect(StatusCode::OK), json!(["web"]));
    assert_eq!(app.get("/v1/builds/names?start=2&size=1").await.expect(StatusCode::OK), json!(["web"]));
    assert_eq!(app.get("/v1/builds/names/web/branches").await.expect(StatusCode::OK), json!(["main", "release"]));
    assert_eq!(app.get("/v1/builds/names/none/branches").await.expect(StatusCode::OK), json!([]));
    for path in [
        "/v1/builds/names?size=0",
        "/v1/builds/names?start=x",
        "/v1/builds/names?colour=red",
        "/v1/builds/names/a%20b/branches",
    ] {
        app.get(path).await.expect_error(StatusCode::BAD_REQUEST);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_come_with_their_effective_tags() {
    let app = spawn_app().await;
    let b1 = publish_on(&app, "web", "main", "aaaaaaa1111").await;
    let b2 = publish_on(&app, "web", "main", "bbbbbbb2222").await;
    let other = publish_on(&app, "web", "hotfix", "ccccccc3333").await;
    let bad = json!({"value": "BAD_BUILD", "targetType": "BUILD", "targetId": str_of(&b1, "id"), "comments": "broken"});
    let tag = app.post("/v1/tags", &bad).await.expect(StatusCode::CREATED);

    let one = app.get(&format!("/v1/builds/{}/tags", str_of(&b2, "id"))).await.expect(StatusCode::OK);
    assert_eq!(one["build"], b2);
    assert_eq!(one["tag"], tag, "the mark on an earlier build of its branch applies");
    let clean = app.get(&format!("/v1/builds/{}/tags", str_of(&other, "id"))).await.expect(StatusCode::OK);
    assert_eq!(clean, json!({"build": other, "tag": null}));

    let listed = app.get("/v1/builds/tags?name=web&branch=main").await.expect(StatusCode::OK);
    let mut pairs: Vec<(&str, Option<&str>)> =
        listed.as_array().unwrap().iter().map(|p| (str_of(&p["build"], "id"), p["tag"]["value"].as_str())).collect();
    pairs.sort();
    let mut want = [(str_of(&b1, "id"), Some("BAD_BUILD")), (str_of(&b2, "id"), Some("BAD_BUILD"))];
    want.sort();
    assert_eq!(pairs, want, "publish dates may tie: compared in any order");
    let by_commit = app.get("/v1/builds/tags?commit=ccccccc").await.expect(StatusCode::OK);
    assert_eq!(by_commit, json!([{"build": other, "tag": null}]));
    assert_eq!(app.get("/v1/builds?name=web&before=1").await.expect(StatusCode::OK), json!([]));
    assert_eq!(app.get("/v1/builds?name=web&after=1").await.expect(StatusCode::OK).as_array().map(Vec::len), Some(3));

    app.get("/v1/builds/nope_1234567/tags").await.expect_error(StatusCode::NOT_FOUND);
    for path in [
        "/v1/builds/tags",
        "/v1/builds/tags?name=web&flavour=x",
        "/v1/builds?name=web&before=-5",
        "/v1/builds?commit=a-b",
    ] {
        app.get(path).await.expect_error(StatusCode::BAD_REQUEST);
    }
    app.stop().await;
}
