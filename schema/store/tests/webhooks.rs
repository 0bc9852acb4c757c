//! Webhooks in the store on a real Postgres, with the clock passed in: the configuration and
//! its secret, the deliveries a deploy fires (PRE when created, POST once when it first
//! succeeds) with their requests substituted and an outbox message each, and what the workers
//! record of attempts (leases, redeliveries, retries).

mod common;

use std::time::Duration;

use common::{NOW, build, deploy, deploy_command, id, serving, stage, update};
use schema::bus::{CommandOutcome, ReportBatch, WebhookMessage};
use schema::model::{
    DeliveryStatus, EnvWebHooks, EnvWebHooksInput, HookHeader, HookMethod, HookPhase, SecretChange, WebHookDelivery,
};
use schema::{DeployState, EnvName, StageName};
use store::testing::TestDatabase;
use store::{AttemptRecord, DeliveryClaim, Exchange, Store};

const SEC: i64 = 1000;
const LEASE: Duration = Duration::from_secs(40);

fn web() -> EnvName {
    id("web")
}

fn prod() -> StageName {
    id("prod")
}

async fn set(s: &Store, json: serde_json::Value) -> EnvWebHooks {
    let (config, secret) = serde_json::from_value::<EnvWebHooksInput>(json).unwrap().validate().unwrap();
    s.set_webhooks(&web(), &prod(), &config, &secret, "alice", NOW).await.unwrap()
}

/// Takes every outbox message and answers the delivery ids of the webhook ones.
async fn webhook_messages(s: &Store) -> Vec<String> {
    let msgs = s.lease_outbox(1000, Duration::from_secs(60)).await.unwrap();
    s.delete_outbox(&msgs.iter().map(|m| m.id).collect::<Vec<_>>()).await.unwrap();
    msgs.into_iter()
        .filter(|m| m.exchange == Exchange::Webhooks)
        .map(|m| {
            assert_eq!(m.routing_key, "webhooks", "the binding of the webhooks work queue");
            match serde_json::from_value(m.payload).unwrap() {
                WebhookMessage::DeliverV1 { delivery_id } => delivery_id,
            }
        })
        .collect()
}

async fn deliveries(s: &Store, status: Option<DeliveryStatus>) -> Vec<WebHookDelivery> {
    s.webhook_deliveries(&web(), &prod(), status, 1, 100).await.unwrap()
}

fn of_phase(ds: &[WebHookDelivery], phase: HookPhase) -> Vec<&WebHookDelivery> {
    ds.iter().filter(|d| d.phase == phase).collect()
}

fn header<'a>(d: &'a WebHookDelivery, name: &str) -> Option<&'a str> {
    d.request.headers.iter().find(|h| h.name == name).map(|h| h.value.as_str())
}

#[tokio::test]
async fn the_configuration_round_trips_and_the_secret_is_kept_replaced_or_removed() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    assert_eq!(s.webhooks(&web(), &prod()).await.unwrap(), EnvWebHooks::default(), "nothing configured: empty lists");
    assert!(matches!(s.webhooks(&web(), &id("nope")).await, Err(store::Error::NotFound(_))));

    let stored = set(
        s,
        serde_json::json!({
            "preDeployHooks": [{"method": "put", "url": "https://h/pre", "headers": "a:b", "body": "x", "version": "2"}],
            "postDeployHooks": [{"url": "https://h/post"}],
            "secret": "0123456789abcdef",
        }),
    )
    .await;
    assert!(stored.has_secret);
    assert_eq!(stored.pre_deploy_hooks[0].method, HookMethod::Put);
    assert_eq!(stored.pre_deploy_hooks[0].version.as_deref(), Some("2"));
    assert_eq!(stored.post_deploy_hooks[0].method, HookMethod::Post);
    assert_eq!(s.webhooks(&web(), &prod()).await.unwrap(), stored);

    // Absent: kept.
    let kept = set(s, serde_json::json!({"postDeployHooks": [{"url": "https://h/other"}]})).await;
    assert!(kept.has_secret);
    assert!(kept.pre_deploy_hooks.is_empty(), "a PUT replaces the lists");
    // "": removed.
    let removed = set(s, serde_json::json!({"secret": ""})).await;
    assert!(!removed.has_secret);
    assert_eq!(s.webhooks(&web(), &prod()).await.unwrap(), EnvWebHooks::default());
    let err = s.set_webhooks(&web(), &id("nope"), &Default::default(), &SecretChange::Keep, "a", NOW).await;
    assert!(matches!(err, Err(store::Error::NotFound(_))));
}

#[tokio::test]
async fn creating_a_deploy_fires_the_pre_hooks_substituted_with_an_outbox_message_each() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    set(
        s,
        serde_json::json!({
            "preDeployHooks": [
                {"url": "https://h/$TELETRAAN_ENV_NAME/$TELETRAAN_STAGE_NAME?d=$TELETRAAN_DEPLOY_ID",
                 "headers": "X-Deploy:$TELETRAAN_DEPLOY_ID;X-Build:$TELETRAAN_BUILD_ID",
                 "body": "$TELETRAAN_NUMERIC_DEPLOY_STATE $TELETRAAN_DEPLOY_TYPE $TELETRAAN_DEPLOY_START $TELETRAAN_COMMIT $TELETRAAN_OPERATOR"},
                {"method": "GET", "url": "http://h/second"}
            ],
            "postDeployHooks": [{"url": "https://h/post"}],
        }),
    )
    .await;
    let b = build(s, "web").await;
    webhook_messages(s).await;

    let d = deploy(s, "c1", "web", "prod", &b.id, NOW + SEC).await;
    let all = deliveries(s, None).await;
    assert_eq!(all.len(), 2, "the pre hooks only: {all:?}");
    let pre = of_phase(&all, HookPhase::Pre);
    let first = pre.iter().find(|x| x.hook_index == 0).unwrap();
    let second = pre.iter().find(|x| x.hook_index == 1).unwrap();
    assert_eq!(first.request.url, format!("https://h/web/prod?d={}", d.id));
    assert_eq!(
        first.request.headers,
        [
            HookHeader { name: "X-Deploy".into(), value: d.id.to_string() },
            HookHeader { name: "X-Build".into(), value: b.id.to_string() },
        ]
    );
    assert_eq!(first.request.body.as_deref(), Some(format!("0 REGULAR {} abcdef1234 alice", NOW + SEC).as_str()));
    assert_eq!((first.request.method, second.request.method), (HookMethod::Post, HookMethod::Get));
    assert!(all.iter().all(|x| x.status == DeliveryStatus::Pending && x.attempts == 0 && x.deploy_id == d.id));
    assert!(all.iter().all(|x| x.env_name == web() && x.stage_name == prod() && x.created_at == NOW + SEC));

    let mut sent = webhook_messages(s).await;
    let mut ids: Vec<String> = all.iter().map(|x| x.id.clone()).collect();
    sent.sort();
    ids.sort();
    assert_eq!(sent, ids, "one outbox message per delivery");
}

#[tokio::test]
async fn the_first_success_fires_the_post_hooks_once() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    set(
        s,
        serde_json::json!({"postDeployHooks": [{"url": "https://h/$TELETRAAN_DEPLOY_ID?s=$TELETRAAN_NUMERIC_DEPLOY_STATE"}]}),
    )
    .await;
    let b = build(s, "web").await;
    let d = deploy(s, "c1", "web", "prod", &b.id, NOW).await;
    assert!(deliveries(s, None).await.is_empty(), "no pre hooks configured");
    webhook_messages(s).await;

    // Three hosts serve it: SUCCEEDING.
    let batch = ReportBatch {
        agents: (1..=3).map(|i| update(&format!("h{i}"), &e.id, serving(&d.id), NOW + SEC)).collect(),
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();
    s.refresh_stage(&e.id, NOW + 2 * SEC).await.unwrap();
    assert_eq!(s.deploy(&d.id).await.unwrap().state, DeployState::Succeeding);
    let post = deliveries(s, None).await;
    assert_eq!(post.len(), 1, "{post:?}");
    assert_eq!(post[0].phase, HookPhase::Post);
    assert_eq!(post[0].request.url, format!("https://h/{}?s=2", d.id), "computed with state SUCCEEDING");
    assert_eq!(webhook_messages(s).await, [post[0].id.clone()]);

    // Evaluated again, and again after another report: no new delivery, no new message.
    s.refresh_stage(&e.id, NOW + 3 * SEC).await.unwrap();
    let later = ReportBatch { agents: vec![update("h4", &e.id, serving(&d.id), NOW + 4 * SEC)], ..Default::default() };
    s.apply_report_batch(&later).await.unwrap();
    s.refresh_stage(&e.id, NOW + 5 * SEC).await.unwrap();
    assert_eq!(deliveries(s, None).await.len(), 1);
    assert!(webhook_messages(s).await.is_empty());
}

#[tokio::test]
async fn a_redelivered_message_for_a_delivered_delivery_changes_nothing() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    set(s, serde_json::json!({"preDeployHooks": [{"url": "https://h/x"}], "secret": "0123456789abcdef"})).await;
    let b = build(s, "web").await;
    deploy(s, "c1", "web", "prod", &b.id, NOW).await;
    let id = deliveries(s, None).await[0].id.clone();

    let DeliveryClaim::Ready(claimed) = s.claim_webhook_delivery(&id, "a", LEASE, NOW).await.unwrap() else {
        panic!("a pending delivery is ready")
    };
    assert_eq!(claimed.secret.as_deref(), Some("0123456789abcdef"), "sent with the stage's secret");
    assert!(!format!("{claimed:?}").contains("0123456789abcdef"), "never in a log");
    assert!(matches!(s.claim_webhook_delivery(&id, "b", LEASE, NOW + SEC).await.unwrap(), DeliveryClaim::Busy));

    let ok = AttemptRecord { status: DeliveryStatus::Delivered, status_code: Some(200), error: None };
    assert!(s.record_webhook_attempt(&id, "a", &ok, None, NOW + 2 * SEC).await.unwrap());
    let delivered = s.webhook_delivery(&id).await.unwrap();
    assert_eq!(
        (delivered.status, delivered.attempts, delivered.delivered_at),
        (DeliveryStatus::Delivered, 1, Some(NOW + 2 * SEC))
    );

    // The same message again, on any worker: nothing to send, nothing recorded.
    assert!(matches!(s.claim_webhook_delivery(&id, "b", LEASE, NOW + 3 * SEC).await.unwrap(), DeliveryClaim::Gone));
    assert!(matches!(s.claim_webhook_delivery(&id, "a", LEASE, NOW + 3 * SEC).await.unwrap(), DeliveryClaim::Gone));
    assert!(!s.record_webhook_attempt(&id, "a", &ok, None, NOW + 4 * SEC).await.unwrap());
    assert_eq!(s.webhook_delivery(&id).await.unwrap(), delivered);
    assert!(matches!(s.claim_webhook_delivery("unknown", "a", LEASE, NOW).await.unwrap(), DeliveryClaim::Gone));
}

#[tokio::test]
async fn a_lease_holds_through_a_backoff_and_expires_for_others() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    set(s, serde_json::json!({"preDeployHooks": [{"url": "https://h/x"}]})).await;
    let b = build(s, "web").await;
    deploy(s, "c1", "web", "prod", &b.id, NOW).await;
    let id = deliveries(s, None).await[0].id.clone();

    assert!(matches!(s.claim_webhook_delivery(&id, "a", LEASE, NOW).await.unwrap(), DeliveryClaim::Ready(_)));
    let retry =
        AttemptRecord { status: DeliveryStatus::Pending, status_code: Some(503), error: Some("HTTP 503".into()) };
    assert!(s.record_webhook_attempt(&id, "a", &retry, Some(Duration::from_secs(10)), NOW + SEC).await.unwrap());
    // During the backoff: the holder claims again, a duplicate message waits.
    assert!(matches!(s.claim_webhook_delivery(&id, "b", LEASE, NOW + 2 * SEC).await.unwrap(), DeliveryClaim::Busy));
    let DeliveryClaim::Ready(again) = s.claim_webhook_delivery(&id, "a", LEASE, NOW + 3 * SEC).await.unwrap() else {
        panic!("the holder claims again")
    };
    assert_eq!((again.delivery.attempts, again.delivery.last_status_code), (1, Some(503)));
    assert_eq!(again.secret, None);
    // The holder vanished: once its lease is over, another worker takes the delivery, and the
    // late holder's record is refused.
    let after = NOW + 3 * SEC + i64::try_from(LEASE.as_millis()).unwrap() + 1;
    assert!(matches!(s.claim_webhook_delivery(&id, "b", LEASE, after).await.unwrap(), DeliveryClaim::Ready(_)));
    assert!(!s.record_webhook_attempt(&id, "a", &retry, None, after + 1).await.unwrap());
    assert_eq!(s.webhook_delivery(&id).await.unwrap().attempts, 1);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_once_failed_only_and_on_its_own_stage() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    stage(s, "web", "beta", "{}").await;
    set(s, serde_json::json!({"preDeployHooks": [{"url": "https://h/x"}]})).await;
    let b = build(s, "web").await;
    deploy(s, "c1", "web", "prod", &b.id, NOW).await;
    let did = deliveries(s, None).await[0].id.clone();
    webhook_messages(s).await;

    let conflict = s.retry_webhook_delivery(&web(), &prod(), &did, "alice", NOW).await;
    assert!(matches!(conflict, Err(store::Error::Conflict(_))), "PENDING is not retried: {conflict:?}");
    s.claim_webhook_delivery(&did, "a", LEASE, NOW).await.unwrap();
    let gone = AttemptRecord { status: DeliveryStatus::Failed, status_code: Some(404), error: Some("HTTP 404".into()) };
    assert!(s.record_webhook_attempt(&did, "a", &gone, None, NOW + SEC).await.unwrap());
    assert_eq!(deliveries(s, Some(DeliveryStatus::Failed)).await.len(), 1);
    assert!(deliveries(s, Some(DeliveryStatus::Delivered)).await.is_empty());

    let other = s.retry_webhook_delivery(&web(), &id("beta"), &did, "alice", NOW).await;
    assert!(matches!(other, Err(store::Error::NotFound(_))), "{other:?}");
    let unknown = s.retry_webhook_delivery(&web(), &prod(), "nope", "alice", NOW).await;
    assert!(matches!(unknown, Err(store::Error::NotFound(_))));

    let retried = s.retry_webhook_delivery(&web(), &prod(), &did, "alice", NOW + 2 * SEC).await.unwrap();
    assert_eq!((retried.status, retried.attempts, retried.updated_at), (DeliveryStatus::Pending, 0, NOW + 2 * SEC));
    assert_eq!(retried.last_status_code, Some(404), "the last attempt stays visible");
    assert_eq!(webhook_messages(s).await, std::slice::from_ref(&did), "a new message");
    assert!(matches!(
        s.claim_webhook_delivery(&did, "b", LEASE, NOW + 3 * SEC).await.unwrap(),
        DeliveryClaim::Ready(_)
    ));
}

#[tokio::test]
async fn a_hook_whose_substituted_headers_break_is_stored_failed_and_the_deploy_goes_on() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    set(
        s,
        serde_json::json!({"preDeployHooks": [{"url": "https://h/bad", "headers": "X-By:$TELETRAAN_OPERATOR"},
                                               {"url": "https://h/good"}]}),
    )
    .await;
    let b = build(s, "web").await;
    webhook_messages(s).await;
    // An operator name that breaks Teletraan's header string once substituted.
    let mut cmd = deploy_command("c1", "web", "prod", &b.id);
    cmd.operator = "eve;oops".into();
    let outcome = s.apply_command(&cmd, NOW).await.unwrap();
    assert!(matches!(outcome, CommandOutcome::Ok { .. }), "the deploy is not blocked: {outcome:?}");

    let all = deliveries(s, None).await;
    let bad = all.iter().find(|x| x.hook_index == 0).unwrap();
    let good = all.iter().find(|x| x.hook_index == 1).unwrap();
    assert_eq!((bad.status, bad.attempts), (DeliveryStatus::Failed, 0));
    assert!(bad.last_error.as_deref().unwrap().contains("headers"), "{:?}", bad.last_error);
    assert_eq!(header(bad, "X-By"), None);
    assert_eq!(good.status, DeliveryStatus::Pending);
    assert_eq!(webhook_messages(s).await, std::slice::from_ref(&good.id), "nothing to send for the broken one");
    let refused = s.retry_webhook_delivery(&web(), &prod(), &bad.id, "alice", NOW).await;
    assert!(matches!(refused, Err(store::Error::Conflict(_))), "{refused:?}");
}

#[tokio::test]
async fn deliveries_are_listed_newest_first_and_paged() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    set(s, serde_json::json!({"preDeployHooks": [{"url": "https://h/x"}]})).await;
    let b = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b.id, NOW).await;
    let d2 = deploy(s, "c2", "web", "prod", &b.id, NOW + SEC).await;
    let d3 = deploy(s, "c3", "web", "prod", &b.id, NOW + 2 * SEC).await;
    let order: Vec<_> = deliveries(s, None).await.into_iter().map(|x| x.deploy_id).collect();
    assert_eq!(order, [d3.id.clone(), d2.id.clone(), d1.id.clone()]);
    let page2 = s.webhook_deliveries(&web(), &prod(), None, 2, 2).await.unwrap();
    assert_eq!(page2.iter().map(|x| &x.deploy_id).collect::<Vec<_>>(), [&d1.id]);
    assert!(s.webhook_deliveries(&web(), &prod(), Some(DeliveryStatus::Failed), 1, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_pending_delivery_whose_message_was_lost_is_sent_again() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    set(s, serde_json::json!({"preDeployHooks": [{"url": "https://h/a"}, {"url": "https://h/b"}]})).await;
    let b = build(s, "web").await;
    deploy(s, "c1", "web", "prod", &b.id, NOW).await;
    let fired = webhook_messages(s).await;
    assert_eq!(fired.len(), 2);
    // One is held by a worker (backing off), the other's message is lost.
    let hour = Duration::from_secs(3600);
    assert!(matches!(s.claim_webhook_delivery(&fired[0], "w1", hour, NOW).await.unwrap(), DeliveryClaim::Ready(_)));
    let later = NOW + 20 * 60 * SEC;
    let stale = later - 10 * 60 * SEC;
    assert_eq!(s.resend_stale_webhook_deliveries(NOW + SEC, NOW, 100).await.unwrap(), 0, "not stale yet");
    assert_eq!(s.resend_stale_webhook_deliveries(later, stale, 100).await.unwrap(), 1, "the held one waits");
    assert_eq!(webhook_messages(s).await, [fired[1].clone()]);
    assert_eq!(s.resend_stale_webhook_deliveries(later, stale, 100).await.unwrap(), 0, "touched: not stale again");
    let much_later = NOW + 2 * 3600 * SEC;
    assert_eq!(s.resend_stale_webhook_deliveries(much_later, much_later - 600 * SEC, 100).await.unwrap(), 2);
}
