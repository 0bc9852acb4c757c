//! What one virtual agent knows: the status of each of its environments, kept and reported
//! the way the real agent keeps its status file, and the pure step logic.

use schema::ping::{DeployGoal, PingReport};
use schema::{AgentStatus, DeployStage};

/// The status of one environment on a host (one report in every ping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvStatus {
    /// Environment name (the agent's key for it).
    pub env_name: String,
    /// Stage id (`envId`).
    pub env_id: String,
    /// The deploy worked on or served.
    pub deploy_id: String,
    /// The last step taken.
    pub deploy_stage: DeployStage,
    /// Its outcome (UNKNOWN while it runs).
    pub agent_status: AgentStatus,
    /// 0, or 1 after a failed step.
    pub error_code: i32,
    /// Why the last step failed.
    pub error_message: Option<String>,
    /// Failed attempts of the current step.
    pub fail_count: i32,
    /// Echo of the goal's `deployAlias`.
    pub deploy_alias: Option<String>,
    /// The build of the current deploy, from its DOWNLOADING goal.
    pub build: Option<String>,
    /// The build served: set when SERVING_BUILD succeeds.
    pub serving: Option<String>,
}

impl EnvStatus {
    /// The report sent in a ping: every field present.
    pub fn report(&self) -> PingReport {
        PingReport {
            deploy_id: Some(self.deploy_id.clone()),
            env_id: Some(self.env_id.clone()),
            deploy_stage: Some(self.deploy_stage),
            agent_status: Some(self.agent_status),
            error_code: Some(self.error_code),
            error_message: self.error_message.clone(),
            fail_count: Some(self.fail_count),
            extra_info: None,
            deploy_alias: self.deploy_alias.clone(),
            container_health_status: None,
            agent_state: None,
        }
    }
}

/// The environments of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// One entry per environment, in the order they arrived.
    pub envs: Vec<EnvStatus>,
}

/// What taking a goal changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Position of the environment in [`HostState::envs`].
    pub env: usize,
    /// The host served a build of this environment when it took the goal.
    pub was_serving: bool,
    /// Failed attempts of this step so far (0 unless the server repeats a failed step).
    pub failed_before: i32,
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// It worked.
    Succeeded,
    /// It failed; `fatal` when the retries are used up (TOO_MANY_RETRY).
    Failed {
        /// The attempts are used up.
        fatal: bool,
    },
}

impl HostState {
    fn find(&self, goal: &DeployGoal) -> Option<usize> {
        match &goal.env_name {
            Some(name) => self.envs.iter().position(|e| e.env_name == name.as_str()),
            None => self.envs.iter().position(|e| e.env_id == goal.env_id.as_str()),
        }
    }

    /// Reports of every environment.
    pub fn reports(&self) -> Vec<PingReport> {
        self.envs.iter().map(EnvStatus::report).collect()
    }

    /// Takes a goal: the environment moves to the goal's step with status UNKNOWN. A repeat
    /// of a failed step keeps its failure count (the agent counts its own retries); the
    /// DOWNLOADING goal's build is remembered. `None` for a goal naming no known environment.
    pub fn take(&mut self, goal: &DeployGoal) -> Option<Taken> {
        let i = match (self.find(goal), &goal.env_name) {
            (Some(i), _) => i,
            (None, Some(name)) => {
                self.envs.push(EnvStatus {
                    env_name: name.to_string(),
                    env_id: goal.env_id.to_string(),
                    deploy_id: goal.deploy_id.to_string(),
                    deploy_stage: DeployStage::Unknown,
                    agent_status: AgentStatus::Unknown,
                    error_code: 0,
                    error_message: None,
                    fail_count: 0,
                    deploy_alias: None,
                    build: None,
                    serving: None,
                });
                self.envs.len() - 1
            }
            (None, None) => return None,
        };
        let e = &mut self.envs[i];
        let repeat = e.deploy_id == goal.deploy_id.as_str()
            && e.deploy_stage == goal.deploy_stage
            && !matches!(e.agent_status, AgentStatus::Succeeded | AgentStatus::Unknown);
        let failed_before = if repeat { e.fail_count } else { 0 };
        if e.deploy_id != goal.deploy_id.as_str() {
            e.build = None;
        }
        e.env_id = goal.env_id.to_string();
        e.deploy_id = goal.deploy_id.to_string();
        e.deploy_stage = goal.deploy_stage;
        e.agent_status = AgentStatus::Unknown;
        e.error_code = 0;
        e.error_message = None;
        e.fail_count = failed_before;
        e.deploy_alias = goal.deploy_alias.as_ref().map(|a| a.to_string());
        if let Some(b) = &goal.build {
            e.build = Some(b.id.to_string());
        }
        Some(Taken { env: i, was_serving: e.serving.is_some(), failed_before })
    }

    /// Records the outcome of the step environment `env` runs. A failure counts one more
    /// attempt; past `retries` failed attempts it is TOO_MANY_RETRY.
    pub fn finish(&mut self, env: usize, failed: bool, retries: u32, host: &str) -> StepOutcome {
        let Some(e) = self.envs.get_mut(env) else {
            return StepOutcome::Succeeded;
        };
        if !failed {
            e.agent_status = AgentStatus::Succeeded;
            if e.deploy_stage == DeployStage::ServingBuild {
                e.serving = e.build.clone().or(e.serving.take());
            }
            if e.deploy_stage == DeployStage::Stopping {
                e.serving = None;
            }
            return StepOutcome::Succeeded;
        }
        e.fail_count += 1;
        let fatal = e.fail_count > retries as i32;
        e.agent_status = if fatal { AgentStatus::TooManyRetry } else { AgentStatus::ScriptFailed };
        e.error_code = 1;
        e.error_message = Some(format!("simulated failure of {} on {host} (attempt {})", e.deploy_stage, e.fail_count));
        StepOutcome::Failed { fatal }
    }

    /// DELETE: forgets the goal's environment; its name, if it was known.
    pub fn forget(&mut self, goal: &DeployGoal) -> Option<String> {
        let i = self.find(goal)?;
        Some(self.envs.remove(i).env_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn goal(deploy: &str, stage: DeployStage, build: Option<&str>) -> DeployGoal {
        let mut g = serde_json::json!({
            "deployId": deploy, "deployType": "REGULAR", "envId": "e1", "envName": "web", "stageName": "prod",
            "stageType": "PRODUCTION", "deployStage": stage.as_str(), "firstDeploy": false, "isDocker": false,
            "deployAlias": "alias-1"
        });
        if let Some(b) = build {
            g["build"] = serde_json::json!({"id": b, "name": "web", "artifactUrl": "https://x/a.tgz", "type": "GitHub",
                "repo": "o/web", "branch": "main", "commit": "abcdef0123", "commitShort": "abcdef0",
                "commitDate": 1, "publishInfo": null, "publisher": "ci", "publishDate": 1});
        }
        serde_json::from_value(g).unwrap()
    }

    fn run(h: &mut HostState, deploy: &str, build: &str) {
        for s in &DeployStage::ALL[1..=8] {
            let b = (*s == DeployStage::Downloading).then_some(build);
            let t = h.take(&goal(deploy, *s, b)).unwrap();
            assert_eq!(h.finish(t.env, false, 3, "h"), StepOutcome::Succeeded);
        }
    }

    #[test]
    fn a_deploy_ends_serving_its_build_and_reports_every_field() {
        let mut h = HostState::default();
        let t = h.take(&goal("d1", DeployStage::PreDownload, None)).unwrap();
        assert!(!t.was_serving);
        run(&mut h, "d1", "b1");
        assert_eq!(h.envs[0].serving.as_deref(), Some("b1"));
        let r = &h.reports()[0];
        assert_eq!((r.deploy_id.as_deref(), r.env_id.as_deref()), (Some("d1"), Some("e1")));
        assert_eq!((r.deploy_stage, r.agent_status), (Some(DeployStage::ServingBuild), Some(AgentStatus::Succeeded)));
        assert_eq!((r.error_code, r.fail_count, r.deploy_alias.as_deref()), (Some(0), Some(0), Some("alias-1")));
        let t = h.take(&goal("d2", DeployStage::PreDownload, None)).unwrap();
        assert!(t.was_serving, "a second deploy takes a serving host out of service");
        assert_eq!(h.envs[0].build, None, "a new deploy forgets the previous deploy's build");
    }

    #[test]
    fn failures_count_up_to_too_many_retry_and_a_new_step_starts_afresh() {
        let mut h = HostState::default();
        let g = goal("d1", DeployStage::Restarting, None);
        for attempt in 1..=3 {
            let t = h.take(&g).unwrap();
            assert_eq!(t.failed_before, attempt - 1);
            assert_eq!(h.finish(t.env, true, 3, "h"), StepOutcome::Failed { fatal: false });
            let r = &h.reports()[0];
            assert_eq!(
                (r.agent_status, r.error_code, r.fail_count),
                (Some(AgentStatus::ScriptFailed), Some(1), Some(attempt))
            );
            assert!(r.error_message.as_deref().unwrap().contains("RESTARTING"));
        }
        let t = h.take(&g).unwrap();
        assert_eq!(h.finish(t.env, true, 3, "h"), StepOutcome::Failed { fatal: true });
        assert_eq!(h.envs[0].agent_status, AgentStatus::TooManyRetry);
        let t = h.take(&goal("d1", DeployStage::PostRestart, None)).unwrap();
        assert_eq!((t.failed_before, h.envs[0].fail_count, h.envs[0].error_code), (0, 0, 0));
    }

    #[test]
    fn delete_forgets_by_name_or_id_and_unknown_envs_without_name_are_ignored() {
        let mut h = HostState::default();
        run(&mut h, "d1", "b1");
        let mut g = goal("d1", DeployStage::ServingBuild, None);
        g.env_name = None;
        assert_eq!(h.forget(&g).as_deref(), Some("web"));
        assert!(h.envs.is_empty());
        assert_eq!(h.take(&g), None);
        assert_eq!(h.forget(&g), None);
    }
}
