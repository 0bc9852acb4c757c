//! Stages beyond create, read, update and delete: the list's filters (an unknown one is a
//! 400), a stage by id, environment names, one capacity name added or removed, the ids of a
//! stage's schedule and constraint in its JSON, and its dashboard and alarm links.

mod common;

use common::{Body, spawn_app, str_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn pairs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|s| format!("{}/{}", str_of(s, "envName"), str_of(s, "stageName")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_are_listed_by_environment_group_and_type_and_found_by_id() {
    let app = spawn_app().await;
    let prod = app.create_stage("web", "prod").await;
    app.post("/v1/envs", &json!({"envName": "web", "stageName": "beta", "stageType": "STAGING"}))
        .await
        .expect(StatusCode::CREATED);
    app.create_stage("api", "prod").await;
    app.set_capacity("web", "prod", "GROUP", &["g"]).await;
    app.set_capacity("api", "prod", "GROUP", &["g", "h"]).await;

    let list = |q: &'static str| {
        let app = &app;
        async move { pairs(&app.get(&format!("/v1/envs?{q}")).await.expect(StatusCode::OK)) }
    };
    assert_eq!(list("groupName=g").await, ["api/prod", "web/prod"]);
    assert_eq!(list("groupName=g&envName=web").await, ["web/prod"]);
    assert_eq!(list("groupName=h").await, ["api/prod"]);
    assert_eq!(list("stageType=staging").await, ["web/beta"]);
    assert_eq!(list("envName=web&stageType=PRODUCTION").await, ["web/prod"]);
    assert_eq!(list("groupName=none").await, Vec::<String>::new());
    assert_eq!(list("envName=").await.len(), 3, "an empty filter filters nothing");
    for (q, words) in [("colour=red", "colour"), ("stageType=WEIRD", "stageType"), ("groupName=a%20b", "group name")] {
        let (_, message) = app.get(&format!("/v1/envs?{q}")).await.expect_error(StatusCode::BAD_REQUEST);
        assert!(message.contains(words), "{q}: {message}");
    }

    let by_id = app.get(&format!("/v1/envs/{}", str_of(&prod, "id"))).await.expect(StatusCode::OK);
    assert_eq!(by_id, app.get("/v1/envs/web/prod").await.expect(StatusCode::OK));
    app.get("/v1/envs/NoSuchStage0000000000").await.expect_error(StatusCode::NOT_FOUND);
    app.get("/v1/envs/a%20b").await.expect_error(StatusCode::BAD_REQUEST);

    assert_eq!(app.get("/v1/envs/names").await.expect(StatusCode::OK), json!(["api", "web"]));
    assert_eq!(app.get("/v1/envs/names?nameFilter=we").await.expect(StatusCode::OK), json!(["web"]));
    assert_eq!(app.get("/v1/envs/names?pageIndex=2&pageSize=1").await.expect(StatusCode::OK), json!(["web"]));
    app.get("/v1/envs/names?pageSize=0").await.expect_error(StatusCode::BAD_REQUEST);
    app.get("/v1/envs/names?filter=we").await.expect_error(StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_capacity_name_is_added_or_removed() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    let path = "/v1/envs/web/prod/capacity?capacityType=GROUP";
    let send = |method: Method, body: &'static str| {
        let app = &app;
        async move { app.admin(method, path, Body::Raw(body)).await }
    };
    send(Method::POST, r#""g1""#).await.expect(StatusCode::NO_CONTENT);
    send(Method::POST, "g2").await.expect(StatusCode::NO_CONTENT);
    send(Method::POST, r#" "g1" "#).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get(path).await.expect(StatusCode::OK), json!(["g1", "g2"]));
    send(Method::DELETE, r#""g1""#).await.expect(StatusCode::NO_CONTENT);
    send(Method::DELETE, "g9").await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get(path).await.expect(StatusCode::OK), json!(["g2"]));
    let hosts = "/v1/envs/web/prod/capacity?capacityType=HOST";
    app.admin(Method::POST, hosts, Body::Raw(r#""web-1.example.com""#)).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get(hosts).await.expect(StatusCode::OK), json!(["web-1.example.com"]));
    let rows = app.get("/v1/envs/web/prod/history").await.expect(StatusCode::OK);
    let actions: Vec<&str> = rows.as_array().unwrap().iter().map(|r| str_of(r, "action")).collect();
    assert_eq!(actions, ["add", "remove", "add", "add", "create"], "no row when nothing changed");

    for body in [r#"["g3"]"#, "", "a b", r#""a b""#, r#""unterminated"#] {
        send(Method::POST, body).await.expect_error(StatusCode::BAD_REQUEST);
    }
    app.admin(Method::POST, "/v1/envs/web/prod/capacity?capacityType=CLUSTER", Body::Raw("g"))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    app.admin(Method::DELETE, "/v1/envs/web/nope/capacity", Body::Raw("g")).await.expect_error(StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_names_its_schedule_and_constraint() {
    let app = spawn_app().await;
    let stage = app.create_stage("web", "prod").await;
    assert_eq!((&stage["scheduleId"], &stage["deployConstraintId"]), (&Value::Null, &Value::Null));
    let schedule = json!({"totalSessions": 2, "hostNumbers": "1,50%", "cooldownTimes": "5,-1"});
    let schedule = app.put("/v1/schedules/web/prod/schedules", &schedule).await.expect(StatusCode::OK);
    let constraint = json!({"constraintKey": "zone", "maxParallel": 1});
    let constraint = app.post("/v1/envs/web/prod/deploy_constraint", &constraint).await.expect(StatusCode::OK);
    let stage = app.get("/v1/envs/web/prod").await.expect(StatusCode::OK);
    assert_eq!(stage["scheduleId"], schedule["id"]);
    assert_eq!(stage["deployConstraintId"], constraint["id"]);
    let by_schedule = app.get(&format!("/v1/schedules/web/prod/{}", str_of(&stage, "scheduleId"))).await;
    assert_eq!(by_schedule.expect(StatusCode::OK), schedule);
    app.put("/v1/schedules/web/prod/schedules", &json!({"totalSessions": 0})).await.expect(StatusCode::OK);
    assert_eq!(app.get("/v1/envs/web/prod").await.expect(StatusCode::OK)["scheduleId"], Value::Null);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_alarm_links_round_trip_and_bad_ones_name_the_item() {
    let app = spawn_app().await;
    app.create_stage("web", "prod").await;
    assert_eq!(app.get("/v1/envs/web/prod/metrics").await.expect(StatusCode::OK), json!([]));
    assert_eq!(app.get("/v1/envs/web/prod/alarms").await.expect(StatusCode::OK), json!([]));

    let graphs = json!([{"title": "p99", "url": "https://grafana.example.com/d/1",
                         "specs": [{"min": 0, "max": "200", "color": "green"}, {"min": 200, "color": "#ff0000"}]}]);
    app.put("/v1/envs/web/prod/metrics", &graphs).await.expect(StatusCode::NO_CONTENT);
    let stored = app.get("/v1/envs/web/prod/metrics").await.expect(StatusCode::OK);
    assert_eq!(stored[0]["url"], "https://grafana.example.com/d/1");
    assert_eq!(
        stored[0]["specs"],
        json!([{"min": 0.0, "max": 200.0, "color": "green"}, {"min": 200.0, "max": null, "color": "#ff0000"}])
    );
    let alarms = json!([{"name": "5xx", "alarmUrl": "https://alerts.example.com/5xx", "metricsUrl": "https://m.example.com/5xx"}]);
    app.put("/v1/envs/web/prod/alarms", &alarms).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get("/v1/envs/web/prod/alarms").await.expect(StatusCode::OK), alarms);
    let kinds: Vec<String> = app
        .get("/v1/envs/web/prod/history")
        .await
        .expect(StatusCode::OK)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "type").to_string())
        .collect();
    assert_eq!(&kinds[..2], ["Env Alarm Config", "Env Metrics Config"]);

    for (path, body, field) in [
        ("metrics", json!([{"title": "no url"}]), "[0].url"),
        ("metrics", json!([{"url": "https://g"}, {"url": "file:///etc/passwd"}]), "[1].url"),
        ("metrics", json!([{"url": "https://g", "specs": [{"min": 5, "max": 1}]}]), "[0].specs[0].min"),
        ("metrics", json!([{"url": "https://g", "specs": [{"min": "low"}]}]), "[0].specs[0].min"),
        ("alarms", json!([{}]), "[0]"),
        ("alarms", json!({"name": "x"}), "invalid type"),
    ] {
        let (_, message) =
            app.put(&format!("/v1/envs/web/prod/{path}"), &body).await.expect_error(StatusCode::BAD_REQUEST);
        assert!(message.contains(field), "{body}: {message}");
    }
    app.get("/v1/envs/web/nope/metrics").await.expect_error(StatusCode::NOT_FOUND);
    app.put("/v1/envs/web/nope/alarms", &json!([])).await.expect_error(StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/envs/web/prod/alarms").await.expect(StatusCode::OK), alarms, "refusals changed nothing");
    app.stop().await;
}
