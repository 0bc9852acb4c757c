//! The webhook consumer (`workers::webhooks::WebhookHandler`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::WorkQueue;
use bus::testing::TestBus;
use schema::bus::{Command, WebhookMessage};
use schema::model::{Deploy, EnvWebHooksInput};
use schema::time::now_ms;
use schema::{AgentStatus, DeployStage};
use store::Exchange;
use store::testing::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use workers::webhooks::{DELIVERY_HEADER, SIGNATURE_HEADER, WebhookConfig, WebhookHandler};

use crate::support::dump::{Dump, Table, assert_same, dump};
use crate::support::{
    Conduit, Message, apply, batch, build, envelope, facts, id, once_in_order, record, seeds, stage, twice_shuffled,
    update,
};

/// The requests a receiver got: per delivery id, the path of each request, in order.
type Received = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

/// A webhook receiver on a port of its own: `/ok` answers 200, `/post` 204, `/gone` 404,
/// and `/flaky` 503 to the first request of each delivery, then 200. Every request is counted
/// by its delivery id (and must be signed).
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then as much body as it announces.
                let head_end = loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                let length: usize = header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                while request.len() < head_end + length {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let path = head.split_whitespace().nth(1).unwrap_or("").split('?').next().unwrap_or("").to_string();
                let delivery = header(DELIVERY_HEADER).unwrap_or_default();
                let signed = header(SIGNATURE_HEADER).is_some_and(|s| s.starts_with("sha256="));
                let (status, body) = {
                    let mut log = log.lock().unwrap();
                    let seen = log.entry(delivery).or_default();
                    seen.push(if signed { path.clone() } else { format!("{path} (unsigned)") });
                    match path.as_str() {
                        "/ok" => ("200 OK", ""),
                        "/post" => ("204 No Content", ""),
                        "/flaky" if seen.len() == 1 => ("503 Service Unavailable", "busy, try again"),
                        "/flaky" => ("200 OK", ""),
                        _ => ("404 Not Found", "no such hook"),
                    }
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, received)
}

/// A stage with pre-deploy hooks (one answered at once, one that fails once, one whose
/// address is gone) and a post-deploy hook, signed, and two deploys: the first reaches
/// SUCCEEDING (its post hook fires), the second replaces it. Returns the messages the deploys
/// put in the outbox for the webhook workers, in order.
async fn two_deploys_with_hooks(url: &str) -> (TestDatabase, Vec<Message>) {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let now = now_ms();
    let prod = stage(s, "web", "prod", "web", 1, now).await;
    let hooks: EnvWebHooksInput = serde_json::from_value(serde_json::json!({
        "preDeployHooks": [
            {"url": format!("{url}/ok?deploy=$TELETRAAN_DEPLOY_ID"), "headers": "X-Stage:$TELETRAAN_STAGE_NAME",
             "body": "{\"deploy\":\"$TELETRAAN_DEPLOY_ID\",\"state\":$TELETRAAN_NUMERIC_DEPLOY_STATE}"},
            {"method": "PUT", "url": format!("{url}/flaky"), "body": "$TELETRAAN_COMMIT"},
            {"method": "GET", "url": format!("{url}/gone")},
        ],
        "postDeployHooks": [{"url": format!("{url}/post"), "body": "$TELETRAAN_COMMIT is live"}],
        "secret": "redelivery-test-secret-0123456789",
    }))
    .unwrap();
    let (config, secret) = hooks.validate().unwrap();
    s.set_webhooks(&prod.env_name, &prod.stage_name, &config, &secret, "alice", now).await.unwrap();
    let deploy = |command_id: &str, build: &schema::BuildId| {
        envelope(
            command_id,
            now,
            Command::CreateDeployV1 {
                env_name: id("web"),
                stage_name: id("prod"),
                build_id: build.clone(),
                description: None,
            },
        )
    };
    let b1 = build(s, "web", "b1b1b1b1b1", now).await;
    let b2 = build(s, "web", "c2c2c2c2c2", now).await;
    let d1: Deploy = serde_json::from_value(apply(s, &deploy("deploy-1", &b1.id), now).await).unwrap();
    let serving = record(&d1.id, DeployStage::ServingBuild, AgentStatus::Succeeded);
    let report = batch(vec![facts("w1", "web", "1.0", now)], vec![update("w1", &prod.id, serving, 0, now)], now);
    s.apply_report_batch(&report).await.unwrap();
    s.refresh_stage(&prod.id, now).await.unwrap();
    apply(s, &deploy("deploy-2", &b2.id), now).await;

    let outbox = s.lease_outbox(1000, Duration::from_secs(60)).await.unwrap();
    s.delete_outbox(&outbox.iter().map(|m| m.id).collect::<Vec<_>>()).await.unwrap();
    let messages: Vec<Message> = outbox
        .into_iter()
        .filter(|m| m.exchange == Exchange::Webhooks)
        .map(|m| {
            let message: WebhookMessage = serde_json::from_value(m.payload).unwrap();
            Message::free(serde_json::to_vec(&message).unwrap())
        })
        .collect();
    (db, messages)
}

/// What webhook deliveries record. Left out: `updated_at` and `delivered_at`, the worker's
/// clock at its last attempt. The lease (`leased_by`, `leased_until`) is compared: every
/// delivery ends settled, its lease released.
const DELIVERY_TABLE: &[Table] = &[Table {
    name: "webhook_deliveries",
    query: "SELECT * FROM webhook_deliveries",
    drop: &["updated_at", "delivered_at"],
    drop_nested: &[],
}];

async fn dump_deliveries(db: &TestDatabase) -> Dump {
    dump(db, DELIVERY_TABLE, &[]).await
}

fn config() -> WebhookConfig {
    WebhookConfig {
        timeout: Duration::from_secs(5),
        attempts: 3,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        ..WebhookConfig::default()
    }
}

/// Webhook messages delivered twice and out of order (a third of them twice at once, to two
/// workers) send each delivery's requests exactly as single in-order delivery does (one
/// request, or two for the hook that fails once; none more: a settled delivery's message sends
/// nothing, and a delivery another worker holds is left to it), and leave the deliveries as in
/// order: status, attempts, last status code and error, lease released. Deliveries of one
/// deploy are independent, so any order is possible.
#[tokio::test]
async fn webhook_messages_delivered_twice_out_of_order_send_each_request_once_and_end_the_same() {
    let tb = TestBus::new();
    let conduit = Conduit::open(&tb.config, WorkQueue::Webhooks).await;
    let (url, received) = receiver().await;
    let (base, messages) = two_deploys_with_hooks(&url).await;
    let (_stop, shutdown) = watch::channel(false);

    let once = base.fork().await;
    let handler = WebhookHandler::new(once.store.clone(), config(), shutdown.clone()).unwrap();
    conduit.deliver(&handler, &messages, &once_in_order(&messages), async || {}).await;
    let expected = dump_deliveries(&once).await;
    let expected_requests = std::mem::take(&mut *received.lock().unwrap());
    // Not vacuous: three pre hooks per deploy and the first deploy's post hook, each sent,
    // the flaky one twice; every request signed.
    assert_eq!(messages.len(), 7);
    let mut paths: Vec<String> = expected_requests.values().map(|p| p.join(",")).collect();
    paths.sort();
    assert_eq!(paths, ["/flaky,/flaky", "/flaky,/flaky", "/gone", "/gone", "/ok", "/ok", "/post"]);
    let statuses = |d: &Dump| {
        let mut s: Vec<String> = d.0["webhook_deliveries"]
            .iter()
            .map(|r| {
                let r: serde_json::Value = serde_json::from_str(r).unwrap();
                format!("{} {} {}", r["status"], r["attempts"], r["last_status_code"])
            })
            .collect();
        s.sort();
        s
    };
    assert_eq!(
        statuses(&expected),
        [
            r#""DELIVERED" 1 200"#,
            r#""DELIVERED" 1 200"#,
            r#""DELIVERED" 1 204"#,
            r#""DELIVERED" 2 200"#,
            r#""DELIVERED" 2 200"#,
            r#""FAILED" 1 404"#,
            r#""FAILED" 1 404"#
        ]
    );

    for seed in seeds() {
        let twice = base.fork().await;
        let handler = WebhookHandler::new(twice.store.clone(), config(), shutdown.clone()).unwrap();
        let retries = conduit.deliver(&handler, &messages, &twice_shuffled(&messages, seed, 33), async || {}).await;
        let requests = std::mem::take(&mut *received.lock().unwrap());
        assert_eq!(requests, expected_requests, "seed {seed}: the requests sent ({retries} messages retried)");
        assert_same(&expected, &dump_deliveries(&twice).await, &format!("webhooks, seed {seed}"));
    }
}
