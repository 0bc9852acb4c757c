//! End to end with the real binaries: `teletraan up` on its own database and broker
//! namespace, three `teletraan-agent` processes in temp dirs, artifacts served over HTTP.
//! Build A reaches every host; build B then rolls with `maxParallel: 1`, and neither the
//! server's records nor the hosts' own hook timestamps ever show two hosts out of service.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use schema::model::Deploy;
use serde_json::json;
use support::{AGENT, Api, Server, binary, serve_artifacts, wait_for};
use teletraan::sample;
use tokio::process::{Child, Command};

const HOSTS: [&str; 3] = ["e2e-1", "e2e-2", "e2e-3"];

/// Every hook appends one line: step|start ns|end ns|the build the script came from|then the
/// environment it saw.
fn hook(step: &str, version: &str) -> String {
    let pause = if step == "RESTARTING" { "sleep 1\n" } else { "" };
    format!(
        "#!/bin/sh\nstart=$(date +%s%N)\n{pause}echo \"$DEPLOY_STEP|$start|$(date +%s%N)|{version}|$BUILD_ID|$DEPLOY_ID|$ENV_NAME|$STAGE_NAME|$DEPLOY_TYPE|$OPCODE|${{FIRST_DEPLOY:-}}|${{E2E_VAR:-}}|$BUILD_NAME|$BUILD_COMMIT|$BUILD_URL|$TARGET\" >> \"$(dirname \"$TARGET\")/../hooks.log\"\n"
    )
}

fn hooks(version: &str) -> Vec<(&'static str, String)> {
    ["PRE_DOWNLOAD", "POST_DOWNLOAD", "PRE_RESTART", "RESTARTING", "POST_RESTART"]
        .iter()
        .map(|s| (*s, hook(s, version)))
        .collect()
}

#[derive(Debug, Clone)]
struct HookRun {
    step: String,
    script_of: String,
    start: u128,
    end: u128,
    vars: HashMap<&'static str, String>,
}

fn hook_runs(dir: &Path) -> Vec<HookRun> {
    let text = std::fs::read_to_string(dir.join("hooks.log")).unwrap_or_default();
    let names = [
        "BUILD_ID",
        "DEPLOY_ID",
        "ENV_NAME",
        "STAGE_NAME",
        "DEPLOY_TYPE",
        "OPCODE",
        "FIRST_DEPLOY",
        "E2E_VAR",
        "BUILD_NAME",
        "BUILD_COMMIT",
        "BUILD_URL",
        "TARGET",
    ];
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 4 + names.len(), "hook line {l:?}");
            HookRun {
                step: f[0].to_string(),
                start: f[1].parse().unwrap(),
                end: f[2].parse().unwrap(),
                script_of: f[3].to_string(),
                vars: names.iter().zip(&f[4..]).map(|(n, v)| (*n, v.to_string())).collect(),
            }
        })
        .collect()
}

fn start_agent(gateway: &str, host: &str, dir: &Path) -> Child {
    start_agent_with(gateway, host, dir, &["--ping-interval", "1"])
}

fn start_agent_with(gateway: &str, host: &str, dir: &Path, timing: &[&str]) -> Child {
    Command::new(binary("teletraan-agent"))
        .arg("run")
        .args(["--server", gateway, "--host-id", host, "--host-name", host, "--groups", "e2e"])
        .args(timing)
        .args(["--retry-delay", "1", "--max-retries", "2"])
        .arg("--dir")
        .arg(dir)
        .env("TELETRAAN_AGENT_TOKEN", AGENT)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start teletraan-agent")
}

/// Waits until every host serves `deploy` and the deploy is SUCCEEDING.
async fn wait_rolled_out(api: &Api, deploy: &Deploy) {
    wait_for(&format!("the rollout of {}", deploy.id), || async {
        let agents = api.agents("e2e", "prod").await;
        let d = api.deploy_by_id(deploy.id.as_str()).await;
        let all = agents.len() == HOSTS.len()
            && agents.iter().all(|a| a.deploy_id == deploy.id && a.deploy_stage.as_str() == "SERVING_BUILD");
        all && d.state.as_str() == "SUCCEEDING" && d.success_total == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_builds_roll_out_to_three_real_agents_within_the_cap() {
    let server = Server::start().await;
    let api = &server.api;
    let tmp = std::env::temp_dir().join(format!("teletraan-e2e-{}", uuid::Uuid::new_v4().simple()));
    let a_bytes = sample::artifact("A", &hooks("A")).unwrap();
    let b_bytes = sample::artifact("B", &hooks("B")).unwrap();
    let artifacts = serve_artifacts(vec![("a.tar.gz", a_bytes.clone()), ("b.tar.gz", b_bytes.clone())]).await;

    api.stage("e2e", "prod", "e2e", json!({})).await;
    api.call(reqwest::Method::PUT, "/v1/envs/e2e/prod/script_configs", Some(json!({"E2E_VAR": "hello"}))).await;
    let a =
        api.publish("e2e", &format!("{artifacts}/a.tar.gz"), "aaaaaaa111", Some(&sample::sha256_hex(&a_bytes))).await;
    let b =
        api.publish("e2e", &format!("{artifacts}/b.tar.gz"), "bbbbbbb222", Some(&sample::sha256_hex(&b_bytes))).await;

    let dirs: Vec<PathBuf> = HOSTS.iter().map(|h| tmp.join(h)).collect();
    let mut agents: Vec<Child> = HOSTS.iter().zip(&dirs).map(|(h, d)| start_agent(&server.gateway, h, d)).collect();

    // Build A: new hosts, so every host deploys at once.
    let deploy_a = api.deploy("e2e", "prod", &a).await;
    wait_rolled_out(api, &deploy_a).await;
    for dir in &dirs {
        let link = std::fs::read_link(dir.join("targets/e2e")).expect("the target symlink");
        assert!(link.ends_with(format!("builds/{}", a.id)), "{} -> {}", dir.display(), link.display());
        let runs = hook_runs(dir);
        let steps: Vec<&str> = runs.iter().map(|r| r.step.as_str()).collect();
        assert_eq!(
            steps,
            ["PRE_RESTART", "RESTARTING", "POST_RESTART"],
            "a first deploy runs the new build's hooks once each"
        );
        for r in &runs {
            assert_eq!(r.script_of, "A");
            let v = &r.vars;
            assert_eq!(v["BUILD_ID"], a.id.as_str());
            assert_eq!(v["DEPLOY_ID"], deploy_a.id.as_str());
            assert_eq!((v["ENV_NAME"].as_str(), v["STAGE_NAME"].as_str()), ("e2e", "prod"));
            assert_eq!((v["DEPLOY_TYPE"].as_str(), v["OPCODE"].as_str()), ("REGULAR", "DEPLOY"));
            assert_eq!(v["FIRST_DEPLOY"], "True");
            assert_eq!(v["E2E_VAR"], "hello", "script variables reach the hooks");
            assert_eq!((v["BUILD_NAME"].as_str(), v["BUILD_COMMIT"].as_str()), ("e2e", "aaaaaaa111"));
            assert_eq!(v["BUILD_URL"], format!("{artifacts}/a.tar.gz"));
            assert_eq!(Path::new(&v["TARGET"]), dir.join("targets/e2e"));
        }
    }

    // Build B, one host at a time.
    api.configure("e2e", "prod", json!({"maxParallel": 1})).await;
    let most_out = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let most_out = most_out.clone();
        let api = Api { http: api.http.clone(), base: api.base.clone() };
        tokio::spawn(async move {
            loop {
                let out = api
                    .agents("e2e", "prod")
                    .await
                    .iter()
                    .filter(|a| a.deploy_stage.as_str() != "SERVING_BUILD")
                    .count();
                most_out.fetch_max(out, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let deploy_b = api.deploy("e2e", "prod", &b).await;
    wait_rolled_out(api, &deploy_b).await;
    sampler.abort();
    assert_eq!(most_out.load(Ordering::SeqCst), 1, "the sampler saw a host out of service, and never two");
    assert_eq!(api.deploy_by_id(deploy_a.id.as_str()).await.state.as_str(), "SUCCEEDED");

    let mut windows = Vec::new();
    for dir in &dirs {
        let link = std::fs::read_link(dir.join("targets/e2e")).unwrap();
        assert!(link.ends_with(format!("builds/{}", b.id)), "{} -> {}", dir.display(), link.display());
        let runs: Vec<HookRun> = hook_runs(dir).into_iter().skip(3).collect();
        let steps: Vec<(&str, &str, &str)> =
            runs.iter().map(|r| (r.step.as_str(), r.script_of.as_str(), r.vars["BUILD_ID"].as_str())).collect();
        // PRE_DOWNLOAD and POST_DOWNLOAD run the live (old) build's scripts, as Teletraan's agent
        // does; the BUILD_* variables describe the old build only until the download.
        assert_eq!(
            steps,
            [
                ("PRE_DOWNLOAD", "A", a.id.as_str()),
                ("POST_DOWNLOAD", "A", b.id.as_str()),
                ("PRE_RESTART", "B", b.id.as_str()),
                ("RESTARTING", "B", b.id.as_str()),
                ("POST_RESTART", "B", b.id.as_str()),
            ]
        );
        assert!(runs.iter().all(|r| r.vars["DEPLOY_ID"] == deploy_b.id.as_str() && r.vars["FIRST_DEPLOY"].is_empty()));
        windows.push((runs.first().unwrap().start, runs.last().unwrap().end));
    }
    // From the hosts' side: the out-of-service windows of B never overlap.
    windows.sort();
    for w in windows.windows(2) {
        assert!(w[0].1 <= w[1].0, "two hosts were out of service at once: {windows:?}");
    }

    for agent in &mut agents {
        agent.kill().await.unwrap();
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A RESTARTING hook that fails while a flag file sits next to the agent's directory.
fn failing_hooks(version: &str) -> Vec<(&'static str, String)> {
    let restart = format!(
        "#!/bin/sh\nif [ -e \"$(dirname \"$TARGET\")/../fail\" ]; then echo 'refusing to start {version}' >&2; exit 3; fi\necho ok\n"
    );
    vec![("RESTARTING", restart)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hosts_make_the_deploy_failing_and_a_reset_retries_them() {
    let server = Server::start().await;
    let api = &server.api;
    let tmp = std::env::temp_dir().join(format!("teletraan-e2e-{}", uuid::Uuid::new_v4().simple()));
    let a_bytes = sample::artifact("A", &failing_hooks("A")).unwrap();
    let b_bytes = sample::artifact("B", &failing_hooks("B")).unwrap();
    let (a_sha, b_sha) = (sample::sha256_hex(&a_bytes), sample::sha256_hex(&b_bytes));
    let artifacts = serve_artifacts(vec![("a.tar.gz", a_bytes), ("b.tar.gz", b_bytes)]).await;
    api.stage("e2e", "prod", "e2e", json!({"maxParallelPct": 100, "stuckThreshold": 3600})).await;
    let a = api.publish("e2e", &format!("{artifacts}/a.tar.gz"), "aaaaaaa111", Some(&a_sha)).await;
    let b = api.publish("e2e", &format!("{artifacts}/b.tar.gz"), "bbbbbbb222", Some(&b_sha)).await;
    let dirs: Vec<PathBuf> = HOSTS.iter().map(|h| tmp.join(h)).collect();
    let mut agents: Vec<Child> = HOSTS.iter().zip(&dirs).map(|(h, d)| start_agent(&server.gateway, h, d)).collect();
    let deploy_a = api.deploy("e2e", "prod", &a).await;
    wait_rolled_out(api, &deploy_a).await;

    // e2e-2 refuses to restart: with every host required, one failure makes the deploy FAILING.
    let flag = dirs[1].join("fail");
    std::fs::write(&flag, b"").unwrap();
    let deploy_b = api.deploy("e2e", "prod", &b).await;
    let failing = api.wait_state(deploy_b.id.as_str(), "FAILING").await;
    assert_eq!((failing.success_total, failing.fail_total), (2, 1), "{failing:?}");
    let row = api.agents("e2e", "prod").await.into_iter().find(|a| a.host_name.as_str() == "e2e-2").unwrap();
    assert_eq!((row.state.as_str(), row.status.as_str()), ("PAUSED_BY_SYSTEM", "TOO_MANY_RETRY"), "{row:?}");
    let error = api
        .call(reqwest::Method::GET, "/v1/envs/e2e/prod/agents/errors/e2e-2", None)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert!(error["errorMessage"].as_str().unwrap_or_default().contains("refusing to start B"), "{error}");

    // Fixed on the host, then "retry failed hosts": the deploy recovers and succeeds.
    std::fs::remove_file(&flag).unwrap();
    api.call(reqwest::Method::PUT, &format!("/v1/envs/e2e/prod/agents/reset_failed_agents/{}", deploy_b.id), None)
        .await;
    wait_rolled_out(api, &deploy_b).await;
    let row = api.agents("e2e", "prod").await.into_iter().find(|a| a.host_name.as_str() == "e2e-2").unwrap();
    assert_eq!(row.state.as_str(), "NORMAL");

    for agent in &mut agents {
        agent.kill().await.unwrap();
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_agents_get_rollouts_without_polling_again() {
    // An hour between pings: without long-poll no host would ping again during this test, so
    // every goal after the first ping reaches the agents through held pings. The server runs in
    // sidecar mode: the builds carry no digest, and the agents verify them with the published
    // `.sha256` files.
    let server = Server::start_with(&[("TELETRAAN_ARTIFACT_CHECKSUM", "sidecar")]).await;
    let api = &server.api;
    let tmp = std::env::temp_dir().join(format!("teletraan-e2e-{}", uuid::Uuid::new_v4().simple()));
    let a_bytes = sample::artifact("A", &hooks("A")).unwrap();
    let b_bytes = sample::artifact("B", &hooks("B")).unwrap();
    let artifacts = serve_artifacts(vec![("a.tar.gz", a_bytes), ("b.tar.gz", b_bytes)]).await;
    api.stage("e2e", "prod", "e2e", json!({"maxParallel": 1})).await;
    let a = api.publish("e2e", &format!("{artifacts}/a.tar.gz"), "aaaaaaa111", None).await;
    let b = api.publish("e2e", &format!("{artifacts}/b.tar.gz"), "bbbbbbb222", None).await;
    let dirs: Vec<PathBuf> = HOSTS.iter().map(|h| tmp.join(h)).collect();
    let timing = ["--ping-interval", "3600", "--long-poll", "20"];
    let mut agents: Vec<Child> =
        HOSTS.iter().zip(&dirs).map(|(h, d)| start_agent_with(&server.gateway, h, d, &timing)).collect();
    let deploy_a = api.deploy("e2e", "prod", &a).await;
    wait_rolled_out(api, &deploy_a).await;
    // Build B reaches idle agents, one at a time, only through their held pings.
    let deploy_b = api.deploy("e2e", "prod", &b).await;
    wait_rolled_out(api, &deploy_b).await;
    for agent in &mut agents {
        agent.kill().await.unwrap();
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&tmp);
}
