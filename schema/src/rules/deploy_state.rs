//! The deploy state machine: RUNNING, FAILING, SUCCEEDING while current; SUCCEEDED or
//! ABORTED once replaced. Evaluated by the workers from counts of agent records.

use crate::time::{EpochMs, secs};
use crate::*;

/// Counts over the agent records of a deploy's stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Records of the stage (any deploy).
    pub total: u32,
    /// Records of this deploy that are done (SERVING_BUILD or STOPPED, not held by a user).
    pub succeeded: u32,
    /// Records of this deploy that failed for good (PAUSED_BY_SYSTEM).
    pub failed: u32,
}

/// What the evaluation needs to know of the deploy and its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeployFacts {
    /// Current state.
    pub state: DeployState,
    /// The counts stored last time.
    pub stored: Progress,
    /// Last observable change.
    pub last_update: EpochMs,
    /// The deploy has been SUCCEEDING before.
    pub succeeded_before: bool,
    /// Success threshold in basis points.
    pub success_threshold: i32,
    /// Seconds without progress before FAILING.
    pub stuck_threshold_secs: i32,
    /// The stage's schedule is cooling down between sessions (waiting is expected).
    pub schedule_cooling_down: bool,
}

/// The result of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// The new state.
    pub state: DeployState,
    /// The counts to store.
    pub progress: Progress,
    /// The deploy reaches SUCCEEDING for the first time (set the success date, accept it).
    pub first_success: bool,
    /// Store `now` as the last update (false when nothing observable changed, and when the
    /// deploy just went FAILING for being stuck: keeping the old time keeps it stuck).
    pub touch: bool,
}

/// Evaluates a current deploy against fresh counts. Returns `None` for a finished deploy: a
/// SUCCEEDED or ABORTED deploy accepts no event.
pub fn evaluate(facts: &DeployFacts, progress: Progress, now: EpochMs) -> Option<Evaluation> {
    match facts.state {
        DeployState::Succeeded | DeployState::Aborted => return None,
        DeployState::Running | DeployState::Failing | DeployState::Succeeding => {}
    }
    let th = i64::from(facts.success_threshold.clamp(0, 10000));
    let total = i64::from(progress.total);
    let succeeded = i64::from(progress.succeeded);
    let failed = i64::from(progress.failed);
    let stuck = progress.succeeded <= facts.stored.succeeded
        && now - facts.last_update >= secs(i64::from(facts.stuck_threshold_secs));

    let mut keep_time = false;
    let state = if total == 0 {
        // Nothing to deploy to is neither success nor failure: wait for hosts.
        DeployState::Running
    } else if succeeded * 10000 >= th * total {
        DeployState::Succeeding
    } else if failed * 10000 > (10000 - th) * total {
        DeployState::Failing
    } else if stuck {
        match facts.state {
            DeployState::Succeeding => DeployState::Running,
            _ if facts.schedule_cooling_down => facts.state,
            _ => {
                keep_time = true;
                DeployState::Failing
            }
        }
    } else {
        DeployState::Running
    };
    let changed = state != facts.state || progress != facts.stored;
    Some(Evaluation {
        state,
        progress,
        first_success: state == DeployState::Succeeding && !facts.succeeded_before,
        touch: changed && !keep_time,
    })
}

/// The final state of a deploy that is replaced.
pub const fn retired(state: DeployState) -> DeployState {
    match state {
        DeployState::Running | DeployState::Failing | DeployState::Aborted => DeployState::Aborted,
        DeployState::Succeeding | DeployState::Succeeded => DeployState::Succeeded,
    }
}

/// The acceptance of a deploy that is replaced: a verdict stays, anything else is TERMINATED.
pub const fn retired_acceptance(status: AcceptanceStatus) -> AcceptanceStatus {
    match status {
        AcceptanceStatus::Accepted | AcceptanceStatus::Rejected | AcceptanceStatus::Terminated => status,
        AcceptanceStatus::PendingDeploy | AcceptanceStatus::Outstanding | AcceptanceStatus::PendingAccept => {
            AcceptanceStatus::Terminated
        }
    }
}

/// The acceptance a deploy gets when it first succeeds.
pub const fn acceptance_on_success(kind: AcceptanceType) -> AcceptanceStatus {
    match kind {
        AcceptanceType::Auto => AcceptanceStatus::Accepted,
        AcceptanceType::Manual => AcceptanceStatus::Outstanding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(state: DeployState) -> DeployFacts {
        DeployFacts {
            state,
            stored: Progress::default(),
            last_update: 0,
            succeeded_before: false,
            success_threshold: 10000,
            stuck_threshold_secs: 600,
            schedule_cooling_down: false,
        }
    }

    fn p(total: u32, succeeded: u32, failed: u32) -> Progress {
        Progress { total, succeeded, failed }
    }

    #[test]
    fn running_becomes_succeeding_at_the_threshold() {
        let e = evaluate(&facts(DeployState::Running), p(3, 3, 0), 1).unwrap();
        assert_eq!(e.state, DeployState::Succeeding);
        assert!(e.first_success && e.touch);

        let mut f = facts(DeployState::Running);
        f.success_threshold = 6000;
        assert_eq!(evaluate(&f, p(5, 3, 0), 1).unwrap().state, DeployState::Succeeding);
        assert_eq!(evaluate(&f, p(5, 2, 0), 1).unwrap().state, DeployState::Running);
    }

    #[test]
    fn too_many_failed_hosts_make_it_failing() {
        let mut f = facts(DeployState::Running);
        f.success_threshold = 8000;
        assert_eq!(evaluate(&f, p(10, 0, 2), 1).unwrap().state, DeployState::Running);
        assert_eq!(evaluate(&f, p(10, 0, 3), 1).unwrap().state, DeployState::Failing);
    }

    #[test]
    fn no_progress_past_the_stuck_threshold_is_failing_and_keeps_the_old_time() {
        let e = evaluate(&facts(DeployState::Running), p(3, 0, 0), secs(600)).unwrap();
        assert_eq!(e.state, DeployState::Failing);
        assert!(!e.touch);
        let e = evaluate(&facts(DeployState::Running), p(3, 0, 0), secs(599)).unwrap();
        assert_eq!(e.state, DeployState::Running);
    }

    #[test]
    fn succeeding_falls_back_to_running_when_new_hosts_stall() {
        let mut f = facts(DeployState::Succeeding);
        f.stored = p(3, 3, 0);
        f.succeeded_before = true;
        let e = evaluate(&f, p(4, 3, 0), secs(601)).unwrap();
        assert_eq!(e.state, DeployState::Running);
        assert!(!e.first_success);
    }

    #[test]
    fn failing_recovers_when_hosts_succeed() {
        let mut f = facts(DeployState::Failing);
        f.stored = p(4, 1, 0);
        assert_eq!(evaluate(&f, p(4, 2, 0), secs(700)).unwrap().state, DeployState::Running);
    }

    #[test]
    fn an_empty_stage_is_not_succeeding() {
        assert_eq!(
            evaluate(&facts(DeployState::Running), p(0, 0, 0), secs(10_000)).unwrap().state,
            DeployState::Running
        );
    }

    #[test]
    fn finished_deploys_accept_no_event() {
        assert!(evaluate(&facts(DeployState::Succeeded), p(3, 3, 0), 1).is_none());
        assert!(evaluate(&facts(DeployState::Aborted), p(3, 0, 0), 1).is_none());
    }

    #[test]
    fn unchanged_counts_and_state_do_not_touch_the_time() {
        let mut f = facts(DeployState::Running);
        f.stored = p(3, 1, 0);
        f.last_update = secs(100);
        let e = evaluate(&f, p(3, 1, 0), secs(101)).unwrap();
        assert!(!e.touch);
    }

    #[test]
    fn retirement_maps_states_and_acceptance() {
        assert_eq!(retired(DeployState::Running), DeployState::Aborted);
        assert_eq!(retired(DeployState::Failing), DeployState::Aborted);
        assert_eq!(retired(DeployState::Succeeding), DeployState::Succeeded);
        assert_eq!(retired_acceptance(AcceptanceStatus::PendingDeploy), AcceptanceStatus::Terminated);
        assert_eq!(retired_acceptance(AcceptanceStatus::Accepted), AcceptanceStatus::Accepted);
        assert_eq!(acceptance_on_success(AcceptanceType::Manual), AcceptanceStatus::Outstanding);
    }
}
