//! Pipelines: when the auto-promoter deploys what a stage's predecessor offers (new builds of
//! the stage's build name and branch, or accepted deploys of another stage), and what it does
//! when the stage's current deploy failed. Teletraan's AutoPromoter, as pure functions: the
//! store gathers the facts under the stage's lock and applies the decision.
//!
//! The steps, in order:
//! 1. The current deploy must be retirable: there is none, its acceptance is final
//!    (ACCEPTED, REJECTED, TERMINATED), or it is FAILING. A deploy still rolling out or
//!    awaiting its verdict is left alone.
//! 2. A failed current deploy (FAILING, or REJECTED) under a fail policy other than CONTINUE
//!    switches the stage to MANUAL (DISABLE), after rolling it back to its last succeeded
//!    deploy (ROLLBACK).
//! 3. Candidates come newer than what the stage runs ([`window_start`]) and older than
//!    `delay` minutes, newest first, bad builds dropped. With fewer than `queueSize` there is
//!    nothing to do; otherwise the `queueSize`-th newest is promoted (1: the newest). With a
//!    cron `schedule`, promotion happens only within `buffer` after a fire time, and the newest
//!    candidate whose next fire time after it became eligible has passed is promoted.

use crate::rules::cron::Cron;
use crate::time::{EpochMs, secs};
use crate::{AcceptanceStatus, DeployState, PromoteFailPolicy};

/// How long after a cron fire time a scheduled promotion may still happen (Teletraan's
/// `bufferTimeMinutes`, 2).
pub const DEFAULT_BUFFER_MS: i64 = 2 * 60 * 1000;

/// The stage's current deploy, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Its state.
    pub state: DeployState,
    /// Its acceptance.
    pub acceptance: AcceptanceStatus,
    /// When it started.
    pub start_date: EpochMs,
    /// When its build was published.
    pub build_published: EpochMs,
    /// When the deploy it was promoted from started, if it came from the predecessor stage.
    pub origin_start: Option<EpochMs>,
}

/// What happens before candidates are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Look for candidates.
    Open,
    /// The current deploy is still rolling out or awaiting its verdict.
    Wait,
    /// The current deploy is finished (SUCCEEDED or ABORTED while current: should not happen).
    Skip,
    /// The current deploy failed: switch the stage to MANUAL.
    Disable,
    /// The current deploy failed: roll back to the last succeeded deploy, then switch to MANUAL.
    RollbackThenDisable,
}

/// Whether a current deploy failed, for the fail policy.
pub fn failed(c: &Current) -> bool {
    c.state == DeployState::Failing || c.acceptance == AcceptanceStatus::Rejected
}

/// Steps 1 and 2: what to do about the current deploy.
pub fn gate(current: Option<&Current>, fail_policy: PromoteFailPolicy) -> Gate {
    let Some(c) = current else { return Gate::Open };
    if failed(c) {
        return match fail_policy {
            PromoteFailPolicy::Continue => Gate::Open,
            PromoteFailPolicy::Disable => Gate::Disable,
            PromoteFailPolicy::Rollback => Gate::RollbackThenDisable,
        };
    }
    match c.state {
        DeployState::Succeeded | DeployState::Aborted => Gate::Skip,
        DeployState::Running | DeployState::Failing | DeployState::Succeeding => match c.acceptance {
            AcceptanceStatus::Accepted | AcceptanceStatus::Rejected | AcceptanceStatus::Terminated => Gate::Open,
            AcceptanceStatus::PendingDeploy | AcceptanceStatus::Outstanding | AcceptanceStatus::PendingAccept => {
                Gate::Wait
            }
        },
    }
}

/// Where the predecessor offers candidates from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// New builds of the stage's build name and branch.
    Builds,
    /// Accepted deploys of another stage.
    Stage,
}

/// Candidates must be newer than this: for builds, the publish date of the build the stage
/// runs; for a stage, the start of the deploy the current one was promoted from (or of the
/// current one, when it came from elsewhere). 0 when the stage has no deploy.
pub fn window_start(current: Option<&Current>, source: Source) -> EpochMs {
    match (current, source) {
        (None, _) => 0,
        (Some(c), Source::Builds) => c.build_published,
        (Some(c), Source::Stage) => c.origin_start.unwrap_or(c.start_date),
    }
}

/// Candidates must be at most this new: `delay` minutes before now.
pub fn window_end(now: EpochMs, delay_minutes: i32) -> EpochMs {
    now - secs(i64::from(delay_minutes.max(0)) * 60)
}

/// A build or deploy the predecessor offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Publish date (a build) or start date (a deploy).
    pub at: EpochMs,
    /// Its build's effective tag is BAD_BUILD.
    pub bad: bool,
}

/// Step 3: which candidate to promote, as an index into `candidates` (newest first, already
/// within the window), or `None`.
pub fn choose(
    candidates: &[Candidate],
    queue_size: i32,
    schedule: Option<&Cron>,
    delay_minutes: i32,
    buffer_ms: i64,
    now: EpochMs,
) -> Option<usize> {
    let good: Vec<usize> = (0..candidates.len()).filter(|i| !candidates[*i].bad).collect();
    let n = usize::try_from(queue_size.max(1)).unwrap_or(1);
    if good.len() < n {
        return None;
    }
    match schedule {
        None => Some(good[n - 1]),
        Some(cron) => {
            if !cron.in_window(now, buffer_ms) {
                return None;
            }
            // A candidate becomes eligible `delay` after it appeared (Teletraan meant to add
            // the delay here too, but dropped it); it goes at the first fire time after that.
            let delay = secs(i64::from(delay_minutes.max(0)) * 60);
            good.into_iter().find(|i| cron.next_after(candidates[*i].at + delay).is_some_and(|fire| fire <= now))
        }
    }
}

/// Whether making `stage` promote from `pred` closes a loop, given what the other stages of
/// the environment promote from (`pred_of(stage)`). Returns the loop, starting at `stage`.
pub fn cycle<'a>(stage: &'a str, pred: &'a str, pred_of: impl Fn(&str) -> Option<&'a str>) -> Option<Vec<&'a str>> {
    let mut path = vec![stage];
    let mut at = pred;
    loop {
        if at == stage {
            path.push(at);
            return Some(path);
        }
        if path.contains(&at) || path.len() > 1000 {
            // A loop that does not go through `stage` was refused when it was made.
            return None;
        }
        path.push(at);
        match pred_of(at) {
            Some(next) => at = next,
            None => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn current(state: DeployState, acceptance: AcceptanceStatus) -> Current {
        Current { state, acceptance, start_date: 1000, build_published: 500, origin_start: None }
    }

    #[test]
    fn only_a_retirable_deploy_is_replaced() {
        use AcceptanceStatus as A;
        use DeployState as S;
        let c = PromoteFailPolicy::Continue;
        assert_eq!(gate(None, c), Gate::Open);
        assert_eq!(gate(Some(&current(S::Running, A::PendingDeploy)), c), Gate::Wait);
        assert_eq!(gate(Some(&current(S::Succeeding, A::Outstanding)), c), Gate::Wait);
        assert_eq!(gate(Some(&current(S::Succeeding, A::PendingAccept)), c), Gate::Wait);
        assert_eq!(gate(Some(&current(S::Succeeding, A::Accepted)), c), Gate::Open);
        assert_eq!(gate(Some(&current(S::Running, A::Accepted)), c), Gate::Open, "accepted, new hosts joined");
        assert_eq!(gate(Some(&current(S::Failing, A::PendingDeploy)), c), Gate::Open, "failing, CONTINUE");
        assert_eq!(gate(Some(&current(S::Succeeding, A::Rejected)), c), Gate::Open, "rejected, CONTINUE");
        assert_eq!(gate(Some(&current(S::Succeeded, A::Accepted)), c), Gate::Skip);
    }

    #[test]
    fn a_failed_deploy_follows_the_fail_policy() {
        use AcceptanceStatus as A;
        use DeployState as S;
        for c in [current(S::Failing, A::PendingDeploy), current(S::Succeeding, A::Rejected)] {
            assert_eq!(gate(Some(&c), PromoteFailPolicy::Disable), Gate::Disable);
            assert_eq!(gate(Some(&c), PromoteFailPolicy::Rollback), Gate::RollbackThenDisable);
            assert_eq!(gate(Some(&c), PromoteFailPolicy::Continue), Gate::Open);
        }
        let ok = current(S::Succeeding, A::Accepted);
        assert_eq!(gate(Some(&ok), PromoteFailPolicy::Rollback), Gate::Open, "nothing failed");
    }

    #[test]
    fn the_window_starts_at_what_the_stage_runs() {
        let mut c = current(DeployState::Succeeding, AcceptanceStatus::Accepted);
        assert_eq!(window_start(None, Source::Builds), 0);
        assert_eq!(window_start(Some(&c), Source::Builds), 500);
        assert_eq!(window_start(Some(&c), Source::Stage), 1000, "its own start when it came from elsewhere");
        c.origin_start = Some(700);
        assert_eq!(window_start(Some(&c), Source::Stage), 700, "the start of the deploy it was promoted from");
        assert_eq!(window_end(100 * MIN, 30), 70 * MIN);
    }

    fn cands(ats: &[(i64, bool)]) -> Vec<Candidate> {
        ats.iter().map(|(at, bad)| Candidate { at: *at, bad: *bad }).collect()
    }

    #[test]
    fn the_queue_size_waits_for_that_many_and_takes_the_oldest_of_them() {
        let c = cands(&[(30, false), (20, false), (10, false)]);
        assert_eq!(choose(&c, 1, None, 0, DEFAULT_BUFFER_MS, 100), Some(0), "queue 1: the newest");
        assert_eq!(choose(&c, 2, None, 0, DEFAULT_BUFFER_MS, 100), Some(1));
        assert_eq!(choose(&c, 3, None, 0, DEFAULT_BUFFER_MS, 100), Some(2));
        assert_eq!(choose(&c, 4, None, 0, DEFAULT_BUFFER_MS, 100), None, "not enough yet");
        assert_eq!(choose(&[], 1, None, 0, DEFAULT_BUFFER_MS, 100), None);
    }

    #[test]
    fn bad_builds_are_never_picked_nor_counted() {
        let c = cands(&[(30, true), (20, false), (10, true)]);
        assert_eq!(choose(&c, 1, None, 0, DEFAULT_BUFFER_MS, 100), Some(1));
        assert_eq!(choose(&c, 2, None, 0, DEFAULT_BUFFER_MS, 100), None);
        assert_eq!(choose(&cands(&[(30, true)]), 1, None, 0, DEFAULT_BUFFER_MS, 100), None);
    }

    #[test]
    fn a_schedule_promotes_only_in_its_window() {
        // Every hour on the hour; 2026-12-02T10:00:00Z = 1796205600 s.
        let hourly = Cron::parse("0 0 * * * ?").unwrap();
        let ten = 1_796_205_600_000;
        let c = cands(&[(ten - 10 * MIN, false), (ten - 50 * MIN, false)]);
        assert_eq!(choose(&c, 1, Some(&hourly), 0, DEFAULT_BUFFER_MS, ten - MIN), None, "before the fire time");
        assert_eq!(choose(&c, 1, Some(&hourly), 0, DEFAULT_BUFFER_MS, ten), Some(0), "at it");
        assert_eq!(choose(&c, 1, Some(&hourly), 0, DEFAULT_BUFFER_MS, ten + MIN), Some(0), "within the buffer");
        assert_eq!(choose(&c, 1, Some(&hourly), 0, DEFAULT_BUFFER_MS, ten + 2 * MIN), None, "past the buffer");
        // With a 30-minute delay the newest became eligible at 10:20 and waits for 11:00; the
        // older one was eligible at 09:40 and goes at 10:00.
        assert_eq!(choose(&c, 1, Some(&hourly), 30, DEFAULT_BUFFER_MS, ten), Some(1));
    }

    #[test]
    fn loops_are_found_whatever_their_length() {
        let preds = [("canary", "beta"), ("prod", "canary")];
        let pred_of = |s: &str| preds.iter().find(|(k, _)| *k == s).map(|(_, v)| *v);
        assert_eq!(cycle("beta", "beta", pred_of), Some(vec!["beta", "beta"]), "itself");
        assert_eq!(cycle("beta", "prod", pred_of), Some(vec!["beta", "prod", "canary", "beta"]));
        assert_eq!(cycle("beta", "BUILD", pred_of), None);
        assert_eq!(cycle("qa", "prod", pred_of), None);
    }
}
