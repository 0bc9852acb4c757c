//! Per-host agent identity through the gateway: a host enrolls with a scoped enrollment token
//! and pings with its own credential; the credential cannot ping as another host or claim a
//! group outside its scope; a static agent token cannot claim an enrolled host; revocation
//! and re-enrollment retire old credentials on every gateway; every refusal is counted.

mod common;

use common::{App, Body, Host, Reply, eventually, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Makes the agent principal `fleet` and a token of it; answers the secret.
async fn fleet_token(app: &App, body: Value) -> String {
    let _ = app.post("/v1/principals", &json!({"name": "fleet", "kind": "AGENT"})).await;
    let mut body = body;
    body["principal"] = json!("fleet");
    let made = app.post("/v1/tokens", &body).await.expect(StatusCode::CREATED);
    made["token"].as_str().unwrap().to_string()
}

async fn enroll(app: &App, gateway: &str, token: &str, host: &Host, groups: &[&str]) -> Reply {
    let body = json!({"hostId": host.id, "hostName": host.name, "groups": groups});
    app.call(Method::POST, &format!("{gateway}/v1/system/enroll"), Some(token), Body::Json(&body)).await
}

async fn ping_as(app: &App, gateway: &str, token: &str, host: &Host, groups: &[&str]) -> Reply {
    let mut body = host.ping_body(&[]);
    body["groups"] = json!(groups);
    app.call(Method::POST, &format!("{gateway}/v1/system/ping"), Some(token), Body::Json(&body)).await
}

/// Waits until a gateway answers such a ping with `status` (it learns of changes through
/// change messages).
async fn answers(app: &App, gateway: &str, token: &str, host: &Host, groups: &[&str], status: StatusCode) {
    eventually(&format!("{gateway} to answer {status}"), || async {
        match ping_as(app, gateway, token, host, groups).await.status {
            s if s == status => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
}

async fn refusals(app: &App, reason: &str) -> u64 {
    let text = app.http.get(format!("{}/metrics", app.gateway)).send().await.unwrap().text().await.unwrap();
    let line = format!("teletraan_gateway_identity_refusals_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_host_cannot_be_impersonated() {
    let mut app = spawn_app().await;
    let gw = app.gateway.clone();
    let enroll_web = fleet_token(&app, json!({"kind": "ENROLL", "groups": ["web", "web-canary"]})).await;
    let (web1, web2) = (Host::new("web-1", "web"), Host::new("web-2", "web"));

    let made = enroll(&app, &gw, &enroll_web, &web1, &["web"]).await.expect(StatusCode::CREATED);
    assert_eq!((made["hostId"].as_str(), made["generation"].as_u64()), (Some("i-web-1"), Some(1)));
    assert_eq!(made["groups"], json!(["web", "web-canary"]));
    let credential = made["credential"].as_str().unwrap().to_string();
    assert!(credential.starts_with("thc1~1~i-web-1~web-1~"), "{credential}");

    // The host pings with its credential, in any group of its scope.
    ping_as(&app, &gw, &credential, &web1, &["web", "web-canary"]).await.expect(StatusCode::OK);
    // Not as another host, another name, or in a group outside the scope.
    let (code, m) = ping_as(&app, &gw, &credential, &web2, &["web"]).await.expect_error(StatusCode::FORBIDDEN);
    assert!(m.contains("another host"), "{m}");
    assert_eq!(code, "forbidden", "enrolling again would not help: not the retired code");
    let renamed = Host { name: "web-9".into(), ..web1.clone() };
    ping_as(&app, &gw, &credential, &renamed, &["web"]).await.expect_error(StatusCode::FORBIDDEN);
    let (_, m) = ping_as(&app, &gw, &credential, &web1, &["db"]).await.expect_error(StatusCode::FORBIDDEN);
    assert!(m.contains("db"), "{m}");
    // A forged or altered credential is unknown.
    let widened = credential.replace("~web,web-canary~", "~*~");
    ping_as(&app, &gw, &widened, &web1, &["db"]).await.expect_error(StatusCode::UNAUTHORIZED);

    // The shared static token can no longer claim the enrolled host (or its name), but still
    // pings as hosts that did not enroll.
    let agent = app.agent_token.clone();
    ping_as(&app, &gw, &agent, &web1, &["web"]).await.expect_error(StatusCode::FORBIDDEN);
    let same_name = Host { id: "i-other".into(), ..web1.clone() };
    ping_as(&app, &gw, &agent, &same_name, &["web"]).await.expect_error(StatusCode::FORBIDDEN);
    ping_as(&app, &gw, &agent, &web2, &["web"]).await.expect(StatusCode::OK);
    // A static token scoped to groups stays in them.
    let db_only = fleet_token(&app, json!({"kind": "AGENT", "groups": ["db"]})).await;
    // (Gateways hear of new tokens through a change message.)
    answers(&app, &gw, &db_only, &Host::new("db-1", "db"), &["db"], StatusCode::OK).await;
    ping_as(&app, &gw, &db_only, &Host::new("db-2", "db"), &["db", "web"]).await.expect_error(StatusCode::FORBIDDEN);
    // Tokens that are not for pings.
    let admin = app.admin_token.clone();
    ping_as(&app, &gw, &admin, &web2, &["web"]).await.expect_error(StatusCode::FORBIDDEN);
    ping_as(&app, &gw, &enroll_web, &web2, &["web"]).await.expect_error(StatusCode::FORBIDDEN);

    assert_eq!(refusals(&app, "other_host").await, 1);
    assert_eq!(refusals(&app, "other_name").await, 1);
    assert_eq!(refusals(&app, "group_out_of_scope").await, 2);
    assert_eq!(refusals(&app, "enrolled_host").await, 1);
    assert_eq!(refusals(&app, "enrolled_name").await, 1);

    // A second gateway learns of the enrollment too.
    let other = app.start_gateway().await;
    ping_as(&app, &other, &credential, &web1, &["web"]).await.expect(StatusCode::OK);
    ping_as(&app, &other, &agent, &web1, &["web"]).await.expect_error(StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_is_refused_outside_its_rules_and_revocation_retires_a_credential() {
    let mut app = spawn_app().await;
    let gw = app.gateway.clone();
    let other = app.start_gateway().await;
    let token = fleet_token(&app, json!({"kind": "ENROLL", "groups": ["web"]})).await;
    let web1 = Host::new("web-1", "web");

    let (code, _) = enroll(&app, &gw, "nope", &web1, &["web"]).await.expect_error(StatusCode::UNAUTHORIZED);
    assert_eq!(code, "unauthorized");
    let admin = app.admin_token.clone();
    enroll(&app, &gw, &admin, &web1, &["web"]).await.expect_error(StatusCode::UNAUTHORIZED);
    enroll(&app, &gw, &token, &web1, &["db"]).await.expect_error(StatusCode::FORBIDDEN);
    let bad = json!({"hostId": "bad id", "groups": ["web"]});
    let url = format!("{gw}/v1/system/enroll");
    app.call(Method::POST, &url, Some(&token), Body::Json(&bad)).await.expect_error(StatusCode::BAD_REQUEST);
    app.call(Method::POST, &url, Some(&token), Body::Raw("{")).await.expect_error(StatusCode::BAD_REQUEST);

    let first = enroll(&app, &gw, &token, &web1, &["web"]).await.expect(StatusCode::CREATED);
    let first = first["credential"].as_str().unwrap().to_string();
    let (_, m) = enroll(&app, &other, &token, &web1, &["web"]).await.expect_error(StatusCode::CONFLICT);
    assert!(m.contains("revoke"), "{m}");

    // The enrollment is listed (never the credential) and audited.
    let listed = app.get("/v1/host_credentials").await.expect(StatusCode::OK);
    assert_eq!(listed[0]["hostId"], "i-web-1");
    assert!(!listed.to_string().contains(&first));
    let history = app.get("/v1/history?type=Host%20Credential").await.expect(StatusCode::OK);
    assert_eq!((history[0]["action"].as_str(), history[0]["operator"].as_str()), (Some("enroll"), Some("fleet")));

    // Revoked: refused by both gateways, until the host enrolls again.
    let revoked = app.delete("/v1/host_credentials/i-web-1").await.expect(StatusCode::OK);
    assert_eq!(revoked["generation"], 2);
    for g in [&gw, &other] {
        answers(&app, g, &first, &web1, &["web"], StatusCode::FORBIDDEN).await;
    }
    let second = enroll(&app, &other, &token, &web1, &["web"]).await.expect(StatusCode::CREATED);
    assert_eq!(second["generation"], 3);
    let second = second["credential"].as_str().unwrap().to_string();
    for g in [&gw, &other] {
        answers(&app, g, &second, &web1, &["web"], StatusCode::OK).await;
        // The code tells an agent that enrolling again is the way back.
        let (code, _) = ping_as(&app, g, &first, &web1, &["web"]).await.expect_error(StatusCode::FORBIDDEN);
        assert_eq!(code, schema::rules::identity::RETIRED_CODE);
    }
    app.get("/v1/host_credentials/i-nope").await.expect_error(StatusCode::NOT_FOUND);
    app.delete("/v1/host_credentials/i-nope").await.expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}
