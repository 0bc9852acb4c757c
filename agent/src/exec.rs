//! Running one hook: its own process group, output appended to the env's log, a timeout per
//! attempt, retries with backoff, progress pings while it runs and during the sleeps between
//! attempts, and the tail of its output as the error message.
//!
//! On timeout or when the server changes the goal, the whole group gets SIGTERM, then SIGKILL
//! after the termination grace period. A hook that exits normally keeps its background
//! children (a RESTARTING hook may start a daemon).
//!
//! The agent's own `TELETRAAN_AGENT_*` variables (its token above all) never reach a hook.
//! With a hook user, the hook runs with that user's uid and gid, no supplementary groups
//! (the standard library clears them when it changes the uid), and an environment built from
//! nothing: `PATH`, `HOME`, `USER`, `LOGNAME`, `LANG` (see [`HookUser::base_environment`]) and
//! the hook variables.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use schema::AgentStatus;
use schema::model::StringMap;
use schema::ping::PingResponse;
use tokio::time::Instant;

use crate::config::Config;
use crate::hooks::{AGENT_VARIABLE_PREFIX, HOOK_VARIABLES, Hook};
pub use crate::progress::{NoProgress, Progress};
use crate::progress::{Ticker, Watched, watch};
use crate::status::StepResult;
use crate::user::HookUser;

/// Bytes of output sent as `errorMessage` (Teletraan's code default).
pub const TAIL_BYTES: u64 = 10 * 1024;
/// Longest sleep between attempts (Teletraan's `max_sleep_interval`).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// How hooks run; built from the configuration, then overridden per step by `agentConfigs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// Time one attempt may take.
    pub timeout: Duration,
    /// Attempts before TOO_MANY_RETRY.
    pub max_retries: u32,
    /// SIGTERM to SIGKILL grace.
    pub termination_timeout: Duration,
    /// First delay between attempts (doubled each time, capped at 60 s).
    pub retry_delay: Duration,
    /// Progress-ping period.
    pub min_running_time: Duration,
}

impl HookSettings {
    /// The configured defaults.
    pub fn from_config(c: &Config) -> HookSettings {
        HookSettings {
            timeout: c.script_timeout,
            max_retries: c.max_retries,
            termination_timeout: c.termination_timeout,
            retry_delay: c.retry_delay,
            min_running_time: c.min_running_time,
        }
    }

    /// Applies the goal's `agentConfigs` (`process_timeout`, `max_retry`, `termination_timeout`,
    /// `min_running_time`, each optionally prefixed `<STAGE>.`, which wins). Unparsable values
    /// are ignored with a warning.
    pub fn with_overrides(&self, configs: &StringMap, stage: &str) -> HookSettings {
        let get = |key: &str| -> Option<u64> {
            let v = configs.get(&format!("{stage}.{key}")).or_else(|| configs.get(key))?;
            match v.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(key, value = %v, "ignoring agent config that is not a whole number");
                    None
                }
            }
        };
        let mut s = self.clone();
        if let Some(n) = get("process_timeout").filter(|n| *n > 0) {
            s.timeout = Duration::from_secs(n);
        }
        if let Some(n) = get("max_retry").filter(|n| *n > 0) {
            s.max_retries = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(n) = get("termination_timeout") {
            s.termination_timeout = Duration::from_secs(n);
        }
        if let Some(n) = get("min_running_time").filter(|n| *n > 0) {
            s.min_running_time = Duration::from_secs(n);
        }
        s
    }

    /// Delays between attempts.
    pub fn retry_delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.retry_delay)
            .with_max_delay(MAX_RETRY_DELAY.max(self.retry_delay))
            .with_factor(2.0)
            .with_max_times(self.max_retries as usize)
            .build()
    }
}

/// How a hook step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished (successfully or not) with this result.
    Done(StepResult),
    /// The server changed the goal; the hook was stopped. Carries the new answer.
    Aborted(Box<PingResponse>),
}

enum Attempt {
    Exited(i32),
    TimedOut,
    Aborted(Box<PingResponse>),
}

/// Runs `hook` with retries, appending its output to `log`. Progress pings follow `ticker`
/// (one per step) while the hook runs and while the agent sleeps before the next attempt.
pub async fn run_hook<P: Progress>(
    hook: &Hook,
    user: Option<&HookUser>,
    vars: &[(String, String)],
    log: &Path,
    settings: &HookSettings,
    ticker: &mut Ticker,
    progress: &mut P,
) -> Outcome {
    if let Err(e) = make_executable(&hook.script) {
        return Outcome::Done(StepResult::agent_failed(format!(
            "cannot make {} executable: {e}",
            hook.script.display()
        )));
    }
    let mut delays = settings.retry_delays();
    let attempts = settings.max_retries.max(1);
    let mut last = (1, String::new());
    for attempt in 1..=attempts {
        let start = match start_log(log, hook, attempt) {
            Ok(s) => s,
            Err(e) => return Outcome::Done(StepResult::agent_failed(format!("cannot write {}: {e}", log.display()))),
        };
        let result = run_once(hook, user, vars, log, settings, ticker, progress).await;
        let tail = read_tail(log, start);
        let fail_count = i32::try_from(attempt).unwrap_or(i32::MAX);
        match result {
            Err(e) => {
                return Outcome::Done(StepResult::agent_failed(format!("cannot run {}: {e}", hook.script.display())));
            }
            Ok(Attempt::Exited(0)) => {
                return Outcome::Done(StepResult { fail_count: fail_count - 1, ..StepResult::succeeded() });
            }
            Ok(Attempt::Exited(code)) => {
                tracing::warn!(script = %hook.script.display(), code, attempt, "hook failed");
                last = (code, tail);
                if attempt < attempts {
                    let delay = delays.next().unwrap_or(settings.retry_delay);
                    if let Some(next) = crate::progress::sleep(delay, ticker, progress).await {
                        tracing::info!(script = %hook.script.display(), "goal changed by the server before the retry");
                        return Outcome::Aborted(next);
                    }
                }
            }
            Ok(Attempt::TimedOut) => {
                tracing::warn!(script = %hook.script.display(), timeout_s = settings.timeout.as_secs(), "hook timed out");
                return Outcome::Done(StepResult {
                    status: AgentStatus::ScriptTimeout,
                    error_code: 1,
                    error_message: Some(tail),
                    fail_count,
                });
            }
            Ok(Attempt::Aborted(resp)) => return Outcome::Aborted(resp),
        }
    }
    Outcome::Done(StepResult {
        status: AgentStatus::TooManyRetry,
        error_code: last.0,
        error_message: Some(last.1),
        fail_count: i32::try_from(attempts).unwrap_or(i32::MAX),
    })
}

async fn run_once<P: Progress>(
    hook: &Hook,
    user: Option<&HookUser>,
    vars: &[(String, String)],
    log: &Path,
    settings: &HookSettings,
    ticker: &mut Ticker,
    progress: &mut P,
) -> std::io::Result<Attempt> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = tokio::process::Command::new(&hook.script);
    cmd.current_dir(&hook.dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out));
    set_environment(&mut cmd, user, vars);
    if let Some(u) = user {
        cmd.uid(u.uid()).gid(u.gid());
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let deadline = Instant::now() + settings.timeout;
    let waited = watch(tokio::time::timeout_at(deadline, child.wait()), ticker, progress).await;
    match waited {
        Watched::Done(Ok(status)) => {
            let s = status?;
            Ok(Attempt::Exited(s.code().unwrap_or_else(|| -s.signal().unwrap_or(1))))
        }
        Watched::Done(Err(_elapsed)) => {
            stop_group(&mut child, pgid, settings.termination_timeout).await;
            Ok(Attempt::TimedOut)
        }
        Watched::Aborted(next) => {
            tracing::info!(script = %hook.script.display(), "goal changed by the server; stopping the hook");
            stop_group(&mut child, pgid, settings.termination_timeout).await;
            Ok(Attempt::Aborted(next))
        }
    }
}

/// The hook's environment: without a hook user, the agent's own minus its `TELETRAAN_AGENT_*`
/// variables and stale hook variables; with one, only that user's base environment. Then the
/// hook variables, except any named like the agent's own.
fn set_environment(cmd: &mut tokio::process::Command, user: Option<&HookUser>, vars: &[(String, String)]) {
    match user {
        Some(u) => {
            cmd.env_clear();
            cmd.envs(u.base_environment(std::env::var("PATH").ok(), std::env::var("LANG").ok()));
        }
        None => {
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy();
                if k.starts_with(AGENT_VARIABLE_PREFIX) {
                    cmd.env_remove(k.as_ref());
                }
            }
            for k in HOOK_VARIABLES {
                cmd.env_remove(k);
            }
        }
    }
    cmd.envs(vars.iter().filter(|(k, _)| !k.starts_with(AGENT_VARIABLE_PREFIX)).map(|(k, v)| (k, v)));
}

/// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to the group (so
/// children that ignored SIGTERM or outlived the leader die too), then reap the leader.
async fn stop_group(child: &mut tokio::process::Child, pgid: Option<i32>, grace: Duration) {
    if let Some(pg) = pgid {
        signal_group(pg, libc::SIGTERM);
        let _ = tokio::time::timeout(grace, child.wait()).await;
        signal_group(pg, libc::SIGKILL);
    } else {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

fn make_executable(script: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(script)?.permissions().mode();
    if mode & 0o100 == 0 {
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(mode | 0o100))?;
    }
    Ok(())
}

/// Appends a header line for the attempt and returns the log length after it (where this
/// attempt's output starts).
fn start_log(log: &Path, hook: &Hook, attempt: u32) -> std::io::Result<u64> {
    let mut f = OpenOptions::new().create(true).append(true).open(log)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    writeln!(f, "--- teletraan-agent: {} attempt {attempt} at {now} (epoch s)", hook.script.display())?;
    f.metadata().map(|m| m.len())
}

/// The last [`TAIL_BYTES`] written to `log` since `start`.
fn read_tail(log: &Path, start: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(log)?;
        let end = f.metadata()?.len();
        let from = start.max(end.saturating_sub(TAIL_BYTES));
        f.seek(SeekFrom::Start(from))?;
        let mut buf = Vec::new();
        f.take(end - from).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_configs_override_per_step() {
        let base = HookSettings {
            timeout: Duration::from_secs(1800),
            max_retries: 3,
            termination_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(2),
            min_running_time: Duration::from_secs(60),
        };
        let configs = StringMap::from([
            ("process_timeout".to_string(), "10".to_string()),
            ("RESTARTING.process_timeout".to_string(), "20".to_string()),
            ("max_retry".to_string(), "5".to_string()),
            ("termination_timeout".to_string(), "soon".to_string()),
        ]);
        let s = base.with_overrides(&configs, "PRE_RESTART");
        assert_eq!(
            (s.timeout, s.max_retries, s.termination_timeout),
            (Duration::from_secs(10), 5, base.termination_timeout)
        );
        assert_eq!(base.with_overrides(&configs, "RESTARTING").timeout, Duration::from_secs(20));
    }

    #[test]
    fn retry_delays_double_and_cap() {
        let s = HookSettings {
            timeout: Duration::from_secs(1),
            max_retries: 8,
            termination_timeout: Duration::ZERO,
            retry_delay: Duration::from_secs(2),
            min_running_time: Duration::from_secs(60),
        };
        let d: Vec<u64> = s.retry_delays().map(|d| d.as_secs()).collect();
        assert_eq!(d, [2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
