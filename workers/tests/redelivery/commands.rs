//! The commands consumer (`workers::commands::CommandHandler`).

use bus::WorkQueue;
use bus::testing::TestBus;
use schema::bus::{AgentUpdate, Command, Heartbeat};
use schema::model::Deploy;
use schema::time::now_ms;
use schema::{AgentState, AgentStatus, DeployAction, DeployStage};
use store::testing::TestDatabase;
use workers::commands::CommandHandler;

use crate::support::dump::{Dump, Table, assert_same, dump};
use crate::support::{
    Conduit, Message, apply, batch, build, envelope, facts, id, once_in_order, record, seeds, stage, twice_shuffled,
    update,
};

/// Two stages with hosts serving a first deploy that succeeded, and the commands two people
/// send them, one stage each: in the order they sent them, each after the reply to the one
/// before (so each command's first delivery follows the one before it on its stage).
async fn commands_over_two_stages() -> (TestDatabase, Vec<Message>) {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let now = now_ms();
    let prod = stage(s, "web", "prod", "web", 1, now).await;
    let canary = stage(s, "web", "canary", "canary", 2, now).await;
    let b0 = build(s, "web", "a0a0a0a0a0", now).await;
    let b1 = build(s, "web", "b1b1b1b1b1", now).await;
    let b2 = build(s, "web", "c2c2c2c2c2", now).await;
    let first = |stage: &str| Command::CreateDeployV1 {
        env_name: id("web"),
        stage_name: id(stage),
        build_id: b0.id.clone(),
        description: None,
    };
    let d0: Deploy = serde_json::from_value(apply(s, &envelope("setup-prod", now, first("prod")), now).await).unwrap();
    let k0: Deploy =
        serde_json::from_value(apply(s, &envelope("setup-canary", now, first("canary")), now).await).unwrap();
    // Every host serves the first deploy of its stage, which then succeeds.
    let serving = |host: &str, env, deploy| {
        update(host, env, record(deploy, DeployStage::ServingBuild, AgentStatus::Succeeded), 0, now)
    };
    let hosts = ["w1", "w2", "w3"].map(|h| facts(h, "web", "1.0", now));
    let canaries = ["k1", "k2"].map(|h| facts(h, "canary", "1.0", now));
    let mut agents: Vec<AgentUpdate> = ["w1", "w2", "w3"].iter().map(|h| serving(h, &prod.id, &d0.id)).collect();
    agents.extend(["k1", "k2"].iter().map(|h| serving(h, &canary.id, &k0.id)));
    let mut b = batch(hosts.into_iter().chain(canaries).collect(), agents, now);
    b.heartbeats = vec![Heartbeat { host_id: id("w1"), at: now }];
    s.apply_report_batch(&b).await.unwrap();
    s.refresh_stage(&prod.id, now).await.unwrap();
    s.refresh_stage(&canary.id, now).await.unwrap();

    let act = |stage: &str, action: DeployAction, from: Option<&Deploy>, mark_bad: bool| Command::DeployActionV1 {
        env_name: id("web"),
        stage_name: id(stage),
        action,
        from_deploy_id: from.map(|d| d.id.clone()),
        to_deploy_id: None,
        description: Some(format!("{action} by hand")),
        mark_bad,
    };
    let on = |stage: &str, action: DeployAction| act(stage, action, None, false);
    let hosts = |stage: &str, action: AgentState, hosts: &[&str]| Command::HostActionV1 {
        env_name: id("web"),
        stage_name: id(stage),
        action,
        host_ids: hosts.iter().map(|h| id(h)).collect(),
    };
    let prod_commands = vec![
        Command::CreateDeployV1 {
            env_name: id("web"),
            stage_name: id("prod"),
            build_id: b1.id.clone(),
            description: Some("b1".into()),
        },
        on("prod", DeployAction::Pause),
        hosts("prod", AgentState::PausedByUser, &["w2"]),
        on("prod", DeployAction::Resume),
        hosts("prod", AgentState::Normal, &["w2"]),
        Command::UpdateDeployV1 {
            deploy_id: d0.id.clone(),
            acceptance_status: None,
            description: Some("the last good one".into()),
        },
        // Refused (no such build): the refusal is the outcome, stored once.
        Command::CreateDeployV1 {
            env_name: id("web"),
            stage_name: id("prod"),
            build_id: id("missing_0000000"),
            description: None,
        },
        on("prod", DeployAction::Rollback),
        hosts("prod", AgentState::Reset, &["w3"]),
        on("prod", DeployAction::Restart),
        Command::StopHostsV1 { env_name: id("web"), stage_name: id("prod"), host_ids: vec![id("w1")], replace: true },
        Command::ResetFailedV1 { env_name: id("web"), stage_name: id("prod"), deploy_id: d0.id.clone() },
    ];
    let canary_commands = vec![
        Command::CreateDeployV1 {
            env_name: id("web"),
            stage_name: id("canary"),
            build_id: b2.id.clone(),
            description: None,
        },
        on("canary", DeployAction::Pause),
        hosts("canary", AgentState::PausedByUser, &["k2"]),
        on("canary", DeployAction::Resume),
        act("canary", DeployAction::Rollback, None, true),
        // Refused while the build is marked bad? Either way, its outcome is stored once.
        Command::CreateDeployV1 {
            env_name: id("web"),
            stage_name: id("canary"),
            build_id: b2.id.clone(),
            description: None,
        },
        act("canary", DeployAction::Promote, Some(&d0), false),
        hosts("canary", AgentState::Reset, &["k1"]),
    ];
    // One valid order of the two conversations: alternating.
    let mut messages = Vec::new();
    let (mut last_prod, mut last_canary) = (None, None);
    let mut prod_commands = prod_commands.into_iter().enumerate();
    let mut canary_commands = canary_commands.into_iter().enumerate();
    loop {
        let mut sent = false;
        for (name, commands, last) in [
            ("prod", &mut prod_commands as &mut dyn Iterator<Item = (usize, Command)>, &mut last_prod),
            ("canary", &mut canary_commands, &mut last_canary),
        ] {
            if let Some((n, command)) = commands.next() {
                let body = serde_json::to_vec(&envelope(&format!("{name}-{n:02}"), now, command)).unwrap();
                messages.push(Message { body, after: last.iter().copied().collect() });
                *last = Some(messages.len() - 1);
                sent = true;
            }
        }
        if !sent {
            break;
        }
    }
    (db, messages)
}

/// What commands change, canonical. Left out, because they are the worker's clock at the
/// moment it applied a command (and a command applied at another moment is the same command):
/// commands' `created_at`, `finished_at`; deploys' `start_date`, `last_update`, `suc_date`
/// (also inside the deploys that results and history rows show: `startDate`, `lastUpdateDate`,
/// `successDate`); stages' `last_update`; records' `start_date`, `stage_start_date`,
/// `last_update`; hosts' `last_update`; history's `at`; tags' `created_date`; the outbox's
/// `created_at`, `leased_until` and its events' `at`; the steps' `at`. Left out because they are generated:
/// history's `id` and the outbox's `id` (sequences, numbered in the order the two stages'
/// commands interleaved: the rows are compared as sets, and each stage's order by its
/// versions), the steps' `seq` (each record's steps are compared in that order) and tags'
/// `tag_id` (random; a tag is its target and value). Deploy ids are random too: each is
/// replaced by the id of the command that made it.
const COMMAND_TABLES: &[Table] = &[
    Table { name: "commands", query: "SELECT * FROM commands", drop: &["created_at", "finished_at"], drop_nested: DEPLOY_TIMES },
    Table {
        name: "deploys",
        query: "SELECT * FROM deploys",
        drop: &["start_date", "last_update", "suc_date"],
        drop_nested: &[],
    },
    Table { name: "environs", query: "SELECT * FROM environs", drop: &["last_update"], drop_nested: &[] },
    Table {
        name: "agents",
        query: "SELECT * FROM agents",
        drop: &["start_date", "stage_start_date", "last_update"],
        drop_nested: &[],
    },
    Table { name: "hosts", query: "SELECT * FROM hosts", drop: &["last_update"], drop_nested: &[] },
    Table { name: "history", query: "SELECT * FROM history", drop: &["id", "at"], drop_nested: DEPLOY_TIMES },
    Table { name: "tags", query: "SELECT * FROM tags", drop: &["tag_id", "created_date"], drop_nested: &[] },
    Table { name: "promotes", query: "SELECT * FROM promotes", drop: &["last_update"], drop_nested: &[] },
    Table {
        name: "outbox",
        query: "SELECT * FROM outbox",
        drop: &["id", "created_at", "leased_until"],
        drop_nested: &["startDate", "lastUpdateDate", "successDate", "at"],
    },
    Table {
        name: "agent_steps",
        query: "SELECT host_id, env_id, jsonb_agg(jsonb_build_array(deploy_id, deploy_stage, state, status, err_no, operator)
                ORDER BY seq) AS steps FROM agent_steps GROUP BY host_id, env_id",
        drop: &[],
        drop_nested: &[],
    },
];

const DEPLOY_TIMES: &[&str] = &["startDate", "lastUpdateDate", "successDate"];

/// Each deploy a command made, labelled with the command's id.
async fn deploy_labels(db: &TestDatabase) -> Vec<(String, String)> {
    let client = db.client().await;
    let rows = client
        .query("SELECT d.deploy_id, c.command_id FROM deploys d JOIN commands c ON c.result->>'id' = d.deploy_id", &[])
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), format!("<deploy of {}>", r.get::<_, String>(1)))).collect()
}

async fn dump_commands(db: &TestDatabase) -> Dump {
    let labels = deploy_labels(db).await;
    dump(db, COMMAND_TABLES, &labels).await
}

/// Commands delivered twice and out of order leave the database as single in-order delivery
/// does, exactly (the columns the comparison leaves out are the worker's clock and generated
/// ids: see `COMMAND_TABLES`). The order is the one the API makes possible: a person sends a
/// command after the reply to the one before (`Idempotency-Key` retries aside), so a command's
/// first delivery comes after the first delivery of the one before it on its stage; the two
/// stages' commands interleave freely, and every second copy comes at any later time, a fifth
/// of them while the first copy is being applied by another worker. Each command is applied
/// once (refusals included: a refusal is stored and answered again), whatever came between
/// its two copies.
#[tokio::test]
async fn commands_delivered_twice_out_of_order_end_as_delivered_once_in_order() {
    let tb = TestBus::new();
    let (base, messages) = commands_over_two_stages().await;
    let conduit = Conduit::open(&tb.config, WorkQueue::Commands).await;

    let once = base.fork().await;
    let handler = CommandHandler::new(once.store.clone());
    conduit.deliver(&handler, &messages, &once_in_order(&messages), async || {}).await;
    let expected = dump_commands(&once).await;
    // Not vacuous: every command was applied or refused, the rollout moved.
    let done = &expected.0["commands"];
    assert_eq!(done.len(), messages.len() + 2, "every command recorded");
    assert!(done.iter().filter(|c| c.contains(r#""status":"FAILED""#)).count() >= 1, "a refusal among them");
    assert!(expected.0["deploys"].len() >= 7, "deploys made: {:?}", expected.0["deploys"]);

    for seed in seeds() {
        let twice = base.fork().await;
        let handler = CommandHandler::new(twice.store.clone());
        let schedule = twice_shuffled(&messages, seed, 20);
        conduit.deliver(&handler, &messages, &schedule, async || {}).await;
        assert_same(&expected, &dump_commands(&twice).await, &format!("commands, seed {seed}"));
    }
}
