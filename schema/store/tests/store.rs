//! The store against a real Postgres, one fresh database per test.

use schema::bus::{AgentUpdate, ChangeMessage, CommandOutcome, Heartbeat, HostFacts, ReportBatch};
use schema::model::Environ;
use schema::rules::admission::waits_for_admission;
use schema::rules::goal::AgentRecord;
use schema::{AcceptanceStatus, AgentState, AgentStatus, CapacityType, DeployId, DeployStage, DeployState, EnvId};
use store::testing::TestDatabase;

mod common;

use common::{NOW, build, changes, deploy, deploy_command, id, serving, stage, update};

#[tokio::test]
async fn stages_are_created_read_updated_and_deleted() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    assert_eq!(s.stage(&id("web"), &id("prod")).await.unwrap(), e);
    let dup = Environ::create(
        EnvId::generate(),
        serde_json::from_str(r#"{"envName":"web","stageName":"prod"}"#).unwrap(),
        "a",
        NOW,
    )
    .unwrap();
    assert!(matches!(s.create_stage(&dup).await, Err(store::Error::Conflict(_))));

    let updated = s
        .update_stage(&id("web"), &id("prod"), serde_json::from_str(r#"{"maxParallel":3}"#).unwrap(), "bob", NOW + 1)
        .await
        .unwrap();
    assert_eq!((updated.max_parallel, updated.last_operator.as_str()), (3, "bob"));
    assert_eq!(s.stage(&id("web"), &id("prod")).await.unwrap(), updated);

    s.set_capacity(&id("web"), &id("prod"), CapacityType::Group, &["g1".into()], "bob", NOW).await.unwrap();
    assert!(
        matches!(s.delete_stage(&id("web"), &id("prod"), "alice", 1).await, Err(store::Error::Conflict(_))),
        "capacity left"
    );
    s.set_capacity(&id("web"), &id("prod"), CapacityType::Group, &[], "bob", NOW).await.unwrap();
    s.delete_stage(&id("web"), &id("prod"), "alice", 1).await.unwrap();
    assert!(matches!(s.stage(&id("web"), &id("prod")).await, Err(store::Error::NotFound(_))));

    // Every change was announced to the gateways, in version order, ending with the deletion.
    let versions: Vec<i64> = changes(s).await.iter().filter_map(|c| c.stage_version()).map(|(_, v)| v).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(versions.len(), 5);
}

#[tokio::test]
async fn a_deploy_retires_the_previous_one_and_admits_within_the_cap() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallel":2}"#).await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    assert_eq!(d1.state, DeployState::Running);

    // Five hosts serve d1.
    let batch = ReportBatch {
        agents: (1..=5).map(|i| update(&format!("h{i}"), &e.id, serving(&d1.id), NOW + 10)).collect(),
        heartbeats: (1..=5).map(|i| Heartbeat { host_id: id(&format!("h{i}")), at: NOW + 10 }).collect(),
        ..Default::default()
    };
    let applied = s.apply_report_batch(&batch).await.unwrap();
    assert_eq!(applied.written, 5);
    s.refresh_stage(&e.id, NOW + 11).await.unwrap();
    let d1_now = s.deploy(&d1.id).await.unwrap();
    assert_eq!((d1_now.state, d1_now.success_total, d1_now.total), (DeployState::Succeeding, 5, 5));
    assert_eq!(d1_now.acceptance_status, AcceptanceStatus::Accepted);
    changes(s).await;

    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + 20).await;
    assert_eq!(s.deploy(&d1.id).await.unwrap().state, DeployState::Succeeded);
    let agents = s.agents_of_stage(&e.id).await.unwrap();
    let admitted: Vec<_> = agents.iter().filter(|a| a.deploy_id == d2.id).collect();
    assert_eq!(admitted.len(), 2, "maxParallel 2");
    assert!(admitted.iter().all(|a| a.deploy_stage == DeployStage::PreDownload && a.status == AgentStatus::Unknown));

    // The gateways learn the new deploy, then the admissions.
    let msgs = changes(s).await;
    assert!(matches!(&msgs[0], ChangeMessage::StageV1 { stage: Some(snap), .. }
        if snap.goal.deploy.as_ref().map(|d| &d.id) == Some(&d2.id)));
    let ChangeMessage::AgentsV1 { agents: controls, .. } = &msgs[1] else { panic!("{msgs:?}") };
    assert_eq!(controls.len(), 2);

    // No more admissions while both are out of service.
    s.refresh_stage(&e.id, NOW + 21).await.unwrap();
    assert_eq!(s.agents_of_stage(&e.id).await.unwrap().iter().filter(|a| a.deploy_id == d2.id).count(), 2);

    // One finishes (its gateway learnt of the admission, so it sends the record's new control
    // sequence): one more is admitted.
    let done = admitted[0].host_id.as_str().to_string();
    let finished = AgentUpdate { control_seq: 1, ..update(&done, &e.id, serving(&d2.id), NOW + 30) };
    s.apply_report_batch(&ReportBatch { agents: vec![finished], ..Default::default() }).await.unwrap();
    s.refresh_stage(&e.id, NOW + 31).await.unwrap();
    let agents = s.agents_of_stage(&e.id).await.unwrap();
    assert_eq!(agents.iter().filter(|a| a.deploy_id == d2.id).count(), 3);
    let out_of_service =
        agents.iter().filter(|a| a.deploy_id == d2.id && a.deploy_stage != DeployStage::ServingBuild).count();
    assert_eq!(out_of_service, 2);
}

#[tokio::test]
async fn a_stale_report_does_not_undo_an_admission() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    s.apply_report_batch(&ReportBatch {
        agents: vec![update("h1", &e.id, serving(&d1.id), NOW + 1)],
        ..Default::default()
    })
    .await
    .unwrap();
    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + 2).await;
    assert_eq!(s.agents_of_stage(&e.id).await.unwrap()[0].deploy_id, d2.id, "admitted");

    // A gateway that had not seen the admission yet reports the host serving d1 again.
    let applied = s
        .apply_report_batch(&ReportBatch {
            agents: vec![update("h1", &e.id, serving(&d1.id), NOW + 3)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(applied.skipped, 1);
    assert_eq!(s.agents_of_stage(&e.id).await.unwrap()[0].deploy_id, d2.id);
}

#[tokio::test]
async fn an_older_report_does_not_overwrite_a_newer_one() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let b1 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let at = |stage| AgentRecord { stage, ..AgentRecord::fresh(d1.id.clone(), true) };
    s.apply_report_batch(&ReportBatch {
        agents: vec![update("h1", &e.id, at(DeployStage::Staging), NOW + 5)],
        ..Default::default()
    })
    .await
    .unwrap();
    let applied = s
        .apply_report_batch(&ReportBatch {
            agents: vec![update("h1", &e.id, at(DeployStage::Downloading), NOW + 4)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(applied.skipped, 1);
    let a = &s.agents_of_stage(&e.id).await.unwrap()[0];
    assert_eq!(a.deploy_stage, DeployStage::Staging);
    assert!(a.first_deploy);
}

#[tokio::test]
async fn an_older_error_does_not_overwrite_a_newer_one() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let b1 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let failed = |fail_count, error: &str, at| AgentUpdate {
        error_message: Some(error.into()),
        ..update(
            "h1",
            &e.id,
            AgentRecord {
                stage: DeployStage::Downloading,
                status: AgentStatus::RetryableAgentFailed,
                err_no: 1,
                fail_count,
                ..AgentRecord::fresh(d1.id.clone(), false)
            },
            at,
        )
    };
    for update in [failed(2, "second failure", NOW + 5), failed(1, "first failure", NOW + 4)] {
        s.apply_report_batch(&ReportBatch { agents: vec![update], ..Default::default() }).await.unwrap();
    }
    let (_, error) = s.agent_error(&e.id, &id("h1")).await.unwrap().expect("an error");
    assert_eq!(error, "second failure", "the error of the newer report stays");
}

#[tokio::test]
async fn commands_apply_once_and_refusals_are_stored() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    stage(s, "web", "prod", "{}").await;
    let b = build(s, "web").await;
    let other = build(s, "api").await;
    let d = deploy(s, "c1", "web", "prod", &b.id, NOW).await;
    // Redelivery: the same outcome, no second deploy.
    let again = deploy(s, "c1", "web", "prod", &b.id, NOW + 5).await;
    assert_eq!(again, d);
    assert_eq!(s.deploys_of_stage(&d.env_id, 10).await.unwrap().len(), 1);

    let refused = s.apply_command(&deploy_command("c2", "web", "prod", &other.id), NOW).await.unwrap();
    let CommandOutcome::Err { error } = refused else { panic!() };
    assert_eq!(error.status, 400);
    let missing = s.apply_command(&deploy_command("c3", "web", "nope", &b.id), NOW).await.unwrap();
    let CommandOutcome::Err { error } = missing else { panic!() };
    assert_eq!((error.status, error.code.as_str()), (404, "not_found"));
    let status = s.command("c3").await.unwrap().unwrap();
    assert_eq!(status.status, "FAILED");
}

#[tokio::test]
async fn admission_query_agrees_with_the_rule() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", r#"{"maxParallelPct":100}"#).await;
    let b1 = build(s, "web").await;
    let b2 = build(s, "web").await;
    let d1 = deploy(s, "c1", "web", "prod", &b1.id, NOW).await;
    let mut records = Vec::new();
    for (i, stage) in [DeployStage::ServingBuild, DeployStage::Restarting].into_iter().enumerate() {
        for (j, state) in AgentState::ALL.iter().enumerate() {
            for (k, deploy) in [d1.id.clone(), id::<DeployId>("other")].into_iter().enumerate() {
                let host = format!("h{i}-{j}-{k}");
                let r = AgentRecord { stage, state: *state, ..serving(&deploy) };
                records.push((host, r));
            }
        }
    }
    s.apply_report_batch(&ReportBatch {
        agents: records.iter().map(|(h, r)| update(h, &e.id, r.clone(), NOW + 1)).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The new deploy is d2: every host the rule says waits, and only those, is admitted.
    let d2 = deploy(s, "c2", "web", "prod", &b2.id, NOW + 2).await;
    let agents = s.agents_of_stage(&e.id).await.unwrap();
    for (host, r) in &records {
        let a = agents.iter().find(|a| a.host_id.as_str() == host).unwrap();
        let expected = waits_for_admission(r, &d2.id, None);
        assert_eq!(a.deploy_id == d2.id, expected, "{host} {r:?}");
    }
}

/// The admission query counts the hosts out of service as `AgentRecord::is_active` does: on
/// stages with a cap of one, a record in every combination of step, state and first deploy,
/// beside two hosts waiting for the next deploy; that deploy admits one host unless the
/// record is active.
#[tokio::test]
async fn admission_counts_the_hosts_out_of_service_as_the_rule_does() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let (b1, b2) = (build(s, "web").await, build(s, "web").await);
    let mut probes = Vec::new();
    for stage in [DeployStage::ServingBuild, DeployStage::Restarting] {
        for state in AgentState::ALL {
            for first_deploy in [false, true] {
                let n = probes.len();
                let name = format!("p{n}");
                let e = self::stage(s, "web", &name, r#"{"maxParallel":1}"#).await;
                let d1 = deploy(s, &format!("{name}-1"), "web", &name, &b1.id, NOW).await;
                let probe = AgentRecord { stage, state: *state, first_deploy, ..serving(&d1.id) };
                let agents = [("x", probe.clone()), ("w1", serving(&d1.id)), ("w2", serving(&d1.id))]
                    .into_iter()
                    .map(|(h, r)| update(&format!("{name}-{h}"), &e.id, r, NOW + 1))
                    .collect();
                s.apply_report_batch(&ReportBatch { agents, ..Default::default() }).await.unwrap();
                probes.push((name, e, probe));
            }
        }
    }
    for (name, e, probe) in &probes {
        let d2 = deploy(s, &format!("{name}-2"), "web", name, &b2.id, NOW + 2).await;
        let admitted = s.agents_of_stage(&e.id).await.unwrap().iter().filter(|a| a.deploy_id == d2.id).count();
        let expected = if probe.is_active() { 0 } else { 1 };
        assert_eq!(admitted, expected, "{name}: beside {probe:?} (active: {})", probe.is_active());
    }
}

#[tokio::test]
async fn hosts_and_heartbeats_are_recorded() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let facts = HostFacts {
        host_id: id("h1"),
        host_name: id("web-1"),
        ip: Some("10.0.0.1".into()),
        groups: vec![id("web"), id("canary")],
        agent_version: "1.0".into(),
        autoscaling_group: None,
        availability_zone: None,
        tags: [("az".to_string(), "us-east-1a".to_string())].into_iter().collect(),
        seen_at: NOW,
    };
    s.apply_report_batch(&ReportBatch {
        hosts: vec![facts.clone()],
        heartbeats: vec![Heartbeat { host_id: id("h1"), at: NOW }, Heartbeat { host_id: id("h1"), at: NOW + 5 }],
        ..Default::default()
    })
    .await
    .unwrap();
    // Group membership is replaced, not merged.
    s.upsert_hosts(&[HostFacts { groups: vec![id("web")], seen_at: NOW + 6, ..facts }]).await.unwrap();
    let db2 = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(db2.1);
    let groups: Vec<String> = db2
        .0
        .query("SELECT group_name FROM host_groups WHERE host_id = 'h1'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(groups, vec!["web"]);
    let seen: std::time::SystemTime =
        db2.0.query_one("SELECT last_seen FROM host_heartbeats WHERE host_id = 'h1'", &[]).await.unwrap().get(0);
    assert_eq!(seen, std::time::UNIX_EPOCH + std::time::Duration::from_millis((NOW + 5) as u64));
}

#[tokio::test]
async fn older_host_facts_do_not_overwrite_newer_ones() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let facts = |version: &str, group: &str, zone: &str, seen_at| HostFacts {
        host_id: id("h1"),
        host_name: id("web-1"),
        ip: Some("10.0.0.1".into()),
        groups: vec![id(group)],
        agent_version: version.into(),
        autoscaling_group: None,
        availability_zone: None,
        tags: [("zone".to_string(), zone.to_string())].into_iter().collect(),
        seen_at,
    };
    // The newer facts first, then a redelivery of older ones.
    s.upsert_hosts(&[facts("1.1", "web", "b", NOW + 5)]).await.unwrap();
    s.upsert_hosts(&[facts("1.0", "canary", "a", NOW + 4)]).await.unwrap();
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT h.agent_version, (extract(epoch FROM h.last_update) * 1000)::int8,
                 (SELECT array_agg(group_name) FROM host_groups g WHERE g.host_id = h.host_id),
                 (SELECT array_agg(tag_value) FROM host_tags t WHERE t.host_id = h.host_id)
             FROM hosts h WHERE h.host_id = 'h1'",
            &[],
        )
        .await
        .unwrap();
    let got: (String, i64, Vec<String>, Vec<String>) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(got, ("1.1".into(), NOW + 5, vec!["web".into()], vec!["b".into()]), "the newer facts stay");
    // Facts as new as the stored ones are applied (a gateway's second look at the same ping).
    s.upsert_hosts(&[facts("1.2", "web", "b", NOW + 5)]).await.unwrap();
    let version: String = client.query_one("SELECT agent_version FROM hosts", &[]).await.unwrap().get(0);
    assert_eq!(version, "1.2");
}

#[tokio::test]
async fn a_gateway_load_hands_over_the_head_then_every_record_in_chunks() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let e = stage(s, "web", "prod", "{}").await;
    let b = build(s, "web").await;
    let d = deploy(s, "c1", "web", "prod", &b.id, NOW).await;
    let batch = ReportBatch {
        agents: (1..=10).map(|i| update(&format!("h{i:02}"), &e.id, serving(&d.id), NOW + 10)).collect(),
        ..Default::default()
    };
    s.apply_report_batch(&batch).await.unwrap();

    let mut parts = Vec::new();
    let done = s
        .gateway_load(NOW, 3, |part| {
            parts.push(part);
            async { true }
        })
        .await
        .unwrap();
    assert!(done);
    let store::LoadPart::Head(head) = &parts[0] else { panic!("the head comes first: {parts:?}") };
    assert_eq!(head.stages.iter().map(|(_, s)| s.goal.env_id.clone()).collect::<Vec<_>>(), vec![e.id.clone()]);
    let sizes: Vec<usize> = parts[1..]
        .iter()
        .map(|p| match p {
            store::LoadPart::Agents(rows) => rows.len(),
            store::LoadPart::Head(_) => panic!("one head"),
        })
        .collect();
    assert_eq!(sizes, vec![3, 3, 3, 1]);
    let mut hosts: Vec<String> = parts[1..]
        .iter()
        .flat_map(|p| match p {
            store::LoadPart::Agents(rows) => rows.iter().map(|r| r.host_id.to_string()).collect(),
            store::LoadPart::Head(_) => vec![],
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, (1..=10).map(|i| format!("h{i:02}")).collect::<Vec<_>>());

    // A sink that says stop ends the load there.
    let mut seen = 0;
    let done = s
        .gateway_load(NOW, 3, |_| {
            seen += 1;
            let more = seen < 2;
            async move { more }
        })
        .await
        .unwrap();
    assert_eq!((done, seen), (false, 2), "the head and one chunk, then nothing more");
}
