//! Bad input on both listeners: every case answers the stable error shape `{"code", "message"}`
//! with a 4xx status, never a 500.

mod common;

use common::{App, Body, Host, spawn_app, str_of};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A stage `web/prod` and a build of `web`; returns the build id.
async fn stage_and_build(app: &App) -> String {
    app.create_stage("web", "prod").await;
    str_of(&app.publish_build("web", "abcdef12").await, "id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_empty_json_bodies_are_400() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let targets = [
        (Method::POST, "/v1/envs"),
        (Method::POST, "/v1/builds"),
        (Method::PUT, "/v1/envs/web/prod"),
        (Method::PUT, "/v1/envs/web/prod/capacity?capacityType=GROUP"),
        (Method::PUT, "/v1/envs/web/prod/script_configs"),
    ];
    for (method, path) in targets {
        for body in [r#"{"envName": "web","#, "not json", "", "  \n", "null"] {
            let reply = app.admin(method.clone(), path, Body::Raw(body)).await;
            let (code, _) = reply.expect_error(StatusCode::BAD_REQUEST);
            assert_eq!(code, "bad_request", "{method} {path} with {body:?}");
        }
    }
    // Nothing was changed by the refused requests.
    assert_eq!(app.get("/v1/envs").await.expect(StatusCode::OK).as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_of_the_wrong_types_is_400() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let cases = [
        (Method::POST, "/v1/envs", json!({"envName": "api", "stageName": "prod", "maxParallel": "x"})),
        (Method::POST, "/v1/envs", json!(["api", "prod"])),
        (Method::PUT, "/v1/envs/web/prod", json!({"maxParallel": "x"})),
        (Method::PUT, "/v1/envs/web/prod", json!({"successThreshold": 1.5})),
        (Method::PUT, "/v1/envs/web/prod", json!({"envState": "SLEEPING"})),
        (Method::POST, "/v1/builds", json!({"name": 5, "artifactUrl": "https://a/b.tgz"})),
        (Method::PUT, "/v1/envs/web/prod/capacity", json!({"group": "web-g"})),
        (Method::PUT, "/v1/envs/web/prod/capacity", json!([1, 2])),
        (Method::PUT, "/v1/envs/web/prod/agent_configs", json!({"max_retry": 5})),
    ];
    for (method, path, body) in cases {
        let reply = app.admin(method.clone(), path, Body::Json(&body)).await;
        reply.expect_error(StatusCode::BAD_REQUEST);
    }
    let stage = app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);
    assert_eq!(stage["maxParallel"], 1, "a refused update changes nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_break_the_rules_are_400() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let ftp_build = json!({"name": "web", "artifactUrl": "ftp://a/b.tgz", "repo": "r", "branch": "b", "commit": "abc"});
    let cases = [
        (Method::POST, "/v1/envs", json!({"envName": "bad name", "stageName": "prod"})),
        (Method::POST, "/v1/envs", json!({"stageName": "prod"})),
        (Method::PUT, "/v1/envs/web/prod", json!({"maxParallel": -1})),
        (Method::PUT, "/v1/envs/web/prod", json!({"successThreshold": 10001})),
        (Method::PUT, "/v1/envs/web/prod", json!({"envName": "other"})),
        (Method::POST, "/v1/builds", ftp_build),
        (Method::PUT, "/v1/envs/web/prod/capacity?capacityType=GROUP", json!(["bad group"])),
        (Method::PUT, "/v1/envs/web/prod/script_configs", json!({"A=B": "x"})),
    ];
    for (method, path, body) in cases {
        let reply = app.admin(method.clone(), path, Body::Json(&body)).await;
        let (code, _) = reply.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(code, "bad_request", "{method} {path} {body}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_in_the_path_are_400() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    for path in [
        "/v1/envs/bad%20name/prod",
        "/v1/envs/web/bad%2Fstage",
        "/v1/envs/web/prod%21/capacity",
        "/v1/envs/bad%20name/prod/deploys/current",
        "/v1/envs/web/prod/agents/errors/bad%20host",
        "/v1/builds/bad%20id",
        "/v1/deploys/bad%20id",
        "/v1/commands/bad%20id",
        "/v1/envs?envName=bad%20name",
    ] {
        let (code, _) = app.get(path).await.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(code, "bad_request", "{path}");
    }
    let reply = app.put("/v1/envs/bad%20name/prod", &json!({"description": "x"})).await;
    reply.expect_error(StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stage_is_404_with_teletraans_message() {
    let app = spawn_app().await;
    let build = stage_and_build(&app).await;
    let deploy = format!("/v1/envs/nope/prod/deploys?buildId={build}");
    let cases = [
        (Method::GET, "/v1/envs/nope/prod"),
        (Method::DELETE, "/v1/envs/nope/prod"),
        (Method::GET, "/v1/envs/nope/prod/capacity"),
        (Method::GET, "/v1/envs/nope/prod/script_configs"),
        (Method::GET, "/v1/envs/nope/prod/agent_configs"),
        (Method::GET, "/v1/envs/nope/prod/deploys/current"),
        (Method::GET, "/v1/envs/nope/prod/agents"),
        (Method::GET, "/v1/envs/nope/prod/agents/errors/web-1"),
        (Method::POST, deploy.as_str()),
    ];
    for (method, path) in cases {
        let reply = app.admin(method.clone(), path, Body::None).await;
        let (code, message) = reply.expect_error(StatusCode::NOT_FOUND);
        assert_eq!((code.as_str(), message.as_str()), ("not_found", "Environment nope/prod does not exist."), "{path}");
    }
    for (path, body) in [
        ("/v1/envs/nope/prod", json!({"description": "x"})),
        ("/v1/envs/nope/prod/capacity", json!(["web-g"])),
        ("/v1/envs/web/nope/script_configs", json!({"A": "b"})),
    ] {
        let (_, message) = app.put(path, &body).await.expect_error(StatusCode::NOT_FOUND);
        assert!(message.starts_with("Environment ") && message.ends_with(" does not exist."), "{message}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_requests_with_a_bad_build_are_refused() {
    let app = spawn_app().await;
    stage_and_build(&app).await;
    let other = app.publish_build("api", "abcdef34").await;

    let deploy = |query: String| {
        let app = &app;
        async move { app.admin(Method::POST, &format!("/v1/envs/web/prod/deploys{query}"), Body::None).await }
    };
    let (_, message) =
        deploy("?buildId=AAAAAAAAAAAAAAAAAAAAAA_abcdef1".into()).await.expect_error(StatusCode::NOT_FOUND);
    assert_eq!(message, "Build AAAAAAAAAAAAAAAAAAAAAA_abcdef1 does not exist.");
    for query in ["", "?buildId=", "?buildId=%20", "?description=x"] {
        let (_, message) = deploy(query.into()).await.expect_error(StatusCode::BAD_REQUEST);
        assert!(message.contains("buildId"), "{query}: {message}");
    }
    deploy("?buildId=bad%20id".into()).await.expect_error(StatusCode::BAD_REQUEST);
    let (_, message) = deploy(format!("?buildId={}", str_of(&other, "id"))).await.expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("\"api\"") && message.contains("\"web\""), "{message}");

    // None of them started a deploy.
    app.get("/v1/envs/web/prod/deploys/current").await.expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_capacity_type_is_400() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let (_, message) =
        app.get("/v1/envs/web/prod/capacity?capacityType=RACK").await.expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("RACK"), "{message}");
    let reply = app.put("/v1/envs/web/prod/capacity?capacityType=RACK", &json!(["web-g"])).await;
    reply.expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/v1/envs/web/prod/capacity").await.expect(StatusCode::OK), json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_api_needs_a_known_user_token() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let url = format!("{}/v1/envs/web/prod", app.api);

    let (code, _) = app.call(Method::GET, &url, None, Body::None).await.expect_error(StatusCode::UNAUTHORIZED);
    assert_eq!(code, "unauthorized");
    app.call(Method::GET, &url, Some("not-a-token"), Body::None).await.expect_error(StatusCode::UNAUTHORIZED);
    let basic = app.http.get(&url).header("Authorization", "Basic YWRtaW46YWRtaW4=").send().await.unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    // `Bearer` works like `token`.
    let bearer = app.http.get(&url).bearer_auth(&app.admin_token).send().await.unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);

    // The agent token may only ping.
    let paths = [
        (Method::GET, "/v1/envs"),
        (Method::GET, "/v1/envs/web/prod"),
        (Method::POST, "/v1/envs"),
        (Method::POST, "/v1/builds"),
        (Method::PUT, "/v1/envs/web/prod/capacity"),
        (Method::POST, "/v1/envs/web/prod/deploys?buildId=x"),
        (Method::GET, "/v1/envs/web/prod/agents"),
    ];
    for (method, path) in paths {
        let url = format!("{}{path}", app.api);
        let reply = app.call(method.clone(), &url, Some(&app.agent_token), Body::Json(&json!({}))).await;
        let (code, _) = reply.expect_error(StatusCode::FORBIDDEN);
        assert_eq!(code, "forbidden", "{method} {path}");
    }
    // Refused requests changed nothing.
    assert_eq!(app.get("/v1/envs/web/prod/capacity").await.expect(StatusCode::OK), json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_accepts_agent_tokens_only_and_refuses_bad_pings() {
    let app = spawn_app().await;
    let ping_url = format!("{}/v1/system/ping", app.gateway);
    let host = Host::new("web-1", "web-g");
    let body = host.ping_body(&[]);

    assert_eq!(app.ping(&body).await.expect(StatusCode::OK), json!({"opCode": "NOOP", "deployGoal": null}));
    let admin = app.call(Method::POST, &ping_url, Some(&app.admin_token), Body::Json(&body)).await;
    let (code, _) = admin.expect_error(StatusCode::FORBIDDEN);
    assert_eq!(code, "forbidden");

    let (code, _) =
        app.call(Method::POST, &ping_url, None, Body::Json(&body)).await.expect_error(StatusCode::UNAUTHORIZED);
    assert_eq!(code, "unauthorized");
    app.call(Method::POST, &ping_url, Some("not-a-token"), Body::Json(&body))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);

    let mut no_host = body.clone();
    no_host.as_object_mut().unwrap().remove("hostId");
    let (_, message) = app.ping(&no_host).await.expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("hostId"), "{message}");
    let mut blank_host = body.clone();
    blank_host["hostId"] = json!("  ");
    app.ping(&blank_host).await.expect_error(StatusCode::BAD_REQUEST);

    for raw in [r#"{"hostId": "i-1","#, "", "[1, 2]"] {
        let reply = app.call(Method::POST, &ping_url, Some(&app.agent_token), Body::Raw(raw)).await;
        let (code, _) = reply.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(code, "bad_request", "{raw:?}");
    }
    let mut bad_groups = body.clone();
    bad_groups["groups"] = json!("web-g");
    app.ping(&bad_groups).await.expect_error(StatusCode::BAD_REQUEST);
    let mut bad_env = body.clone();
    bad_env["reports"] = json!([common::report("d1", "bad env id", "PRE_DOWNLOAD", "SUCCEEDED")]);
    app.ping(&bad_env).await.expect_error(StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_json_on_both_listeners() {
    let app = spawn_app().await;
    for base in [&app.api, &app.gateway] {
        // (`/` of the API listener is the deploy board.)
        for path in ["/v2/envs", "/v1/envs/web/prod/nothing", "/nothing/here"] {
            let reply = app.call(Method::GET, &format!("{base}{path}"), Some(&app.admin_token), Body::None).await;
            let (code, _) = reply.expect_error(StatusCode::NOT_FOUND);
            assert_eq!(code, "not_found", "{base}{path}");
        }
    }
    let reply = app.call(Method::GET, &format!("{}/", app.gateway), Some(&app.admin_token), Body::None).await;
    reply.expect_error(StatusCode::NOT_FOUND);
    // Without a token as well: an unknown path reveals nothing either way.
    let reply = app.call(Method::GET, &format!("{}/v2/envs", app.api), None, Body::None).await;
    reply.expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_a_nul_character_is_400_not_500() {
    let app = spawn_app().await;
    let build = stage_and_build(&app).await;
    let nul = "a\u{0}b";
    let env = json!({"envName": "api", "stageName": "p", "emailRecipients": nul});
    let build_info = json!({"name": "web", "artifactUrl": "https://a", "repo": "r", "branch": "b", "commit": "abc1234",
        "artifactSha256": common::SOME_SHA256, "commitInfo": nul});
    let cases = [
        (Method::PUT, "/v1/envs/web/prod".to_string(), Some(json!({"description": nul}))),
        (Method::POST, "/v1/envs".to_string(), Some(env)),
        (Method::POST, "/v1/builds".to_string(), Some(build_info)),
        (Method::POST, format!("/v1/envs/web/prod/deploys?buildId={build}&description=a%00b"), None),
    ];
    for (method, path, body) in &cases {
        let reply = app.admin(method.clone(), path, body.as_ref().map_or(Body::None, Body::Json)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}: {}", reply.text);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_index_too_large_for_any_offset_is_400() {
    let app = spawn_app().await;
    app.publish_build("web", "abcdef12").await;
    for query in ["name=web", "commit=abcdef12"] {
        let path = format!("/v1/builds?{query}&pageIndex=9223372036854775807&pageSize=1000");
        let url = format!("{}{path}", app.api);
        let sent = app.http.get(&url).header("Authorization", format!("token {}", app.admin_token)).send().await;
        let status = sent.as_ref().map(|r| r.status().as_u16()).map_err(|e| e.to_string());
        assert_eq!(status, Ok(400), "{path}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_not_allowed_answers_405_with_the_error_shape() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let cases = [
        (Method::PATCH, format!("{}/v1/envs/web/prod", app.api)),
        (Method::DELETE, format!("{}/v1/builds", app.api)),
        (Method::GET, format!("{}/v1/system/ping", app.gateway)),
    ];
    for (method, url) in cases {
        let reply = app.call(method, &url, Some(&app.admin_token), Body::None).await;
        reply.expect_error(StatusCode::METHOD_NOT_ALLOWED);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_answers_413_with_the_error_shape() {
    let app = spawn_app().await;
    let huge = format!("{{\"hostId\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let cases = [
        (format!("{}/v1/envs", app.api), &app.admin_token),
        (format!("{}/v1/system/ping", app.gateway), &app.agent_token),
    ];
    for (url, token) in cases {
        let reply = app.call(Method::POST, &url, Some(token), Body::Raw(&huge)).await;
        reply.expect_error(StatusCode::PAYLOAD_TOO_LARGE);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_milliseconds_past_what_postgres_stores_are_400() {
    // Such a value overflowed the database client's conversion: the handler panicked (found by
    // api/tests/fuzz.rs with `expiresAt`).
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.post("/v1/principals", &json!({"name": "alice"})).await.expect(StatusCode::CREATED);
    let build = json!({"name": "web", "artifactUrl": "https://a", "repo": "r", "branch": "b", "commit": "abc1234",
        "artifactSha256": common::SOME_SHA256, "commitDate": i64::MAX});
    let cases = [
        (Method::POST, "/v1/tokens".to_string(), Some(json!({"principal": "alice", "expiresAt": i64::MAX}))),
        (Method::POST, "/v1/builds".to_string(), Some(build)),
        (Method::GET, format!("/v1/deploys?commitDate={}", i64::MAX), None),
        (Method::GET, format!("/v1/builds?name=web&after={}", i64::MIN), None),
    ];
    for (method, path, body) in &cases {
        let reply = app.admin(method.clone(), path, body.as_ref().map_or(Body::None, Body::Json)).await;
        reply.expect_error(StatusCode::BAD_REQUEST);
    }
    app.stop().await;
}
