//! The report partitions against a real RabbitMQ and Postgres: a partition changing owner
//! loses, reorders and doubles nothing; failures are retried in place; the worker pool shares
//! the partitions out and takes over those of a worker that leaves or dies.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bus::testing::TestBus;
use bus::{DeliveryCtx, Disposition, Handler, Outgoing, Publisher, WorkQueue};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use schema::partition::REPORT_PARTITIONS;
use store::testing::TestDatabase;
use tokio::sync::{Mutex, watch};

/// Who handled which message, at which attempt, in the order they were handled.
type Log = Arc<Mutex<Vec<(&'static str, u32, u32)>>>;

/// Records which consumer handled which message, and how many ran at once; takes its time so
/// that a hand-over happens mid-stream. Fails "flaky" messages `fail_first` times.
struct Recorder {
    who: &'static str,
    log: Log,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    fail_first: u32,
}

impl Handler for Recorder {
    async fn handle(&self, ctx: &DeliveryCtx<'_>) -> Disposition {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let body = String::from_utf8_lossy(&ctx.delivery.data).to_string();
        let disposition = if body == "poison" {
            Disposition::Retry("poison".into())
        } else if body.starts_with("flaky") && ctx.attempt <= self.fail_first {
            Disposition::Retry("flaky".into())
        } else {
            tokio::time::sleep(Duration::from_millis(15)).await;
            Disposition::Ack
        };
        let seq = body.trim_start_matches("flaky").parse().unwrap_or(u32::MAX);
        self.log.lock().await.push((self.who, seq, ctx.attempt));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        disposition
    }
}

async fn wait_for<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Messages ready and consumers of a queue (zeros while it is not declared yet).
async fn queue_state(cfg: &bus::BusConfig, queue: &str) -> (u32, u32) {
    let conn = bus::connect(cfg).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    match ch.queue_declare(cfg.name(queue).as_str().into(), passive, FieldTable::default()).await {
        Ok(q) => (q.message_count(), q.consumer_count()),
        Err(_) => (0, 0),
    }
}

async fn queue_len(cfg: &bus::BusConfig, queue: &str) -> u32 {
    queue_state(cfg, queue).await.0
}

fn to_partition(cfg: &bus::BusConfig, p: u16, body: String) -> Outgoing {
    Outgoing {
        exchange: cfg.exchange(WorkQueue::Reports),
        routing_key: WorkQueue::Reports.partition(p),
        payload: body.into(),
    }
}

/// A TCP proxy to the broker that can only be cut: every connection it carries closes at once.
struct CutProxy {
    url: String,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl CutProxy {
    async fn start(broker_url: &str) -> CutProxy {
        // amqp://user:pass@host:port/vhost
        let (head, rest) = broker_url.split_once('@').unwrap();
        let (upstream, vhost) = rest.split_once('/').unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("{head}@{}/{vhost}", listener.local_addr().unwrap());
        let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (upstream, held) = (upstream.to_string(), tasks.clone());
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                held.lock().unwrap().push(pipe);
            }
        });
        tasks.lock().unwrap().push(acceptor);
        CutProxy { url, tasks }
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

struct Consumer {
    assign: watch::Sender<BTreeSet<u16>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn consumer(cfg: &bus::BusConfig, handler: Recorder, partitions: &[u16]) -> Consumer {
    let (assign, assigned) = watch::channel(partitions.iter().copied().collect());
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(bus::consume_partitions(
        cfg.clone(),
        WorkQueue::Reports,
        Arc::new(handler),
        8,
        assigned,
        shutdown,
    ));
    Consumer { assign, stop, task }
}

#[tokio::test]
async fn a_partition_changes_owner_without_losing_reordering_or_doubling_a_message() {
    let tb = TestBus::new();
    let cfg = tb.config.clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let recorder = |who| Recorder {
        who,
        log: log.clone(),
        in_flight: in_flight.clone(),
        most_in_flight: most.clone(),
        fail_first: 0,
    };
    let a = consumer(&cfg, recorder("a"), &[3]);
    let b = consumer(&cfg, recorder("b"), &[]);
    wait_for("a to subscribe", || async { queue_state(&cfg, "reports.3").await.1 == 1 }).await;

    let publisher = Publisher::new(cfg.clone());
    let messages: Vec<Outgoing> = (0..120).map(|i| to_partition(&cfg, 3, i.to_string())).collect();
    publisher.publish(&messages).await.unwrap();

    // Mid-stream, b is given the partition first (it waits: a still holds it), then a lets go.
    wait_for("a to handle some", || async { log.lock().await.len() >= 30 }).await;
    b.assign.send_replace([3].into());
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.assign.send_replace(BTreeSet::new());
    wait_for("every message", || async { log.lock().await.len() >= 120 }).await;
    // And back to a, while b stops at once (a shutdown hands over like a release).
    a.assign.send_replace([3].into());
    let more: Vec<Outgoing> = (120..200).map(|i| to_partition(&cfg, 3, i.to_string())).collect();
    publisher.publish(&more).await.unwrap();
    wait_for("b to handle some of the second lot", || async { log.lock().await.len() >= 140 }).await;
    b.stop.send_replace(true);
    wait_for("every message of the second lot", || async { log.lock().await.len() >= 200 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let log = log.lock().await.clone();
    let order: Vec<u32> = log.iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(order, (0..200).collect::<Vec<_>>(), "each message once, in queue order");
    let by = |who| log.iter().filter(|(w, _, _)| *w == who).count();
    assert!(by("a") >= 30 && by("b") >= 20, "both consumers took part: a {}, b {}", by("a"), by("b"));
    let owners: Vec<&str> = log.iter().map(|(w, _, _)| *w).collect();
    let hand_overs = owners.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(hand_overs, 2, "a → b → a, each a clean cut: {owners:?}");
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two messages of a partition at once");
    assert_eq!(queue_len(&cfg, "reports.3").await, 0);
    assert_eq!(queue_len(&cfg, "reports.dead").await, 0);

    a.stop.send_replace(true);
    for task in [a.task, b.task] {
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_consumer_that_dies_hands_its_partition_on_with_nothing_lost() {
    let tb = TestBus::new();
    let cfg = tb.config.clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    let recorder = |who| Recorder {
        who,
        log: log.clone(),
        in_flight: Arc::new(AtomicUsize::new(0)),
        most_in_flight: Arc::new(AtomicUsize::new(0)),
        fail_first: 0,
    };
    // a reaches the broker through a proxy: cutting it is the broker's view of a process killed.
    let proxy = CutProxy::start(&cfg.url).await;
    let mut through_proxy = cfg.clone();
    through_proxy.url = proxy.url.clone();
    let a = consumer(&through_proxy, recorder("a"), &[5]);
    wait_for("a to subscribe", || async { queue_state(&cfg, "reports.5").await.1 == 1 }).await;
    let b = consumer(&cfg, recorder("b"), &[5]);
    let publisher = Publisher::new(cfg.clone());
    let messages: Vec<Outgoing> = (0..100).map(|i| to_partition(&cfg, 5, i.to_string())).collect();
    publisher.publish(&messages).await.unwrap();
    wait_for("a to handle some", || async { log.lock().await.len() >= 20 }).await;
    // Killed: its connection drops with a message possibly handled but not acknowledged.
    proxy.cut();
    a.task.abort();
    wait_for("every message", || async {
        let seen: BTreeSet<u32> = log.lock().await.iter().map(|(_, s, _)| *s).collect();
        seen.len() == 100
    })
    .await;
    let log = log.lock().await.clone();
    // At least once: a message in hand when a died may come again, right after; the first time
    // each is seen is in queue order.
    let mut firsts = Vec::new();
    for (_, seq, _) in &log {
        if !firsts.contains(seq) {
            firsts.push(*seq);
        }
    }
    assert_eq!(firsts, (0..100).collect::<Vec<_>>());
    assert!(log.len() <= 100 + 2, "at most the messages in hand were handled twice: {}", log.len());
    assert!(log.iter().any(|(w, _, _)| *w == "b"));
    b.stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), b.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failing_message_is_retried_in_place_and_a_poison_one_dead_lettered_in_order() {
    let tb = TestBus::new();
    let cfg = tb.config.clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        who: "a",
        log: log.clone(),
        in_flight: Arc::new(AtomicUsize::new(0)),
        most_in_flight: Arc::new(AtomicUsize::new(0)),
        fail_first: 2,
    };
    let a = consumer(&cfg, recorder, &[0]);
    let publisher = Publisher::new(cfg.clone());
    let bodies = ["0", "flaky1", "poison", "3"];
    let messages: Vec<Outgoing> = bodies.iter().map(|b| to_partition(&cfg, 0, b.to_string())).collect();
    publisher.publish(&messages).await.unwrap();
    wait_for("the last message", || async { log.lock().await.iter().any(|(_, s, _)| *s == 3) }).await;
    let log = log.lock().await.clone();
    let seen: Vec<(u32, u32)> = log.iter().map(|(_, s, attempt)| (*s, *attempt)).collect();
    let poison = u32::MAX;
    assert_eq!(
        seen,
        vec![(0, 1), (1, 1), (1, 2), (1, 3), (poison, 1), (poison, 2), (poison, 3), (poison, 4), (poison, 5), (3, 1)],
        "retried where it stands, nothing overtakes it"
    );
    wait_for("the poison message in the dead queue", || async { queue_len(&cfg, "reports.dead").await == 1 }).await;
    assert_eq!(queue_len(&cfg, "reports.0").await, 0);
    a.stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), a.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_pool_shares_the_partitions_out_and_takes_over_from_a_worker_that_leaves_or_dies() {
    let db = TestDatabase::new().await;
    let store = db.store.clone();
    let (heartbeat, lease) = (Duration::from_millis(100), Duration::from_millis(600));
    let member = |name: &str| {
        let (assign, assigned) = watch::channel(BTreeSet::new());
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(workers::members::run(store.clone(), name.into(), assign, heartbeat, lease, shutdown));
        (assigned, stop, task)
    };
    let shares_are = |shares: Vec<&watch::Receiver<BTreeSet<u16>>>, sizes: Vec<usize>| {
        let held: Vec<BTreeSet<u16>> = shares.iter().map(|s| s.borrow().clone()).collect();
        let all: BTreeSet<u16> = held.iter().flatten().copied().collect();
        let total: usize = held.iter().map(BTreeSet::len).sum();
        held.iter().map(BTreeSet::len).collect::<Vec<_>>() == sizes
            && total == usize::from(REPORT_PARTITIONS)
            && all.len() == total
    };

    let (a, stop_a, task_a) = member("worker-a");
    wait_for("a alone to hold every partition", || async { shares_are(vec![&a], vec![16]) }).await;
    let (b, stop_b, task_b) = member("worker-b");
    wait_for("a and b to share", || async { shares_are(vec![&a, &b], vec![8, 8]) }).await;
    let (c, stop_c, task_c) = member("worker-c");
    wait_for("three to share", || async { shares_are(vec![&a, &b, &c], vec![6, 5, 5]) }).await;

    // b stops: it leaves the pool at once.
    stop_b.send_replace(true);
    task_b.await.unwrap();
    assert!(b.borrow().is_empty(), "a stopped worker lets go of everything");
    wait_for("a and c to share", || async { shares_are(vec![&a, &c], vec![8, 8]) }).await;

    // c dies (no goodbye): its lease runs out and a takes everything.
    task_c.abort();
    let _ = stop_c;
    wait_for("a to hold every partition again", || async { shares_are(vec![&a], vec![16]) }).await;

    stop_a.send_replace(true);
    task_a.await.unwrap();
    let left = db.store.worker_heartbeat("observer", lease).await.unwrap();
    assert_eq!(left, vec!["observer".to_string()], "a left the pool; c's row is past its lease");
}

/// Fails every message with "the dependency is away" until it has failed `away_times` times,
/// then takes everything; records (body, attempt) of every delivery it sees.
struct Away {
    away_times: usize,
    seen: Arc<Mutex<Vec<(String, u32)>>>,
}

impl Handler for Away {
    async fn handle(&self, ctx: &DeliveryCtx<'_>) -> Disposition {
        let mut seen = self.seen.lock().await;
        seen.push((String::from_utf8_lossy(&ctx.delivery.data).to_string(), ctx.attempt));
        if seen.len() <= self.away_times { Disposition::RetryLater("database away".into()) } else { Disposition::Ack }
    }
}

/// A message that fails because a dependency is away is retried for as long as it takes:
/// more times than a failing message may be (`MAX_ATTEMPTS`), without counting attempts, in
/// place, and never dead-lettered.
#[tokio::test]
async fn a_message_failing_on_a_dependency_is_retried_past_the_attempt_limit_and_never_dead_lettered() {
    let tb = TestBus::new();
    let cfg = tb.config.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let away_times = bus::MAX_ATTEMPTS as usize + 2;
    let (assign, assigned) = watch::channel([0u16].into_iter().collect::<BTreeSet<u16>>());
    let (stop, shutdown) = watch::channel(false);
    let handler = Arc::new(Away { away_times, seen: seen.clone() });
    let task = tokio::spawn(bus::consume_partitions(cfg.clone(), WorkQueue::Reports, handler, 8, assigned, shutdown));
    let publisher = Publisher::new(cfg.clone());
    let messages: Vec<Outgoing> = ["first", "second"].iter().map(|b| to_partition(&cfg, 0, b.to_string())).collect();
    publisher.publish(&messages).await.unwrap();
    wait_for("both messages taken", || async { seen.lock().await.len() == away_times + 2 }).await;
    let seen = seen.lock().await.clone();
    let expected: Vec<(String, u32)> =
        std::iter::repeat_n(("first".to_string(), 1), away_times + 1).chain([("second".to_string(), 1)]).collect();
    assert_eq!(seen, expected, "retried in place, every attempt counted as the first, nothing overtaking it");
    assert_eq!(queue_len(&cfg, "reports.dead").await, 0, "nothing dead-lettered");
    assert_eq!(queue_len(&cfg, "reports.0").await, 0);
    drop(assign);
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}
