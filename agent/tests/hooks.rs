//! Running hooks: timeout kills the whole process group, failures are retried then
//! TOO_MANY_RETRY, a changed goal aborts the hook, the error message is the attempt's tail.

use std::path::Path;
use std::time::Duration;

use agent::exec::{HookSettings, NoProgress, Outcome, Progress, run_hook};
use agent::hooks::{self, Hook, Lookup};
use agent::layout::Layout;
use agent::progress::Ticker;
use agent::testutil::{TempDir, wait_until};
use schema::ping::PingResponse;
use schema::{AgentStatus, DeployStage};

fn settings() -> HookSettings {
    HookSettings {
        timeout: Duration::from_secs(60),
        max_retries: 3,
        termination_timeout: Duration::from_millis(300),
        retry_delay: Duration::ZERO,
        min_running_time: Duration::from_secs(60),
    }
}

async fn run<P: Progress>(
    hook: &Hook,
    vars: &[(String, String)],
    log: &Path,
    s: &HookSettings,
    progress: &mut P,
) -> Outcome {
    run_hook(hook, None, vars, log, s, &mut Ticker::new(s.min_running_time), progress).await
}

fn script(dir: &Path, name: &str, body: &str) -> Hook {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    // Written without the execute bit: the agent must add it.
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    Hook { script: path, dir: dir.to_path_buf() }
}

/// Alive and not a zombie (a killed orphan may wait for init to reap it).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
    }
}

fn read_pid(path: &Path) -> i32 {
    wait_until("the hook to write its child's pid", Duration::from_secs(20), || {
        std::fs::read_to_string(path).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

fn done(o: Outcome) -> agent::status::StepResult {
    match o {
        Outcome::Done(r) => r,
        Outcome::Aborted(_) => panic!("unexpected abort"),
    }
}

#[tokio::test]
async fn success_runs_in_the_script_dir_without_arguments() {
    let t = TempDir::new("hook-ok");
    let hook = script(&t.path().join("teletraan"), "PRE_RESTART", "echo \"args=$# pwd=$(pwd) X=$X\"");
    let log = t.path().join("web.log");
    let vars = vec![("X".to_string(), "42".to_string())];
    let r = done(run(&hook, &vars, &log, &settings(), &mut NoProgress).await);
    assert_eq!((r.status, r.error_code, r.fail_count), (AgentStatus::Succeeded, 0, 0));
    let text = std::fs::read_to_string(&log).unwrap();
    let dir = std::fs::canonicalize(t.path().join("teletraan")).unwrap();
    assert!(text.contains(&format!("args=0 pwd={} X=42", dir.display())), "{text}");
}

#[tokio::test]
async fn timeout_kills_the_group_including_children_that_ignore_sigterm() {
    let t = TempDir::new("hook-timeout");
    let pidfile = t.path().join("child.pid");
    let body =
        format!("sh -c 'trap \"\" TERM; exec sleep 1000' &\necho $! > {}\necho started\nsleep 1000", pidfile.display());
    let hook = script(&t.path().join("teletraan"), "RESTARTING", &body);
    let s = HookSettings { timeout: Duration::from_secs(2), ..settings() };
    let r = done(run(&hook, &[], &t.path().join("log"), &s, &mut NoProgress).await);
    assert_eq!(r.status, AgentStatus::ScriptTimeout);
    assert_eq!(r.fail_count, 1, "a timeout is not retried");
    assert!(r.error_message.unwrap_or_default().contains("started"));
    let child = read_pid(&pidfile);
    wait_until("the hook's child to be killed", Duration::from_secs(20), || !alive(child));
}

#[tokio::test]
async fn failures_are_retried_then_too_many_retry_with_the_last_tail() {
    let t = TempDir::new("hook-fail");
    let count = t.path().join("count");
    let body = format!("echo x >> {c}\necho \"attempt $(wc -l < {c})\" >&2\nexit 3", c = count.display());
    let hook = script(&t.path().join("teletraan"), "POST_RESTART", &body);
    let r = done(run(&hook, &[], &t.path().join("log"), &settings(), &mut NoProgress).await);
    assert_eq!((r.status, r.error_code, r.fail_count), (AgentStatus::TooManyRetry, 3, 3));
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
    let msg = r.error_message.unwrap();
    assert!(msg.contains("attempt 3") && !msg.contains("attempt 2"), "tail of the last attempt only: {msg}");
}

#[tokio::test]
async fn a_failure_then_success_succeeds() {
    let t = TempDir::new("hook-flaky");
    let flag = t.path().join("flag");
    let body = format!("if [ -e {f} ]; then exit 0; fi\ntouch {f}\nexit 1", f = flag.display());
    let hook = script(&t.path().join("teletraan"), "PRE_RESTART", &body);
    let r = done(run(&hook, &[], &t.path().join("log"), &settings(), &mut NoProgress).await);
    assert_eq!((r.status, r.fail_count), (AgentStatus::Succeeded, 1));
}

struct ChangedGoal {
    pings: usize,
}

impl Progress for ChangedGoal {
    async fn ping(&mut self) -> Option<PingResponse> {
        self.pings += 1;
        Some(PingResponse::noop())
    }
}

#[tokio::test]
async fn a_changed_goal_aborts_the_hook_and_kills_its_group() {
    let t = TempDir::new("hook-abort");
    let pidfile = t.path().join("child.pid");
    let body = format!("sleep 1000 &\necho $! > {}\nsleep 1000", pidfile.display());
    let hook = script(&t.path().join("teletraan"), "RESTARTING", &body);
    let s = HookSettings { min_running_time: Duration::from_secs(1), ..settings() };
    let mut progress = ChangedGoal { pings: 0 };
    let out = run(&hook, &[], &t.path().join("log"), &s, &mut progress).await;
    assert_eq!(out, Outcome::Aborted(Box::new(PingResponse::noop())));
    assert_eq!(progress.pings, 1);
    let child = read_pid(&pidfile);
    wait_until("the aborted hook's child to be killed", Duration::from_secs(20), || !alive(child));
}

/// Pings: the first `steady` answers keep the goal, the next one changes it.
struct ChangesAfter {
    pings: usize,
    steady: usize,
}

impl Progress for ChangesAfter {
    async fn ping(&mut self) -> Option<PingResponse> {
        self.pings += 1;
        (self.pings > self.steady).then(PingResponse::noop)
    }
}

#[tokio::test]
async fn the_sleep_before_a_retry_pings_and_a_changed_goal_ends_it() {
    let t = TempDir::new("hook-retry-ping");
    let count = t.path().join("count");
    let hook = script(&t.path().join("teletraan"), "POST_RESTART", &format!("echo x >> {}\nexit 1", count.display()));
    // Ten minutes before the retry, a progress ping every second: the first ping keeps the goal,
    // the second changes it, so the sleep ends long before the retry.
    let s =
        HookSettings { retry_delay: Duration::from_secs(600), min_running_time: Duration::from_secs(1), ..settings() };
    let mut progress = ChangesAfter { pings: 0, steady: 1 };
    let out = tokio::time::timeout(Duration::from_secs(300), run(&hook, &[], &t.path().join("log"), &s, &mut progress))
        .await
        .expect("the changed goal ends the sleep");
    assert_eq!(out, Outcome::Aborted(Box::new(PingResponse::noop())));
    assert_eq!(progress.pings, 2);
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "no retry after the abort");
}

#[test]
fn missing_restarting_fails_and_other_missing_hooks_succeed() {
    let t = TempDir::new("hook-missing");
    let layout = Layout::new(t.path());
    layout.create_dirs().unwrap();
    assert_eq!(hooks::find(&layout, "web", DeployStage::PreDownload), Lookup::NoLiveBuild);
    let build = layout.build_dir("b1");
    script(&build.join("teletraan"), "PRE_RESTART", "true");
    script(&build.join("teletraan/web"), "POST_RESTART", "true");
    std::os::unix::fs::symlink(&build, layout.target("web")).unwrap();
    let restarting = hooks::find(&layout, "web", DeployStage::Restarting);
    assert_eq!(restarting, Lookup::Missing);
    let r = hooks::without_hook(DeployStage::Restarting, &restarting, "web").unwrap();
    assert_eq!(r.status, AgentStatus::AgentFailed);
    assert_eq!(r.error_message.as_deref(), Some("RESTARTING script does not exist."));
    // teletraan/<ENV_NAME>/ exists, so it is the script dir: PRE_RESTART at the top is not used.
    let pre = hooks::find(&layout, "web", DeployStage::PreRestart);
    assert_eq!(pre, Lookup::Missing);
    assert_eq!(hooks::without_hook(DeployStage::PreRestart, &pre, "web").unwrap().status, AgentStatus::Succeeded);
    match hooks::find(&layout, "web", DeployStage::PostRestart) {
        Lookup::Found(h) => assert!(h.script.ends_with("teletraan/web/POST_RESTART")),
        other => panic!("expected the env's hook, got {other:?}"),
    }
}
