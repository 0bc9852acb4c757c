//! Hook scripts, Teletraan's way: which script a stage runs, what a missing one means, and
//! the environment it receives.
//!
//! A stage's hook is `<TARGET>/teletraan/<ENV_NAME>/<STAGE>` when that directory exists, else
//! `<TARGET>/teletraan/<STAGE>`; it runs with no arguments from its directory. `TARGET` is the
//! live symlink, so PRE_DOWNLOAD and POST_DOWNLOAD run the old build's hooks (the link moves at
//! STAGING).

use std::path::PathBuf;

use schema::{DeployStage, OpCode};

use crate::layout::Layout;
use crate::status::{EnvEntry, StepResult};

/// Every variable the agent sets for hooks; they are removed from the inherited environment
/// first so a stale value never leaks into a hook that should not have it.
pub const HOOK_VARIABLES: &[&str] = &[
    "DEPLOY_ID",
    "DEPLOY_STEP",
    "OPCODE",
    "DEPLOY_TYPE",
    "ENV_NAME",
    "STAGE_NAME",
    "COMPUTE_ENV_TYPE",
    "FIRST_DEPLOY",
    "IS_DOCKER",
    "TARGET",
    "BUILDS_DIR",
    "BUILD_ID",
    "BUILD_NAME",
    "BUILD_COMMIT",
    "BUILD_REPO",
    "BUILD_BRANCH",
    "BUILD_URL",
];

/// The agent's own settings (the token above all) are not passed to build code.
pub const AGENT_VARIABLE_PREFIX: &str = "TELETRAAN_AGENT_";

/// A hook to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The script.
    pub script: PathBuf,
    /// Its directory (the working directory).
    pub dir: PathBuf,
}

/// What the live build offers for a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The env has no live build (fresh host).
    NoLiveBuild,
    /// The live build has no hook for this stage.
    Missing,
    /// Run this.
    Found(Hook),
}

/// Finds the hook of `stage` in the live build of `env`.
pub fn find(layout: &Layout, env: &str, stage: DeployStage) -> Lookup {
    if layout.live_build(env).is_none() {
        return Lookup::NoLiveBuild;
    }
    let base = layout.target(env).join("teletraan");
    let env_dir = base.join(env);
    let dir = if env_dir.is_dir() { env_dir } else { base };
    let script = dir.join(stage.as_str());
    if script.is_file() { Lookup::Found(Hook { script, dir }) } else { Lookup::Missing }
}

/// The result of a stage whose hook does not exist, or `None` when there is a hook to run.
/// A missing hook succeeds except RESTARTING (Teletraan requires it); the stages after STAGING
/// need a live build, except STOPPING/STOPPED (nothing to stop on a host without one).
pub fn without_hook(stage: DeployStage, lookup: &Lookup, env: &str) -> Option<StepResult> {
    let no_build = || StepResult::agent_failed(format!("env {env} has no live build (no valid targets/{env} link)"));
    match (stage, lookup) {
        (_, Lookup::Found(_)) => None,
        (DeployStage::Restarting, Lookup::Missing) => {
            Some(StepResult::agent_failed("RESTARTING script does not exist."))
        }
        (
            DeployStage::Restarting | DeployStage::PreRestart | DeployStage::PostRestart | DeployStage::ServingBuild,
            Lookup::NoLiveBuild,
        ) => Some(no_build()),
        (
            DeployStage::Unknown
            | DeployStage::PreDownload
            | DeployStage::Downloading
            | DeployStage::PostDownload
            | DeployStage::Staging
            | DeployStage::PreRestart
            | DeployStage::PostRestart
            | DeployStage::ServingBuild
            | DeployStage::Stopping
            | DeployStage::Stopped,
            _,
        ) => Some(StepResult::succeeded()),
    }
}

/// `DEPLOY_TYPE` as Teletraan's agent derives it from the opcode.
pub fn deploy_type(op: Option<OpCode>) -> &'static str {
    match op {
        Some(OpCode::Restart) => "RESTART",
        Some(OpCode::Rollback) => "ROLLBACK",
        Some(OpCode::Stop) => "STOP",
        Some(OpCode::Noop | OpCode::Deploy | OpCode::Delete | OpCode::Wait) | None => "REGULAR",
    }
}

/// The variables a hook of `env` receives for `stage`, in the order they are applied (a later
/// one wins): the deploy's, `TARGET`, the script variables, then the build's and `BUILDS_DIR`.
pub fn environment(layout: &Layout, env: &str, entry: &EnvEntry, stage: DeployStage) -> Vec<(String, String)> {
    let r = &entry.report;
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| vars.push((k.to_string(), v.to_string()));
    set("DEPLOY_ID", r.deploy_id.as_deref().unwrap_or(""));
    set("DEPLOY_STEP", stage.as_str());
    set("OPCODE", entry.op_code.map(|o| o.as_str()).unwrap_or("NOOP"));
    set("DEPLOY_TYPE", deploy_type(entry.op_code));
    set("ENV_NAME", env);
    set("STAGE_NAME", r.stage_name.as_deref().unwrap_or(""));
    let env_type = match r.stage_type.as_deref() {
        None | Some("DEFAULT") => "PRODUCTION",
        Some(t) => t,
    };
    set("COMPUTE_ENV_TYPE", env_type);
    if entry.first_deploy {
        set("FIRST_DEPLOY", "True");
    }
    if entry.is_docker {
        set("IS_DOCKER", "True");
    }
    set("TARGET", &layout.target(env).to_string_lossy());
    for (k, v) in &entry.script_variables {
        set(k, v);
    }
    if let Some(b) = &entry.build_info {
        set("BUILD_COMMIT", b.build_commit.as_deref().unwrap_or(""));
        set("BUILD_NAME", b.build_name.as_deref().unwrap_or(""));
        set("BUILD_REPO", b.build_repo.as_deref().unwrap_or(""));
        set("BUILD_BRANCH", b.build_branch.as_deref().unwrap_or(""));
        set("BUILD_ID", &b.build_id);
        set("BUILD_URL", b.build_url.as_deref().unwrap_or(""));
    }
    set("BUILDS_DIR", &layout.builds_dir().to_string_lossy());
    vars
}

/// The script variables as the `<env>_SCRIPT_CONFIG` file holds them (`key=value` lines).
pub fn script_config_text(vars: &schema::model::StringMap) -> String {
    vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::BuildInfo;
    use std::collections::BTreeMap;

    fn entry() -> EnvEntry {
        let mut e = EnvEntry::default();
        e.report.deploy_id = Some("d1".into());
        e.report.stage_name = Some("prod".into());
        e.report.stage_type = Some("DEFAULT".into());
        e.op_code = Some(OpCode::Deploy);
        e.first_deploy = true;
        e.script_variables = BTreeMap::from([("PORT".to_string(), "8080".to_string())]);
        e.build_info = Some(BuildInfo {
            build_id: "b1_abcdef0".into(),
            build_name: Some("web".into()),
            build_commit: Some("abcdef0123".into()),
            build_repo: Some("org/web".into()),
            build_branch: Some("main".into()),
            build_url: Some("http://x/web.tar.gz".into()),
        });
        e
    }

    #[test]
    fn environment_is_teletraans() {
        let layout = Layout::new("/base");
        let vars: BTreeMap<String, String> =
            environment(&layout, "web", &entry(), DeployStage::PreRestart).into_iter().collect();
        let expect = [
            ("BUILDS_DIR", "/base/builds"),
            ("BUILD_BRANCH", "main"),
            ("BUILD_COMMIT", "abcdef0123"),
            ("BUILD_ID", "b1_abcdef0"),
            ("BUILD_NAME", "web"),
            ("BUILD_REPO", "org/web"),
            ("BUILD_URL", "http://x/web.tar.gz"),
            ("COMPUTE_ENV_TYPE", "PRODUCTION"),
            ("DEPLOY_ID", "d1"),
            ("DEPLOY_STEP", "PRE_RESTART"),
            ("DEPLOY_TYPE", "REGULAR"),
            ("ENV_NAME", "web"),
            ("FIRST_DEPLOY", "True"),
            ("OPCODE", "DEPLOY"),
            ("PORT", "8080"),
            ("STAGE_NAME", "prod"),
            ("TARGET", "/base/targets/web"),
        ];
        let expect: BTreeMap<String, String> = expect.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(vars, expect);
    }

    #[test]
    fn deploy_type_follows_the_opcode() {
        assert_eq!(deploy_type(Some(OpCode::Restart)), "RESTART");
        assert_eq!(deploy_type(Some(OpCode::Rollback)), "ROLLBACK");
        assert_eq!(deploy_type(Some(OpCode::Stop)), "STOP");
        assert_eq!(deploy_type(Some(OpCode::Deploy)), "REGULAR");
    }

    #[test]
    fn only_restarting_is_required() {
        use schema::AgentStatus::*;
        let status = |s, l: &Lookup| without_hook(s, l, "web").map(|r| r.status);
        assert_eq!(status(DeployStage::Restarting, &Lookup::Missing), Some(AgentFailed));
        let msg = without_hook(DeployStage::Restarting, &Lookup::Missing, "web").unwrap().error_message.unwrap();
        assert!(msg.contains("RESTARTING script does not exist"));
        for s in
            [DeployStage::PreDownload, DeployStage::PostDownload, DeployStage::PreRestart, DeployStage::ServingBuild]
        {
            assert_eq!(status(s, &Lookup::Missing), Some(Succeeded), "{s}");
        }
        assert_eq!(status(DeployStage::PreDownload, &Lookup::NoLiveBuild), Some(Succeeded));
        assert_eq!(status(DeployStage::PreRestart, &Lookup::NoLiveBuild), Some(AgentFailed));
        let found = Lookup::Found(Hook { script: "/x".into(), dir: "/".into() });
        assert_eq!(status(DeployStage::Restarting, &found), None);
    }
}
