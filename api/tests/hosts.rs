//! Host and group reads and pre-registration through the REST API: Teletraan's `HostBean`
//! (one per host and group), every stage's record of a host, a stage's missing hosts.

mod common;

use common::{Body, Host, eventually, spawn_app, str_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn names(v: &Value, field: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|h| h[field].as_str().unwrap_or("null").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_read_by_stage_name_id_and_group() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.set_capacity("web", "prod", "GROUP", &["g"]).await;
    let build = app.publish_build("web", "aaaaaaa1111").await;
    let deploy = app.deploy("web", "prod", str_of(&build, "id")).await;
    let h1 = Host::new("h1", "g");
    app.serve_deploy(&h1, str_of(&deploy, "id")).await;
    let hosts = eventually("the host's facts to be stored", || async {
        let v = app.get("/v1/envs/web/prod/hosts").await.expect(StatusCode::OK);
        if v.as_array().is_some_and(|a| a.len() == 1) { Ok(v) } else { Err(v.to_string()) }
    })
    .await;
    let row = &hosts[0];
    for (field, want) in [
        ("hostName", json!("h1")),
        ("hostId", json!("i-h1")),
        ("groupName", json!("g")),
        ("ip", json!("10.1.2.3")),
        ("state", json!("ACTIVE")),
        ("canRetire", json!(0)),
        ("accountId", Value::Null),
        ("agentVersion", json!("1.2.76")),
    ] {
        assert_eq!(row[field], want, "{field} in {row}");
    }
    assert!(row["createDate"].is_i64() && row["lastUpdateDate"].is_i64(), "{row}");

    assert_eq!(names(&app.get("/v1/envs/web/prod/hosts/h1").await.expect(StatusCode::OK), "hostId"), ["i-h1"]);
    assert_eq!(app.get("/v1/envs/web/prod/hosts/h2").await.expect(StatusCode::OK), json!([]));
    assert_eq!(names(&app.get("/v1/hosts/h1").await.expect(StatusCode::OK), "groupName"), ["g"]);
    assert_eq!(names(&app.get("/v1/hosts/id/i-h1").await.expect(StatusCode::OK), "hostName"), ["h1"]);
    assert_eq!(app.get("/v1/hosts/id/i-nobody").await.expect(StatusCode::OK), json!([]));
    assert_eq!(names(&app.get("/v1/groups/g/instances").await.expect(StatusCode::OK), "hostId"), ["i-h1"]);
    assert_eq!(app.get("/v1/groups/other/instances").await.expect(StatusCode::OK), json!([]));

    // Every stage's record of the host.
    let agents = app.get("/v1/agents/h1").await.expect(StatusCode::OK);
    assert_eq!(names(&agents, "deployId"), [str_of(&deploy, "id")]);
    assert_eq!(agents[0]["deployStage"], "SERVING_BUILD");
    assert_eq!(app.get("/v1/agents/id/i-h1").await.expect(StatusCode::OK), agents);
    assert_eq!(app.get("/v1/agents/h9").await.expect(StatusCode::OK), json!([]));

    // The log of the host's steps: the deploy's timeline, the host's changes and deploys.
    let deploy_id = str_of(&deploy, "id");
    let timeline = eventually("the host's last step in the log", || async {
        let v = app.get(&format!("/v1/deploys/{deploy_id}/steps")).await.expect(StatusCode::OK);
        let last = &v["hosts"][0]["steps"].as_array().and_then(|s| s.last().cloned()).unwrap_or_default();
        if last["deployStage"] == "SERVING_BUILD" { Ok(v) } else { Err(v.to_string()) }
    })
    .await;
    assert_eq!(timeline["totalHosts"], 1);
    assert_eq!(timeline["next"], Value::Null);
    assert_eq!(timeline["hosts"][0]["hostName"], "h1");
    let steps = timeline["hosts"][0]["steps"].as_array().unwrap();
    // The gateway batches reports and keeps a host's newest: its steps may reach the log as one.
    assert!(!steps.is_empty(), "{timeline}");
    assert!(steps.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()), "{timeline}");
    assert!(steps.iter().all(|s| s["hostId"] == "i-h1" && s["deployId"] == deploy_id), "{timeline}");
    let newest = app.get("/v1/agents/h1/steps?pageSize=1").await.expect(StatusCode::OK);
    assert_eq!(newest.as_array().map(Vec::len), Some(1));
    assert_eq!(newest[0], *steps.last().unwrap(), "newest first");
    let before = newest[0]["seq"].as_i64().unwrap();
    let older = app.get(&format!("/v1/agents/h1/steps?before={before}")).await.expect(StatusCode::OK);
    assert_eq!(older.as_array().map(Vec::len), Some(steps.len() - 1));
    let deploys = app.get("/v1/agents/h1/deploys").await.expect(StatusCode::OK);
    assert_eq!(names(&deploys, "deployId"), [deploy_id]);
    assert_eq!(deploys[0]["buildId"], build["id"]);
    assert_eq!(deploys[0]["lastStage"], "SERVING_BUILD");
    assert_eq!(deploys[0]["failures"], 0);
    assert_eq!(app.get("/v1/agents/h9/deploys").await.expect(StatusCode::OK), json!([]));
    app.get("/v1/deploys/nope/steps").await.expect_error(StatusCode::NOT_FOUND);
    for path in [
        format!("/v1/deploys/{deploy_id}/steps?pageSize=0"),
        format!("/v1/deploys/{deploy_id}/steps?after=a%20b"),
        "/v1/agents/h1/steps?pageSize=1001".to_string(),
        "/v1/agents/h1/steps?before=x".to_string(),
    ] {
        app.get(&path).await.expect_error(StatusCode::BAD_REQUEST);
    }

    // Refusals.
    app.get("/v1/envs/web/nope/hosts").await.expect_error(StatusCode::NOT_FOUND);
    app.get("/v1/envs/web/nope/hosts/h1").await.expect_error(StatusCode::NOT_FOUND);
    for path in [
        "/v1/hosts/a%20b",
        "/v1/hosts/id/a%20b",
        "/v1/groups/a%20b/instances",
        "/v1/agents/a%20b",
        "/v1/envs/web/prod/hosts/a%20b",
    ] {
        let (_, message) = app.get(path).await.expect_error(StatusCode::BAD_REQUEST);
        assert!(message.contains("may only contain"), "{path}: {message}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioner_pre_registers_hosts_and_missing_hosts_are_listed() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    app.set_capacity("web", "prod", "HOST", &["web-1", "ghost"]).await;

    let host = json!({"hostName": "web-1", "hostId": "i-1", "groupName": "web", "ip": "10.0.0.1", "state": "PROVISIONED",
                      "accountId": "123", "canRetire": 0});
    let r = app.post("/v1/hosts", &host).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let rows = app.get("/v1/hosts/id/i-1").await.expect(StatusCode::OK);
    assert_eq!((rows[0]["state"].as_str(), rows[0]["groupName"].as_str()), (Some("PROVISIONED"), Some("web")));
    assert!(rows[0]["lastPingDate"].is_i64(), "a heartbeat, so the janitor forgets it if it never pings: {rows}");
    // A provisioner may retry, and add a group.
    app.post("/v1/hosts", &host).await.expect(StatusCode::NO_CONTENT);
    app.post("/v1/hosts", &json!({"hostName": "web-1", "hostId": "i-1", "groupName": "canary"}))
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(names(&app.get("/v1/hosts/web-1").await.expect(StatusCode::OK), "groupName"), ["canary", "web"]);
    assert_eq!(names(&app.get("/v1/groups/web/instances").await.expect(StatusCode::OK), "hostId"), ["i-1"]);
    // The stage names the host: it is reached, in every group; ghost is missing.
    assert_eq!(names(&app.get("/v1/envs/web/prod/hosts").await.expect(StatusCode::OK), "groupName"), ["canary", "web"]);
    assert_eq!(
        app.get("/v1/envs/web/prod/deploys/current/missing-hosts").await.expect(StatusCode::OK),
        json!(["ghost"])
    );
    let history = app.get("/v1/history?type=Host").await.expect(StatusCode::OK);
    assert_eq!(history.as_array().map(Vec::len), Some(3), "{history}");

    // Refusals.
    let (_, m) =
        app.post("/v1/hosts", &json!({"hostName": "web-2", "hostId": "i-1"})).await.expect_error(StatusCode::CONFLICT);
    assert!(m.contains("known as web-1"), "{m}");
    for (body, field) in [
        (json!({"hostName": "web-2"}), "hostId"),
        (json!({"hostId": "i-2"}), "hostName"),
        (json!({"hostId": "i-2", "hostName": "w", "state": "TERMINATED"}), "state"),
        (json!({"hostId": "i-2", "hostName": "w", "groupName": "a b"}), "groupName"),
        (json!({"hostId": "i-2", "hostName": "w", "flavour": "x"}), "flavour"),
    ] {
        let (_, m) = app.post("/v1/hosts", &body).await.expect_error(StatusCode::BAD_REQUEST);
        assert!(m.contains(field), "{body}: {m}");
    }
    app.admin(Method::POST, "/v1/hosts", Body::Raw("[")).await.expect_error(StatusCode::BAD_REQUEST);
    app.get("/v1/envs/web/nope/deploys/current/missing-hosts").await.expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}
