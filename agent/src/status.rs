//! The local status file `env_status`: one entry per environment, keyed by env name, in the
//! shape Teletraan's agent writes (`report`, `build_info`, `runtime_config`, `op_code`,
//! `first_deploy`, `script_variables`, `is_docker`) so a host moved from Teletraan keeps its
//! state. Unlike Teletraan's agent, every field written is also read back.
//!
//! Reading is lenient: a missing file is empty, a corrupt file is reported and treated as empty,
//! and a corrupt entry is dropped alone (the server then redeploys that env from the start).

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use schema::model::{Build, StringMap};
use schema::ping::{DeployGoal, PingReport};
use schema::{AgentStatus, DeployStage, OpCode};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::layout::write_private;

/// All environments, keyed by env name.
pub type Envs = BTreeMap<String, EnvEntry>;

/// What the agent knows about one environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvEntry {
    /// The last step and its outcome.
    #[serde(default, deserialize_with = "null_default")]
    pub report: Report,
    /// The build of the current deploy, once known (from the DOWNLOADING goal).
    #[serde(default)]
    pub build_info: Option<BuildInfo>,
    /// The goal's `agentConfigs` (per-step overrides such as `process_timeout`).
    #[serde(default, deserialize_with = "null_default")]
    pub runtime_config: StringMap,
    /// The opcode of the last goal.
    #[serde(default, deserialize_with = "lenient")]
    pub op_code: Option<OpCode>,
    /// The goal's `firstDeploy`.
    #[serde(default, deserialize_with = "null_default")]
    pub first_deploy: bool,
    /// The stage's script variables (exported to hooks).
    #[serde(default, deserialize_with = "null_default")]
    pub script_variables: StringMap,
    /// The goal's `isDocker`.
    #[serde(default, deserialize_with = "null_default")]
    pub is_docker: bool,
    /// The build that was live before the current one (kept by the retention).
    #[serde(default)]
    pub previous_build_id: Option<String>,
}

/// The report part of an entry (Teletraan's `report`; `status`/`state` here are
/// `agentStatus`/`agentState` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Report {
    #[serde(default)]
    pub deploy_id: Option<String>,
    #[serde(default)]
    pub env_id: Option<String>,
    #[serde(default)]
    pub env_name: Option<String>,
    #[serde(default)]
    pub stage_name: Option<String>,
    #[serde(default)]
    pub stage_type: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub deploy_stage: Option<DeployStage>,
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<AgentStatus>,
    #[serde(default, deserialize_with = "null_default")]
    pub error_code: i32,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub fail_count: i32,
    #[serde(default)]
    pub extra_info: Option<serde_json::Value>,
    #[serde(default)]
    pub deploy_alias: Option<String>,
    #[serde(default)]
    pub container_health_status: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
}

/// Build facts kept for `BUILD_*` variables (Teletraan's `build_info`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct BuildInfo {
    pub build_id: String,
    #[serde(default)]
    pub build_name: Option<String>,
    #[serde(default)]
    pub build_commit: Option<String>,
    #[serde(default)]
    pub build_repo: Option<String>,
    #[serde(default)]
    pub build_branch: Option<String>,
    #[serde(default)]
    pub build_url: Option<String>,
}

impl From<&Build> for BuildInfo {
    fn from(b: &Build) -> BuildInfo {
        BuildInfo {
            build_id: b.id.to_string(),
            build_name: Some(b.name.to_string()),
            build_commit: Some(b.commit.clone()),
            build_repo: Some(b.repo.clone()),
            build_branch: Some(b.branch.clone()),
            build_url: Some(b.artifact_url.clone()),
        }
    }
}

/// The outcome of one step, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    /// The status (ABORTED_BY_SERVER is reported as UNKNOWN, as Teletraan's agent does).
    pub status: AgentStatus,
    /// Exit code of the hook (1 for agent-side failures, 0 on success).
    pub error_code: i32,
    /// Tail of the output, or the agent's error text; `None` on success.
    pub error_message: Option<String>,
    /// Attempts used beyond success.
    pub fail_count: i32,
}

impl StepResult {
    /// A success.
    pub fn succeeded() -> StepResult {
        StepResult { status: AgentStatus::Succeeded, error_code: 0, error_message: None, fail_count: 0 }
    }

    /// An agent-side failure with a message.
    pub fn agent_failed(message: impl Into<String>) -> StepResult {
        StepResult {
            status: AgentStatus::AgentFailed,
            error_code: 1,
            error_message: Some(message.into()),
            fail_count: 1,
        }
    }
}

impl EnvEntry {
    /// Takes a new goal: the report moves to the goal's step with status UNKNOWN (persisted
    /// before the step runs, so a crash makes the server repeat it), and the goal's build,
    /// configs, flags and script variables replace the stored ones. `scriptVariables` absent
    /// keeps the stored ones; `{}` clears them.
    pub fn apply_goal(&mut self, op: OpCode, goal: &DeployGoal) {
        let r = &mut self.report;
        r.deploy_id = Some(goal.deploy_id.to_string());
        r.env_id = Some(goal.env_id.to_string());
        if let Some(name) = &goal.env_name {
            r.env_name = Some(name.to_string());
        }
        if let Some(stage) = &goal.stage_name {
            r.stage_name = Some(stage.to_string());
        }
        r.stage_type = Some(goal.stage_type.to_string());
        r.deploy_stage = Some(goal.deploy_stage);
        r.deploy_alias = goal.deploy_alias.as_ref().map(|a| a.to_string());
        r.status = Some(AgentStatus::Unknown);
        r.error_code = 0;
        r.error_message = None;
        r.fail_count = 0;
        if let Some(build) = &goal.build {
            self.build_info = Some(BuildInfo::from(build));
        }
        self.runtime_config = goal.agent_configs.clone().unwrap_or_default();
        self.op_code = Some(op);
        self.first_deploy = goal.first_deploy;
        self.is_docker = goal.is_docker;
        if let Some(vars) = &goal.script_variables {
            self.script_variables = vars.clone();
        }
    }

    /// Records the outcome of the current step.
    pub fn finish(&mut self, result: &StepResult) {
        self.report.status = Some(result.status);
        self.report.error_code = result.error_code;
        self.report.error_message = result.error_message.clone();
        self.report.fail_count = result.fail_count;
    }

    /// The report sent in a ping: every field present, `null` where unknown.
    pub fn ping_report(&self) -> PingReport {
        let r = &self.report;
        PingReport {
            deploy_id: r.deploy_id.clone(),
            env_id: r.env_id.clone(),
            deploy_stage: r.deploy_stage,
            agent_status: r.status,
            error_code: Some(r.error_code),
            error_message: r.error_message.clone(),
            fail_count: Some(r.fail_count),
            extra_info: r.extra_info.clone(),
            deploy_alias: r.deploy_alias.clone(),
            container_health_status: r.container_health_status.clone(),
            agent_state: r.state.clone(),
        }
    }
}

/// What [`load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The environments read.
    pub envs: Envs,
    /// Why the file (or an entry) could not be read, if so.
    pub problems: Vec<String>,
}

/// Reads the status file. Never fails: a missing file is empty; unreadable or corrupt content
/// is described in `problems` and treated as empty.
pub fn load(path: &Path) -> Loaded {
    let mut out = Loaded::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.problems.push(format!("cannot read status file {}: {e}; starting empty", path.display()));
            return out;
        }
    };
    if text.trim().is_empty() {
        return out;
    }
    let raw: BTreeMap<String, serde_json::Value> = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            out.problems.push(format!("status file {} is corrupt ({e}); starting empty", path.display()));
            return out;
        }
    };
    for (name, value) in raw {
        if schema::EnvName::parse(name.as_str()).is_err() {
            out.problems.push(format!("status file: dropped entry with invalid env name {name:?}"));
            continue;
        }
        match serde_json::from_value::<EnvEntry>(value) {
            Ok(mut entry) => {
                entry.report.env_name.get_or_insert_with(|| name.clone());
                out.envs.insert(name, entry);
            }
            Err(e) => out.problems.push(format!("status file: dropped corrupt entry {name:?}: {e}")),
        }
    }
    out
}

/// Writes the status file atomically (sorted keys, indented, like Teletraan's).
pub fn save(path: &Path, envs: &Envs) -> Result<()> {
    let mut text = serde_json::to_string_pretty(envs).map_err(|e| {
        Error::io("cannot encode status for", path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    text.push('\n');
    write_private(path, text.as_bytes())
}

/// Finds an environment by env id (a DELETE goal may carry only the id).
pub fn find_by_env_id<'a>(envs: &'a Envs, env_id: &str) -> Option<&'a str> {
    envs.iter().find(|(_, e)| e.report.env_id.as_deref() == Some(env_id)).map(|(k, _)| k.as_str())
}

/// A table of what the host runs per environment (the `status` subcommand).
pub fn render_table(layout: &crate::layout::Layout, envs: &Envs) -> String {
    let mut rows = vec![["ENV", "STAGE", "DEPLOY STEP", "STATUS", "DEPLOY", "BUILD", "LIVE BUILD"].map(String::from)];
    for (name, e) in envs {
        let r = &e.report;
        let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        rows.push([
            name.clone(),
            dash(r.stage_name.as_deref()),
            dash(r.deploy_stage.map(|s| s.as_str())),
            dash(r.status.map(|s| s.as_str())),
            dash(r.deploy_id.as_deref()),
            dash(e.build_info.as_ref().map(|b| b.build_id.as_str())),
            dash(layout.live_build_id(name).as_deref()),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An enum value this agent does not know (say Teletraan's `ABORTED_BY_SERVER`) reads as
/// `UNKNOWN`-ish absence rather than losing the whole entry.
fn lenient<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn goal(stage: DeployStage) -> DeployGoal {
        serde_json::from_value(serde_json::json!({
            "deployId": "d1", "deployType": "REGULAR", "envId": "e1", "envName": "web", "stageName": "prod",
            "stageType": "DEFAULT", "deployStage": stage.as_str(), "firstDeploy": true, "isDocker": false,
            "deployAlias": null, "scriptVariables": {"A": "1"}
        }))
        .unwrap()
    }

    #[test]
    fn save_and_reload_round_trip() {
        let dir = TempDir::new("status");
        let path = dir.path().join("env_status");
        let mut e = EnvEntry::default();
        e.apply_goal(OpCode::Deploy, &goal(DeployStage::PreDownload));
        e.finish(&StepResult::succeeded());
        let envs = Envs::from([("web".to_string(), e)]);
        save(&path, &envs).unwrap();
        let loaded = load(&path);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_eq!(loaded.envs, envs);
        assert_eq!(loaded.envs["web"].script_variables["A"], "1");
        assert!(loaded.envs["web"].first_deploy, "first_deploy is read back (Teletraan drops it)");
    }

    #[test]
    fn interrupted_step_reloads_as_unknown() {
        let dir = TempDir::new("status");
        let path = dir.path().join("env_status");
        let mut e = EnvEntry::default();
        e.apply_goal(OpCode::Deploy, &goal(DeployStage::Restarting));
        save(&path, &Envs::from([("web".to_string(), e)])).unwrap();
        let r = load(&path).envs["web"].ping_report();
        assert_eq!(r.deploy_stage, Some(DeployStage::Restarting));
        assert_eq!(r.agent_status, Some(AgentStatus::Unknown));
        assert_eq!(r.env_id.as_deref(), Some("e1"));
    }

    #[test]
    fn corrupt_file_is_reported_and_empty() {
        let dir = TempDir::new("status");
        let path = dir.path().join("env_status");
        std::fs::write(&path, "{not json").unwrap();
        let loaded = load(&path);
        assert!(loaded.envs.is_empty());
        assert!(loaded.problems[0].contains("corrupt"), "{:?}", loaded.problems);
        assert!(load(&dir.path().join("missing")).problems.is_empty());
    }

    #[test]
    fn teletraan_status_file_is_read() {
        let dir = TempDir::new("status");
        let path = dir.path().join("env_status");
        let text = r#"{"web": {"report": {"deployId": "d1", "envId": "e1", "envName": "web", "stageName": "prod",
            "deployStage": "SERVING_BUILD", "status": "SUCCEEDED", "errorCode": 0, "errorMessage": null,
            "failCount": 0, "extraInfo": null, "deployAlias": null, "containerHealthStatus": null, "state": null,
            "redeploy": 0, "wait": null},
          "build_info": {"build_commit": "abc", "build_url": "https://x/a.tar.gz", "build_id": "b1",
            "build_name": "web", "build_repo": "org/web", "build_branch": "main"},
          "runtime_config": null, "op_code": "DEPLOY"},
          "bad": {"report": "garbage"}}"#;
        std::fs::write(&path, text).unwrap();
        let loaded = load(&path);
        assert_eq!(loaded.envs.len(), 1);
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        let web = &loaded.envs["web"];
        assert_eq!(web.build_info.as_ref().unwrap().build_id, "b1");
        assert_eq!(web.report.deploy_stage, Some(DeployStage::ServingBuild));
        assert_eq!(web.op_code, Some(OpCode::Deploy));
    }

    #[test]
    fn report_has_every_field() {
        let json = serde_json::to_value(EnvEntry::default().ping_report()).unwrap();
        for key in ["deployId", "envId", "deployStage", "agentStatus", "errorCode", "errorMessage", "failCount"] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        for key in ["deployAlias", "containerHealthStatus", "agentState"] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
    }
}
