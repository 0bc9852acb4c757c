//! The loop of one virtual agent, modelled on the real agent's (`agent/src/runner.rs`): ping
//! with a report per environment, run the goal's step, ping again at once with the result until
//! the answer is NOOP, then sleep the interval with jitter; back off while pings fail.
//! One tokio task per host; its state lives in the fleet, behind a lock held only between
//! awaits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use schema::ping::{DeployGoal, PingRequest, PingResponse};
use schema::{AgentStatus, OpCode};
use tokio::sync::watch;

use super::fleet::Shared;
use super::host::StepOutcome;
use super::observe::{EventKind, Move};
use super::prng::SplitMix64;
use super::stats::Counters;

/// A guard against a gateway that never answers NOOP, as in the real agent.
const MAX_STEPS_PER_ROUND: usize = 200;
/// How often a silenced host checks whether it was revived.
const SILENT_POLL: Duration = Duration::from_millis(20);
/// Longest answer text kept in an error message.
const ERROR_TEXT: usize = 200;

/// `base` times a factor drawn from `[1 - jitter, 1 + jitter]`.
pub(crate) fn jittered(base: Duration, jitter: f64, rng: &mut SplitMix64) -> Duration {
    let factor = 1.0 + jitter.clamp(0.0, 1.0) * (2.0 * rng.next_f64() - 1.0);
    base.mul_f64(factor.max(0.0))
}

/// The pause after `failures` failed rounds in a row: the interval doubled each time, at most
/// `max` (but never below the interval), with a quarter of jitter so hosts do not retry in step.
pub(crate) fn backoff(interval: Duration, max: Duration, failures: u32, rng: &mut SplitMix64) -> Duration {
    let doubled = interval.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    jittered(doubled.min(max.max(interval)), 0.25, rng)
}

struct Agent {
    shared: Arc<Shared>,
    host: usize,
    failures: SplitMix64,
}

/// What a round did.
struct Round {
    /// It ran at least one goal.
    worked: bool,
    /// How long its first ping took (held by a long-polling gateway).
    held: Duration,
}

/// Runs host `host` until `stop` turns true (or its sender is gone).
pub(crate) async fn run(shared: Arc<Shared>, host: usize, mut stop: watch::Receiver<bool>) {
    let interval = shared.config.ping_interval;
    let jitter = shared.config.jitter;
    let max_backoff = shared.config.max_backoff;
    let seed = shared.config.seed;
    // Two streams per host: how many idle pings happened never changes which steps fail.
    let mut timing = SplitMix64::stream(seed, (host as u64) << 1);
    let failures = SplitMix64::stream(seed, ((host as u64) << 1) | 1);
    // Hosts start spread evenly over one interval, as a real fleet's pings are.
    let first = interval.mul_f64(host as f64 / shared.slots.len().max(1) as f64);
    let mut agent = Agent { shared, host, failures };
    if !pause(first, &mut stop).await {
        return;
    }
    let mut failed_rounds = 0u32;
    loop {
        let result = tokio::select! {
            r = agent.round() => r,
            _ = stop.changed() => return,
        };
        let wait = match result {
            // With long-poll the idle ping was the wait: ping again at once, unless the gateway
            // answered too fast to have held it (it does not long-poll).
            Ok(round) if agent.shared.config.long_poll.is_some_and(|w| round.worked || round.held >= w / 2) => {
                failed_rounds = 0;
                Duration::ZERO
            }
            Ok(_) => {
                failed_rounds = 0;
                jittered(interval, jitter, &mut timing)
            }
            Err(()) => {
                failed_rounds += 1;
                backoff(interval, max_backoff, failed_rounds, &mut timing)
            }
        };
        if !pause(wait, &mut stop).await {
            return;
        }
    }
}

/// Sleeps `d`; `false` when told to stop meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.changed() => false,
    }
}

impl Agent {
    /// One round: ping (held by the gateway when long-polling), run goals until NOOP (or a
    /// fatal result has been reported). Fails when a ping fails; the status it could not
    /// report is sent with the next round's ping.
    async fn round(&mut self) -> Result<Round, ()> {
        let wait = self.shared.config.long_poll.map(|w| w.as_secs() as u32);
        let started = Instant::now();
        let mut resp = self.ping(wait).await?;
        let mut round = Round { worked: false, held: started.elapsed() };
        let mut steps = 0;
        while resp.op_code != OpCode::Noop {
            let Some(goal) = resp.deploy_goal.take() else {
                return Ok(round);
            };
            round.worked = true;
            steps += 1;
            if steps > MAX_STEPS_PER_ROUND {
                return Ok(round);
            }
            if resp.op_code == OpCode::Delete {
                self.forget(&goal);
                resp = self.ping(None).await?;
                continue;
            }
            let Some(fatal) = Box::pin(self.execute(&goal)).await else {
                return Ok(round);
            };
            resp = self.ping(None).await?;
            if fatal {
                // Like the real agent: after reporting a fatal result, wait for the next round.
                return Ok(round);
            }
        }
        Ok(round)
    }

    fn observe(&self, env: &str, goal: &DeployGoal, status: AgentStatus, kind: EventKind, was_serving: bool) {
        let slot = &self.shared.slots[self.host];
        // The time is read under the lock, so the timeline is in time order.
        let mut observer = self.shared.observer.lock().unwrap_or_else(|p| p.into_inner());
        observer.record(Move {
            at: self.shared.started.elapsed(),
            host: self.host as u32,
            host_name: &slot.name,
            env,
            deploy: goal.deploy_id.as_str(),
            stage: goal.deploy_stage,
            status,
            kind,
            was_serving,
            first_deploy: goal.first_deploy,
        });
    }

    fn forget(&self, goal: &DeployGoal) {
        Counters::add(&self.shared.counters.deletes);
        let slot = &self.shared.slots[self.host];
        let forgotten = slot.state.lock().unwrap_or_else(|p| p.into_inner()).forget(goal);
        if let Some(env) = forgotten {
            self.observe(&env, goal, AgentStatus::Unknown, EventKind::Delete, false);
        }
    }

    /// Takes the goal, spends the stage's duration, and records the outcome the failure plan
    /// gives. `Some(fatal)`; `None` for a goal naming no environment this host knows.
    async fn execute(&mut self, goal: &DeployGoal) -> Option<bool> {
        let shared = self.shared.clone();
        let slot = &shared.slots[self.host];
        let (taken, env) = {
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            let t = state.take(goal)?;
            let env = state.envs[t.env].env_name.clone();
            (t, env)
        };
        self.observe(&env, goal, AgentStatus::Unknown, EventKind::Goal, taken.was_serving);
        Counters::add(&shared.counters.steps);
        let stage = goal.deploy_stage;
        let d = shared.config.stage_durations.get(stage);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        let failed = slot.fails(stage) || self.failures.chance(shared.config.failures.probability.get(stage));
        let (outcome, status) = {
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            let o = state.finish(taken.env, failed, shared.config.failures.retries, &slot.spec.name);
            (o, state.envs.get(taken.env).map(|e| e.agent_status).unwrap_or(AgentStatus::Unknown))
        };
        self.observe(&env, goal, status, EventKind::Result, taken.was_serving);
        match outcome {
            StepOutcome::Succeeded => Some(false),
            StepOutcome::Failed { fatal } => {
                Counters::add(&shared.counters.failed_steps);
                Some(fatal)
            }
        }
    }

    /// One ping. The request's future is large and alive only while a ping is in flight, so it
    /// lives on the heap: a waiting host keeps a small task (this matters with 10,000 hosts).
    async fn ping(&self, wait: Option<u32>) -> Result<PingResponse, ()> {
        // A silenced host holds its ping (and so its step's result) until it is revived; the
        // caller's select on `stop` ends the wait when the fleet stops.
        while self.shared.slots[self.host].is_silent() {
            tokio::time::sleep(SILENT_POLL).await;
        }
        Box::pin(self.send_ping(wait)).await
    }

    /// One ping with every environment's report; any failure is counted and remembered.
    async fn send_ping(&self, wait: Option<u32>) -> Result<PingResponse, ()> {
        let shared = &self.shared;
        let slot = &shared.slots[self.host];
        let reports = slot.state.lock().unwrap_or_else(|p| p.into_inner()).reports();
        let request = PingRequest {
            host_id: Some(slot.spec.id.clone()),
            host_name: Some(slot.spec.name.clone()),
            ec2_tags: slot.tags_json.clone().map(serde_json::Value::String),
            agent_version: Some(shared.config.agent_version.clone()),
            groups: Some(slot.spec.groups.clone()),
            reports: Some(reports),
            wait_seconds: wait,
            ..PingRequest::default()
        };
        // The semaphore is never closed; a closed one would only mean "no limit".
        let _slot = shared.connections.acquire().await.ok();
        Counters::add(&shared.counters.pings);
        let started = Instant::now();
        let mut req = shared.http.post(&shared.url).json(&request);
        if let Some(auth) = &shared.auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let answer = match req.send().await {
            Ok(a) => a,
            Err(e) => {
                shared.counters.error(format!("ping failed: {}", chain(&e)));
                return Err(());
            }
        };
        let status = answer.status();
        let body = match answer.bytes().await {
            Ok(b) => b,
            Err(e) => {
                shared.counters.error(format!("reading the answer failed: {}", chain(&e)));
                return Err(());
            }
        };
        if status.as_u16() > 300 {
            let text: String = String::from_utf8_lossy(&body).chars().take(ERROR_TEXT).collect();
            shared.counters.error(format!("gateway answered HTTP {status}: {text}"));
            return Err(());
        }
        shared.counters.latency.record(started.elapsed());
        let resp = if body.iter().all(u8::is_ascii_whitespace) {
            PingResponse::noop()
        } else {
            match serde_json::from_slice::<PingResponse>(&body) {
                Ok(r) => r,
                Err(e) => {
                    shared.counters.error(format!("cannot decode the gateway's answer: {e}"));
                    return Err(());
                }
            }
        };
        match resp.op_code {
            OpCode::Noop => Counters::add(&shared.counters.noops),
            _ => Counters::add(&shared.counters.goals),
        }
        Ok(resp)
    }
}

/// An error with its causes (reqwest keeps the useful part in the sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_fraction_and_follows_the_seed() {
        let base = Duration::from_secs(10);
        let mut r = SplitMix64::new(1);
        let draws: Vec<Duration> = (0..1000).map(|_| jittered(base, 0.1, &mut r)).collect();
        assert!(draws.iter().all(|d| *d >= Duration::from_secs(9) && *d <= Duration::from_secs(11)));
        assert!(draws.iter().any(|d| *d < base) && draws.iter().any(|d| *d > base), "both sides of the interval");
        let mut again = SplitMix64::new(1);
        assert_eq!(draws[0], jittered(base, 0.1, &mut again));
        assert_eq!(jittered(base, 0.0, &mut r), base);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut r = SplitMix64::new(3);
        let s = Duration::from_secs;
        let within = |d: Duration, center: Duration| d >= center.mul_f64(0.75) && d <= center.mul_f64(1.25);
        assert!(within(backoff(s(1), s(60), 1, &mut r), s(1)));
        assert!(within(backoff(s(1), s(60), 3, &mut r), s(4)));
        assert!(within(backoff(s(1), s(60), 30, &mut r), s(60)));
        assert!(within(backoff(s(120), s(60), 5, &mut r), s(120)), "never below the interval");
    }
}
