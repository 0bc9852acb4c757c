//! The watcher of the commands' dead letters (`workers::dead_letters::DeadCommands`).

use bus::DeadLetterHandler;
use schema::bus::Command;
use schema::time::now_ms;
use store::NewCommand;
use store::testing::TestDatabase;
use workers::dead_letters::DeadCommands;

use crate::support::dump::{Dump, Table, assert_same, dump};
use crate::support::{Message, Step, apply, build, envelope, id, once_in_order, stage, twice_shuffled};

/// A dead letter: the message's body and why it died (the watcher reads the reason from the
/// message's headers: `None` when it has none).
type DeadLetter = (Vec<u8>, Option<&'static str>);

/// Commands in every state the watcher can meet, and the dead letters it is handed: commands
/// the API recorded that were never applied, applied ones, a refused one, one the API never
/// recorded, bodies that are not envelopes and one that is not JSON.
async fn dead_letters() -> (TestDatabase, Vec<DeadLetter>) {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let now = now_ms();
    stage(s, "web", "prod", "web", 1, now).await;
    let b = build(s, "web", "d0d0d0d0d0", now).await;
    let deploy = |command_id: &str, build| {
        envelope(
            command_id,
            now,
            Command::CreateDeployV1 { env_name: id("web"), stage_name: id("prod"), build_id: build, description: None },
        )
    };
    let done = deploy("done", b.id.clone());
    apply(s, &done, now).await;
    let refused = deploy("refused", id("missing_0000000"));
    assert!(matches!(s.apply_command(&refused, now).await.unwrap(), schema::bus::CommandOutcome::Err { .. }));
    let pending: Vec<_> =
        ["pending-1", "pending-2", "pending-3", "pending-4"].iter().map(|c| deploy(c, b.id.clone())).collect();
    for p in &pending {
        let payload = serde_json::to_value(p).unwrap();
        s.insert_command(NewCommand { id: &p.id, kind: p.command.kind(), operator: "alice", payload, now })
            .await
            .unwrap();
    }
    let json = |e| serde_json::to_vec(e).unwrap();
    let letters = vec![
        (json(&pending[0]), Some("command pending-1: apply failed: boom")),
        (json(&pending[1]), Some("dead-lettered by the broker: delivery_limit")),
        (json(&pending[2]), None),
        (json(&done), Some("dead-lettered by the broker: delivery_limit")),
        (json(&refused), Some("command refused: apply failed: boom")),
        (json(&deploy("unrecorded", b.id.clone())), Some("command unrecorded: apply failed: boom")),
        (br#"{"id":"pending-4","command":"garbled"}"#.to_vec(), Some("undecodable command")),
        (br#"{"id":"nowhere"}"#.to_vec(), Some("undecodable command")),
        (b"{nope".to_vec(), Some("undecodable command")),
    ];
    (db, letters)
}

/// What the watcher changes. Left out: `finished_at`, the watcher's clock when it marked the
/// command (a command marked at another moment is marked the same).
const COMMAND_TABLE: &[Table] =
    &[Table { name: "commands", query: "SELECT * FROM commands", drop: &["finished_at"], drop_nested: &[] }];

/// Hands each step's dead letters to the handler at once, as the watcher does with its
/// prefetch; one it cannot record (`Err`) comes back after the rest, as the watcher requeues it.
async fn watch(handler: &DeadCommands, letters: &[DeadLetter], steps: &[Step]) {
    let mut queue: std::collections::VecDeque<Step> = steps.iter().cloned().collect();
    while let Some(step) = queue.pop_front() {
        let handled = step.iter().map(|&i| handler.dead(&letters[i].0, letters[i].1));
        for (&i, outcome) in step.iter().zip(futures_util::future::join_all(handled).await) {
            if outcome.is_err() {
                queue.push_back(vec![i]);
            }
        }
    }
}

async fn dump_commands(db: &TestDatabase) -> Dump {
    dump(db, COMMAND_TABLE, &[]).await
}

/// Dead letters watched twice and in any order (a third of them twice at once) leave the
/// commands as watching each once in order does, exactly but for the time of marking: a
/// PENDING command ends FAILED `dead_lettered` with the reason of its dead letter, one the API
/// never recorded is recorded FAILED, a DONE or FAILED command keeps its outcome, and what is
/// not a command changes nothing. Every copy of a dead letter carries the same reason, so
/// which copy marks the command does not matter (two different dead letters of one command,
/// say its handler's and the broker's, would leave the reason of the first watched: the
/// design keeps the first final state).
#[tokio::test]
async fn dead_letters_watched_twice_out_of_order_end_as_watched_once_in_order() {
    let (base, letters) = dead_letters().await;
    let messages: Vec<Message> = letters.iter().map(|(body, _)| Message::free(body.clone())).collect();

    let once = base.fork().await;
    watch(&DeadCommands::new(once.store.clone()), &letters, &once_in_order(&messages)).await;
    let expected = dump_commands(&once).await;
    // Not vacuous: what each dead letter did, in order.
    let status = |command: &str| {
        let row = expected.0["commands"].iter().find(|r| r.contains(&format!(r#""command_id":"{command}""#)));
        let row: serde_json::Value = serde_json::from_str(row.expect("the command")).unwrap();
        (row["status"].as_str().unwrap().to_string(), row["error"]["code"].as_str().unwrap_or("").to_string())
    };
    for command in ["pending-1", "pending-2", "pending-3", "pending-4", "unrecorded"] {
        assert_eq!(status(command), ("FAILED".into(), "dead_lettered".into()), "{command}");
    }
    assert_eq!(status("done"), ("DONE".into(), String::new()));
    assert_eq!(status("refused"), ("FAILED".into(), "not_found".into()));
    assert_eq!(expected.0["commands"].len(), 7, "nothing recorded for what is not a command");

    for seed in crate::support::seeds() {
        let twice = base.fork().await;
        watch(&DeadCommands::new(twice.store.clone()), &letters, &twice_shuffled(&messages, seed, 33)).await;
        assert_same(&expected, &dump_commands(&twice).await, &format!("dead letters, seed {seed}"));
    }
}
