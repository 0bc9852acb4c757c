//! Every role's `/metrics` during a real rollout (`teletraan up`, simulated hosts): the series
//! operators' dashboards and alerts read exist with the values the rollout implies, and every
//! name follows `teletraan_<role>_<thing>_<unit>` with bounded labels.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use schema::DeployStage;
use serde_json::json;
use support::{ADMIN, Server};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::Fleet;

/// One sample: name, labels (sorted `k="v"` pairs), value.
type Sample = (String, String, f64);

fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        samples.push((name.to_string(), labels.to_string(), value.parse().unwrap_or(f64::NAN)));
    }
    (samples, types)
}

/// The value of the series `name` whose labels include every one of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[&str]) -> Option<f64> {
    samples.iter().find(|(n, l, _)| n == name && labels.iter().all(|want| l.contains(want))).map(|(_, _, v)| *v)
}

async fn scrape(base: &str) -> String {
    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_exports_what_dashboards_and_alerts_read_during_a_rollout() {
    let server = Server::start().await;
    let api = &server.api;
    api.stage("web", "prod", "g", json!({"maxParallel": 2})).await;
    let fleet = Fleet::start(support::fleet_config(
        &server,
        "m",
        5,
        "g",
        Duration::from_millis(200),
        Duration::from_millis(100),
    ))
    .expect("a fleet");
    let b1 =
        api.publish("web", "https://artifacts.example.com/web-1.tgz", "1111111abc", Some(UNDOWNLOADED_SHA256)).await;
    let d1 = api.deploy("web", "prod", &b1).await;
    api.wait_state(d1.id.as_str(), "SUCCEEDING").await;
    let admitted_before =
        value(&parse(&scrape(&api.base).await).0, "teletraan_worker_admissions_total", &[]).unwrap_or(0.0);
    // A second deploy: the hosts serve a build now, so they are admitted within the cap.
    let b2 =
        api.publish("web", "https://artifacts.example.com/web-2.tgz", "2222222abc", Some(UNDOWNLOADED_SHA256)).await;
    let d2 = api.deploy("web", "prod", &b2).await;
    api.wait_state(d2.id.as_str(), "SUCCEEDING").await;
    let missing = api.http.get(format!("{}/v1/envs/web/nope", api.base)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    support::wait_for("every host to report the second build", || async {
        api.agents("web", "prod")
            .await
            .iter()
            .filter(|a| a.deploy_id == d2.id && a.deploy_stage == DeployStage::ServingBuild)
            .count()
            == 5
    })
    .await;

    let (on_api, types) = parse(&scrape(&api.base).await);
    let (on_gateway, gateway_types) = parse(&scrape(&server.gateway).await);

    // Names and units, on both listeners.
    for (name, kind) in types.iter().chain(gateway_types.iter()) {
        let roles = ["teletraan_api_", "teletraan_gateway_", "teletraan_worker_"];
        assert!(roles.iter().any(|r| name.starts_with(r)), "{name}: teletraan_<role>_…");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "a counter ends with _total: {name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "durations are in seconds: {name}"),
            _ => assert!(!name.ends_with("_total"), "only counters end with _total: {name}"),
        }
    }
    // One process, one registry: each listener shows its role's series, none twice.
    assert!(
        on_api.iter().all(|(n, _, _)| !n.starts_with("teletraan_gateway_")),
        "the API listener shows no gateway series"
    );
    assert!(
        on_gateway.iter().all(|(n, _, _)| n.starts_with("teletraan_gateway_")),
        "the gateway listener its own only"
    );
    // Labels are bounded: a route is a template, never a path with an id in it.
    let routes: Vec<&str> = on_api
        .iter()
        .filter(|(n, _, _)| n == "teletraan_api_requests_total")
        .filter_map(|(_, l, _)| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    assert!(routes.contains(&"/v1/envs/{env}/{stage}/deploys"), "{routes:?}");
    assert!(routes.iter().all(|r| !r.contains(d1.id.as_str()) && !r.contains("/web/")), "{routes:?}");

    // The API: requests, command round trips, the fleet read from Postgres.
    let posted = value(
        &on_api,
        "teletraan_api_requests_total",
        &[r#"method="POST""#, r#"route="/v1/envs/{env}/{stage}/deploys""#, r#"status="201""#],
    );
    assert_eq!(posted, Some(2.0));
    assert_eq!(
        value(&on_api, "teletraan_api_requests_total", &[r#"status="404""#, r#"route="/v1/envs/{env}/{stage}""#]),
        Some(1.0)
    );
    assert_eq!(value(&on_api, "teletraan_api_command_round_trip_seconds_count", &[r#"outcome="done""#]), Some(2.0));
    assert_eq!(
        value(&on_api, "teletraan_api_hosts", &[r#"env="web""#, r#"stage="prod""#, r#"state="NORMAL""#]),
        Some(5.0)
    );
    assert_eq!(value(&on_api, "teletraan_api_current_deploys", &[r#"state="SUCCEEDING""#]), Some(1.0));
    assert_eq!(
        value(&on_api, "teletraan_api_current_deploys", &[r#"state="FAILING""#]),
        Some(0.0),
        "every state has a series"
    );
    assert_eq!(value(&on_api, "teletraan_api_stages", &[]), Some(1.0));
    assert_eq!(value(&on_api, "teletraan_api_hosts_unseen", &[]), Some(0.0));
    assert_eq!(value(&on_api, "teletraan_api_queue_messages", &[r#"queue="commands.dead""#]), Some(0.0));
    assert!(
        value(&on_api, "teletraan_api_queue_consumers", &[r#"queue="reports""#]).unwrap_or(0.0) >= 1.0,
        "the worker consumes"
    );

    // The gateway: pings, its memory, changes taken, reports sent.
    assert!(value(&on_gateway, "teletraan_gateway_pings_total", &[r#"outcome="goal""#]).unwrap_or(0.0) >= 5.0);
    assert!(value(&on_gateway, "teletraan_gateway_ping_duration_seconds_count", &[]).unwrap_or(0.0) > 0.0);
    assert!(value(&on_gateway, "teletraan_gateway_goals_total", &[r#"op="DEPLOY""#]).unwrap_or(0.0) >= 5.0);
    assert_eq!(
        value(&on_gateway, "teletraan_gateway_goals_total", &[r#"op="STOP""#]),
        Some(0.0),
        "every op code has a series"
    );
    assert_eq!(value(&on_gateway, "teletraan_gateway_cached_hosts", &[]), Some(5.0));
    assert_eq!(value(&on_gateway, "teletraan_gateway_cached_stages", &[]), Some(1.0));
    assert_eq!(value(&on_gateway, "teletraan_gateway_ready", &[]), Some(1.0));
    assert!(value(&on_gateway, "teletraan_gateway_held_long_polls", &[]).is_some());
    assert!(value(&on_gateway, "teletraan_gateway_changes_total", &[r#"outcome="applied""#]).unwrap_or(0.0) > 0.0);
    assert!(value(&on_gateway, "teletraan_gateway_report_batches_published_total", &[]).unwrap_or(0.0) > 0.0);

    // The workers (in the same process): messages by queue and outcome, admissions.
    assert!(
        value(&on_api, "teletraan_worker_messages_total", &[r#"queue="reports""#, r#"outcome="ack""#]).unwrap_or(0.0)
            > 0.0
    );
    assert!(
        value(&on_api, "teletraan_worker_messages_total", &[r#"queue="commands""#, r#"outcome="ack""#]).unwrap_or(0.0)
            >= 2.0
    );
    // The deploy command admits the first hosts in its own transaction, re-evaluations the
    // rest as slots free up: each of the five hosts once.
    assert_eq!(
        value(&on_api, "teletraan_worker_admissions_total", &[]).unwrap_or(0.0) - admitted_before,
        5.0,
        "every host of the second deploy admitted once, by the command or a re-evaluation"
    );

    fleet.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_from_the_api_to_the_worker_that_applied_the_command() {
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("json-log-{}.log", std::process::id()));
    let server = Server::start_logging(&[("TELETRAAN_LOG_FORMAT", "json"), ("RUST_LOG", "info")], &log).await;
    let api = &server.api;
    api.stage("web", "prod", "g", json!({})).await;
    let b =
        api.publish("web", "https://artifacts.example.com/web-1.tgz", "1111111abc", Some(UNDOWNLOADED_SHA256)).await;
    let url = format!("{}/v1/envs/web/prod/deploys?buildId={}", api.base, b.id);
    let resp = api.http.post(url).bearer_auth(ADMIN).header("X-Request-Id", "ci-run-42.deploy").send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-request-id"], "ci-run-42.deploy", "the id comes back");
    let deploy: serde_json::Value = resp.json().await.unwrap();
    let other = api.http.get(format!("{}/v1/envs", api.base)).bearer_auth(ADMIN).send().await.unwrap();
    let generated = other.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "one is made when the caller sends none: {generated}");
    server.stop().await;

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(!lines.is_empty());
    let applied = lines
        .iter()
        .find(|l| l["fields"]["message"] == "command applied")
        .unwrap_or_else(|| panic!("the worker's line: {text}"));
    let spans = applied["spans"].as_array().unwrap();
    assert!(
        spans.iter().any(|s| s["name"] == "command" && s["request.id"] == "ci-run-42.deploy"),
        "the worker's line names the request: {applied}"
    );
    assert!(applied["fields"]["command.id"].is_string() && applied["level"] == "INFO", "{applied}");
    assert_eq!(applied["fields"]["deploy.id"], deploy["id"], "the line names the deploy: {applied}");
    assert!(
        spans.iter().any(|s| s["name"] == "command" && s["env"] == "web" && s["stage"] == "prod"),
        "and the stage: {applied}"
    );
    let _ = std::fs::remove_file(&log);
}
