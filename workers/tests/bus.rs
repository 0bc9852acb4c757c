//! The bus against a real RabbitMQ (and Postgres for the command round trip), one namespace
//! and one database per test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bus::rpc::CommandClient;
use bus::testing::TestBus;
use bus::{DeliveryCtx, Disposition, Handler, Outgoing, Publisher, WorkQueue};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use schema::bus::{Command, CommandEnvelope, CommandOutcome};
use schema::model::{ArtifactPolicy, Build, BuildInput, Environ};
use schema::{EnvId, EnvName, StageName};
use store::testing::TestDatabase;
use tokio::sync::{Mutex, watch};

/// Records payloads; answers with a fixed disposition for the first `fail_times` deliveries.
struct Recorder {
    seen: Mutex<Vec<(Vec<u8>, u32)>>,
    fail_times: u32,
    failures: AtomicU32,
}

impl Handler for Recorder {
    async fn handle(&self, ctx: &DeliveryCtx<'_>) -> Disposition {
        self.seen.lock().await.push((ctx.delivery.data.clone(), ctx.attempt));
        if ctx.delivery.data == b"poison" {
            return Disposition::Dead("poison".into());
        }
        if self.failures.fetch_add(1, Ordering::SeqCst) < self.fail_times {
            return Disposition::Retry("not yet".into());
        }
        Disposition::Ack
    }
}

async fn wait_for<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn queue_len(cfg: &bus::BusConfig, queue: &str) -> u32 {
    let conn = bus::connect(cfg).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            cfg.name(queue).as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    q.message_count()
}

fn work(cfg: &bus::BusConfig, body: &[u8]) -> Outgoing {
    Outgoing { exchange: cfg.exchange(WorkQueue::Reports), routing_key: "reports".into(), payload: body.to_vec() }
}

#[tokio::test]
async fn consumer_acks_retries_and_dead_letters() {
    let tb = TestBus::new();
    let cfg = tb.config.clone();
    let handler = Arc::new(Recorder { seen: Mutex::new(Vec::new()), fail_times: 1, failures: AtomicU32::new(0) });
    let (stop, shutdown) = watch::channel(false);
    let consumer = tokio::spawn(bus::consume(cfg.clone(), WorkQueue::Reports, 4, handler.clone(), shutdown));

    let publisher = Publisher::new(cfg.clone());
    publisher.publish(&[work(&cfg, b"first"), work(&cfg, b"poison")]).await.unwrap();

    // "first" fails once, comes back from the retry queue as attempt 2 and is acked.
    wait_for("the retried delivery", || async {
        handler.seen.lock().await.iter().any(|(d, attempt)| d == b"first" && *attempt == 2)
    })
    .await;
    wait_for("the poison message in the dead queue", || async { queue_len(&cfg, "reports.dead").await == 1 }).await;
    assert_eq!(queue_len(&cfg, "reports").await, 0);
    let seen = handler.seen.lock().await.clone();
    assert_eq!(seen.iter().filter(|(d, _)| d == b"poison").count(), 1, "dead-lettered at once, not retried");

    // The dead message is the original payload.
    let conn = bus::connect(&cfg).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got =
        ch.basic_get(cfg.name("reports.dead").as_str().into(), BasicGetOptions::default()).await.unwrap().unwrap();
    assert_eq!(got.delivery.data, b"poison");

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), consumer).await.unwrap().unwrap();
}

#[tokio::test]
async fn undecodable_command_is_dead_lettered() {
    let tb = TestBus::new();
    let db = TestDatabase::new().await;
    let cfg = tb.config.clone();
    let (stop, shutdown) = watch::channel(false);
    let handler = Arc::new(workers::commands::CommandHandler::new(db.store.clone()));
    let consumer = tokio::spawn(bus::consume(cfg.clone(), WorkQueue::Commands, 4, handler, shutdown));
    let publisher = Publisher::new(cfg.clone());
    publisher
        .publish(&[Outgoing {
            exchange: cfg.exchange(WorkQueue::Commands),
            routing_key: "commands".into(),
            payload: b"{nope".to_vec(),
        }])
        .await
        .unwrap();
    wait_for("the dead command", || async { queue_len(&cfg, "commands.dead").await == 1 }).await;
    stop.send(true).unwrap();
    consumer.await.unwrap();
}

#[tokio::test]
async fn a_deploy_command_round_trips_through_a_worker() {
    let tb = TestBus::new();
    let db = TestDatabase::new().await;
    let cfg = tb.config.clone();
    let now = schema::time::now_ms();
    let e = Environ::create(
        EnvId::generate(),
        serde_json::from_str(r#"{"envName":"web","stageName":"prod"}"#).unwrap(),
        "a",
        now,
    )
    .unwrap();
    db.store.create_stage(&e).await.unwrap();
    let input: BuildInput = serde_json::from_value(serde_json::json!({
        "name": "web", "artifactUrl": "https://a/x.tgz", "repo": "r", "branch": "main", "commit": "abc1234"
    }))
    .unwrap();
    let b = Build::publish(input, &ArtifactPolicy::permissive(), "ci", now).unwrap();
    db.store.insert_build(&b).await.unwrap();

    let (stop, shutdown) = watch::channel(false);
    let handler = Arc::new(workers::commands::CommandHandler::new(db.store.clone()));
    let consumer = tokio::spawn(bus::consume(cfg.clone(), WorkQueue::Commands, 4, handler, shutdown));

    let client = CommandClient::new(cfg.clone());
    let envelope = CommandEnvelope {
        request_id: None,
        id: "cmd-1".into(),
        attempt: 1,
        issued_at: now,
        operator: "alice".into(),
        command: Command::CreateDeployV1 {
            env_name: EnvName::parse("web").unwrap(),
            stage_name: StageName::parse("prod").unwrap(),
            build_id: b.id.clone(),
            description: None,
        },
    };
    let reply = client.send(&envelope, Duration::from_secs(20)).await.unwrap().expect("a reply in time");
    let CommandOutcome::Ok { result } = reply.outcome else { panic!("{reply:?}") };
    let deploy: schema::model::Deploy = serde_json::from_value(result).unwrap();
    assert_eq!(deploy.build_id, b.id);
    assert_eq!(db.store.current_deploy(&e.env_name, &e.stage_name).await.unwrap().id, deploy.id);

    // The same command again: the same deploy, not a second one.
    let again = client.send(&envelope, Duration::from_secs(20)).await.unwrap().unwrap();
    assert_eq!(again.outcome, CommandOutcome::Ok { result: serde_json::to_value(&deploy).unwrap() });

    stop.send(true).unwrap();
    consumer.await.unwrap();
}

#[tokio::test]
async fn relay_publishes_the_outbox_and_empties_it() {
    let tb = TestBus::new();
    let db = TestDatabase::new().await;
    let cfg = tb.config.clone();
    // A queue bound to the changes fanout, like a gateway's.
    let conn = bus::connect(&cfg).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    bus::declare_topology(&ch, &cfg).await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        cfg.changes_exchange().as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let e = Environ::create(
        EnvId::generate(),
        serde_json::from_str(r#"{"envName":"web","stageName":"prod"}"#).unwrap(),
        "a",
        1,
    )
    .unwrap();
    db.store.create_stage(&e).await.unwrap();
    assert_eq!(db.store.outbox_len().await.unwrap(), 1);

    let publisher = Publisher::new(cfg.clone());
    let sent = workers::relay::relay_once(&db.store, &publisher, &cfg).await.unwrap();
    assert_eq!(sent, 1);
    assert_eq!(db.store.outbox_len().await.unwrap(), 0);
    let got = ch.basic_get(q.name().clone(), BasicGetOptions::default()).await.unwrap().expect("the change");
    let change: schema::bus::ChangeMessage = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!(change.stage_version().map(|(env, _)| env), Some(&e.id));
}

#[tokio::test]
async fn concurrent_publishes_share_one_publisher_and_all_arrive() {
    let tb = TestBus::new();
    let cfg = tb.config.clone();
    let publisher = Publisher::new(cfg.clone());
    let batches: Vec<[Outgoing; 1]> = (0..40).map(|i| [work(&cfg, format!("message {i}").as_bytes())]).collect();
    let publishes = batches.iter().map(|batch| publisher.publish(batch));
    for outcome in futures_util::future::join_all(publishes).await {
        outcome.expect("a concurrent publish");
    }
    wait_for("every message in the queue", || async { queue_len(&cfg, "reports").await == 40 }).await;
}

#[tokio::test]
async fn amqps_with_the_private_ca_works_and_a_client_trusting_another_ca_is_refused() {
    let tb = TestBus::tls();
    let cfg = tb.config.clone();
    assert!(cfg.url.starts_with("amqps://"), "{}", cfg.url);
    Publisher::new(cfg.clone()).publish(&[work(&cfg, b"over TLS")]).await.expect("a publish over TLS");
    wait_for("the message in the queue", || async { queue_len(&cfg, "reports").await == 1 }).await;

    let wrong = bus::BusConfig { ca_pem: Some(store::testing::UNRELATED_CA_PEM.into()), ..cfg.clone() };
    let Err(e) = bus::connect(&wrong).await else { panic!("the broker's certificate is trusted") };
    assert!(matches!(e, bus::BusError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "the cause is named: {e}");
}

/// Accepts connections on a port of its own and never says a word (a broker or a network
/// that swallows packets).
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_broker_that_never_answers_is_unavailable_once_the_timeout_passed() {
    let (port, silent) = silent_server().await;
    let cfg = bus::BusConfig {
        timeout: Duration::from_millis(200),
        ..bus::BusConfig::new(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), "silent")
    };
    let e = Publisher::new(cfg.clone()).publish(&[work(&cfg, b"lost")]).await.unwrap_err();
    assert!(matches!(e, bus::BusError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("no answer"), "the cause is named: {e}");

    let envelope = CommandEnvelope {
        request_id: None,
        id: "cmd-silent".into(),
        attempt: 1,
        issued_at: 1,
        operator: "alice".into(),
        command: Command::CreateDeployV1 {
            env_name: EnvName::parse("web").unwrap(),
            stage_name: StageName::parse("prod").unwrap(),
            build_id: schema::BuildId::parse("b1").unwrap(),
            description: None,
        },
    };
    let e = CommandClient::new(cfg).send(&envelope, Duration::from_secs(20)).await.unwrap_err();
    assert!(matches!(e, bus::BusError::Unavailable(_)), "{e:?}");
    silent.abort();
}

/// Gives up on every message, as a handler with a bug would after its retries.
struct GiveUp;

impl Handler for GiveUp {
    async fn handle(&self, _ctx: &DeliveryCtx<'_>) -> Disposition {
        Disposition::Dead("apply failed: boom".into())
    }
}

#[tokio::test]
async fn a_dead_lettered_command_ends_failed_and_stays_for_operators() {
    let tb = TestBus::new();
    let db = TestDatabase::new().await;
    let cfg = tb.config.clone();
    let now = schema::time::now_ms();
    let envelope = |id: &str| CommandEnvelope {
        request_id: None,
        id: id.into(),
        attempt: 1,
        issued_at: now,
        operator: "alice".into(),
        command: Command::DeployActionV1 {
            env_name: EnvName::parse("web").unwrap(),
            stage_name: StageName::parse("prod").unwrap(),
            action: schema::DeployAction::Pause,
            from_deploy_id: None,
            to_deploy_id: None,
            description: None,
            mark_bad: false,
        },
    };
    // The API recorded this one as PENDING before publishing it; the other it never did.
    let recorded = envelope("cmd-recorded");
    db.store
        .insert_command(store::NewCommand {
            id: &recorded.id,
            kind: recorded.command.kind(),
            operator: "alice",
            payload: serde_json::to_value(&recorded).unwrap(),
            now,
        })
        .await
        .unwrap();
    let (stop, shutdown) = watch::channel(false);
    let consumer = tokio::spawn(bus::consume(cfg.clone(), WorkQueue::Commands, 4, Arc::new(GiveUp), shutdown.clone()));
    let watcher = tokio::spawn(bus::watch_dead_letters(
        cfg.clone(),
        WorkQueue::Commands,
        Arc::new(workers::dead_letters::DeadCommands::new(db.store.clone())),
        shutdown,
    ));
    let publisher = Publisher::new(cfg.clone());
    let out = |body: Vec<u8>| Outgoing {
        exchange: cfg.exchange(WorkQueue::Commands),
        routing_key: "commands".into(),
        payload: body,
    };
    publisher
        .publish(&[
            out(serde_json::to_vec(&recorded).unwrap()),
            out(serde_json::to_vec(&envelope("cmd-unrecorded")).unwrap()),
            out(b"{nope".to_vec()),
        ])
        .await
        .unwrap();

    for id in ["cmd-recorded", "cmd-unrecorded"] {
        wait_for("the command to end FAILED", || async {
            db.store.command(id).await.unwrap().is_some_and(|c| c.status == "FAILED")
        })
        .await;
        let status = db.store.command(id).await.unwrap().unwrap();
        let error = status.error.unwrap();
        assert_eq!((error.status, error.code.as_str()), (500, "dead_lettered"));
        assert!(error.message.contains("apply failed: boom"), "{}", error.message);
        assert_eq!(status.kind, "deploy_action", "{id}");
        assert!(status.finished_at.is_some());
    }
    // Every dead letter stays for operators; the watcher's copies are consumed.
    // (Each dead letter reaches both queues in one routing: once the dead queue holds all three,
    // the watch queue got its copies.)
    wait_for("the three dead letters", || async { queue_len(&cfg, "commands.dead").await == 3 }).await;
    wait_for("the watch queue to drain", || async { queue_len(&cfg, "commands.dead.watch").await == 0 }).await;
    stop.send(true).unwrap();
    consumer.await.unwrap();
    watcher.await.unwrap();
}

#[tokio::test]
async fn a_url_listing_several_nodes_skips_those_that_are_down() {
    let tb = TestBus::new();
    // A closed port and a node that never answers, before the real one.
    let (silent, _held) = silent_server().await;
    let nodes =
        format!("amqp://guest:guest@127.0.0.1:1/%2f, amqp://guest:guest@127.0.0.1:{silent}/%2f, {}", tb.config.url);
    let cfg = bus::BusConfig { url: nodes, timeout: Duration::from_secs(2), ..tb.config.clone() };
    Publisher::new(cfg.clone()).publish(&[work(&cfg, b"through the third node")]).await.expect("a publish");
    wait_for("the message in the queue", || async { queue_len(&tb.config, "reports").await == 1 }).await;
    // The process now starts from the node that worked.
    let started = std::time::Instant::now();
    bus::connect(&cfg).await.expect("the working node");
    assert!(started.elapsed() < Duration::from_secs(1), "no time lost on the dead nodes: {:?}", started.elapsed());

    let none =
        bus::BusConfig { url: "amqp://guest:guest@127.0.0.1:1/%2f, amqp://guest:guest@127.0.0.1:2/%2f".into(), ..cfg };
    let Err(e) = bus::connect(&none).await else { panic!("no node is up") };
    assert!(matches!(e, bus::BusError::Unavailable(_)), "{e:?}");
}

/// Fails with "the dependency is away" until it has failed `away_times` times, then acks.
struct Away {
    away_times: u32,
    seen: Mutex<Vec<u32>>,
}

impl Handler for Away {
    async fn handle(&self, ctx: &DeliveryCtx<'_>) -> Disposition {
        let mut seen = self.seen.lock().await;
        seen.push(ctx.attempt);
        if seen.len() as u32 <= self.away_times {
            Disposition::RetryLater("database away".into())
        } else {
            Disposition::Ack
        }
    }
}

/// On a shared work queue too, a message failing because a dependency is away goes round the
/// delay queue as often as it takes, past the attempt limit, and is never dead-lettered.
#[tokio::test]
async fn a_message_failing_on_a_dependency_is_retried_past_the_attempt_limit_and_never_dead_lettered() {
    let tb = TestBus::new();
    let cfg = tb.config.clone();
    let handler = Arc::new(Away { away_times: bus::MAX_ATTEMPTS + 1, seen: Mutex::new(Vec::new()) });
    let (stop, shutdown) = watch::channel(false);
    let consumer = tokio::spawn(bus::consume(cfg.clone(), WorkQueue::Reports, 4, handler.clone(), shutdown));
    Publisher::new(cfg.clone()).publish(&[work(&cfg, b"needs the database")]).await.unwrap();
    let deadline = bus::RETRY_DELAY * (bus::MAX_ATTEMPTS + 4);
    tokio::time::timeout(deadline, async {
        while handler.seen.lock().await.len() as u32 <= bus::MAX_ATTEMPTS + 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the message is taken in the end");
    let attempts = handler.seen.lock().await.clone();
    assert!(attempts.iter().all(|a| *a == 1), "a dependency's absence counts no attempt: {attempts:?}");
    assert_eq!(queue_len(&cfg, "reports.dead").await, 0, "nothing dead-lettered");
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), consumer).await.unwrap().unwrap();
}
