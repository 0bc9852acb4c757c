//! Who may do what, through the REST API: the role matrix (every route of the route table,
//! every kind of principal: allowed, or 403), tokens (made, listed without their secret,
//! revoked), script tokens of an environment, and trusted-header mode for an SSO proxy.

mod common;

use std::collections::BTreeMap;

use api::auth::{Cidr, From, Need, TrustedHeaders};
use api::rest::route_specs;
use common::{App, Body, spawn_app, spawn_app_trusting, str_of};
use reqwest::{Method, StatusCode};
use schema::rules::access::{self, Grant, GrantScope, Target};
use schema::{AccessRole, EnvName};
use serde_json::{Value, json};

/// A principal of the matrix: its name, its grants (made through the API), its token.
struct Who {
    name: &'static str,
    grants: Vec<Grant>,
    token: String,
}

fn env(s: &str) -> EnvName {
    EnvName::parse(s).unwrap()
}

/// Makes `name` with `grants` and a token for it, through the API as the admin.
async fn principal(app: &App, name: &'static str, grants: &[(Option<&str>, AccessRole)]) -> Who {
    app.post("/v1/principals", &json!({"name": name})).await.expect(StatusCode::CREATED);
    for (scope, role) in grants {
        let path = match scope {
            None => "/v1/system/user_roles".to_string(),
            Some(e) => format!("/v1/envs/{e}/user_roles"),
        };
        app.post(&path, &json!({"name": name, "role": role.as_str()})).await.expect(StatusCode::CREATED);
    }
    let made = app.post("/v1/tokens", &json!({"principal": name, "description": "matrix"})).await;
    let token = made.expect(StatusCode::CREATED)["token"].as_str().unwrap().to_string();
    let grants = grants
        .iter()
        .map(|(scope, role)| Grant {
            scope: scope.map_or(GrantScope::System, |e| GrantScope::Env(env(e))),
            role: *role,
        })
        .collect();
    Who { name, grants, token }
}

/// What a route is called with in the matrix: values for the path, a body, and (for routes
/// whose handler checks the target) that target. Bodies and paths are chosen so that an
/// allowed call changes nothing that matters: a stage that does not exist, a body that does
/// not parse, a name nobody holds.
struct Sample {
    params: BTreeMap<&'static str, String>,
    body: Option<String>,
    target: Option<Target<'static>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_principal_without_its_role() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.create_stage("other", "prod").await;
    let build = app.publish_build("web", "aaaaaaa1111").await;
    let deploy = app.deploy("web", "prod", str_of(&build, "id")).await;
    let tag = app
        .post("/v1/tags", &json!({"value": "GOOD_BUILD", "targetType": "BUILD", "targetId": str_of(&build, "id")}))
        .await
        .expect(StatusCode::CREATED);

    let admin_token = app.admin_token.clone();
    let mut people = vec![Who {
        name: "admin",
        grants: vec![Grant { scope: GrantScope::System, role: AccessRole::Admin }],
        token: admin_token,
    }];
    people.push(principal(&app, "reader", &[(None, AccessRole::Reader)]).await);
    people.push(principal(&app, "publisher", &[(None, AccessRole::Publisher)]).await);
    people.push(principal(&app, "operator-web", &[(Some("web"), AccessRole::Operator)]).await);
    people.push(principal(&app, "operator-other", &[(Some("other"), AccessRole::Operator)]).await);
    people.push(principal(&app, "admin-web", &[(Some("web"), AccessRole::Admin), (None, AccessRole::Reader)]).await);
    people.push(principal(&app, "nobody", &[]).await);

    let web: &'static EnvName = Box::leak(Box::new(env("web")));
    let sample = |method: &str, path: &str| -> Sample {
        let mut params: BTreeMap<&'static str, String> = [
            ("env", "web".to_string()),
            ("stage", "nope".to_string()),
            ("host", "h1".to_string()),
            ("deploy", str_of(&deploy, "id").to_string()),
            ("name", "ghost".to_string()),
            ("target", "web".to_string()),
            ("value", "BAD_BUILD".to_string()),
            ("id", "none".to_string()),
            ("group", "web".to_string()),
        ]
        .into_iter()
        .collect();
        if path.starts_with("/v1/deploys/") {
            params.insert("id", str_of(&deploy, "id").to_string());
        }
        if path.starts_with("/v1/builds/") {
            params.insert("id", str_of(&build, "id").to_string());
        }
        if path.starts_with("/v1/tags/{id}") {
            params.insert("id", str_of(&tag, "id").to_string());
        }
        if path.starts_with("/v1/tokens/") {
            params.insert("id", "tok_none".to_string());
        }
        let body = match (method, path) {
            // Routes whose handler checks the target: a body that reaches the check.
            ("POST", "/v1/envs") => Some(json!({"envName": "web", "stageName": "prod"}).to_string()),
            ("POST", "/v1/builds") => Some(
                json!({"name": "web", "artifactUrl": "https://a.example.com/w.tgz", "repo": "o/w", "branch": "main",
                       "commit": "bbbbbbb2222", "artifactSha256": common::SOME_SHA256})
                .to_string(),
            ),
            ("POST", "/v1/tags") => Some(
                json!({"value": "GOOD_BUILD", "targetType": "BUILD", "targetId": str_of(&build, "id")}).to_string(),
            ),
            ("DELETE", "/v1/tags/{id}") => None,
            // Everything else: a body that does not parse, so an allowed call changes nothing.
            ("POST" | "PUT", _) => Some("not json".to_string()),
            _ => None,
        };
        let target = match (method, path) {
            ("POST", "/v1/envs")
            | ("POST", "/v1/builds")
            | ("DELETE", "/v1/builds/{id}")
            | ("POST", "/v1/tags")
            | ("DELETE", "/v1/tags/{id}") => Some(Target::Env(web)),
            _ => None,
        };
        Sample { params, body, target }
    };

    let routes = route_specs();
    let mut checked = 0;
    for route in &routes {
        let s = sample(route.method, route.path);
        let mut path = route.path.to_string();
        for (k, v) in &s.params {
            path = path.replace(&format!("{{{k}}}"), v);
        }
        assert!(!path.contains('{'), "{} {}: no sample value for a path parameter", route.method, route.path);
        if route.path == "/v1/events" {
            // An allowed caller would get a stream that never ends: a stage without its
            // environment is refused (400) after the role check instead.
            path.push_str("?stage=nope");
        }
        let allowed = |who: &Who| -> bool {
            match route.need {
                Need::Authenticated => true,
                // No REST route is a fleet route (the gateway serves those).
                Need::Fleet(_) => false,
                Need::Read => access::may_read(&who.grants),
                Need::Role(role, From::System) => access::allows(&who.grants, role, Target::System),
                Need::Role(role, From::EnvPath | From::DeployPath) => {
                    access::allows(&who.grants, role, Target::Env(web))
                }
                Need::InHandler(role, _) => {
                    let target = s.target.unwrap_or_else(|| {
                        panic!("{} {}: a route checked in its handler needs a sample target", route.method, route.path)
                    });
                    access::allows(&who.grants, role, target)
                }
            }
        };
        // Refusals first: an allowed call may change what a later one finds (a deleted tag).
        let mut order: Vec<&Who> = people.iter().collect();
        order.sort_by_key(|w| allowed(w));
        for who in order {
            let method: Method = route.method.parse().unwrap();
            let url = format!("{}{path}", app.api);
            let body = match &s.body {
                Some(b) => Body::Raw(b),
                None => Body::None,
            };
            let reply = app.call(method, &url, Some(&who.token), body).await;
            if allowed(who) {
                assert!(
                    reply.status != StatusCode::FORBIDDEN && reply.status != StatusCode::UNAUTHORIZED,
                    "{} {path} as {} should be allowed: {} {}",
                    route.method,
                    who.name,
                    reply.status,
                    reply.text
                );
                assert!(
                    reply.status.as_u16() < 500,
                    "{} {path} as {}: {} {}",
                    route.method,
                    who.name,
                    reply.status,
                    reply.text
                );
            } else {
                let (code, _) = reply.expect_error(StatusCode::FORBIDDEN);
                assert_eq!(code, "forbidden", "{} {path} as {}", route.method, who.name);
            }
        }
        checked += 1;
    }
    assert_eq!(checked, routes.len());
    assert!(routes.len() >= 80, "the whole route table: {}", routes.len());
    // No credentials at all: 401 everywhere, even for the caller's own identity.
    let reply = app.call(Method::GET, &format!("{}/v1/me", app.api), None, Body::None).await;
    reply.expect_error(StatusCode::UNAUTHORIZED);
    let reply = app.call(Method::GET, &format!("{}/v1/envs", app.api), Some(&app.agent_token), Body::None).await;
    reply.expect_error(StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_shown_once_listed_without_secrets_and_revoked() {
    let app = spawn_app().await;
    app.post("/v1/principals", &json!({"name": "alice"})).await.expect(StatusCode::CREATED);
    app.post("/v1/system/user_roles", &json!({"name": "alice", "role": "READER"})).await.expect(StatusCode::CREATED);
    let made = app.post("/v1/tokens", &json!({"principal": "alice", "description": "laptop"})).await;
    assert!(made.location.as_deref().is_some_and(|l| l.starts_with("/v1/tokens/tok_")));
    let made = made.expect(StatusCode::CREATED);
    let secret = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    let me = app.call(Method::GET, &format!("{}/v1/me", app.api), Some(&secret), Body::None).await;
    let me = me.expect(StatusCode::OK);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["roles"], json!([{"resource": "*", "type": "SYSTEM", "role": "READER"}]));

    let listed = app.get("/v1/tokens?principal=alice").await.expect(StatusCode::OK);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(!listed.to_string().contains(&secret), "a list never shows a secret");
    // Alice sees her own tokens only, and may revoke them.
    let own = app.call(Method::GET, &format!("{}/v1/tokens", app.api), Some(&secret), Body::None).await;
    assert_eq!(own.expect(StatusCode::OK).as_array().map(Vec::len), Some(1));
    let others =
        app.call(Method::GET, &format!("{}/v1/tokens?principal=admin", app.api), Some(&secret), Body::None).await;
    others.expect_error(StatusCode::FORBIDDEN);
    let admin_token = app.call(Method::GET, &format!("{}/v1/tokens/admin", app.api), Some(&secret), Body::None).await;
    admin_token.expect_error(StatusCode::NOT_FOUND);
    let revoked = app.call(Method::DELETE, &format!("{}/v1/tokens/{id}", app.api), Some(&secret), Body::None).await;
    assert!(revoked.expect(StatusCode::OK)["revokedAt"].is_number());
    let after = app.call(Method::GET, &format!("{}/v1/me", app.api), Some(&secret), Body::None).await;
    after.expect_error(StatusCode::UNAUTHORIZED);

    // The configuration's token cannot be revoked through the API (start-up would restore it):
    // 409, and it keeps working.
    let (_, message) = app.delete("/v1/tokens/admin").await.expect_error(StatusCode::CONFLICT);
    assert!(message.contains("configuration"), "{message}");
    app.get("/v1/me").await.expect(StatusCode::OK);

    // Bad input is a 400 naming what is wrong; an unknown principal a 404.
    let bad = app.post("/v1/tokens", &json!({"principal": "bob smith"})).await;
    assert!(bad.expect_error(StatusCode::BAD_REQUEST).1.contains("principal"));
    app.post("/v1/tokens", &json!({"principal": "bob"})).await.expect_error(StatusCode::NOT_FOUND);
    let past = app.post("/v1/tokens", &json!({"principal": "alice", "expiresAt": 1})).await;
    assert!(past.expect_error(StatusCode::BAD_REQUEST).1.contains("expiresAt"));
    let role = app.post("/v1/system/user_roles", &json!({"name": "alice", "role": "GOD"})).await;
    assert!(role.expect_error(StatusCode::BAD_REQUEST).1.contains("role"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_token_publishes_for_its_environment_and_nothing_more() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.create_stage("api", "prod").await;
    let made = app.post("/v1/envs/web/token_roles", &json!({"name": "ci", "role": "PUBLISHER"})).await;
    let made = made.expect(StatusCode::CREATED);
    let token = made["token"].as_str().unwrap().to_string();
    assert_eq!((made["principal"].as_str(), made["role"].as_str()), (Some("ci@web"), Some("PUBLISHER")));
    let days = (made["expireDate"].as_i64().unwrap() - schema::time::now_ms()) / 86_400_000;
    assert!((179..=180).contains(&days), "180 days by default: {days}");
    let listed = app.get("/v1/envs/web/token_roles").await.expect(StatusCode::OK);
    assert_eq!(listed[0]["name"], "ci");
    assert!(listed[0].get("token").is_none(), "the token is shown once");

    let as_ci = |method: Method, path: &str, body: Value| {
        let (app, token) = (&app, &token);
        let url = format!("{}{path}", app.api);
        async move { app.call(method, &url, Some(token), Body::Json(&body)).await }
    };
    let build = |name: &str| {
        json!({"name": name, "artifactUrl": "https://a.example.com/x.tgz", "repo": "o/x", "branch": "main", "commit": "abcdef123",
        "artifactSha256": common::SOME_SHA256})
    };
    let published = as_ci(Method::POST, "/v1/builds", build("web")).await.expect(StatusCode::CREATED);
    assert_eq!(published["publisher"], "ci@web", "what it does is recorded as the script");
    as_ci(Method::POST, "/v1/builds", build("api")).await.expect_error(StatusCode::FORBIDDEN);
    let deploy = format!("/v1/envs/web/prod/deploys?buildId={}", published["id"].as_str().unwrap());
    as_ci(Method::POST, &deploy, json!(null)).await.expect_error(StatusCode::FORBIDDEN);
    as_ci(Method::DELETE, "/v1/envs/web/prod", json!(null)).await.expect_error(StatusCode::FORBIDDEN);

    app.delete("/v1/envs/web/token_roles/ci").await.expect(StatusCode::NO_CONTENT);
    as_ci(Method::GET, "/v1/envs", json!(null)).await.expect_error(StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_headers_name_the_user_only_from_the_proxy() {
    let trusting = |proxy: &str| TrustedHeaders {
        user_header: Some("x-forwarded-user".into()),
        groups_header: Some("x-forwarded-groups".into()),
        proxies: vec![proxy.parse::<Cidr>().unwrap()],
    };
    let app = spawn_app_trusting(|_| {}, trusting("127.0.0.1/32")).await;
    app.create_stage("web", "prod").await;
    app.post("/v1/envs/web/group_roles", &json!({"name": "web team", "role": "OPERATOR"}))
        .await
        .expect(StatusCode::CREATED);
    let as_user = |user: &str, groups: &str, method: Method, path: &str| {
        let req = app
            .http
            .request(method, format!("{}{path}", app.api))
            .header("x-forwarded-user", user)
            .header("x-forwarded-groups", groups);
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(as_user("carol", "web team, other", Method::GET, "/v1/envs/web/prod").await, StatusCode::OK);
    let pause = "/v1/envs/web/prod/deploys/current/actions?actionType=PAUSE";
    assert_eq!(as_user("carol", "web team", Method::POST, pause).await, StatusCode::OK, "the group's role");
    assert_eq!(as_user("dave", "", Method::POST, pause).await, StatusCode::FORBIDDEN, "no group, no role");
    app.stop().await;

    // The same headers from an address that is not the proxy's: nobody.
    let app = spawn_app_trusting(|_| {}, trusting("10.0.0.0/8")).await;
    let status =
        app.http.get(format!("{}/v1/envs", app.api)).header("x-forwarded-user", "carol").send().await.unwrap().status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_tokens_are_refused_by_every_rest_route_they_could_try() {
    let app = spawn_app().await;
    let _ = app.post("/v1/principals", &json!({"name": "fleet", "kind": "AGENT"})).await;
    let enroll =
        app.post("/v1/tokens", &json!({"principal": "fleet", "kind": "ENROLL"})).await.expect(StatusCode::CREATED);
    let enroll = enroll["token"].as_str().unwrap().to_string();
    for token in [app.agent_token.clone(), enroll] {
        for (method, path) in [(Method::GET, "/v1/me"), (Method::GET, "/v1/tokens"), (Method::GET, "/v1/envs")] {
            let reply = app.call(method, &format!("{}{path}", app.api), Some(&token), Body::None).await;
            reply.expect_error(StatusCode::FORBIDDEN);
        }
    }
    app.stop().await;
}
