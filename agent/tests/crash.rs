//! `kill -9` of the real agent during each stage of a deploy, then a restart: the deploy
//! completes, the interrupted stage is repeated (Teletraan's rule: a step reported UNKNOWN is
//! run again, so hooks must be idempotent) and no hook of a stage that had finished runs twice.
//!
//! Each test first deploys build one (so PRE_DOWNLOAD and POST_DOWNLOAD of the second deploy
//! have a live build whose hooks run), then deploys build two and kills the agent:
//! * in a hook stage, while that hook runs (it blocks on its first run only);
//! * in DOWNLOADING, while the artifact request hangs;
//! * in STAGING (built in and instantaneous), after the switch, while the ping carrying its
//!   result hangs: the status file says STAGING SUCCEEDED but the server has not heard it.
//!
//! The fake gateway drives the goals and records every report; hooks append to a record file,
//! so the test counts how often each one ran.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use agent::testutil::{TempDir, wait_until};
use common::{Fake, Mode, build_files, build_json, build_tar_gz};
use schema::{AgentStatus, DeployStage};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_teletraan-agent");
const B1: &str = "BuildOne00000000000000_abcdef0";
const B2: &str = "BuildTwo00000000000000_abcdef0";
const WAIT: Duration = Duration::from_secs(90);
const HOOKS: [&str; 6] =
    ["PRE_DOWNLOAD", "POST_DOWNLOAD", "PRE_RESTART", "RESTARTING", "POST_RESTART", "SERVING_BUILD"];

/// Every hook records `<STEP> <DEPLOY_ID>`; the hook of `$BLOCK_STEP` blocks on its first run.
const HOOK: &str = r#"echo "$DEPLOY_STEP $DEPLOY_ID" >> "$RECORD"
if [ "$DEPLOY_STEP" = "$BLOCK_STEP" ] && [ ! -e "$RECORD.blocked" ]; then
  touch "$RECORD.blocked"
  echo $$ > "$RECORD.pid"
  exec sleep 1000
fi"#;

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
        .env("TELETRAAN_AGENT_RETRY_DELAY", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    c
}

async fn once(dir: &Path, fake: &Fake) {
    let mut c = agent_cmd(dir, &fake.url());
    c.arg("once").stderr(Stdio::piped());
    let out = c.output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn saved_report(dir: &Path) -> (String, String, String) {
    let text = std::fs::read_to_string(dir.join("env_status")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let r = &v["web"]["report"];
    let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
    (s("deployId"), s("deployStage"), s("status"))
}

/// How often each hook ran for `deploy`.
fn runs(record: &Path, deploy: &str) -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    HOOKS.iter().map(|h| (h.to_string(), text.lines().filter(|l| *l == format!("{h} {deploy}")).count())).collect()
}

async fn kill_during(stage: DeployStage) {
    let t = TempDir::new(&format!("crash-{}", stage.as_str().to_lowercase()));
    let dir = t.path().join("a");
    let record = t.path().join("record");
    let fake = Fake::start().await;
    let hooks: Vec<(&str, &str)> = HOOKS.iter().map(|h| (*h, HOOK)).collect();
    fake.serve("one.tar.gz", build_tar_gz(&build_files("one", &hooks, &[])));
    fake.serve("two.tar.gz", build_tar_gz(&build_files("two", &hooks, &[])));
    let deploy = |id: &str, build: &str, file: &str, block: &str| Mode::Deploy {
        deploy_id: id.into(),
        build: build_json(build, &format!("{}/artifacts/{file}", fake.url()), None),
        script_variables: json!({"RECORD": record.to_string_lossy(), "BLOCK_STEP": block}),
    };

    fake.set_mode(deploy("DeployOne", B1, "one.tar.gz", "none"));
    once(&dir, &fake).await;
    assert_eq!(fake.report_trail().last().map(String::as_str), Some("SERVING_BUILD SUCCEEDED"));

    fake.set_mode(deploy("DeployTwo", B2, "two.tar.gz", stage.as_str()));
    match stage {
        DeployStage::Downloading => fake.stall("two.tar.gz"),
        DeployStage::Staging => fake.hold(DeployStage::Staging, AgentStatus::Succeeded),
        _ => {}
    }
    let mut running = agent_cmd(&dir, &fake.url()).arg("run").spawn().unwrap();
    let pidfile = t.path().join("record.pid");
    let expected_status = match stage {
        DeployStage::Downloading => {
            wait_until("the download to hang", WAIT, || fake.requested().contains(&"two.tar.gz".to_string()));
            "UNKNOWN"
        }
        DeployStage::Staging => {
            wait_until("the STAGING result ping to hang", WAIT, || fake.held() > 0);
            "SUCCEEDED"
        }
        _ => {
            wait_until("the hook to block", WAIT, || {
                std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
            });
            "UNKNOWN"
        }
    };
    let saved = saved_report(&dir);
    assert_eq!(saved, ("DeployTwo".into(), stage.as_str().into(), expected_status.into()), "persisted before the kill");

    running.start_kill().unwrap(); // SIGKILL
    running.wait().await.unwrap();
    if let Some(hook) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
        // What systemd's KillMode=control-group does to the agent's hooks.
        // SAFETY: signalling the hook's own process group, which the test started.
        unsafe {
            libc::kill(-hook, libc::SIGKILL);
        }
        wait_until("the orphaned hook to die", WAIT, || !alive(hook));
    }
    fake.unstall("two.tar.gz");
    fake.release();

    once(&dir, &fake).await;
    assert_eq!(fake.report_trail().last().map(String::as_str), Some("SERVING_BUILD SUCCEEDED"));
    assert_eq!(saved_report(&dir), ("DeployTwo".into(), "SERVING_BUILD".into(), "SUCCEEDED".into()));
    let live = std::fs::read_link(dir.join("targets/web")).unwrap();
    assert!(live.ends_with(B2), "{}", live.display());
    let expected: Vec<(String, usize)> =
        HOOKS.iter().map(|h| (h.to_string(), if *h == stage.as_str() { 2 } else { 1 })).collect();
    assert_eq!(runs(&record, "DeployTwo"), expected, "the interrupted hook runs again, no other");
    let leftovers: Vec<String> = std::fs::read_dir(dir.join("builds"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no temp file or dir is left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_pre_download() {
    kill_during(DeployStage::PreDownload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_downloading() {
    kill_during(DeployStage::Downloading).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_post_download() {
    kill_during(DeployStage::PostDownload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_staging() {
    kill_during(DeployStage::Staging).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_pre_restart() {
    kill_during(DeployStage::PreRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_restarting() {
    kill_during(DeployStage::Restarting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_post_restart() {
    kill_during(DeployStage::PostRestart).await;
}
