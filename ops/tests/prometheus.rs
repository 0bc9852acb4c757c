//! The alert rules (`ops/prometheus/alerts.yml`) and dashboards (`ops/grafana/*.json`) against a
//! real Prometheus (the Debian package, installed by `ops/test.sh`) scraping every role during
//! a rollout of simulated hosts: `teletraan up`'s API and gateway listeners, and a
//! `teletraan worker` of its own beside it, each as the job `ops/prometheus/prometheus.yml`
//! names it. Every job is up, the worker's series come from the worker's job, every rule
//! loads and evaluates, every series a rule reads exists, and every dashboard query returns
//! data. And every metric they name exists in the code.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::Server;
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::Fleet;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("ops/grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), serde_json::from_str(&text).unwrap()));
        }
    }
    assert!(out.len() >= 4, "fleet, rollout, gateway, workers");
    out
}

/// Every query of every panel: (dashboard, panel title, expression).
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for panel in d["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap().to_string();
                out.push((file.clone(), panel["title"].as_str().unwrap().to_string(), expr));
            }
        }
    }
    out
}

/// The metric names an expression reads (`teletraan_…`, and `up`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1]) && bytes[i - 1] != b'$') {
            let start = i;
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            let quoted = start > 0 && bytes[start - 1] == b'"';
            if !quoted && (name.starts_with("teletraan_") || (name == "up" && bytes.get(i) == Some(&b'{'))) {
                names.push(name.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The names the code registers: the string literals `"teletraan_…"` of the servers' sources.
fn registered() -> String {
    let mut all = String::new();
    let mut dirs = vec![repo().join("api/src"), repo().join("workers/src"), repo().join("workers/bus/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                all.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    all
}

#[test]
fn every_metric_the_rules_and_dashboards_name_exists_in_the_code() {
    let code = registered();
    let rules = std::fs::read_to_string(repo().join("ops/prometheus/alerts.yml")).unwrap();
    let mut names: Vec<String> = metric_names(&rules);
    names.extend(panel_queries().iter().flat_map(|(_, _, e)| metric_names(e)));
    names.sort();
    names.dedup();
    assert!(names.len() > 15, "{names:?}");
    for name in names.iter().filter(|n| n.starts_with("teletraan_")) {
        let base = ["_bucket", "_count", "_sum"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(code.contains(&format!("\"{base}\"")), "{name} is not registered by any role");
    }
}

/// A free local port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/')
}

async fn query(http: &reqwest::Client, prom: &str, expr: &str) -> Value {
    let resp = http.get(format!("{prom}/api/v1/query")).query(&[("query", expr)]).send().await.unwrap();
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_evaluates_every_rule_and_every_panel_has_data_during_a_rollout() {
    let server = Server::start_with(&[("TELETRAAN_JOBS", "record-retention=1s")]).await;
    // A worker process of its own, on the server's database and broker: it consumes the same
    // queues as the server's worker and serves /metrics on its own listener.
    let worker = server.start_worker_on(&format!("127.0.0.1:{}", free_port())).await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  \
         - job_name: teletraan-api\n    static_configs:\n      - targets: [\"{api}\"]\n  \
         - job_name: teletraan-gateway\n    static_configs:\n      - targets: [\"{gateway}\"]\n  \
         - job_name: teletraan-worker\n    static_configs:\n      - targets: [\"{worker}\"]\n",
        rules = repo().join("ops/prometheus/alerts.yml").display(),
        api = host_port(&server.api.base),
        gateway = host_port(&server.gateway),
        worker = host_port(&worker.url),
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let prom = format!("http://127.0.0.1:{port}");
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("prometheus.log")).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus (Debian package `prometheus`; ops/test.sh installs it)");
    let http = reqwest::Client::new();
    support::wait_for("Prometheus to be ready", || async {
        http.get(format!("{prom}/-/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    // A rollout while Prometheus watches.
    let api = &server.api;
    api.stage("web", "prod", "g", json!({"maxParallel": 2})).await;
    let fleet = Fleet::start(support::fleet_config(
        &server,
        "p",
        4,
        "g",
        Duration::from_millis(200),
        Duration::from_millis(300),
    ))
    .expect("a fleet");
    for (n, commit) in [(1, "1111111abc"), (2, "2222222abc")] {
        let b = api
            .publish("web", &format!("https://artifacts.example.com/web-{n}.tgz"), commit, Some(UNDOWNLOADED_SHA256))
            .await;
        let d = api.deploy("web", "prod", &b).await;
        api.wait_state(d.id.as_str(), "SUCCEEDING").await;
    }

    // Every rule loaded, and evaluates without error.
    let rules_in_file =
        std::fs::read_to_string(repo().join("ops/prometheus/alerts.yml")).unwrap().matches("- alert:").count();
    let loaded = support::wait_for_value("every rule evaluated", || async {
        let v: Value = http.get(format!("{prom}/api/v1/rules")).send().await.ok()?.json().await.ok()?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.len() == rules_in_file
            && rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")));
        evaluated.then_some(rules)
    })
    .await;
    for rule in &loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // Every series a rule reads exists.
    for rule in &loaded {
        let expr = rule["query"].as_str().unwrap();
        for name in metric_names(expr) {
            let selector = if name == "up" { "up{job=~\"teletraan-.*\"}".to_string() } else { name.clone() };
            support::wait_for_value(&format!("{} to read {name}", rule["name"]), || async {
                let answer = query(&http, &prom, &format!("count({selector})")).await;
                let count = answer["data"]["result"][0]["value"][1].as_str().unwrap_or("0").to_string();
                (count != "0").then_some(())
            })
            .await;
        }
    }

    // Every dashboard query returns data (variables: every environment and stage).
    for (file, panel, expr) in panel_queries() {
        let expr = expr.replace("$__rate_interval", "30s").replace("$env", ".*").replace("$stage", ".*");
        let answer = support::wait_for_value(&format!("data for {panel:?} of {file}"), || async {
            let v = query(&http, &prom, &expr).await;
            assert_eq!(v["status"], "success", "{file}, {panel:?}: {expr}: {v}");
            v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()).then_some(v)
        })
        .await;
        assert_eq!(answer["status"], "success");
    }

    // What the rollout implies, as Prometheus sees it.
    let hosts = query(&http, &prom, r#"sum(teletraan_api_hosts{env="web", stage="prod"})"#).await;
    assert_eq!(hosts["data"]["result"][0]["value"][1], "4", "{hosts}");
    let up = query(&http, &prom, r#"min(up{job=~"teletraan-.*"})"#).await;
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");

    // Every role's job scraped, and up: one target each, answering.
    let (up, jobs) = support::wait_for_value("every job scraped", || async {
        let up = query(&http, &prom, r#"up{job=~"teletraan-.*"}"#).await;
        let mut jobs: Vec<(String, String)> = up["data"]["result"]
            .as_array()?
            .iter()
            .map(|r| {
                (r["metric"]["job"].as_str().unwrap_or("").to_string(), r["value"][1].as_str().unwrap_or("").into())
            })
            .collect();
        jobs.sort();
        (jobs.len() >= 3).then_some((up, jobs))
    })
    .await;
    let every_role_up: Vec<(String, String)> = ["teletraan-api", "teletraan-gateway", "teletraan-worker"]
        .iter()
        .map(|j| (j.to_string(), "1".to_string()))
        .collect();
    assert_eq!(jobs, every_role_up, "{up}");

    // The worker's own series, from the worker's job: what it handled by queue and outcome.
    let messages = support::wait_for_value("teletraan_worker_messages_total from the worker's job", || async {
        let v = query(&http, &prom, r#"teletraan_worker_messages_total{job="teletraan-worker"}"#).await;
        v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()).then_some(v)
    })
    .await;
    let instance = host_port(&worker.url);
    for series in messages["data"]["result"].as_array().unwrap() {
        assert_eq!(series["metric"]["instance"], instance, "{series}");
    }
    let handled = query(&http, &prom, r#"sum(teletraan_worker_messages_total{job="teletraan-worker"})"#).await;
    eprintln!("the worker process handled {} message(s)", handled["data"]["result"][0]["value"][1]);

    prometheus.kill().await.unwrap();
    fleet.stop().await;
    worker.kill().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
