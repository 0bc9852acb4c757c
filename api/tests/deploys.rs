//! Deploys through the REST API: today's count, the search by commit and commit date, and a
//! test system's verdict that arrives before the deploy succeeded.

mod common;

use common::{App, Host, SOME_SHA256, eventually, spawn_app, str_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn publish_at(app: &App, commit: &str, commit_date: i64) -> Value {
    let build = json!({"name": "web", "artifactUrl": format!("https://a.example.com/web/{commit}.tgz"), "artifactSha256": SOME_SHA256, "repo": "org/web",
                       "branch": "main", "commit": commit, "commitDate": commit_date});
    app.post("/v1/builds", &build).await.expect(StatusCode::CREATED)
}

fn ids(page: &Value) -> Vec<&str> {
    page["deploys"].as_array().unwrap_or_else(|| panic!("a page: {page}")).iter().map(|d| str_of(d, "id")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_are_counted_by_day_and_found_by_commit_and_commit_date() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let day = |t: i64| schema::time::start_of_day_utc(t);
    let before = schema::time::now_ms();
    let b1 = publish_at(&app, "aaaaaaa1111", 1_700_000_000_000).await;
    let b2 = publish_at(&app, "bbbbbbb2222", 1_700_000_100_000).await;
    let d1 = app.deploy("web", "prod", str_of(&b1, "id")).await;
    let d2 = app.deploy("web", "prod", str_of(&b2, "id")).await;
    let count = app.get("/v1/deploys/dailycount").await.expect(StatusCode::OK);
    if day(before) == day(schema::time::now_ms()) {
        assert_eq!(count, json!(2));
    }

    // Deploys containing a commit: of its build or a later one, newest first.
    let (id1, id2) = (str_of(&d1, "id"), str_of(&d2, "id"));
    assert_eq!(ids(&app.get("/v1/deploys?commit=aaaaaaa1111").await.expect(StatusCode::OK)), [id2, id1]);
    assert_eq!(ids(&app.get("/v1/deploys?commit=bbbbbbb").await.expect(StatusCode::OK)), [id2]);
    assert_eq!(ids(&app.get("/v1/deploys?commitDate=1700000050000").await.expect(StatusCode::OK)), [id2]);
    let explicit = app.get("/v1/deploys?commit=bbbbbbb2222&commitDate=1700000000000&oldestFirst=true").await;
    assert_eq!(ids(&explicit.expect(StatusCode::OK)), [id1, id2], "a commitDate given wins over the commit's own");
    assert_eq!(ids(&app.get("/v1/deploys?repo=org/web&branch=main").await.expect(StatusCode::OK)).len(), 2);
    assert_eq!(ids(&app.get("/v1/deploys?branch=other").await.expect(StatusCode::OK)).len(), 0, "never ignored");
    assert_eq!(ids(&app.get("/v1/deploys?commit=ccccccc").await.expect(StatusCode::OK)).len(), 0);
    for path in [
        "/v1/deploys?commitDate=yesterday",
        "/v1/deploys?commit=a-b",
        "/v1/deploys?commit=",
        "/v1/deploys?oldestFirst=maybe",
    ] {
        app.get(path).await.expect_error(StatusCode::BAD_REQUEST);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_that_comes_before_success_is_recorded_and_applied_when_it_counts() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.put("/v1/envs/web/prod", &json!({"acceptanceType": "MANUAL"})).await.expect(StatusCode::NO_CONTENT);
    app.set_capacity("web", "prod", "GROUP", &["g"]).await;
    let build = app.publish_build("web", "aaaaaaa1111").await;
    let deploy = app.deploy("web", "prod", str_of(&build, "id")).await;
    let id = str_of(&deploy, "id");

    // The test system is faster than the rollout: its verdict is kept, not refused.
    let r = app.put(&format!("/v1/deploys/{id}"), &json!({"acceptanceStatus": "ACCEPTED"})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let waiting = app.deploy_by_id(id).await;
    assert_eq!(
        (&waiting["acceptanceStatus"], &waiting["pendingVerdict"]),
        (&json!("PENDING_DEPLOY"), &json!("ACCEPTED"))
    );

    app.serve_deploy(&Host::new("h1", "g"), id).await;
    let accepted = eventually("the verdict to be applied", || async {
        let d = app.deploy_by_id(id).await;
        if d["acceptanceStatus"] == "ACCEPTED" { Ok(d) } else { Err(d.to_string()) }
    })
    .await;
    assert!(accepted.get("pendingVerdict").is_none(), "nothing waits any more: {accepted}");
    // Once decided, another verdict is a conflict.
    app.put(&format!("/v1/deploys/{id}"), &json!({"acceptanceStatus": "REJECTED"}))
        .await
        .expect_error(StatusCode::CONFLICT);
    app.put(&format!("/v1/deploys/{id}"), &json!({"acceptanceStatus": "OUTSTANDING"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_command_with_its_idempotency_key_is_applied_once() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let b1 = publish_at(&app, "aaaaaaa1111", 1_700_000_000_000).await;
    let b2 = publish_at(&app, "bbbbbbb2222", 1_700_000_100_000).await;
    let send = |build: &Value, key: &str| {
        let url = format!("{}/v1/envs/web/prod/deploys?buildId={}", app.api, str_of(build, "id"));
        let req = app.http.post(url).header("Authorization", format!("token {}", app.admin_token));
        let req = req.header("Idempotency-Key", key);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, first) = send(&b1, "release-42").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = send(&b1, "release-42").await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again, first, "the retry answers the first deploy");
    let all = app.get("/v1/deploys").await.expect(StatusCode::OK);
    assert_eq!(ids(&all), [str_of(&first, "id")], "one deploy, not two");

    // The same key for another request is refused and sends nothing.
    let (status, refused) = send(&b2, "release-42").await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")), "{refused}");
    // A new key is a new command; a key that is not one is refused.
    let (status, second) = send(&b2, "release-43").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_ne!(second["id"], first["id"]);
    let (status, bad) = send(&b2, "").await;
    assert_eq!((status, bad["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{bad}");
    let all = app.get("/v1/deploys").await.expect(StatusCode::OK);
    assert_eq!(ids(&all).len(), 2);
    app.stop().await;
}
