//! The agent's own Prometheus metrics (`teletraan_agent_*`), served on `metrics_listen` by the
//! small responder in [`server`] when that is set.
//!
//! | series | type | labels |
//! |---|---|---|
//! | `teletraan_agent_pings_total` | counter | `outcome`: `ok`, `error` |
//! | `teletraan_agent_ping_duration_seconds` | histogram | – |
//! | `teletraan_agent_last_ping_success_timestamp_seconds` | gauge | – |
//! | `teletraan_agent_steps_total` | counter | `stage` (wire name), `outcome`: `succeeded`, `failed`, `aborted` |
//! | `teletraan_agent_step_duration_seconds` | histogram | `stage` |
//! | `teletraan_agent_download_bytes_total` | counter | – |
//! | `teletraan_agent_environments` | gauge | – |
//! | `teletraan_agent_info` | gauge, always 1 | `version` |
//!
//! What counts: a ping is one call of the gateway client (the loop's pings and the progress
//! pings sent while a step runs), counted once whatever its attempts: `ok` when it got an
//! answer, `error` when it failed after its retries or was refused. The duration histogram
//! leaves out the pings that asked a long-polling gateway to hold them (their time is the hold,
//! not the gateway's latency); every other ping is timed from the first attempt to the answer,
//! retries included. A step is one goal executed (DELETE goals are not steps): `succeeded`,
//! `failed` (any other reported status) or `aborted` (the server changed the goal mid-step).
//! Download bytes are counted as they arrive (http and `file://` artifacts, failed attempts
//! included, checksum sidecars not), so a long download shows progress.
//!
//! The registry is the agent's own, not the process-wide default: nothing another library
//! registers globally lands on the page, and tests that open several agents in one process
//! each see their own counts. Recording is an atomic add per ping, step or received chunk (and a
//! label lookup for the labelled series), outside the stages' logic: the loop in
//! [`crate::runner`] and the byte loops of [`crate::download`] call it.

pub mod server;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use schema::ping::{PingRequest, PingResponse};
use schema::{AgentStatus, DeployStage};

use crate::error::{Error, Result};
use crate::exec::Outcome;

/// Stages whose series exist from the start (the stages of a deploy); STOPPING and STOPPED
/// appear when first run.
const DEPLOY_STAGES: [DeployStage; 8] = schema::rules::stage_seq::ROLLOUT;

/// Ping buckets: a gateway answers in milliseconds; one request may take up to 30 s, and the
/// retries add a few seconds more.
const PING_BUCKETS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Step buckets: from a missing hook (milliseconds) to a hook at its default timeout (30 min).
const STEP_BUCKETS: [f64; 13] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// How a ping ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome {
    /// The gateway answered.
    Ok,
    /// No answer after the retries, or a refusal.
    Error,
}

impl PingOutcome {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            PingOutcome::Ok => "ok",
            PingOutcome::Error => "error",
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Reported SUCCEEDED.
    Succeeded,
    /// Reported with any other status.
    Failed,
    /// Stopped because the server changed the goal.
    Aborted,
}

impl StepOutcome {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Succeeded => "succeeded",
            StepOutcome::Failed => "failed",
            StepOutcome::Aborted => "aborted",
        }
    }

    /// The outcome of an executed step.
    pub fn of(outcome: &Outcome) -> StepOutcome {
        match outcome {
            Outcome::Aborted(_) => StepOutcome::Aborted,
            Outcome::Done(result) => match result.status {
                AgentStatus::Succeeded => StepOutcome::Succeeded,
                AgentStatus::AbortedByService => StepOutcome::Aborted,
                AgentStatus::Unknown
                | AgentStatus::AgentFailed
                | AgentStatus::RetryableAgentFailed
                | AgentStatus::ScriptFailed
                | AgentStatus::ScriptTimeout
                | AgentStatus::TooManyRetry
                | AgentStatus::RuntimeMismatch => StepOutcome::Failed,
            },
        }
    }
}

/// The agent's series, in a registry of their own. Clones share the series.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pings: IntCounterVec,
    ping_seconds: Histogram,
    last_ping_success: Gauge,
    steps: IntCounterVec,
    step_seconds: HistogramVec,
    download_bytes: IntCounter,
    environments: IntGauge,
}

impl Metrics {
    /// Registers every series; those with known label values start at zero.
    pub fn new() -> Result<Metrics> {
        Metrics::register().map_err(|e| Error::Metrics(e.to_string()))
    }

    fn register() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let pings = IntCounterVec::new(
            Opts::new("teletraan_agent_pings_total", "Pings sent to the gateway, by outcome (ok, error)"),
            &["outcome"],
        )?;
        let ping_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "teletraan_agent_ping_duration_seconds",
                "Time from sending a ping to its answer, retries included; long-polled pings left out",
            )
            .buckets(PING_BUCKETS.to_vec()),
        )?;
        let last_ping_success = Gauge::new(
            "teletraan_agent_last_ping_success_timestamp_seconds",
            "When the gateway last answered a ping, in Unix seconds (0: not yet)",
        )?;
        let steps = IntCounterVec::new(
            Opts::new(
                "teletraan_agent_steps_total",
                "Deploy steps executed, by stage and outcome (succeeded, failed, aborted)",
            ),
            &["stage", "outcome"],
        )?;
        let step_seconds = HistogramVec::new(
            HistogramOpts::new("teletraan_agent_step_duration_seconds", "Time a deploy step took, by stage")
                .buckets(STEP_BUCKETS.to_vec()),
            &["stage"],
        )?;
        let download_bytes = IntCounter::new(
            "teletraan_agent_download_bytes_total",
            "Artifact bytes received (http and file URLs), failed attempts included",
        )?;
        let environments = IntGauge::new("teletraan_agent_environments", "Environments in the status file")?;
        let info = prometheus::IntGaugeVec::new(
            Opts::new("teletraan_agent_info", "Always 1; the agent's version as a label"),
            &["version"],
        )?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for outcome in [PingOutcome::Ok, PingOutcome::Error] {
            pings.with_label_values(&[outcome.as_str()]);
        }
        for stage in DEPLOY_STAGES {
            for outcome in [StepOutcome::Succeeded, StepOutcome::Failed, StepOutcome::Aborted] {
                steps.with_label_values(&[stage.as_str(), outcome.as_str()]);
            }
            step_seconds.with_label_values(&[stage.as_str()]);
        }
        registry.register(Box::new(pings.clone()))?;
        registry.register(Box::new(ping_seconds.clone()))?;
        registry.register(Box::new(last_ping_success.clone()))?;
        registry.register(Box::new(steps.clone()))?;
        registry.register(Box::new(step_seconds.clone()))?;
        registry.register(Box::new(download_bytes.clone()))?;
        registry.register(Box::new(environments.clone()))?;
        registry.register(Box::new(info))?;
        Ok(Metrics {
            registry,
            pings,
            ping_seconds,
            last_ping_success,
            steps,
            step_seconds,
            download_bytes,
            environments,
        })
    }

    /// The registry the page is rendered from.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one ping (one call of the gateway client) that took `took`.
    pub fn observe_ping(&self, request: &PingRequest, result: &Result<PingResponse>, took: Duration) {
        let outcome = if result.is_ok() { PingOutcome::Ok } else { PingOutcome::Error };
        self.pings.with_label_values(&[outcome.as_str()]).inc();
        if request.wait_seconds.is_none() {
            self.ping_seconds.observe(took.as_secs_f64());
        }
        if outcome == PingOutcome::Ok {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_ping_success.set(now.as_secs_f64());
        }
    }

    /// Counts one executed step of `stage` that took `took`.
    pub fn observe_step(&self, stage: DeployStage, outcome: &Outcome, took: Duration) {
        let stage = stage.as_str();
        self.steps.with_label_values(&[stage, StepOutcome::of(outcome).as_str()]).inc();
        self.step_seconds.with_label_values(&[stage]).observe(took.as_secs_f64());
    }

    /// The counter of artifact bytes received, for the fetcher.
    pub fn download_bytes(&self) -> IntCounter {
        self.download_bytes.clone()
    }

    /// Sets how many environments the status file holds.
    pub fn set_environments(&self, n: usize) {
        self.environments.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StepResult;

    /// The value of one series on the page, `name` with exactly these labels (in any order);
    /// a histogram by its `_count`.
    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut text = String::new();
        prometheus::TextEncoder::new().encode_utf8(&m.registry().gather(), &mut text).unwrap();
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        want.sort();
        text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
            let (series, v) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut have: Vec<String> =
                rest.trim_end_matches('}').split(',').filter(|p| !p.is_empty()).map(String::from).collect();
            have.sort();
            let wanted = n == name || n == format!("{name}_count");
            (wanted && have == want).then(|| v.parse().ok()).flatten()
        })
    }

    #[test]
    fn known_series_exist_at_zero_from_the_start() {
        let m = Metrics::new().unwrap();
        assert_eq!(value(&m, "teletraan_agent_pings_total", &[("outcome", "error")]), Some(0.0));
        assert_eq!(
            value(&m, "teletraan_agent_steps_total", &[("outcome", "failed"), ("stage", "RESTARTING")]),
            Some(0.0)
        );
        assert_eq!(value(&m, "teletraan_agent_step_duration_seconds", &[("stage", "STAGING")]), Some(0.0));
        assert_eq!(value(&m, "teletraan_agent_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
        assert_eq!(value(&m, "teletraan_agent_last_ping_success_timestamp_seconds", &[]), Some(0.0));
        let other = Metrics::new().unwrap();
        other.set_environments(3);
        assert_eq!(value(&m, "teletraan_agent_environments", &[]), Some(0.0), "each agent has its own registry");
    }

    #[test]
    fn a_ping_counts_once_and_a_held_one_is_not_timed() {
        let m = Metrics::new().unwrap();
        let plain = PingRequest::default();
        m.observe_ping(&plain, &Ok(PingResponse::noop()), Duration::from_millis(20));
        m.observe_ping(&plain, &Err(Error::Ping("down".into())), Duration::from_secs(3));
        let held = PingRequest { wait_seconds: Some(30), ..PingRequest::default() };
        m.observe_ping(&held, &Ok(PingResponse::noop()), Duration::from_secs(30));
        assert_eq!(value(&m, "teletraan_agent_pings_total", &[("outcome", "ok")]), Some(2.0));
        assert_eq!(value(&m, "teletraan_agent_pings_total", &[("outcome", "error")]), Some(1.0));
        assert_eq!(value(&m, "teletraan_agent_ping_duration_seconds", &[]), Some(2.0));
        let last = value(&m, "teletraan_agent_last_ping_success_timestamp_seconds", &[]).unwrap();
        assert!(last > 1.7e9, "{last}");
    }

    #[test]
    fn steps_count_by_stage_and_outcome() {
        let m = Metrics::new().unwrap();
        let done = |r: StepResult| Outcome::Done(r);
        m.observe_step(DeployStage::Restarting, &done(StepResult::succeeded()), Duration::from_secs(1));
        m.observe_step(DeployStage::Restarting, &done(StepResult::agent_failed("x")), Duration::from_secs(1));
        m.observe_step(DeployStage::Stopping, &Outcome::Aborted(Box::new(PingResponse::noop())), Duration::ZERO);
        let steps =
            |stage, outcome| value(&m, "teletraan_agent_steps_total", &[("outcome", outcome), ("stage", stage)]);
        assert_eq!(steps("RESTARTING", "succeeded"), Some(1.0));
        assert_eq!(steps("RESTARTING", "failed"), Some(1.0));
        assert_eq!(steps("STOPPING", "aborted"), Some(1.0));
        assert_eq!(value(&m, "teletraan_agent_step_duration_seconds", &[("stage", "RESTARTING")]), Some(2.0));
    }
}
