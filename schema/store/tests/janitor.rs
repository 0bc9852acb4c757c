//! The host janitor on a real Postgres, with the clock passed in: silent hosts become
//! UNREACHABLE and free their slot (the next host is admitted at once), longer silence
//! forgets them, hosts marked for termination are forgotten once stopped and silent, and a
//! host that was heard of meanwhile is left alone.

mod common;

use common::{NOW, build, changes, deploy, id, serving, stage, update};
use schema::bus::{ChangeMessage, Command, CommandEnvelope, Heartbeat, HostFacts, ReportBatch};
use schema::rules::goal::AgentRecord;
use schema::{AgentState, AgentStatus, CapacityType, DeployStage, EnvId, HostId};
use store::Store;
use store::testing::TestDatabase;

const SEC: i64 = 1000;
const MIN_STALE: i64 = 150 * SEC;
const MAX_STALE: i64 = 600 * SEC;

fn facts(host: &str, at: i64) -> HostFacts {
    HostFacts {
        host_id: id(host),
        host_name: id(host),
        ip: None,
        groups: vec![id("g")],
        agent_version: "test".into(),
        autoscaling_group: None,
        availability_zone: None,
        tags: Default::default(),
        seen_at: at,
    }
}

fn beat(host: &str, at: i64) -> Heartbeat {
    Heartbeat { host_id: id(host), at }
}

/// Hosts that serve `record` on `env`, heard of at `at`.
async fn report(store: &Store, env: &EnvId, hosts: &[&str], record: &AgentRecord, at: i64) {
    let batch = ReportBatch {
        gateway: "test".into(),
        sent_at: at,
        hosts: hosts.iter().map(|h| facts(h, at)).collect(),
        agents: hosts.iter().map(|h| update(h, env, record.clone(), at)).collect(),
        heartbeats: hosts.iter().map(|h| beat(h, at)).collect(),
    };
    store.apply_report_batch(&batch).await.unwrap();
}

async fn count(db: &TestDatabase, query: &str, host: &str) -> i64 {
    db.client().await.query_one(query, &[&host]).await.unwrap().get(0)
}

fn records_of<'a>(changes: &'a [ChangeMessage], host: &str) -> Vec<&'a Option<AgentRecord>> {
    changes
        .iter()
        .flat_map(|c| match c {
            ChangeMessage::AgentsV1 { agents, .. } => agents.iter().collect::<Vec<_>>(),
            ChangeMessage::StageV1 { .. }
            | ChangeMessage::HostsForgottenV1 { .. }
            | ChangeMessage::HostCredentialV1 { .. }
            | ChangeMessage::TokensV1 {} => Vec::new(),
        })
        .filter(|a| a.host_id.as_str() == host)
        .map(|a| &a.record)
        .collect()
}

#[tokio::test]
async fn a_silent_host_frees_its_slot_then_is_forgotten() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":1}"#).await;
    s.set_capacity(&e.env_name, &e.stage_name, CapacityType::Group, &["g".into()], "alice", NOW).await.unwrap();
    let (b1, b2) = (build(s, "web").await, build(s, "web").await);
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    report(s, &e.id, &["h1", "h2", "h3"], &serving(&d1.id), NOW).await;
    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + SEC).await;
    let on_d2 = |agents: &[schema::model::Agent]| -> Vec<String> {
        agents.iter().filter(|a| a.deploy_id == d2.id).map(|a| a.host_id.as_str().to_string()).collect()
    };
    let admitted = on_d2(&s.agents_of_stage(&e.id).await.unwrap());
    assert_eq!(admitted.len(), 1, "the cap is 1");
    let silent = admitted[0].clone();
    let others: Vec<&str> = ["h1", "h2", "h3"].into_iter().filter(|h| *h != silent).collect();

    // The others keep pinging; the admitted host says nothing more.
    let t = NOW + 200 * SEC;
    s.record_heartbeats(&others.iter().map(|h| beat(h, t)).collect::<Vec<_>>()).await.unwrap();
    changes(s).await;
    assert_eq!(s.mark_silent_hosts(t - MIN_STALE, t, 1000).await.unwrap(), 1);
    let agents = s.agents_of_stage(&e.id).await.unwrap();
    let gone = agents.iter().find(|a| a.host_id.as_str() == silent).unwrap();
    assert_eq!(gone.state, AgentState::Unreachable);
    assert_eq!(gone.last_operator, store::JANITOR);
    let logged = s.host_steps(&gone.host_name, None, 1).await.unwrap();
    assert_eq!((logged[0].state, logged[0].operator.as_str()), (AgentState::Unreachable, store::JANITOR), "logged");
    let now_on_d2 = on_d2(&agents);
    assert_eq!(now_on_d2.len(), 2, "its slot went to the next host at once: {agents:?}");
    let next = now_on_d2.iter().find(|h| **h != silent).unwrap();
    let announced = changes(s).await;
    assert!(
        records_of(&announced, &silent).iter().any(|r| r.as_ref().is_some_and(|r| r.state == AgentState::Unreachable)),
        "the gateways are told: {announced:?}"
    );
    assert!(!records_of(&announced, next).is_empty(), "the admission is announced too");
    assert_eq!(s.mark_silent_hosts(t - MIN_STALE, t, 1000).await.unwrap(), 0, "a second run changes nothing");
    let d = s.deploy(&d2.id).await.unwrap();
    assert_eq!((d.total, d.success_total), (3, 0), "a silent host counts as not done");

    // Past the second threshold it is forgotten; the others were heard of since.
    let t2 = NOW + 700 * SEC;
    let f = s.remove_silent_hosts(t2 - MAX_STALE, 1000).await.unwrap();
    assert_eq!((f.hosts, f.records), (1, 1));
    assert_eq!(f.stages.iter().collect::<Vec<_>>(), [&e.id], "the stage to re-evaluate");
    s.refresh_stage(&e.id, t2).await.unwrap();
    assert_eq!(s.agents_of_stage(&e.id).await.unwrap().len(), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM hosts WHERE host_id = $1", &silent).await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM host_groups WHERE host_id = $1", &silent).await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM host_heartbeats WHERE host_id = $1", &silent).await, 0);
    let announced = changes(s).await;
    assert_eq!(records_of(&announced, &silent), [&None], "its record's removal is announced");
    assert!(
        announced.iter().any(|c| matches!(c, ChangeMessage::HostsForgottenV1 { host_ids } if host_ids.iter().any(|h| h.as_str() == silent))),
        "and the host's: gateways publish it again when it comes back"
    );
    assert_eq!(s.deploy(&d2.id).await.unwrap().total, 2, "the deploy no longer waits for it");

    // Back again: it is a host like any other (its report creates its record).
    report(s, &e.id, &[silent.as_str()], &serving(&d1.id), t2 + SEC).await;
    assert_eq!(s.agents_of_stage(&e.id).await.unwrap().len(), 3);
    assert_eq!(count(&db, "SELECT count(*) FROM hosts WHERE host_id = $1", &silent).await, 1);
}

#[tokio::test]
async fn silence_spares_held_hosts_and_hosts_heard_of_meanwhile() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":5}"#).await;
    let b1 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    report(s, &e.id, &["held", "quiet", "chatty"], &serving(&d1.id), NOW).await;
    let hold = CommandEnvelope {
        request_id: None,
        id: "hold".into(),
        attempt: 1,
        issued_at: NOW,
        operator: "alice".into(),
        command: Command::HostActionV1 {
            env_name: id("web"),
            stage_name: id("prod"),
            action: AgentState::PausedByUser,
            host_ids: vec![id("held")],
        },
    };
    s.apply_command(&hold, NOW).await.unwrap();
    // "chatty" sent a report later than the cutoff (which stores its heartbeat too).
    let t = NOW + 200 * SEC;
    let late = AgentRecord { status: AgentStatus::Succeeded, ..serving(&d1.id) };
    s.apply_report_batch(&ReportBatch {
        gateway: "t".into(),
        sent_at: t - SEC,
        agents: vec![update("chatty", &e.id, late, t - SEC)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.mark_silent_hosts(t - MIN_STALE, t, 1000).await.unwrap(), 1);
    let state =
        |agents: &[schema::model::Agent], h: &str| agents.iter().find(|a| a.host_id.as_str() == h).unwrap().state;
    let agents = s.agents_of_stage(&e.id).await.unwrap();
    assert_eq!(state(&agents, "quiet"), AgentState::Unreachable);
    assert_eq!(state(&agents, "held"), AgentState::PausedByUser, "an operator's hold survives silence");
    assert_eq!(state(&agents, "chatty"), AgentState::Normal, "a report proves a host alive");

    // Any report brings an unreachable host back to normal.
    let rec = AgentRecord { state: AgentState::Normal, ..serving(&d1.id) };
    let batch = ReportBatch {
        gateway: "t".into(),
        sent_at: t + SEC,
        agents: vec![schema::bus::AgentUpdate { control_seq: 1, ..update("quiet", &e.id, rec, t + SEC) }],
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();
    assert_eq!(state(&s.agents_of_stage(&e.id).await.unwrap(), "quiet"), AgentState::Normal);
}

#[tokio::test]
async fn stopped_hosts_are_finished_once_silent_and_host_capacity_shows_them_missing() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":5}"#).await;
    s.set_capacity(&e.env_name, &e.stage_name, CapacityType::Host, &["h1".into(), "h2".into()], "a", NOW)
        .await
        .unwrap();
    let b1 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    report(s, &e.id, &["h1", "h2"], &serving(&d1.id), NOW).await;
    let stop = CommandEnvelope {
        request_id: None,
        id: "stop".into(),
        attempt: 1,
        issued_at: NOW,
        operator: "alice".into(),
        command: Command::StopHostsV1 {
            env_name: id("web"),
            stage_name: id("prod"),
            host_ids: vec![id("h1"), id("h2")],
            replace: false,
        },
    };
    s.apply_command(&stop, NOW).await.unwrap();
    let t = NOW + 10 * SEC;
    // h1 ran STOPPING and went quiet; h2 stopped too but keeps pinging.
    let stopped = AgentRecord {
        stage: DeployStage::Stopped,
        status: AgentStatus::Succeeded,
        state: AgentState::Stop,
        ..AgentRecord::fresh(d1.id.clone(), false)
    };
    for h in ["h1", "h2"] {
        let u = schema::bus::AgentUpdate { control_seq: 1, ..update(h, &e.id, stopped.clone(), t) };
        s.apply_report_batch(&ReportBatch { gateway: "t".into(), sent_at: t, agents: vec![u], ..Default::default() })
            .await
            .unwrap();
    }
    let later = t + 200 * SEC;
    s.record_heartbeats(&[beat("h2", later)]).await.unwrap();
    assert_eq!(s.mark_silent_hosts(later - MIN_STALE, later, 1000).await.unwrap(), 0, "a stop survives silence");
    let f = s.finish_stopped_hosts(later - MIN_STALE, 1000).await.unwrap();
    assert_eq!((f.hosts, f.records), (1, 1));
    let agents = s.agents_of_stage(&e.id).await.unwrap();
    assert_eq!(agents.iter().map(|a| a.host_id.clone()).collect::<Vec<HostId>>(), [id::<HostId>("h2")]);
    let progress = s.stage_progress(&e.env_name, &e.stage_name).await.unwrap();
    assert_eq!(progress.missing_hosts, ["h1"], "a host named in HOST capacity stays listed, as missing");
}

#[tokio::test]
async fn every_host_a_report_mentions_gets_a_heartbeat() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let b1 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let batch = ReportBatch {
        gateway: "t".into(),
        sent_at: NOW,
        hosts: vec![facts("known", NOW + 5)],
        agents: vec![update("reporting", &e.id, serving(&d1.id), NOW + 7)],
        heartbeats: vec![],
    };
    s.apply_report_batch(&batch).await.unwrap();
    assert_eq!(db.last_seen("known").await, Some(NOW + 5));
    assert_eq!(db.last_seen("reporting").await, Some(NOW + 7), "the janitor finds silent hosts from heartbeats only");
}

#[tokio::test]
async fn a_pre_registered_host_becomes_active_when_it_pings_or_is_forgotten_if_it_never_does() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let new = |host: &str, group: &str| schema::model::NewHost {
        host_id: id(host),
        host_name: id(host),
        group_name: Some(id(group)),
        ip: None,
    };
    assert!(s.register_host(&new("p1", "g"), "provisioner", NOW).await.unwrap());
    assert!(s.register_host(&new("p2", "g"), "provisioner", NOW).await.unwrap());
    assert!(!s.register_host(&new("p1", "h"), "provisioner", NOW).await.unwrap(), "known: only the group is added");
    let other = schema::model::NewHost { host_name: id("p9"), ..new("p1", "g") };
    assert!(matches!(s.register_host(&other, "provisioner", NOW).await, Err(store::Error::Conflict(_))));
    let groups: Vec<_> = s.host_with_id(&id("p1")).await.unwrap().into_iter().map(|h| h.group_name).collect();
    assert_eq!(groups, [Some(id("g")), Some(id("h"))]);

    // p1 pings: ACTIVE, in the groups it reports.
    let batch = ReportBatch {
        hosts: vec![facts("p1", NOW + SEC)],
        heartbeats: vec![beat("p1", NOW + SEC)],
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();
    let p1 = s.host_with_id(&id("p1")).await.unwrap();
    assert_eq!(
        p1.iter().map(|h| (h.state, h.group_name.clone())).collect::<Vec<_>>(),
        [(schema::HostState::Active, Some(id("g")))]
    );

    // p2 never pings: forgotten once silent for the second threshold since it was registered
    // (The janitor passes `now - MAX_STALE`: here a time between the registration and p1's ping.)
    let f = s.remove_silent_hosts(NOW + SEC / 2, 1000).await.unwrap();
    assert_eq!(f.hosts, 1);
    assert!(s.host_with_id(&id("p2")).await.unwrap().is_empty());
    assert_eq!(s.host_with_id(&id("p1")).await.unwrap().len(), 1, "p1 pinged after");
}

#[tokio::test]
async fn a_host_lost_mid_deploy_does_not_hold_up_a_schedules_session() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallelPct":100}"#).await;
    let (b1, b2) = (build(s, "web").await, build(s, "web").await);
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let hosts = ["h1", "h2", "h3", "h4", "h5", "h6"];
    report(s, &e.id, &hosts, &serving(&d1.id), NOW).await;
    let input = schema::model::ScheduleInput {
        total_sessions: Some(2),
        host_numbers: Some("2,100%".into()),
        cooldown_times: Some("0,0".into()),
    };
    s.set_schedule(&e.env_name, &e.stage_name, input, "alice", NOW).await.unwrap();
    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + SEC).await;
    let on_d2 = |agents: &[schema::model::Agent]| -> Vec<String> {
        agents.iter().filter(|a| a.deploy_id == d2.id).map(|a| a.host_id.as_str().to_string()).collect()
    };
    let first = on_d2(&s.agents_of_stage(&e.id).await.unwrap());
    assert_eq!(first.len(), 2, "session 1 lets two hosts in");

    // One finishes; the other goes silent mid-deploy. The rest keep pinging.
    let t = NOW + 200 * SEC;
    let done = schema::bus::AgentUpdate { control_seq: 1, ..update(&first[0], &e.id, serving(&d2.id), t) };
    s.apply_report_batch(&ReportBatch { agents: vec![done], ..Default::default() }).await.unwrap();
    let others: Vec<&str> = hosts.into_iter().filter(|h| *h != first[1]).collect();
    s.record_heartbeats(&others.iter().map(|h| beat(h, t)).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(s.mark_silent_hosts(t - MIN_STALE, t, 1000).await.unwrap(), 1);
    // The session is over (its lost host counts as done with it), the cooldown of 0 minutes
    // too at the next evaluation: session 2 takes the rest, long before the lost host would be
    // forgotten.
    s.refresh_stage(&e.id, t + SEC).await.unwrap();
    s.refresh_stage(&e.id, t + 2 * SEC).await.unwrap();
    let sched = s.schedule(&e.env_name, &e.stage_name).await.unwrap().unwrap();
    assert_eq!(sched.current_session, 2, "{sched:?}");
    assert_eq!(on_d2(&s.agents_of_stage(&e.id).await.unwrap()).len(), 6, "every host is on the deploy");
}
