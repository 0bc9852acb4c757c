//! Webhooks end to end: configured through the API, fired by deploys, sent by the in-process
//! workers through RabbitMQ to a local receiver that checks the signature (with an HMAC of its
//! own, not the worker's) and the substituted values, and fails on purpose; then listed and
//! retried through the API.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode as HttpStatus, Uri};
use common::{App, Body, Host, eventually, spawn_app, spawn_app_with, str_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const SECRET: &str = "s3cret-for-webhooks-0123";

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    delivery: String,
    method: String,
    path_and_query: String,
    headers: BTreeMap<String, String>,
    body: String,
    /// 1 for the first request of its delivery.
    attempt: usize,
    /// What the receiver answered.
    answered: u16,
    /// `None` without a secret; else whether the signature matched.
    signature_ok: Option<bool>,
}

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    secret: Option<&'static str>,
}

/// HMAC-SHA256 written out (RFC 2104) so the check does not share the worker's code.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Answers by path: `/pre…` and `/post…` fail the first two attempts of each delivery (503),
/// `/fail` always answers 500, `/gone` 404, anything else 200. A wrong signature is a 401.
async fn receive(
    State(r): State<Receiver>,
    method: HttpMethod,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> HttpStatus {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = String::from_utf8_lossy(&body).into_owned();
    let delivery = headers.get("x-teletraan-delivery").cloned().unwrap_or_default();
    let signature_ok = r.secret.map(|secret| {
        let ts = headers.get("x-teletraan-timestamp").cloned().unwrap_or_default();
        let fresh = ts.parse::<i64>().is_ok_and(|t| (t - schema::time::now_ms() / 1000).abs() < 300);
        let expected =
            format!("sha256={}", hex(&hmac_sha256(secret.as_bytes(), format!("{delivery}.{ts}.{body}").as_bytes())));
        fresh && headers.get("x-teletraan-signature") == Some(&expected)
    });
    let mut seen = r.seen.lock().unwrap();
    let attempt = seen.iter().filter(|s| s.delivery == delivery).count() + 1;
    let path = uri.path().to_string();
    let answered = if signature_ok == Some(false) {
        401
    } else if path.starts_with("/pre") || path.starts_with("/post") {
        if attempt <= 2 { 503 } else { 200 }
    } else if path == "/fail" {
        500
    } else if path == "/gone" {
        404
    } else {
        200
    };
    let path_and_query = uri.path_and_query().map(|p| p.to_string()).unwrap_or(path);
    seen.push(Seen {
        delivery,
        method: method.to_string(),
        path_and_query,
        headers,
        body,
        attempt,
        answered,
        signature_ok,
    });
    HttpStatus::from_u16(answered).unwrap()
}

/// Starts a receiver on a free port; returns its base URL, what it saw, and its task.
async fn start_receiver(secret: Option<&'static str>) -> (String, Arc<Mutex<Vec<Seen>>>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let router = axum::Router::new().fallback(receive).with_state(Receiver { seen: seen.clone(), secret });
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (url, seen, task)
}

/// The app with short webhook backoffs.
async fn app_with_fast_retries(attempts: u32) -> App {
    spawn_app_with(|c| {
        c.webhooks.backoff_base = Duration::from_millis(50);
        c.webhooks.backoff_max = Duration::from_millis(200);
        c.webhooks.timeout = Duration::from_secs(5);
        c.webhooks.attempts = attempts;
    })
    .await
}

/// Walks host `h1` of group `g` through the current deploy until it serves it, then waits
/// for the deploy to be SUCCEEDING.
async fn serve_the_deploy(app: &App, deploy_id: &str) {
    app.serve_deploy(&Host::new("h1", "g"), deploy_id).await;
}

/// Waits until the stage lists `n` deliveries of `status` (`?status=`), and returns them.
async fn wait_for_deliveries(app: &App, status: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} {status} deliveries"), || async {
        let list = app.get(&format!("/v1/envs/web/prod/web_hooks/deliveries?status={status}")).await;
        let list = list.expect(StatusCode::OK);
        let items = list.as_array().cloned().unwrap_or_default();
        if items.len() == n { Ok(items) } else { Err(list.to_string()) }
    })
    .await
}

fn hook(url: String) -> Value {
    json!({
        "url": url,
        "headers": "X-Deploy-Id: $TELETRAAN_DEPLOY_ID; X-Commit: $TELETRAAN_COMMIT; X-Operator: $TELETRAAN_OPERATOR",
        "body": r#"{"deploy":"$TELETRAAN_DEPLOY_ID","state":$TELETRAAN_NUMERIC_DEPLOY_STATE,"type":"$TELETRAAN_DEPLOY_TYPE","start":$TELETRAAN_DEPLOY_START,"build":"$TELETRAAN_BUILD_ID","where":"$TELETRAAN_ENV_NAME/$TELETRAAN_STAGE_NAME"}"#,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hook_is_delivered_exactly_once_after_its_retries_signed_and_substituted() {
    let app = app_with_fast_retries(5).await;
    let (receiver, seen, task) = start_receiver(Some(SECRET)).await;
    app.create_stage("web", "prod").await;
    app.set_capacity("web", "prod", "GROUP", &["g"]).await;
    let mut pre = hook(format!("{receiver}/pre/$TELETRAAN_ENV_NAME/$TELETRAAN_STAGE_NAME?deploy=$TELETRAAN_DEPLOY_ID"));
    pre["method"] = json!("post");
    let mut post = hook(format!("{receiver}/post?deploy=$TELETRAAN_DEPLOY_ID&state=$TELETRAAN_NUMERIC_DEPLOY_STATE"));
    post["method"] = json!("PUT");
    let config = json!({"preDeployHooks": [pre], "postDeployHooks": [post], "secret": SECRET});
    let stored = app.put("/v1/envs/web/prod/web_hooks", &config).await.expect(StatusCode::OK);
    assert_eq!(stored["hasSecret"], true);
    assert!(stored.get("secret").is_none(), "the secret is write-only: {stored}");

    let build = app.publish_build("web", "aaaaaaa1111").await;
    // The deploy is answered whatever the receiver does: a webhook never blocks a deploy.
    let deploy = app.deploy("web", "prod", str_of(&build, "id")).await;
    let deploy_id = str_of(&deploy, "id");
    serve_the_deploy(&app, deploy_id).await;

    let delivered = wait_for_deliveries(&app, "DELIVERED", 2).await;
    let all = app.get("/v1/envs/web/prod/web_hooks/deliveries").await.expect(StatusCode::OK);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    let seen = seen.lock().unwrap().clone();
    for phase in ["PRE", "POST"] {
        let d = delivered.iter().find(|d| d["phase"] == phase).unwrap_or_else(|| panic!("{phase}: {delivered:?}"));
        assert_eq!((d["attempts"].as_i64(), d["lastStatusCode"].as_i64()), (Some(3), Some(200)), "{d}");
        assert_eq!(d["deployId"], deploy_id);
        assert!(d["deliveredAt"].is_i64(), "{d}");
        let id = str_of(d, "id");
        let requests: Vec<&Seen> = seen.iter().filter(|s| s.delivery == id).collect();
        let answers: Vec<u16> = requests.iter().map(|s| s.answered).collect();
        assert_eq!(answers, [503, 503, 200], "{phase}: received successfully exactly once, after two failures");
        for s in &requests {
            assert_eq!(s.signature_ok, Some(true), "{phase} attempt {}: signed with the secret", s.attempt);
            assert_eq!(s.headers.get("x-deploy-id").map(String::as_str), Some(deploy_id));
            assert_eq!(s.headers.get("x-commit").map(String::as_str), Some("aaaaaaa1111"));
            assert_eq!(s.headers.get("x-operator").map(String::as_str), Some("admin"));
            assert_eq!(s.headers.get("content-type").map(String::as_str), Some("application/json"));
            assert!(s.headers.get("user-agent").is_some_and(|u| u.starts_with("teletraan-webhooks/")));
            let body: Value = serde_json::from_str(&s.body).unwrap_or_else(|e| panic!("{e}: {}", s.body));
            let state = if phase == "PRE" { 0 } else { 2 };
            assert_eq!(
                body,
                json!({"deploy": deploy_id, "state": state, "type": "REGULAR", "start": deploy["startDate"],
                       "build": build["id"], "where": "web/prod"})
            );
        }
        let first = requests[0];
        match phase {
            "PRE" => {
                assert_eq!(first.method, "POST");
                assert_eq!(first.path_and_query, format!("/pre/web/prod?deploy={deploy_id}"));
            }
            _ => {
                assert_eq!(first.method, "PUT");
                assert_eq!(first.path_and_query, format!("/post?deploy={deploy_id}&state=2"));
            }
        }
    }
    task.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_listed_and_can_be_retried() {
    let app = app_with_fast_retries(3).await;
    let (receiver, seen, task) = start_receiver(None).await;
    app.create_stage("web", "prod").await;
    app.create_stage("web", "beta").await;
    let config = json!({"preDeployHooks": [
        {"url": format!("{receiver}/fail"), "body": "x"},
        {"method": "DELETE", "url": format!("{receiver}/gone")},
        {"method": "GET", "url": format!("{receiver}/ok")},
    ]});
    app.put("/v1/envs/web/prod/web_hooks", &config).await.expect(StatusCode::OK);
    let build = app.publish_build("web", "bbbbbbb2222").await;
    app.deploy("web", "prod", str_of(&build, "id")).await;

    let failed = wait_for_deliveries(&app, "FAILED", 2).await;
    let delivered = wait_for_deliveries(&app, "DELIVERED", 1).await;
    let by_path = |p: &str| failed.iter().find(|d| d["request"]["url"] == format!("{receiver}{p}")).cloned().unwrap();
    let (fail, gone) = (by_path("/fail"), by_path("/gone"));
    assert_eq!((fail["attempts"].as_i64(), fail["lastStatusCode"].as_i64()), (Some(3), Some(500)), "{fail}");
    assert!(str_of(&fail, "lastError").contains("gave up after 3 attempts"), "{fail}");
    assert_eq!((gone["attempts"].as_i64(), gone["lastStatusCode"].as_i64()), (Some(1), Some(404)), "no retry: {gone}");
    assert_eq!(gone["request"]["method"], "DELETE");
    {
        let seen = seen.lock().unwrap();
        let count = |p: &str| seen.iter().filter(|s| s.path_and_query == p).count();
        assert_eq!((count("/fail"), count("/gone"), count("/ok")), (3, 1, 1));
        assert!(seen.iter().all(|s| !s.headers.contains_key("x-teletraan-signature")), "no secret, no signature");
        assert!(seen.iter().all(|s| s.headers.contains_key("x-teletraan-timestamp")));
    }

    // Retry: back to PENDING at once, then sent again (and failing again, three more times).
    let path = |stage: &str, id: &str| format!("/v1/envs/web/{stage}/web_hooks/deliveries/{id}/retry");
    let fail_id = str_of(&fail, "id");
    let retried = app.admin(Method::POST, &path("prod", fail_id), Body::None).await.expect(StatusCode::OK);
    assert_eq!((retried["status"].as_str(), retried["attempts"].as_i64()), (Some("PENDING"), Some(0)), "{retried}");
    eventually("the retried delivery to fail again", || async {
        let n = seen.lock().unwrap().iter().filter(|s| s.path_and_query == "/fail").count();
        let again = app.get("/v1/envs/web/prod/web_hooks/deliveries?status=FAILED").await.expect(StatusCode::OK);
        let again = again.as_array().and_then(|l| l.iter().find(|d| d["id"] == fail_id).cloned()).unwrap_or_default();
        if n == 6 && again["attempts"] == 3 { Ok(()) } else { Err(format!("{n} requests; {again}")) }
    })
    .await;

    // Only FAILED deliveries of the stage are retried.
    let ok_id = str_of(&delivered[0], "id");
    app.admin(Method::POST, &path("prod", ok_id), Body::None).await.expect_error(StatusCode::CONFLICT);
    app.admin(Method::POST, &path("beta", fail_id), Body::None).await.expect_error(StatusCode::NOT_FOUND);
    app.admin(Method::POST, &path("prod", "nope"), Body::None).await.expect_error(StatusCode::NOT_FOUND);
    app.admin(Method::POST, &path("prod", "a%20b"), Body::None).await.expect_error(StatusCode::NOT_FOUND);
    app.admin(Method::POST, &path("nope", fail_id), Body::None).await.expect_error(StatusCode::NOT_FOUND);
    task.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhook_input_is_answered_with_a_4xx_naming_the_field() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let empty = app.get("/v1/envs/web/prod/web_hooks").await.expect(StatusCode::OK);
    assert_eq!(empty, json!({"preDeployHooks": [], "postDeployHooks": [], "hasSecret": false}));

    let cases = [
        (json!({"postDeployHooks": [{"url": "https://a"}, {"url": "ftp://a"}]}), "postDeployHooks[1].url"),
        (json!({"preDeployHooks": [{}]}), "preDeployHooks[0].url"),
        (json!({"preDeployHooks": [{"url": "https://a", "method": "PATCH"}]}), "preDeployHooks[0].method"),
        (json!({"preDeployHooks": [{"url": "https://a", "headers": "no-colon"}]}), "preDeployHooks[0].headers"),
        (
            json!({"preDeployHooks": [{"url": "https://a", "headers": "X-Teletraan-Signature:x"}]}),
            "preDeployHooks[0].headers",
        ),
        (
            json!({"preDeployHooks": [{"url": "https://a", "body": "x".repeat(64 * 1024 + 1)}]}),
            "preDeployHooks[0].body",
        ),
        (json!({"preDeployHooks": vec![json!({"url": "https://a"}); 21]}), "preDeployHooks"),
        (json!({"secret": "too short"}), "secret"),
    ];
    for (body, field) in cases {
        let reply = app.put("/v1/envs/web/prod/web_hooks", &body).await;
        let (code, message) = reply.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(code, "bad_request");
        assert!(message.contains(field), "{field} named in {message:?}");
    }
    // Not the shape at all: a 400 all the same.
    for raw in ["", "{", "[]", "null", r#"{"preDeployHooks":"not a list"}"#, r#"{"preDeployHooks":[{"url":5}]}"#] {
        app.admin(Method::PUT, "/v1/envs/web/prod/web_hooks", Body::Raw(raw))
            .await
            .expect_error(StatusCode::BAD_REQUEST);
    }
    let ok = json!({"preDeployHooks": [{"url": "https://a"}]});
    app.put("/v1/envs/web/nope/web_hooks", &ok).await.expect_error(StatusCode::NOT_FOUND);
    app.put("/v1/envs/web/n%20pe/web_hooks", &ok).await.expect_error(StatusCode::BAD_REQUEST);
    app.get("/v1/envs/web/nope/web_hooks").await.expect_error(StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/envs/web/prod/web_hooks").await.expect(StatusCode::OK), empty, "nothing was stored");

    for query in ["status=LOST", "pageSize=0", "pageSize=501", "pageIndex=0", "pageIndex=abc"] {
        app.get(&format!("/v1/envs/web/prod/web_hooks/deliveries?{query}")).await.expect_error(StatusCode::BAD_REQUEST);
    }
    let none = app.get("/v1/envs/web/prod/web_hooks/deliveries?status=failed&pageIndex=1&pageSize=10").await;
    assert_eq!(none.expect(StatusCode::OK), json!([]));
    app.get("/v1/envs/web/nope/web_hooks/deliveries").await.expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}
