//! The agent loop: ping with one report per environment, execute the goal's stage, persist
//! the result, ping again at once with it, until the gateway answers NOOP; then sleep the ping
//! interval (with jitter), or back off (with jitter) while the gateway is unreachable.
//!
//! With an enrollment token and no credential file, the agent enrolls before its first ping;
//! when the gateway retires its credential, it moves the file aside and enrolls again.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use schema::ping::{DeployGoal, PingRequest, PingResponse};
use schema::{DeployStage, OpCode};

use crate::client::Gateway;
use crate::config::Config;
use crate::download::{FetchPolicy, Fetcher};
use crate::downloading::Downloader;
use crate::error::{Error, Result};
use crate::exec::{HookSettings, Outcome, run_hook};
use crate::hooks;
use crate::identity::{self, AfterRefusal, Credential, CredentialFile, Enroller, after_refusal};
use crate::layout::{DirLock, Layout, write_private};
use crate::metrics::Metrics;
use crate::progress::{Progress, Ticker};
use crate::status::{self, Envs, StepResult};
use crate::user::HookUser;
use crate::{retention, stage, template};

/// A guard against a gateway that never answers NOOP: at most this many steps per round.
const MAX_STEPS_PER_ROUND: usize = 200;
/// Longest wait between rounds while the gateway is unreachable (unless the interval is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundSummary {
    /// Steps executed (DELETE goals included).
    pub steps: usize,
    /// Old builds removed afterwards.
    pub removed_builds: Vec<String>,
    /// How long the round's first ping took (held by a long-polling gateway).
    pub held: Duration,
}

/// The agent: configuration, its base directory (locked) and the status of every environment.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    layout: Layout,
    gateway: Gateway,
    fetcher: Fetcher,
    settings: HookSettings,
    envs: Envs,
    credential_file: CredentialFile,
    enroller: Option<Enroller>,
    /// The host credential pings are sent with, once the host enrolled.
    credential: Option<Credential>,
    metrics: Metrics,
    _lock: DirLock,
}

impl Agent {
    /// Creates the directories, takes the lock, loads the status file (a corrupt one is
    /// logged and treated as empty) and the credential file, if there is one.
    pub fn open(config: Config) -> Result<Agent> {
        let layout = Layout::new(&config.dir);
        layout.create_dirs()?;
        let lock = DirLock::acquire(&layout)?;
        if config.hook_user.is_some() {
            layout.prepare_for_hook_user()?;
        }
        let credential_file = CredentialFile::new(&config.credential_file);
        let credential = credential_file.load()?;
        let mut gateway = Gateway::new(&config)?;
        if let Some(c) = &credential {
            tracing::info!(file = %credential_file.path().display(), "pinging with the host's credential");
            gateway.set_token(Some(c.expose().to_string()));
        }
        if config.allow_unverified_artifacts {
            tracing::warn!(
                "allow_unverified_artifacts is on: artifacts without a checksum are used unverified \
                 (local development only)"
            );
        }
        let loaded = status::load(&layout.status_file());
        for p in &loaded.problems {
            tracing::error!("{p}");
        }
        let metrics = Metrics::new()?;
        metrics.set_environments(loaded.envs.len());
        Ok(Agent {
            gateway,
            enroller: Enroller::new(&config)?,
            credential_file,
            credential,
            fetcher: Fetcher::new(FetchPolicy {
                allowed: config.artifact_allowed.clone(),
                allow_unverified: config.allow_unverified_artifacts,
                ca_file: config.ca_file.clone(),
            })?
            .counting_bytes(metrics.download_bytes()),
            metrics,
            settings: HookSettings::from_config(&config),
            layout,
            envs: loaded.envs,
            config,
            _lock: lock,
        })
    }

    /// The environments as currently known.
    pub fn envs(&self) -> &Envs {
        &self.envs
    }

    /// The directory layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The agent's own metrics (served when `metrics_listen` is set).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the agent must enroll before it pings: it has an enrollment token and no
    /// credential.
    pub fn needs_enrollment(&self) -> bool {
        self.credential.is_none() && self.enroller.is_some()
    }

    /// Whether pings are sent with the host's own credential.
    pub fn has_credential(&self) -> bool {
        self.credential.is_some()
    }

    fn adopt(&mut self, credential: Credential) {
        self.gateway.set_token(Some(credential.expose().to_string()));
        self.credential = Some(credential);
    }

    /// Enrolls when needed, trying until it succeeds (see [`identity::enroll_until_done`]).
    pub async fn enroll_patiently(&mut self) {
        if let (true, Some(enroller)) = (self.needs_enrollment(), &self.enroller) {
            let credential = identity::enroll_until_done(enroller, &self.credential_file).await;
            self.adopt(credential);
        }
    }

    /// Enrolls when needed, failing after a refusal or a few transient failures.
    pub async fn enroll_briefly(&mut self) -> Result<()> {
        if let (true, Some(enroller)) = (self.needs_enrollment(), &self.enroller) {
            let credential = identity::enroll_briefly(enroller, &self.credential_file).await?;
            self.adopt(credential);
        }
        Ok(())
    }

    /// After a failed round: when the gateway refused a retired credential and the agent can
    /// enroll again, moves the credential aside and forgets it (the next round enrolls first).
    /// Answers whether it did.
    pub fn retire_if_refused(&mut self, error: &Error) -> bool {
        let Error::Rejected { status, code, .. } = error else {
            return false;
        };
        match after_refusal(*status, code.as_deref(), self.credential.is_some(), self.enroller.is_some()) {
            AfterRefusal::KeepTrying => false,
            AfterRefusal::ReEnroll => {
                tracing::warn!(status, "the gateway no longer accepts this host's credential; enrolling again");
                if let Err(e) = self.credential_file.retire() {
                    tracing::error!(error = %e, "cannot move the retired credential aside; it will be replaced");
                }
                self.credential = None;
                self.gateway.set_token(self.config.token.clone());
                true
            }
        }
    }

    /// `once`: enroll if needed, then one round; a round refused for a retired credential
    /// enrolls again and runs once more.
    pub async fn once(&mut self) -> Result<RoundSummary> {
        self.enroll_briefly().await?;
        match self.round().await {
            Err(e) if self.retire_if_refused(&e) => {
                self.enroll_briefly().await?;
                self.round().await
            }
            other => other,
        }
    }

    /// Runs rounds until `shutdown` completes. Never returns because the gateway is down.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.ping_interval)
            .with_max_delay(MAX_BACKOFF.max(self.config.ping_interval))
            .with_factor(2.0)
            .with_jitter()
            .with_jitter_seed(random_u64())
            .without_max_times();
        let mut failing: Option<<ExponentialBuilder as BackoffBuilder>::Backoff> = None;
        loop {
            if self.needs_enrollment() {
                tokio::select! {
                    _ = self.enroll_patiently() => {}
                    _ = &mut shutdown => return,
                }
            }
            let pause = tokio::select! {
                r = self.round() => match r {
                    // With long-poll the idle ping was the wait: ping again at once, unless the
                    // gateway answered too fast to have held it (it does not long-poll).
                    Ok(summary) if !self.config.long_poll.is_zero()
                        && (summary.steps > 0 || summary.held >= self.config.long_poll / 2) =>
                    {
                        failing = None;
                        Duration::ZERO
                    }
                    Ok(summary) => {
                        failing = None;
                        tracing::debug!(steps = summary.steps, "round done");
                        jittered(self.config.ping_interval, random_u64())
                    }
                    Err(e) if self.retire_if_refused(&e) => {
                        failing = None;
                        Duration::ZERO
                    }
                    Err(e) => {
                        let wait = failing.get_or_insert_with(|| backoff.build()).next().unwrap_or(MAX_BACKOFF);
                        tracing::error!(error = %e, retry_in_s = wait.as_secs(), "round failed");
                        wait
                    }
                },
                _ = &mut shutdown => return,
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = &mut shutdown => return,
            }
        }
    }

    /// One round: ping, execute goals until NOOP (or a fatal result has been reported), then
    /// clean old builds. Fails when a ping fails (after its retries); the status is saved.
    pub async fn round(&mut self) -> Result<RoundSummary> {
        let mut summary = RoundSummary::default();
        let mut first = self.ping_request();
        if !self.config.long_poll.is_zero() {
            first.wait_seconds = Some(self.config.long_poll.as_secs() as u32);
        }
        let started = Instant::now();
        let mut resp = counted_ping(&self.gateway, &self.metrics, &first).await?;
        summary.held = started.elapsed();
        while resp.op_code != OpCode::Noop {
            if summary.steps >= MAX_STEPS_PER_ROUND {
                tracing::warn!(steps = summary.steps, "too many steps in one round; pausing until the next");
                break;
            }
            summary.steps += 1;
            let Some(goal) = resp.deploy_goal.clone() else {
                tracing::warn!(op = %resp.op_code, "answer without a deploy goal; ignoring it");
                break;
            };
            let Some(env) = self.env_of(&goal) else {
                tracing::warn!(env.id = %goal.env_id, "goal names no env and the env id is not known here; ignoring it");
                break;
            };
            if resp.op_code == OpCode::Delete {
                self.forget(&env)?;
                resp = self.ping().await?;
                continue;
            }
            let started = Instant::now();
            let outcome = self.execute(&env, resp.op_code, &goal, &resp).await;
            self.metrics.observe_step(goal.deploy_stage, &outcome, started.elapsed());
            match outcome {
                Outcome::Aborted(next) => {
                    // Reported as UNKNOWN (Teletraan's ABORTED_BY_SERVER): the entry still says so.
                    resp = *next;
                }
                Outcome::Done(result) => {
                    tracing::info!(env, stage = %goal.deploy_stage, status = %result.status, "step finished");
                    let fatal = result.status.is_fatal();
                    self.record(&env, &result);
                    resp = self.ping().await?;
                    if fatal {
                        break;
                    }
                }
            }
        }
        summary.removed_builds = retention::clean_builds(&self.layout, &self.envs, self.config.builds_to_keep);
        Ok(summary)
    }

    fn env_of(&self, goal: &DeployGoal) -> Option<String> {
        match &goal.env_name {
            Some(n) => Some(n.to_string()),
            None => status::find_by_env_id(&self.envs, goal.env_id.as_str()).map(String::from),
        }
    }

    /// The ping with every environment's report.
    pub fn ping_request(&self) -> PingRequest {
        let c = &self.config;
        let tags =
            (!c.tags.is_empty()).then(|| serde_json::to_string(&c.tags).ok().map(serde_json::Value::String)).flatten();
        PingRequest {
            host_id: Some(c.host_id.clone()),
            host_name: Some(c.host_name.clone()),
            host_ip: c.host_ip.clone(),
            ec2_tags: tags,
            agent_version: Some(crate::AGENT_VERSION.to_string()),
            groups: Some(c.groups.clone()),
            reports: Some(self.envs.values().map(|e| e.ping_report()).collect()),
            ..PingRequest::default()
        }
    }

    async fn ping(&self) -> Result<PingResponse> {
        counted_ping(&self.gateway, &self.metrics, &self.ping_request()).await
    }

    /// Saves the status; a failed save turns the env's result into AGENT_FAILED so the server
    /// stops the deploy on this host (Teletraan does the same).
    fn save(&mut self, env: &str) -> Result<()> {
        let r = status::save(&self.layout.status_file(), &self.envs);
        self.metrics.set_environments(self.envs.len());
        if let (Err(e), Some(entry)) = (&r, self.envs.get_mut(env)) {
            entry.finish(&StepResult::agent_failed(format!("Failed to dump status to the disk: {e}")));
        }
        r
    }

    fn record(&mut self, env: &str, result: &StepResult) {
        if let Some(entry) = self.envs.get_mut(env) {
            entry.finish(result);
        }
        if let Err(e) = self.save(env) {
            tracing::error!(error = %e, "cannot save the status");
        }
    }

    /// DELETE: forget the env (status entry and script config); its target and log stay.
    fn forget(&mut self, env: &str) -> Result<()> {
        tracing::info!(env, "DELETE: forgetting the environment");
        self.envs.remove(env);
        self.metrics.set_environments(self.envs.len());
        let cfg = self.layout.script_config(env);
        match std::fs::remove_file(&cfg) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %cfg.display(), error = %e, "cannot remove the script config");
            }
            _ => {}
        }
        status::save(&self.layout.status_file(), &self.envs)
    }

    /// Takes the goal, persists it (status UNKNOWN) and runs its stage.
    async fn execute(&mut self, env: &str, op: OpCode, goal: &DeployGoal, resp: &PingResponse) -> Outcome {
        tracing::info!(env, op = %op, stage = %goal.deploy_stage, deploy.id = %goal.deploy_id, "executing");
        self.envs.entry(env.to_string()).or_default().apply_goal(op, goal);
        if let Err(e) = self.write_script_config(env, goal) {
            return Outcome::Done(StepResult::agent_failed(e.to_string()));
        }
        if let Err(e) = self.save(env) {
            return Outcome::Done(StepResult::agent_failed(format!("Failed to dump status to the disk: {e}")));
        }
        let Some(entry) = self.envs.get(env) else {
            return Outcome::Done(StepResult::agent_failed("internal: env entry vanished"));
        };
        let stage = goal.deploy_stage;
        let settings = self.settings.with_overrides(&entry.runtime_config, stage.as_str());
        let mut ticker = Ticker::new(settings.min_running_time);
        let mut watch =
            Watch { gateway: &self.gateway, metrics: &self.metrics, request: self.ping_request(), current: resp };
        match stage {
            DeployStage::Downloading => {
                let Some(build) = &goal.build else {
                    return Outcome::Done(StepResult::agent_failed("the DOWNLOADING goal carries no build"));
                };
                let downloader = Downloader {
                    layout: &self.layout,
                    fetcher: &self.fetcher,
                    limits: self.config.limits,
                    owner: self.config.hook_user.as_ref().map(HookUser::owner),
                };
                downloader.run(env, build, &settings, &mut ticker, &mut watch).await
            }
            DeployStage::Staging => Outcome::Done(self.staging(env, goal)),
            _ => {
                let lookup = hooks::find(&self.layout, env, stage);
                if let Some(result) = hooks::without_hook(stage, &lookup, env) {
                    return Outcome::Done(result);
                }
                let hooks::Lookup::Found(hook) = lookup else {
                    return Outcome::Done(StepResult::succeeded());
                };
                let vars = hooks::environment(&self.layout, env, entry, stage);
                let user = self.config.hook_user.as_ref();
                run_hook(&hook, user, &vars, &self.layout.log(env), &settings, &mut ticker, &mut watch).await
            }
        }
    }

    /// `scriptVariables` non-empty: write the file; `{}`: delete it; absent: leave it.
    fn write_script_config(&self, env: &str, goal: &DeployGoal) -> Result<()> {
        let path = self.layout.script_config(env);
        match &goal.script_variables {
            Some(vars) if !vars.is_empty() => write_private(&path, hooks::script_config_text(vars).as_bytes()),
            Some(_) => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("cannot remove", &path, e)),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    fn staging(&mut self, env: &str, goal: &DeployGoal) -> StepResult {
        let id = match (&goal.build, self.envs.get(env).and_then(|e| e.build_info.as_ref())) {
            (Some(b), _) => b.id.to_string(),
            (None, Some(info)) => info.build_id.clone(),
            (None, None) => {
                return StepResult::agent_failed("STAGING without a known build (no DOWNLOADING goal seen)");
            }
        };
        let vars = match template::read_script_config(&self.layout.script_config(env)) {
            Ok(v) => v,
            Err(e) => return StepResult::agent_failed(e.to_string()),
        };
        let owner = self.config.hook_user.as_ref().map(HookUser::owner);
        match stage::stage_build(&self.layout, env, &id, &vars, owner) {
            Ok(previous) => {
                if let (Some(prev), Some(entry)) = (previous, self.envs.get_mut(env)) {
                    entry.previous_build_id = Some(prev);
                }
                StepResult::succeeded()
            }
            Err(e) => StepResult::agent_failed(e.to_string()),
        }
    }
}

/// Progress pings while a step runs: the entry already says UNKNOWN for the running step.
struct Watch<'a> {
    gateway: &'a Gateway,
    metrics: &'a Metrics,
    request: PingRequest,
    current: &'a PingResponse,
}

impl Progress for Watch<'_> {
    async fn ping(&mut self) -> Option<PingResponse> {
        match counted_ping(self.gateway, self.metrics, &self.request).await {
            Ok(next) if goal_changed(self.current, &next) => Some(next),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "progress ping failed; the hook goes on");
                None
            }
        }
    }
}

/// A ping, counted in the metrics (every ping goes through here).
async fn counted_ping(gateway: &Gateway, metrics: &Metrics, request: &PingRequest) -> Result<PingResponse> {
    let started = Instant::now();
    let result = gateway.ping(request).await;
    metrics.observe_ping(request, &result, started.elapsed());
    result
}

/// Teletraan's `plan_changed`: another opcode, a goal appearing or vanishing, or another
/// deploy, env or stage.
pub fn goal_changed(old: &PingResponse, new: &PingResponse) -> bool {
    if old.op_code != new.op_code {
        return true;
    }
    match (&old.deploy_goal, &new.deploy_goal) {
        (Some(a), Some(b)) => a.deploy_id != b.deploy_id || a.env_id != b.env_id || a.deploy_stage != b.deploy_stage,
        (None, None) => false,
        _ => true,
    }
}

/// `base` plus up to 10% of it, from `random`.
pub fn jittered(base: Duration, random: u64) -> Duration {
    let max_extra = base.as_millis() as u64 / 10;
    if max_extra == 0 { base } else { base + Duration::from_millis(random % (max_extra + 1)) }
}

fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(op: OpCode, stage: DeployStage) -> PingResponse {
        let goal = serde_json::from_value(serde_json::json!({
            "deployId": "d1", "deployType": "REGULAR", "envId": "e1", "envName": "web", "stageName": "prod",
            "stageType": "PRODUCTION", "deployStage": stage.as_str(), "firstDeploy": false, "isDocker": false,
            "deployAlias": null
        }))
        .unwrap();
        PingResponse { op_code: op, deploy_goal: Some(goal) }
    }

    #[test]
    fn goal_change_is_teletraans_plan_change() {
        let a = resp(OpCode::Deploy, DeployStage::Restarting);
        assert!(!goal_changed(&a, &a.clone()));
        assert!(goal_changed(&a, &resp(OpCode::Deploy, DeployStage::PostRestart)));
        assert!(goal_changed(&a, &resp(OpCode::Restart, DeployStage::Restarting)));
        assert!(goal_changed(&a, &PingResponse::noop()));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for r in [0, 1, 999, u64::MAX] {
            let d = jittered(Duration::from_secs(30), r);
            assert!(d >= Duration::from_secs(30) && d <= Duration::from_secs(33), "{d:?}");
        }
    }
}
