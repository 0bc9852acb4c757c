//! `teletraan-agent set-status`: Teletraan's `set-deploy-status` for an operator on the host.
//!
//! `--step STAGE` records STAGE as finished (SUCCEEDED, error code 0, no message, fail count 0),
//! so the next ping tells the server to move on (used to skip a stuck step). `--restart`
//! forgets the environment, so the next ping has no report for it and the server starts its
//! deploy over from PRE_DOWNLOAD. Both take the agent's lock on the base directory and are
//! refused while an agent holds it (Teletraan's tool waited on `pgrep` instead).

use schema::{AgentStatus, DeployStage};

use crate::error::{Error, Result};
use crate::layout::{DirLock, Layout};
use crate::status;

/// What `set-status` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Mark this stage as succeeded.
    Step(DeployStage),
    /// Forget the environment.
    Restart,
}

/// Applies `change` to `env` in the status file of `layout`. Returns what was done, for the
/// operator. Fails with [`Error::Locked`] while an agent runs, and with [`Error::Admin`] when
/// there is no such environment or the status file cannot be trusted.
pub fn set_status(layout: &Layout, env: &str, change: Change) -> Result<String> {
    if let Err(e) = schema::EnvName::parse(env) {
        return Err(Error::Admin(format!("env name {env:?}: {e}")));
    }
    let file = layout.status_file();
    if !layout.base().is_dir() || !file.is_file() {
        return Err(Error::Admin(format!("no status file at {}: the agent has no environment here", file.display())));
    }
    let _lock = DirLock::acquire(layout)?;
    let mut loaded = status::load(&file);
    if !loaded.problems.is_empty() {
        return Err(Error::Admin(format!(
            "refusing to rewrite {}: {} (fix or remove it first)",
            file.display(),
            loaded.problems.join("; ")
        )));
    }
    let known: Vec<&str> = loaded.envs.keys().map(String::as_str).collect();
    if !loaded.envs.contains_key(env) {
        return Err(Error::Admin(format!("env {env} is not in {} (known: {})", file.display(), known.join(", "))));
    }
    let done = match change {
        Change::Step(stage) => {
            let Some(entry) = loaded.envs.get_mut(env) else {
                return Err(Error::Admin(format!("env {env} vanished")));
            };
            let r = &mut entry.report;
            r.deploy_stage = Some(stage);
            r.status = Some(AgentStatus::Succeeded);
            r.error_code = 0;
            r.error_message = None;
            r.fail_count = 0;
            format!("env {env}: {stage} recorded as SUCCEEDED; the next ping moves the deploy on")
        }
        Change::Restart => {
            loaded.envs.remove(env);
            format!("env {env} forgotten; the next ping starts its deploy over from PRE_DOWNLOAD")
        }
    };
    status::save(&file, &loaded.envs)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{EnvEntry, Envs};
    use crate::testutil::TempDir;

    fn setup(t: &TempDir) -> Layout {
        let layout = Layout::new(t.path());
        layout.create_dirs().unwrap();
        let mut e = EnvEntry::default();
        e.report.deploy_id = Some("d1".into());
        e.report.deploy_stage = Some(DeployStage::Restarting);
        e.report.status = Some(AgentStatus::TooManyRetry);
        e.report.error_code = 3;
        e.report.error_message = Some("boom".into());
        e.report.fail_count = 3;
        let envs = Envs::from([("web".to_string(), e), ("api".to_string(), EnvEntry::default())]);
        status::save(&layout.status_file(), &envs).unwrap();
        layout
    }

    #[test]
    fn step_marks_the_stage_succeeded_and_keeps_the_rest() {
        let t = TempDir::new("admin-step");
        let layout = setup(&t);
        let msg = set_status(&layout, "web", Change::Step(DeployStage::Restarting)).unwrap();
        assert!(msg.contains("RESTARTING recorded as SUCCEEDED"), "{msg}");
        let envs = status::load(&layout.status_file()).envs;
        let r = &envs["web"].report;
        assert_eq!((r.deploy_stage, r.status), (Some(DeployStage::Restarting), Some(AgentStatus::Succeeded)));
        assert_eq!((r.error_code, r.error_message.as_deref(), r.fail_count), (0, None, 0));
        assert_eq!(r.deploy_id.as_deref(), Some("d1"));
        assert!(envs.contains_key("api"));
    }

    #[test]
    fn restart_forgets_only_that_env() {
        let t = TempDir::new("admin-restart");
        let layout = setup(&t);
        set_status(&layout, "web", Change::Restart).unwrap();
        let envs = status::load(&layout.status_file()).envs;
        assert_eq!(envs.keys().collect::<Vec<_>>(), ["api"]);
    }

    #[test]
    fn unknown_env_missing_file_and_held_lock_are_refused() {
        let t = TempDir::new("admin-refuse");
        let layout = setup(&t);
        let err = set_status(&layout, "nope", Change::Restart).unwrap_err();
        assert!(err.to_string().contains("env nope is not in") && err.to_string().contains("api, web"), "{err}");
        let held = DirLock::acquire(&layout).unwrap();
        let err = set_status(&layout, "web", Change::Restart).unwrap_err();
        assert!(matches!(err, Error::Locked(_)), "{err}");
        drop(held);
        let empty = TempDir::new("admin-empty");
        let err = set_status(&Layout::new(empty.path().join("none")), "web", Change::Restart).unwrap_err();
        assert!(err.to_string().contains("no status file"), "{err}");
        std::fs::write(layout.status_file(), "{corrupt").unwrap();
        let err = set_status(&layout, "web", Change::Restart).unwrap_err();
        assert!(err.to_string().contains("refusing to rewrite"), "{err}");
        assert_eq!(std::fs::read_to_string(layout.status_file()).unwrap(), "{corrupt", "left alone");
    }
}
