//! Helpers shared by the store's tests.
#![allow(dead_code)]

use schema::bus::{AgentUpdate, ChangeMessage, Command, CommandEnvelope, CommandOutcome};
use schema::model::{ArtifactPolicy, Build, BuildInput, Deploy, Environ, EnvironInput};
use schema::rules::goal::AgentRecord;
use schema::{AgentStatus, BuildId, DeployId, DeployStage, EnvId};
use store::{Exchange, Store};

pub const NOW: i64 = 1_800_000_000_000;

pub fn id<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s.to_string()).unwrap()
}

pub async fn stage(store: &Store, env: &str, stage: &str, json: &str) -> Environ {
    let mut input: EnvironInput = serde_json::from_str(json).unwrap();
    input.env_name = Some(env.into());
    input.stage_name = Some(stage.into());
    let e = Environ::create(EnvId::generate(), input, "alice", NOW).unwrap();
    store.create_stage(&e).await.unwrap();
    e
}

pub async fn build(store: &Store, name: &str) -> Build {
    let input: BuildInput = serde_json::from_value(serde_json::json!({
        "name": name, "artifactUrl": "https://a/x.tgz", "repo": "org/x", "branch": "main", "commit": "abcdef1234"
    }))
    .unwrap();
    let b = Build::publish(input, &ArtifactPolicy::permissive(), "ci", NOW).unwrap();
    store.insert_build(&b).await.unwrap();
    b
}

pub fn deploy_command(cmd_id: &str, env: &str, stage: &str, build: &BuildId) -> CommandEnvelope {
    CommandEnvelope {
        request_id: None,
        id: cmd_id.into(),
        attempt: 1,
        issued_at: NOW,
        operator: "alice".into(),
        command: Command::CreateDeployV1 {
            env_name: id(env),
            stage_name: id(stage),
            build_id: build.clone(),
            description: Some("test".into()),
        },
    }
}

pub async fn deploy(store: &Store, cmd_id: &str, env: &str, stage: &str, build: &BuildId, now: i64) -> Deploy {
    match store.apply_command(&deploy_command(cmd_id, env, stage, build), now).await.unwrap() {
        CommandOutcome::Ok { result } => serde_json::from_value(result).unwrap(),
        CommandOutcome::Err { error } => panic!("deploy refused: {error}"),
    }
}

pub fn update(host: &str, env: &EnvId, record: AgentRecord, at: i64) -> AgentUpdate {
    AgentUpdate {
        host_id: id(host),
        host_name: id(host),
        env_id: env.clone(),
        at,
        record: Some(record),
        control_seq: 0,
        error_message: None,
    }
}

pub fn serving(deploy: &DeployId) -> AgentRecord {
    AgentRecord {
        stage: DeployStage::ServingBuild,
        status: AgentStatus::Succeeded,
        ..AgentRecord::fresh(deploy.clone(), false)
    }
}

pub async fn changes(store: &Store) -> Vec<ChangeMessage> {
    let msgs = store.lease_outbox(1000, std::time::Duration::from_secs(60)).await.unwrap();
    store.delete_outbox(&msgs.iter().map(|m| m.id).collect::<Vec<_>>()).await.unwrap();
    msgs.into_iter()
        .filter(|m| m.exchange == Exchange::Changes)
        .map(|m| serde_json::from_value(m.payload).unwrap())
        .collect()
}
