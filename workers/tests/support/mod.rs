//! What the redelivery tests share: seeded delivery schedules (every message twice, out of
//! order), a conduit that hands each message to a worker's handler the way the bus does, and
//! canonical dumps of a database's tables to compare two histories.
#![allow(dead_code)]

pub mod dump;

use std::time::Duration;

use bus::{BusConfig, DeliveryCtx, Disposition, Handler, WorkQueue};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use schema::bus::{AgentUpdate, Command, CommandEnvelope, CommandOutcome, HostFacts, ReportBatch};
use schema::model::{ArtifactPolicy, Build, BuildInput, Environ, EnvironInput};
use schema::rules::goal::AgentRecord;
use schema::time::EpochMs;
use schema::{AgentStatus, CapacityType, DeployId, DeployStage, EnvId};
use store::Store;

/// The seeds each test runs with; `REDELIVERY_SEED=<n>` runs that one alone (to replay a
/// failure: every assertion names its seed).
pub fn seeds() -> Vec<u64> {
    match std::env::var("REDELIVERY_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => vec![1, 2, 3, 4],
    }
}

/// A small seeded generator (SplitMix64): the same seed gives the same schedule on every
/// machine, without a dependency.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One message of a test's sequence, in the order a single in-order delivery applies them.
#[derive(Debug, Clone)]
pub struct Message {
    /// The body, as the producer publishes it.
    pub body: Vec<u8>,
    /// Messages whose first delivery must come before this one's: those it was caused by (a
    /// command sent after the reply to the one before; a report sent after the admission
    /// another report triggered). Indices into the sequence, all smaller than this one's.
    pub after: Vec<usize>,
}

impl Message {
    /// A message that may come in any order.
    pub fn free(body: Vec<u8>) -> Message {
        Message { body, after: Vec::new() }
    }
}

/// One step of a delivery schedule: the messages (indices) delivered at this point; two when
/// both copies of a message are handled at once (by two workers).
pub type Step = Vec<usize>;

/// Each message once, in order.
pub fn once_in_order(messages: &[Message]) -> Vec<Step> {
    (0..messages.len()).map(|i| vec![i]).collect()
}

/// Each message twice, in an order drawn from `seed`: at every point any copy that may come
/// next is equally likely, where a message's first copy may come once the first copies of its
/// `after` came, and its second copy any time after its first. With probability `together`
/// percent a second copy is handled at the same time as its first (a redelivery to another
/// worker while the first still works on it).
pub fn twice_shuffled(messages: &[Message], seed: u64, together: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut delivered = vec![0u8; messages.len()];
    let mut steps = Vec::with_capacity(messages.len() * 2);
    loop {
        let ready: Vec<usize> = (0..messages.len())
            .filter(|&i| match delivered[i] {
                0 => messages[i].after.iter().all(|&a| delivered[a] > 0),
                1 => true,
                _ => false,
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        let i = ready[rng.below(ready.len())];
        if delivered[i] == 0 && rng.below(100) < together {
            steps.push(vec![i, i]);
            delivered[i] = 2;
        } else {
            steps.push(vec![i]);
            delivered[i] += 1;
        }
    }
    assert!(delivered.iter().all(|&d| d == 2), "a message waits for one that never comes: {messages:?}");
    steps
}

/// Hands messages to a handler through the broker: each is published to its work queue as a
/// producer does and taken from it (`basic_get`), so the handler gets a real delivery on a
/// real channel, as the consumer loop (`bus::consume`) gives it.
pub struct Conduit {
    _conn: Connection,
    channel: Channel,
    cfg: BusConfig,
    queue: WorkQueue,
}

impl Conduit {
    /// A conduit to `queue` of the namespace `cfg` (its topology declared).
    pub async fn open(cfg: &BusConfig, queue: WorkQueue) -> Conduit {
        let conn = bus::connect(cfg).await.expect("the broker");
        let channel = conn.create_channel().await.expect("a channel");
        bus::declare_topology(&channel, cfg).await.expect("the topology");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        Conduit { _conn: conn, channel, cfg: cfg.clone(), queue }
    }

    /// Publishes `body` and takes it back from the queue.
    async fn fetch(&self, body: &[u8]) -> Delivery {
        self.channel
            .basic_publish(
                self.cfg.exchange(self.queue).as_str().into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await
            .expect("publish")
            .await
            .expect("the broker's confirm");
        let queue = self.cfg.name(self.queue.as_str());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(got) =
                self.channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.expect("basic_get")
            {
                assert_eq!(got.delivery.data, body, "the queue holds only what the test published");
                return got.delivery;
            }
            assert!(tokio::time::Instant::now() < deadline, "the message never reached {queue}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Delivers the messages of `steps` to `handler`, the copies of a step at once, and runs
    /// `after_each` after every step. A message the handler asks to have again (`Retry`,
    /// `RetryLater`) comes back after the rest, as from the bus's delay queue; one it
    /// dead-letters fails the test. Returns how many such retries there were.
    pub async fn deliver<H: Handler>(
        &self,
        handler: &H,
        messages: &[Message],
        steps: &[Step],
        mut after_each: impl AsyncFnMut(),
    ) -> usize {
        let mut queue: std::collections::VecDeque<Step> = steps.iter().cloned().collect();
        let mut retries = 0;
        while let Some(step) = queue.pop_front() {
            let mut deliveries = Vec::with_capacity(step.len());
            for &i in &step {
                deliveries.push((i, self.fetch(&messages[i].body).await));
            }
            let handled = deliveries.iter().map(|(_, d)| async {
                handler.handle(&DeliveryCtx { delivery: d, channel: &self.channel, attempt: 1 }).await
            });
            let dispositions = futures_util::future::join_all(handled).await;
            for ((i, d), disposition) in deliveries.iter().zip(dispositions) {
                d.acker.ack(BasicAckOptions::default()).await.expect("ack");
                match disposition {
                    Disposition::Ack => {}
                    Disposition::Retry(_) | Disposition::RetryLater(_) => {
                        retries += 1;
                        assert!(retries <= steps.len(), "a message is retried without end: {disposition:?}");
                        queue.push_back(vec![*i]);
                    }
                    Disposition::Dead(reason) => panic!("message {i} dead-lettered: {reason}"),
                }
            }
            after_each().await;
        }
        retries
    }
}

/// Who sends the tests' commands.
pub const OPERATOR: &str = "alice";

/// A validated id or name.
pub fn id<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s.to_string()).expect("a valid id")
}

/// A stage `env/stage` whose capacity is the host group `group`, at most `max_parallel` hosts
/// deploying at once.
pub async fn stage(s: &Store, env: &str, stage: &str, group: &str, max_parallel: u32, now: EpochMs) -> Environ {
    let input: EnvironInput = serde_json::from_value(serde_json::json!({
        "envName": env, "stageName": stage, "maxParallel": max_parallel,
    }))
    .expect("stage settings");
    let e = Environ::create(EnvId::generate(), input, OPERATOR, now).expect("a stage");
    s.create_stage(&e).await.expect("create the stage");
    s.set_capacity(&e.env_name, &e.stage_name, CapacityType::Group, &[group.to_string()], OPERATOR, now)
        .await
        .expect("its capacity");
    e
}

/// A build of `name` at `commit`, published.
pub async fn build(s: &Store, name: &str, commit: &str, now: EpochMs) -> Build {
    let input: BuildInput = serde_json::from_value(serde_json::json!({
        "name": name, "artifactUrl": format!("https://ci.example.com/{name}-{commit}.tgz"),
        "artifactSha256": "0".repeat(64), "repo": format!("org/{name}"), "branch": "main", "commit": commit,
    }))
    .expect("build input");
    let b = Build::publish(input, &ArtifactPolicy::permissive(), "ci", now).expect("a build");
    s.insert_build(&b).await.expect("publish the build");
    b
}

/// A command as the API sends it.
pub fn envelope(command_id: &str, issued_at: EpochMs, command: Command) -> CommandEnvelope {
    CommandEnvelope {
        request_id: Some(format!("req-{command_id}")),
        id: command_id.into(),
        attempt: 1,
        issued_at,
        operator: OPERATOR.into(),
        command,
    }
}

/// Applies a command of a test's setup; its result (it must be applied).
pub async fn apply(s: &Store, envelope: &CommandEnvelope, now: EpochMs) -> serde_json::Value {
    match s.apply_command(envelope, now).await.expect("apply a command") {
        CommandOutcome::Ok { result } => result,
        CommandOutcome::Err { error } => panic!("{} refused: {error}", envelope.id),
    }
}

/// A record on `deploy` at `stage` with `status`, as a gateway computes it.
pub fn record(deploy: &DeployId, stage: DeployStage, status: AgentStatus) -> AgentRecord {
    AgentRecord { stage, status, ..AgentRecord::fresh(deploy.clone(), false) }
}

/// What a gateway reports of `host` on `env` at `at`, knowing the record's `control_seq`.
pub fn update(host: &str, env: &EnvId, record: AgentRecord, control_seq: i64, at: EpochMs) -> AgentUpdate {
    AgentUpdate {
        host_id: id(host),
        host_name: id(host),
        env_id: env.clone(),
        at,
        record: Some(record),
        control_seq,
        error_message: None,
    }
}

/// A host's facts as its agent `version` reports them, in `group`.
pub fn facts(host: &str, group: &str, version: &str, seen_at: EpochMs) -> HostFacts {
    HostFacts {
        host_id: id(host),
        host_name: id(host),
        ip: Some(format!("10.0.0.{}", host.bytes().map(u32::from).sum::<u32>() % 250)),
        groups: vec![id(group)],
        agent_version: version.into(),
        autoscaling_group: Some(format!("{group}-asg")),
        availability_zone: Some("us-east-1a".into()),
        tags: [("zone".to_string(), "a".to_string())].into(),
        seen_at,
    }
}

/// A batch of a gateway's.
pub fn batch(hosts: Vec<HostFacts>, agents: Vec<AgentUpdate>, sent_at: EpochMs) -> ReportBatch {
    ReportBatch { gateway: "gw-1".into(), sent_at, hosts, agents, heartbeats: Vec::new() }
}
