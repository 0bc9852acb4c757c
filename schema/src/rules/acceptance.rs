//! Acceptance of a deploy by tests outside the deploy system: PENDING_DEPLOY until the deploy
//! first succeeds, then ACCEPTED at once (AUTO stages) or OUTSTANDING until an outside system
//! gives a verdict through `PUT /v1/deploys/{id}` (MANUAL stages); TERMINATED when the deploy
//! is replaced before a verdict. Auto-promotion only takes ACCEPTED deploys.
//!
//! A verdict that comes before the deploy succeeded (a test system that started on the first
//! hosts) is not refused: it is kept ([`keep_early`]) and applied right after the first
//! success, where the table takes it ([`on_first_success`]).

use crate::time::{EpochMs, secs};
use crate::{AcceptanceStatus, AcceptanceType};

/// What happens to a deploy's acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AcceptanceEvent {
    /// The deploy reached SUCCEEDING for the first time on an AUTO stage.
    SucceededAuto,
    /// The deploy reached SUCCEEDING for the first time on a MANUAL stage.
    SucceededManual,
    /// The outside system started testing (`acceptanceStatus: PENDING_ACCEPT`).
    Testing,
    /// The outside system accepts it (`ACCEPTED`).
    Accept,
    /// The outside system rejects it (`REJECTED`).
    Reject,
    /// A newer deploy replaced it.
    Retired,
    /// No verdict came within the stage's acceptance timeout: the deploy counts as rejected
    /// (so a pipeline does not wait for ever for a test system that died).
    TimedOut,
}

impl AcceptanceEvent {
    /// Every event.
    pub const ALL: [AcceptanceEvent; 7] = [
        AcceptanceEvent::SucceededAuto,
        AcceptanceEvent::SucceededManual,
        AcceptanceEvent::Testing,
        AcceptanceEvent::Accept,
        AcceptanceEvent::Reject,
        AcceptanceEvent::Retired,
        AcceptanceEvent::TimedOut,
    ];

    /// The verdict a user sends as `acceptanceStatus`, if it is one.
    pub fn verdict(status: AcceptanceStatus) -> Option<AcceptanceEvent> {
        match status {
            AcceptanceStatus::PendingAccept => Some(AcceptanceEvent::Testing),
            AcceptanceStatus::Accepted => Some(AcceptanceEvent::Accept),
            AcceptanceStatus::Rejected => Some(AcceptanceEvent::Reject),
            AcceptanceStatus::PendingDeploy | AcceptanceStatus::Outstanding | AcceptanceStatus::Terminated => None,
        }
    }

    /// The `acceptanceStatus` a user sends for this verdict (the inverse of [`Self::verdict`]).
    pub const fn as_status(self) -> Option<AcceptanceStatus> {
        match self {
            AcceptanceEvent::Testing => Some(AcceptanceStatus::PendingAccept),
            AcceptanceEvent::Accept => Some(AcceptanceStatus::Accepted),
            AcceptanceEvent::Reject => Some(AcceptanceStatus::Rejected),
            AcceptanceEvent::SucceededAuto
            | AcceptanceEvent::SucceededManual
            | AcceptanceEvent::Retired
            | AcceptanceEvent::TimedOut => None,
        }
    }

    /// The event of a first success on a stage with this acceptance type.
    pub const fn succeeded(kind: AcceptanceType) -> AcceptanceEvent {
        match kind {
            AcceptanceType::Auto => AcceptanceEvent::SucceededAuto,
            AcceptanceType::Manual => AcceptanceEvent::SucceededManual,
        }
    }
}

use AcceptanceEvent as E;
use AcceptanceStatus as A;

/// Every transition: (from, event, to). Pairs not listed are refused (`None`): a verdict on a
/// deploy that has not succeeded yet, a second verdict, anything after TERMINATED. A verdict
/// stays when the deploy is replaced.
pub const TRANSITIONS: &[(AcceptanceStatus, AcceptanceEvent, AcceptanceStatus)] = &[
    (A::PendingDeploy, E::SucceededAuto, A::Accepted),
    (A::PendingDeploy, E::SucceededManual, A::Outstanding),
    (A::PendingDeploy, E::Retired, A::Terminated),
    (A::Outstanding, E::Testing, A::PendingAccept),
    (A::Outstanding, E::Accept, A::Accepted),
    (A::Outstanding, E::Reject, A::Rejected),
    (A::Outstanding, E::Retired, A::Terminated),
    (A::Outstanding, E::TimedOut, A::Rejected),
    (A::PendingAccept, E::Testing, A::PendingAccept),
    (A::PendingAccept, E::Accept, A::Accepted),
    (A::PendingAccept, E::Reject, A::Rejected),
    (A::PendingAccept, E::Retired, A::Terminated),
    (A::PendingAccept, E::TimedOut, A::Rejected),
    (A::Accepted, E::Retired, A::Accepted),
    (A::Rejected, E::Retired, A::Rejected),
    (A::Terminated, E::Retired, A::Terminated),
];

/// Where `event` leads from `status`; `None` when the event is refused there.
pub fn transition(status: AcceptanceStatus, event: AcceptanceEvent) -> Option<AcceptanceStatus> {
    TRANSITIONS.iter().find(|(from, e, _)| *from == status && *e == event).map(|(_, _, to)| *to)
}

/// Whether a verdict on a deploy in `status` comes early: the deploy has not succeeded yet, so
/// the verdict is kept for when it does.
pub const fn is_early(status: AcceptanceStatus) -> bool {
    matches!(status, A::PendingDeploy)
}

/// The early verdict to keep when `new` comes after `kept`: the latest, except that a
/// decision (accept, reject) is not undone by a later "testing".
pub fn keep_early(kept: Option<AcceptanceEvent>, new: AcceptanceEvent) -> AcceptanceEvent {
    match (kept, new) {
        (Some(decided @ (E::Accept | E::Reject)), E::Testing) => decided,
        _ => new,
    }
}

/// A deploy's acceptance when it first succeeds on a stage of `kind`: the success, then the
/// early verdict when the status it reached takes one (on MANUAL stages; an AUTO stage
/// accepts by itself and the verdict is dropped).
pub fn on_first_success(
    status: AcceptanceStatus,
    kind: AcceptanceType,
    early: Option<AcceptanceEvent>,
) -> AcceptanceStatus {
    let succeeded = transition(status, AcceptanceEvent::succeeded(kind)).unwrap_or(status);
    early.and_then(|e| transition(succeeded, e)).unwrap_or(succeeded)
}

/// Whether a deploy awaiting a verdict has waited past the stage's acceptance timeout
/// (`timeout_secs`, 0 = none) since it first succeeded.
pub fn timed_out(status: AcceptanceStatus, success_date: Option<EpochMs>, timeout_secs: i32, now: EpochMs) -> bool {
    let waiting = matches!(status, A::Outstanding | A::PendingAccept);
    waiting && timeout_secs > 0 && success_date.is_some_and(|s| now - s >= secs(i64::from(timeout_secs)))
}

/// Whether a verdict was given (or can no longer be).
pub const fn is_final(status: AcceptanceStatus) -> bool {
    match status {
        A::Accepted | A::Rejected | A::Terminated => true,
        A::PendingDeploy | A::Outstanding | A::PendingAccept => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;

    static COVERED: Mutex<BTreeSet<(A, E)>> = Mutex::new(BTreeSet::new());

    fn check(from: A, event: E, to: Option<A>) {
        assert_eq!(transition(from, event), to, "{from} --{event:?}-->");
        COVERED.lock().unwrap().insert((from, event));
    }

    #[test]
    fn every_transition() {
        use AcceptanceEvent::*;
        let cases: &[(A, E, Option<A>)] = &[
            (A::PendingDeploy, SucceededAuto, Some(A::Accepted)),
            (A::PendingDeploy, SucceededManual, Some(A::Outstanding)),
            (A::PendingDeploy, Testing, None),
            (A::PendingDeploy, Accept, None),
            (A::PendingDeploy, Reject, None),
            (A::PendingDeploy, Retired, Some(A::Terminated)),
            (A::PendingDeploy, TimedOut, None),
            (A::Outstanding, SucceededAuto, None),
            (A::Outstanding, SucceededManual, None),
            (A::Outstanding, Testing, Some(A::PendingAccept)),
            (A::Outstanding, Accept, Some(A::Accepted)),
            (A::Outstanding, Reject, Some(A::Rejected)),
            (A::Outstanding, Retired, Some(A::Terminated)),
            (A::Outstanding, TimedOut, Some(A::Rejected)),
            (A::PendingAccept, SucceededAuto, None),
            (A::PendingAccept, SucceededManual, None),
            (A::PendingAccept, Testing, Some(A::PendingAccept)),
            (A::PendingAccept, Accept, Some(A::Accepted)),
            (A::PendingAccept, Reject, Some(A::Rejected)),
            (A::PendingAccept, Retired, Some(A::Terminated)),
            (A::PendingAccept, TimedOut, Some(A::Rejected)),
            (A::Accepted, SucceededAuto, None),
            (A::Accepted, SucceededManual, None),
            (A::Accepted, Testing, None),
            (A::Accepted, Accept, None),
            (A::Accepted, Reject, None),
            (A::Accepted, Retired, Some(A::Accepted)),
            (A::Accepted, TimedOut, None),
            (A::Rejected, SucceededAuto, None),
            (A::Rejected, SucceededManual, None),
            (A::Rejected, Testing, None),
            (A::Rejected, Accept, None),
            (A::Rejected, Reject, None),
            (A::Rejected, Retired, Some(A::Rejected)),
            (A::Rejected, TimedOut, None),
            (A::Terminated, SucceededAuto, None),
            (A::Terminated, SucceededManual, None),
            (A::Terminated, Testing, None),
            (A::Terminated, Accept, None),
            (A::Terminated, Reject, None),
            (A::Terminated, Retired, Some(A::Terminated)),
            (A::Terminated, TimedOut, None),
        ];
        for (from, event, to) in cases {
            check(*from, *event, *to);
        }
    }

    /// Fails when a status and event pair has no test.
    #[test]
    fn every_transition_has_a_test() {
        every_transition();
        let covered = COVERED.lock().unwrap();
        for status in AcceptanceStatus::ALL {
            for event in AcceptanceEvent::ALL {
                assert!(covered.contains(&(*status, event)), "no test for {status} --{event:?}-->");
            }
        }
        for (from, event, _) in TRANSITIONS {
            assert!(covered.contains(&(*from, *event)));
        }
    }

    #[test]
    fn verdicts_users_may_send() {
        assert_eq!(AcceptanceEvent::verdict(A::Accepted), Some(E::Accept));
        assert_eq!(AcceptanceEvent::verdict(A::Rejected), Some(E::Reject));
        assert_eq!(AcceptanceEvent::verdict(A::PendingAccept), Some(E::Testing));
        assert_eq!(AcceptanceEvent::verdict(A::Terminated), None);
        assert_eq!(AcceptanceEvent::succeeded(AcceptanceType::Manual), E::SucceededManual);
        for status in AcceptanceStatus::ALL {
            if let Some(e) = AcceptanceEvent::verdict(*status) {
                assert_eq!(e.as_status(), Some(*status));
            }
        }
        assert_eq!(E::Retired.as_status(), None);
    }

    #[test]
    fn a_verdict_times_out_only_when_awaited_and_late() {
        assert!(!timed_out(A::Outstanding, Some(0), 0, 1_000_000), "no timeout set");
        assert!(!timed_out(A::Outstanding, Some(0), 60, 59_999));
        assert!(timed_out(A::Outstanding, Some(0), 60, 60_000));
        assert!(timed_out(A::PendingAccept, Some(0), 60, 60_000));
        assert!(!timed_out(A::Accepted, Some(0), 60, 60_000), "a verdict was given");
        assert!(!timed_out(A::PendingDeploy, None, 60, 60_000), "not succeeding yet");
    }

    #[test]
    fn an_early_verdict_is_kept_and_applied_at_the_first_success_where_it_counts() {
        assert!(is_early(A::PendingDeploy));
        assert!(AcceptanceStatus::ALL.iter().filter(|s| is_early(**s)).eq([&A::PendingDeploy]));
        assert_eq!(keep_early(None, E::Testing), E::Testing);
        assert_eq!(keep_early(Some(E::Testing), E::Accept), E::Accept);
        assert_eq!(keep_early(Some(E::Accept), E::Testing), E::Accept, "testing does not undo a decision");
        assert_eq!(keep_early(Some(E::Accept), E::Reject), E::Reject, "a later decision wins");
        let manual = AcceptanceType::Manual;
        assert_eq!(on_first_success(A::PendingDeploy, manual, None), A::Outstanding);
        assert_eq!(on_first_success(A::PendingDeploy, manual, Some(E::Accept)), A::Accepted);
        assert_eq!(on_first_success(A::PendingDeploy, manual, Some(E::Reject)), A::Rejected);
        assert_eq!(on_first_success(A::PendingDeploy, manual, Some(E::Testing)), A::PendingAccept);
        assert_eq!(on_first_success(A::PendingDeploy, AcceptanceType::Auto, Some(E::Reject)), A::Accepted);
        assert_eq!(on_first_success(A::Terminated, manual, Some(E::Accept)), A::Terminated, "retired: nothing counts");
    }

    #[test]
    fn only_verdicts_and_termination_are_final() {
        let finals: Vec<_> = AcceptanceStatus::ALL.iter().filter(|s| is_final(**s)).collect();
        assert_eq!(finals, [&A::Accepted, &A::Rejected, &A::Terminated]);
    }
}
