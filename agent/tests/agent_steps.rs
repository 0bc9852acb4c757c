//! The agent loop against the fake gateway, for what happens inside a step: templates
//! rendered at STAGING, a zip artifact, progress pings during a download and a goal change that
//! stops it, a goal change mid-hook (the hook's group is killed, the step is reported UNKNOWN as
//! Teletraan reports ABORTED_BY_SERVER), and a builds directory that is not writable.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::config::Config;
use agent::runner::Agent;
use agent::testutil::{TempDir, listing, wait_until};
use common::{Fake, Mode, build_archive, build_files, build_json, build_tar_gz, build_zip};
use schema::{AgentStatus, DeployStage};
use serde_json::json;

const B1: &str = "BuildOne00000000000000_abcdef0";
const B2: &str = "BuildTwo00000000000000_abcdef0";
const WAIT: Duration = Duration::from_secs(60);

fn config(dir: &Path, server: &str) -> Config {
    let mut c = Config::with_defaults(dir.join("agent"), server, "host-1");
    c.ping_retry_delays = vec![Duration::from_millis(10)];
    c.retry_delay = Duration::ZERO;
    c.min_running_time = Duration::from_secs(1);
    c.termination_timeout = Duration::from_millis(500);
    c
}

fn deploy(fake: &Fake, deploy_id: &str, build_id: &str, file: &str, vars: serde_json::Value) {
    let url = format!("{}/artifacts/{file}", fake.url());
    fake.set_mode(Mode::Deploy {
        deploy_id: deploy_id.into(),
        build: build_json(build_id, &url, None),
        script_variables: vars,
    });
}

fn last_trail(fake: &Fake) -> Option<String> {
    fake.report_trail().last().cloned()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn read_pid(path: &Path) -> i32 {
    wait_until("a pid file", WAIT, || std::fs::read_to_string(path).is_ok_and(|s| s.trim().parse::<i32>().is_ok()));
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_rendered_at_staging_from_the_script_variables() {
    let t = TempDir::new("steps-tmpl");
    let fake = Fake::start().await;
    let record = t.path().join("record");
    let restarting = "cat \"$TARGET/teletraan/app.conf\" >> \"$RECORD\"";
    let files = build_files(
        "one",
        &[("RESTARTING", restarting)],
        &[("teletraan/app.conf.tmpl", "port=${TELETRAAN_PORT} host={$TELETRAAN_HOST:localhost} $TELETRAAN_NOPE\n")],
    );
    fake.serve("one.tar.gz", build_tar_gz(&files));
    deploy(&fake, "DeployOne", B1, "one.tar.gz", json!({"RECORD": record.to_string_lossy(), "PORT": "8080"}));

    let mut agent = Agent::open(config(t.path(), &fake.url())).unwrap();
    let layout = agent.layout().clone();
    agent.round().await.unwrap();
    assert_eq!(last_trail(&fake).as_deref(), Some("SERVING_BUILD SUCCEEDED"));
    let rendered = "port=8080 host=localhost $TELETRAAN_NOPE\n";
    assert_eq!(std::fs::read_to_string(layout.target("web").join("teletraan/app.conf")).unwrap(), rendered);
    assert!(std::fs::read_to_string(&record).unwrap().contains(rendered), "the hook saw the rendered file");
    assert!(layout.build_dir(B1).join("teletraan_template/app.conf.tmpl").is_file(), "the template copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_artifact_deploys_like_a_tarball() {
    let t = TempDir::new("steps-zip");
    let fake = Fake::start().await;
    let record = t.path().join("record");
    fake.serve("one.zip", build_zip(&build_files("one", &[], &[("bin/app", "app")])));
    deploy(&fake, "DeployOne", B1, "one.zip", json!({"RECORD": record.to_string_lossy()}));
    let mut agent = Agent::open(config(t.path(), &fake.url())).unwrap();
    let layout = agent.layout().clone();
    assert_eq!(agent.round().await.unwrap().steps, 8);
    assert_eq!(last_trail(&fake).as_deref(), Some("SERVING_BUILD SUCCEEDED"));
    let hooks = std::fs::read_to_string(&record).unwrap();
    assert_eq!(hooks.lines().count(), 4, "PRE_RESTART, RESTARTING, POST_RESTART, SERVING_BUILD: {hooks}");
    assert_eq!(std::fs::read_to_string(layout.target("web").join("bin/app")).unwrap(), "app");
    assert!(layout.archive("web", B1, "zip").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_download_pings_and_a_goal_change_stops_it_cleanly() {
    let t = TempDir::new("steps-dl-abort");
    let fake = Fake::start().await;
    fake.serve("one.tar.gz", build_archive("one", &[]));
    fake.stall("one.tar.gz");
    deploy(&fake, "DeployOne", B1, "one.tar.gz", json!({"RECORD": t.path().join("record").to_string_lossy()}));
    let mut agent = Agent::open(config(t.path(), &fake.url())).unwrap();
    let layout = agent.layout().clone();
    let round = tokio::spawn(async move {
        let r = agent.round().await.map(|s| s.steps);
        (agent, r)
    });
    wait_until("the download to start", WAIT, || fake.requested().contains(&"one.tar.gz".to_string()));
    wait_until("a progress ping during the download", WAIT, || {
        last_trail(&fake).as_deref() == Some("DOWNLOADING UNKNOWN")
    });
    fake.set_mode(Mode::Noop);
    let (agent, steps) = tokio::time::timeout(WAIT, round).await.expect("the round ends").unwrap();
    assert_eq!(steps.unwrap(), 2, "PRE_DOWNLOAD, then DOWNLOADING stopped by the goal change");
    fake.unstall("one.tar.gz");
    let entry = &agent.envs()["web"].report;
    assert_eq!((entry.deploy_stage, entry.status), (Some(DeployStage::Downloading), Some(AgentStatus::Unknown)));
    let builds = listing(&layout.builds_dir());
    assert!(builds.is_empty(), "no temp file, archive or build dir is left: {builds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goal_change_mid_hook_kills_its_group_and_the_new_goal_runs() {
    let t = TempDir::new("steps-hook-abort");
    let fake = Fake::start().await;
    let record = t.path().join("record");
    let pids = t.path().join("pids");
    let restarting =
        format!("sleep 1000 &\necho $! > {p}.child\necho $$ > {p}.hook\necho started\nsleep 1000", p = pids.display());
    fake.serve("one.tar.gz", build_archive("one", &[("RESTARTING", &restarting)]));
    fake.serve("two.tar.gz", build_archive("two", &[]));
    deploy(&fake, "DeployOne", B1, "one.tar.gz", json!({"RECORD": record.to_string_lossy()}));
    let mut agent = Agent::open(config(t.path(), &fake.url())).unwrap();
    let layout = agent.layout().clone();
    let round = tokio::spawn(async move {
        let r = agent.round().await.map(|s| s.steps);
        (agent, r)
    });
    let hook = read_pid(&PathBuf::from(format!("{}.hook", pids.display())));
    let child = read_pid(&PathBuf::from(format!("{}.child", pids.display())));
    wait_until("a progress ping during RESTARTING", WAIT, || {
        last_trail(&fake).as_deref() == Some("RESTARTING UNKNOWN")
    });
    let pings_before_change = fake.pings().len();
    deploy(&fake, "DeployTwo", B2, "two.tar.gz", json!({"RECORD": record.to_string_lossy()}));
    let (agent, steps) = tokio::time::timeout(WAIT, round).await.expect("the round ends").unwrap();
    steps.unwrap();
    wait_until("the aborted hook and its child to be gone", WAIT, || !alive(hook) && !alive(child));

    // Teletraan sends ABORTED_BY_SERVER as UNKNOWN: the last word on DeployOne is
    // RESTARTING UNKNOWN, never a result; then DeployTwo starts from PRE_DOWNLOAD.
    let pings = fake.pings();
    let after: Vec<_> = pings[pings_before_change..].iter().filter_map(common::env_report).collect();
    let first_two = after.iter().position(|r| r.deploy_id.as_deref() == Some("DeployTwo")).unwrap();
    assert!(after[..first_two].iter().all(|r| r.deploy_id.as_deref() == Some("DeployOne")
        && r.deploy_stage == Some(DeployStage::Restarting)
        && r.agent_status == Some(AgentStatus::Unknown)));
    assert_eq!(after[first_two].deploy_stage, Some(DeployStage::PreDownload));
    assert_eq!(last_trail(&fake).as_deref(), Some("SERVING_BUILD SUCCEEDED"));
    assert_eq!(layout.live_build_id("web").as_deref(), Some(B2));
    assert_eq!(agent.envs()["web"].report.deploy_id.as_deref(), Some("DeployTwo"));
    let log = std::fs::read_to_string(layout.log("web")).unwrap();
    assert_eq!(log.matches("started").count(), 1, "the aborted hook was not retried");
}

/// Makes `dir` refuse new files, even to root (`chattr +i`); undone on drop.
struct ReadOnly {
    dir: PathBuf,
    immutable: bool,
}

impl ReadOnly {
    fn make(dir: &Path) -> Option<ReadOnly> {
        use std::os::unix::fs::PermissionsExt;
        let writable = || {
            let probe = dir.join(".probe");
            let ok = std::fs::write(&probe, b"").is_ok();
            let _ = std::fs::remove_file(&probe);
            ok
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let mut guard = ReadOnly { dir: dir.to_path_buf(), immutable: false };
        if !writable() {
            return Some(guard);
        }
        // Root ignores permission bits; the immutable attribute stops it.
        guard.immutable = std::process::Command::new("chattr").arg("+i").arg(dir).status().is_ok_and(|s| s.success());
        (!writable()).then_some(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = std::process::Command::new("chattr").arg("-i").arg(&self.dir).status();
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builds_dir_that_is_not_writable_is_a_clear_error_and_nothing_is_staged() {
    let t = TempDir::new("steps-readonly");
    let fake = Fake::start().await;
    fake.serve("one.tar.gz", build_archive("one", &[]));
    deploy(&fake, "DeployOne", B1, "one.tar.gz", json!({"RECORD": t.path().join("record").to_string_lossy()}));
    let mut c = config(t.path(), &fake.url());
    c.max_retries = 2;
    let mut agent = Agent::open(c).unwrap();
    let layout = agent.layout().clone();
    let Some(read_only) = ReadOnly::make(&layout.builds_dir()) else {
        eprintln!("skipped: cannot make a directory read-only here (root without chattr)");
        return;
    };
    agent.round().await.unwrap();
    drop(read_only);
    assert_eq!(last_trail(&fake).as_deref(), Some("DOWNLOADING TOO_MANY_RETRY"));
    let last = fake.pings().last().cloned().unwrap();
    let msg = common::env_report(&last).unwrap().error_message.clone().unwrap_or_default();
    assert!(msg.contains("cannot create") && msg.contains(&layout.builds_dir().display().to_string()), "{msg}");
    assert!(listing(&layout.builds_dir()).is_empty(), "no partial file or build");
    assert!(layout.live_build("web").is_none() && !layout.target("web").exists(), "nothing staged");
}
