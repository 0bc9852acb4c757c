//! The deploy state machine: RUNNING, FAILING, SUCCEEDING while current; SUCCEEDED or
//! ABORTED once replaced. Evaluated by the workers from counts of agent records: the counts
//! are classified into one [`DeployEvent`], and [`TRANSITIONS`] says where it leads.

use crate::time::{EpochMs, secs};
use crate::{AcceptanceStatus, DeployState};

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

/// What happened to a deploy, as far as its state is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeployEvent {
    /// Enough hosts are done: `succeeded / total` meets the success threshold.
    ThresholdMet,
    /// More hosts failed for good than the threshold allows to be missing.
    TooManyFailed,
    /// No new host finished for the stuck threshold.
    Stalled,
    /// No new host finished for the stuck threshold, but the schedule is cooling down
    /// between sessions, so waiting is expected.
    StalledWhileCoolingDown,
    /// Hosts are still moving (or the stage has no host yet).
    Progressing,
    /// A newer deploy became the stage's current one.
    Replaced,
}

impl DeployEvent {
    /// Every event.
    pub const ALL: [DeployEvent; 6] = [
        DeployEvent::ThresholdMet,
        DeployEvent::TooManyFailed,
        DeployEvent::Stalled,
        DeployEvent::StalledWhileCoolingDown,
        DeployEvent::Progressing,
        DeployEvent::Replaced,
    ];
}

use DeployEvent as E;
use DeployState as S;

/// Every transition: (from, event, to). SUCCEEDED and ABORTED accept no event: a finished
/// deploy never changes again.
pub const TRANSITIONS: &[(DeployState, DeployEvent, DeployState)] = &[
    (S::Running, E::ThresholdMet, S::Succeeding),
    (S::Running, E::TooManyFailed, S::Failing),
    (S::Running, E::Stalled, S::Failing),
    (S::Running, E::StalledWhileCoolingDown, S::Running),
    (S::Running, E::Progressing, S::Running),
    (S::Running, E::Replaced, S::Aborted),
    (S::Failing, E::ThresholdMet, S::Succeeding),
    (S::Failing, E::TooManyFailed, S::Failing),
    (S::Failing, E::Stalled, S::Failing),
    (S::Failing, E::StalledWhileCoolingDown, S::Failing),
    // Recovery: hosts finish again (a reset host succeeded, a failed one was replaced).
    (S::Failing, E::Progressing, S::Running),
    (S::Failing, E::Replaced, S::Aborted),
    (S::Succeeding, E::ThresholdMet, S::Succeeding),
    (S::Succeeding, E::TooManyFailed, S::Failing),
    // New hosts joined and do not finish: the deploy is no longer succeeding.
    (S::Succeeding, E::Stalled, S::Running),
    (S::Succeeding, E::StalledWhileCoolingDown, S::Running),
    (S::Succeeding, E::Progressing, S::Running),
    (S::Succeeding, E::Replaced, S::Succeeded),
];

/// Where `event` leads from `state`; `None` for a finished deploy.
pub fn transition(state: DeployState, event: DeployEvent) -> Option<DeployState> {
    TRANSITIONS.iter().find(|(from, e, _)| *from == state && *e == event).map(|(_, _, to)| *to)
}

/// Whether a deploy in this state is finished (it accepts no event).
pub const fn is_final(state: DeployState) -> bool {
    match state {
        DeployState::Succeeded | DeployState::Aborted => true,
        DeployState::Running | DeployState::Failing | DeployState::Succeeding => false,
    }
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

/// Reads fresh counts as one event (for a deploy that is still current).
pub fn classify(facts: &DeployFacts, progress: Progress, now: EpochMs) -> DeployEvent {
    let th = i64::from(facts.success_threshold.clamp(0, 10000));
    let total = i64::from(progress.total);
    let succeeded = i64::from(progress.succeeded);
    let failed = i64::from(progress.failed);
    if total == 0 {
        // Nothing to deploy to is neither success nor failure, nor stuck: wait for hosts.
        return E::Progressing;
    }
    if succeeded * 10000 >= th * total {
        return E::ThresholdMet;
    }
    if failed * 10000 > (10000 - th) * total {
        return E::TooManyFailed;
    }
    let no_new_success = progress.succeeded <= facts.stored.succeeded;
    if no_new_success && now - facts.last_update >= secs(i64::from(facts.stuck_threshold_secs)) {
        return if facts.schedule_cooling_down { E::StalledWhileCoolingDown } else { E::Stalled };
    }
    E::Progressing
}

/// The result of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// What the counts meant.
    pub event: DeployEvent,
    /// The new state.
    pub state: DeployState,
    /// The counts to store.
    pub progress: Progress,
    /// The deploy reaches SUCCEEDING for the first time (set the success date, accept it).
    pub first_success: bool,
    /// Store `now` as the last update. False when nothing observable changed, and when the
    /// deploy went FAILING for being stuck: keeping the old time keeps it stuck rather than
    /// flipping back to RUNNING at the next evaluation.
    pub touch: bool,
}

/// Evaluates a current deploy against fresh counts. Returns `None` for a finished deploy.
pub fn evaluate(facts: &DeployFacts, progress: Progress, now: EpochMs) -> Option<Evaluation> {
    if is_final(facts.state) {
        return None;
    }
    let event = classify(facts, progress, now);
    let state = transition(facts.state, event)?;
    let changed = state != facts.state || progress != facts.stored;
    let stuck_failing = event == E::Stalled && state == S::Failing;
    Some(Evaluation {
        event,
        state,
        progress,
        first_success: state == S::Succeeding && !facts.succeeded_before,
        touch: changed && !stuck_failing,
    })
}

/// The final state of a deploy that is replaced.
pub fn retired(state: DeployState) -> DeployState {
    transition(state, E::Replaced).unwrap_or(state)
}

/// The acceptance of a deploy that is replaced: a verdict stays, anything else is TERMINATED.
pub fn retired_acceptance(status: AcceptanceStatus) -> AcceptanceStatus {
    crate::rules::acceptance::transition(status, crate::rules::acceptance::AcceptanceEvent::Retired).unwrap_or(status)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;

    /// Transitions exercised by the tests below, for the coverage check.
    static COVERED: Mutex<BTreeSet<(DeployState, DeployEvent)>> = Mutex::new(BTreeSet::new());

    fn check(from: DeployState, event: DeployEvent, to: Option<DeployState>) {
        assert_eq!(transition(from, event), to, "{from} --{event:?}-->");
        COVERED.lock().unwrap().insert((from, event));
    }

    #[test]
    fn every_transition_of_the_table() {
        let cases: &[(S, E, Option<S>)] = &[
            (S::Running, E::ThresholdMet, Some(S::Succeeding)),
            (S::Running, E::TooManyFailed, Some(S::Failing)),
            (S::Running, E::Stalled, Some(S::Failing)),
            (S::Running, E::StalledWhileCoolingDown, Some(S::Running)),
            (S::Running, E::Progressing, Some(S::Running)),
            (S::Running, E::Replaced, Some(S::Aborted)),
            (S::Failing, E::ThresholdMet, Some(S::Succeeding)),
            (S::Failing, E::TooManyFailed, Some(S::Failing)),
            (S::Failing, E::Stalled, Some(S::Failing)),
            (S::Failing, E::StalledWhileCoolingDown, Some(S::Failing)),
            (S::Failing, E::Progressing, Some(S::Running)),
            (S::Failing, E::Replaced, Some(S::Aborted)),
            (S::Succeeding, E::ThresholdMet, Some(S::Succeeding)),
            (S::Succeeding, E::TooManyFailed, Some(S::Failing)),
            (S::Succeeding, E::Stalled, Some(S::Running)),
            (S::Succeeding, E::StalledWhileCoolingDown, Some(S::Running)),
            (S::Succeeding, E::Progressing, Some(S::Running)),
            (S::Succeeding, E::Replaced, Some(S::Succeeded)),
        ];
        for (from, event, to) in cases {
            check(*from, *event, *to);
        }
    }

    #[test]
    fn a_finished_deploy_accepts_no_event() {
        for from in [S::Succeeded, S::Aborted] {
            for event in DeployEvent::ALL {
                check(from, event, None);
            }
        }
        assert!(evaluate(&facts(S::Succeeded), p(3, 3, 0), 1).is_none());
        assert!(evaluate(&facts(S::Aborted), p(3, 0, 0), 1).is_none());
    }

    /// Fails when a transition of the table, or a pair the table forgot, has no test.
    #[test]
    fn every_transition_has_a_test() {
        every_transition_of_the_table();
        a_finished_deploy_accepts_no_event();
        let covered = COVERED.lock().unwrap().clone();
        for state in DeployState::ALL {
            for event in DeployEvent::ALL {
                assert!(covered.contains(&(*state, event)), "no test for {state} --{event:?}-->");
                assert_eq!(
                    transition(*state, event).is_some(),
                    !is_final(*state),
                    "{state} --{event:?}--> is undefined"
                );
            }
        }
        let total = DeployState::ALL.len() * DeployEvent::ALL.len();
        assert_eq!(covered.len(), total);
    }

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
    fn the_threshold_is_in_basis_points() {
        let mut f = facts(S::Running);
        f.success_threshold = 6000;
        assert_eq!(classify(&f, p(5, 3, 0), 1), E::ThresholdMet);
        assert_eq!(classify(&f, p(5, 2, 0), 1), E::Progressing);
        f.success_threshold = 10000;
        assert_eq!(classify(&f, p(3, 3, 0), 1), E::ThresholdMet);
        assert_eq!(classify(&f, p(3, 2, 0), 1), E::Progressing);
    }

    #[test]
    fn failed_hosts_beyond_what_the_threshold_allows_are_too_many() {
        let mut f = facts(S::Running);
        f.success_threshold = 8000;
        assert_eq!(classify(&f, p(10, 0, 2), 1), E::Progressing, "20% may be missing");
        assert_eq!(classify(&f, p(10, 0, 3), 1), E::TooManyFailed);
        f.success_threshold = 10000;
        assert_eq!(classify(&f, p(10, 9, 1), 1), E::TooManyFailed, "with 100% required, one failure is too many");
    }

    #[test]
    fn no_new_success_for_the_stuck_threshold_is_stalled() {
        let f = facts(S::Running);
        assert_eq!(classify(&f, p(3, 0, 0), secs(599)), E::Progressing);
        assert_eq!(classify(&f, p(3, 0, 0), secs(600)), E::Stalled);
        let mut f = facts(S::Running);
        f.schedule_cooling_down = true;
        assert_eq!(classify(&f, p(3, 0, 0), secs(600)), E::StalledWhileCoolingDown);
        let mut f = facts(S::Running);
        f.stored = p(3, 1, 0);
        assert_eq!(classify(&f, p(3, 2, 0), secs(700)), E::Progressing, "a new success is progress");
    }

    #[test]
    fn an_empty_stage_is_neither_succeeding_nor_stuck() {
        assert_eq!(classify(&facts(S::Running), p(0, 0, 0), secs(10_000)), E::Progressing);
        assert_eq!(evaluate(&facts(S::Running), p(0, 0, 0), secs(10_000)).unwrap().state, S::Running);
    }

    #[test]
    fn going_failing_for_being_stuck_keeps_the_old_time() {
        let e = evaluate(&facts(S::Running), p(3, 0, 0), secs(600)).unwrap();
        assert_eq!((e.state, e.touch), (S::Failing, false));
        let e = evaluate(&facts(S::Running), p(3, 0, 3), secs(1)).unwrap();
        assert_eq!((e.state, e.touch), (S::Failing, true), "failing for failed hosts is an observable change");
    }

    #[test]
    fn first_success_is_reported_once() {
        let e = evaluate(&facts(S::Running), p(3, 3, 0), 1).unwrap();
        assert!(e.first_success && e.touch);
        let mut f = facts(S::Running);
        f.succeeded_before = true;
        assert!(!evaluate(&f, p(3, 3, 0), 1).unwrap().first_success);
    }

    #[test]
    fn unchanged_counts_and_state_do_not_touch_the_time() {
        let mut f = facts(S::Running);
        f.stored = p(3, 1, 0);
        f.last_update = secs(100);
        assert!(!evaluate(&f, p(3, 1, 0), secs(101)).unwrap().touch);
    }

    #[test]
    fn retirement_maps_states_and_acceptance() {
        assert_eq!(retired(S::Running), S::Aborted);
        assert_eq!(retired(S::Failing), S::Aborted);
        assert_eq!(retired(S::Succeeding), S::Succeeded);
        assert_eq!(retired(S::Aborted), S::Aborted);
        assert_eq!(retired_acceptance(AcceptanceStatus::PendingDeploy), AcceptanceStatus::Terminated);
        assert_eq!(retired_acceptance(AcceptanceStatus::Accepted), AcceptanceStatus::Accepted);
    }
}
