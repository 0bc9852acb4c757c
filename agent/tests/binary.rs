//! The real binary: configuration errors, the printed configuration, the lock, an unreachable
//! gateway, recovery after `kill -9` in the middle of a hook, and the metrics page.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use agent::testutil::{TempDir, wait_until};
use common::{Fake, Mode, build_archive, build_json};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_teletraan-agent");
const B1: &str = "BuildOne00000000000000_abcdef0";

fn agent_cmd(dir: &Path, server: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("TELETRAAN_AGENT_") {
            c.env_remove(k);
        }
    }
    c.env("TELETRAAN_AGENT_DIR", dir)
        .env("TELETRAAN_AGENT_SERVER", server)
        .env("TELETRAAN_AGENT_HOST_ID", "host-1")
        .env("TELETRAAN_AGENT_MIN_RUNNING_TIME", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn output(mut c: tokio::process::Command) -> (i32, String, String) {
    let out = c.output().await.unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn bad_configuration_exits_2_with_a_clear_error() {
    let t = TempDir::new("bin-cfg");
    let dir = t.path().join("a");
    let mut c = agent_cmd(&dir, "http://127.0.0.1:9");
    c.args(["once", "--ping-interval", "soon"]);
    let (code, _, err) = output(c).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ping-interval") && !err.contains("panicked"), "{err}");

    let file = t.path().join("agent.toml");
    std::fs::write(&file, "ping_intervall = 3\n").unwrap();
    let mut c = agent_cmd(&dir, "http://127.0.0.1:9");
    c.args(["once", "--config"]).arg(&file);
    let (code, _, err) = output(c).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ping_intervall") && err.contains("agent.toml"), "{err}");

    let mut c = agent_cmd(&dir, "http://127.0.0.1:9");
    c.env("TELETRAAN_AGENT_HOST_ID", "").arg("once");
    let (code, _, err) = output(c).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("host id"), "{err}");
}

#[tokio::test]
async fn unreachable_gateway_fails_once_with_exit_1() {
    let t = TempDir::new("bin-down");
    let mut c = agent_cmd(&t.path().join("a"), "http://127.0.0.1:9");
    c.arg("once");
    let (code, _, err) = output(c).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ping failed") && !err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_the_configuration_without_the_token() {
    let t = TempDir::new("bin-once");
    let fake = Fake::start().await;
    let mut c = agent_cmd(&t.path().join("a"), &fake.url());
    c.env("TELETRAAN_AGENT_TOKEN", "s3cr3t-token").env("TELETRAAN_AGENT_GROUPS", "web,api").arg("once");
    let (code, _, err) = output(c).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("token = (set, not shown)") && err.contains("groups = web,api"), "{err}");
    assert!(!err.contains("s3cr3t-token"), "{err}");
    assert_eq!(fake.pings().len(), 1);
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Without a hook user a hook inherits the agent's environment, minus every
/// `TELETRAAN_AGENT_*` variable (the token among them), and a stage's script variable named
/// like one of them does not reach it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_without_a_hook_user_sees_none_of_the_agents_variables() {
    let t = TempDir::new("bin-hook-env");
    let dir = t.path().join("a");
    let fake = Fake::start().await;
    let seen = t.path().join("hook.env");
    let restarting = format!("env > {0}.tmp && mv {0}.tmp {0}", seen.display());
    fake.serve("one.tar.gz", build_archive("one", &[("RESTARTING", &restarting)]));
    fake.set_mode(Mode::Deploy {
        deploy_id: "DeployOne".into(),
        build: build_json(B1, &format!("{}/artifacts/one.tar.gz", fake.url()), None),
        script_variables: json!({"TELETRAAN_AGENT_TOKEN": "from-the-stage", "STAGE_SETTING": "kept"}),
    });

    let mut c = agent_cmd(&dir, &fake.url());
    c.env("TELETRAAN_AGENT_TOKEN", "s3cr3t-token");
    c.arg("run").stdout(Stdio::null()).stderr(Stdio::null());
    let mut running = c.spawn().unwrap();
    wait_until("RESTARTING to write its environment", Duration::from_secs(60), || seen.is_file());
    running.start_kill().unwrap();
    running.wait().await.unwrap();

    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(env.lines().any(|l| l == "STAGE_SETTING=kept"), "the stage's variables reach the hook:\n{env}");
    let leaked: Vec<&str> = env.lines().filter(|l| l.starts_with("TELETRAAN_AGENT_")).collect();
    assert!(leaked.is_empty(), "the hook saw the agent's variables: {leaked:?}");
    assert!(!env.contains("s3cr3t-token") && !env.contains("from-the-stage"), "{env}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_hook_then_restart_reports_the_interrupted_step_as_unknown() {
    let t = TempDir::new("bin-crash");
    let dir = t.path().join("a");
    let fake = Fake::start().await;
    let pidfile = t.path().join("hook.pid");
    let restarting = format!("echo $$ > {}\nexec sleep 1000", pidfile.display());
    fake.serve("one.tar.gz", build_archive("one", &[("RESTARTING", &restarting)]));
    fake.set_mode(Mode::Deploy {
        deploy_id: "DeployOne".into(),
        build: build_json(B1, &format!("{}/artifacts/one.tar.gz", fake.url()), None),
        script_variables: json!({"RECORD": t.path().join("record").to_string_lossy()}),
    });

    let mut c = agent_cmd(&dir, &fake.url());
    c.arg("run").stdout(Stdio::null()).stderr(Stdio::null());
    let mut running = c.spawn().unwrap();
    wait_until("RESTARTING to start", Duration::from_secs(60), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    let hook_pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // While the hook runs, progress pings report the step as UNKNOWN (min running time 1 s).
    wait_until("a progress ping", Duration::from_secs(60), || {
        fake.report_trail().last().map(String::as_str) == Some("RESTARTING UNKNOWN")
    });

    // A second agent on the same directory is refused.
    let mut second = agent_cmd(&dir, &fake.url());
    second.arg("once");
    let (code, _, err) = output(second).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already uses"), "{err}");

    running.start_kill().unwrap();
    running.wait().await.unwrap();
    // SAFETY: signalling the hook's own process group, which the test owns.
    unsafe {
        libc::kill(-hook_pid, libc::SIGKILL);
    }
    wait_until("the orphaned hook to die", Duration::from_secs(20), || !alive(hook_pid));

    fake.set_mode(Mode::Noop);
    let before = fake.pings().len();
    let mut c = agent_cmd(&dir, &fake.url());
    c.arg("once");
    let (code, _, err) = output(c).await;
    assert_eq!(code, 0, "{err}");
    let pings = fake.pings();
    let r = common::env_report(&pings[before]).expect("the restarted agent reports the env");
    assert_eq!(r.deploy_id.as_deref(), Some("DeployOne"));
    assert_eq!(r.deploy_stage, Some(schema::DeployStage::Restarting));
    assert_eq!(r.agent_status, Some(schema::AgentStatus::Unknown));

    let mut c = agent_cmd(&dir, &fake.url());
    c.args(["status", "--json"]);
    let (code, out, err) = output(c).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["web"]["report"]["deployStage"], "RESTARTING");
    let mut c = agent_cmd(&dir, &fake.url());
    c.arg("status");
    let (code, out, _) = output(c).await;
    assert_eq!(code, 0);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.contains("web") && l.contains("RESTARTING") && l.contains(B1)),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_status_skips_a_failed_step_or_starts_over_and_is_refused_while_an_agent_runs() {
    let t = TempDir::new("bin-setstatus");
    let dir = t.path().join("a");
    let fake = Fake::start().await;
    let record = t.path().join("record");
    fake.serve("one.tar.gz", build_archive("one", &[("RESTARTING", "echo broken >&2\nexit 1")]));
    fake.set_mode(Mode::Deploy {
        deploy_id: "DeployOne".into(),
        build: build_json(B1, &format!("{}/artifacts/one.tar.gz", fake.url()), None),
        script_variables: json!({"RECORD": record.to_string_lossy()}),
    });
    let once = || {
        let mut c = agent_cmd(&dir, &fake.url());
        c.env("TELETRAAN_AGENT_MAX_RETRIES", "1").arg("once");
        c
    };
    let set_status = |args: &[&str]| {
        let mut c = agent_cmd(&dir, &fake.url());
        c.arg("set-status").args(args);
        c
    };
    let (code, _, err) = output(once()).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.report_trail().last().map(String::as_str), Some("RESTARTING TOO_MANY_RETRY"));

    // While an agent runs on the directory, set-status is refused and changes nothing.
    let before = fake.pings().len();
    let mut c = agent_cmd(&dir, &fake.url());
    c.arg("run").stdout(Stdio::null()).stderr(Stdio::null());
    let mut running = c.spawn().unwrap();
    wait_until("the running agent's first ping", Duration::from_secs(60), || fake.pings().len() > before);
    let status_before = std::fs::read_to_string(dir.join("env_status")).unwrap();
    let (code, _, err) = output(set_status(&["--env", "web", "--step", "RESTARTING"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("an agent is running") && err.contains("stop it first"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("env_status")).unwrap(), status_before);
    running.start_kill().unwrap();
    running.wait().await.unwrap();

    // --step: RESTARTING counts as done, so the server moves on to POST_RESTART.
    let (code, out, err) = output(set_status(&["--env", "web", "--step", "RESTARTING"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("RESTARTING recorded as SUCCEEDED"), "{out}");
    let before = fake.pings().len();
    let (code, _, err) = output(once()).await;
    assert_eq!(code, 0, "{err}");
    let trail = fake.report_trail()[before..].to_vec();
    assert_eq!(trail, ["RESTARTING SUCCEEDED", "POST_RESTART SUCCEEDED", "SERVING_BUILD SUCCEEDED"]);

    // --restart: the env is forgotten, the next ping carries no report and the deploy starts over.
    let (code, out, err) = output(set_status(&["--env", "web", "--restart"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("forgotten"), "{out}");
    let before = fake.pings().len();
    let (code, _, err) = output(once()).await;
    assert_eq!(code, 0, "{err}");
    let trail = fake.report_trail()[before..].to_vec();
    assert_eq!(trail[..2], ["-", "PRE_DOWNLOAD SUCCEEDED"], "{trail:?}");

    let (code, _, err) = output(set_status(&["--env", "nope", "--restart"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("env nope is not in"), "{err}");
    let (code, _, err) = output(set_status(&["--env", "web"])).await;
    assert_eq!(code, 2, "--step or --restart is required: {err}");
}

/// The answer to `GET /metrics` on `addr`, if it can be had now.
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_is_listed_served_and_a_taken_port_does_not_stop_the_agent() {
    let t = TempDir::new("bin-metrics");
    let dir = t.path().join("a");
    let fake = Fake::start().await;
    let mut c = agent_cmd(&dir, &fake.url());
    c.arg("--help");
    let (code, out, _) = output(c).await;
    assert_eq!(code, 0);
    assert!(out.contains("--metrics-listen <ADDR>") && out.contains("TELETRAAN_AGENT_METRICS_LISTEN"), "{out}");

    let mut c = agent_cmd(&dir, &fake.url());
    c.args(["once", "--metrics-listen", "localhost:9102"]);
    let (code, _, err) = output(c).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("metrics_listen \"localhost:9102\" must be an IP address and a port"), "{err}");

    // An address another process holds: logged, and the round runs all the same.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let mut c = agent_cmd(&dir, &fake.url());
    c.args(["once", "--metrics-listen", &taken_addr]);
    let (code, _, err) = output(c).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("metrics_listen = {taken_addr}")), "{err}");
    assert!(err.contains("cannot listen for metrics"), "{err}");
    assert_eq!(fake.pings().len(), 1);

    // A free address (from the environment): the running agent serves its page there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut c = agent_cmd(&dir, &fake.url());
    c.env("TELETRAAN_AGENT_METRICS_LISTEN", &free).arg("run").stdout(Stdio::null()).stderr(Stdio::null());
    let mut running = c.spawn().unwrap();
    wait_until("the metrics page to show a ping", Duration::from_secs(60), || {
        scrape(&free).is_some_and(|page| page.contains("\nteletraan_agent_pings_total{outcome=\"ok\"} 1\n"))
    });
    let page = scrape(&free).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains(&format!("teletraan_agent_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))), "{page}");
    running.start_kill().unwrap();
    running.wait().await.unwrap();
}
