//! The control state of one host on one stage (`agents.state`) and what moves it: the agent's
//! reports (read by the gateway), the operators' host actions (applied by the workers), the
//! rollout itself (a host starting over) and the janitor.

use crate::{AgentState, AgentStatus, DeployStage};

/// What happens to a host's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgentEvent {
    /// The agent reports a step that succeeded.
    StepSucceeded,
    /// The agent reports a step still running, or failed in a way worth retrying.
    StepFailed,
    /// The agent reports a fatal failure (SCRIPT_TIMEOUT, TOO_MANY_RETRY, AGENT_FAILED,
    /// RUNTIME_MISMATCH) outside STOPPING.
    StepFailedFatally,
    /// The agent reports a fatal failure while stopping the service.
    StoppingFailedFatally,
    /// The agent asks to redo its deploy (`agentState: RESET_BY_SYSTEM`).
    AgentAskedReset,
    /// The host starts the current deploy from its first stage.
    Reinstalled,
    /// An operator holds the host (`PAUSED_BY_USER`).
    UserPaused,
    /// An operator releases the host (`NORMAL`).
    UserResumed,
    /// An operator asks to redo the deploy from scratch (`RESET`).
    UserReset,
    /// An operator stops the service on the host.
    UserStopped,
    /// The stage no longer applies to the host (it left the capacity).
    LeftStage,
    /// The host stopped pinging (the janitor).
    WentSilent,
}

impl AgentEvent {
    /// Every event.
    pub const ALL: [AgentEvent; 12] = [
        AgentEvent::StepSucceeded,
        AgentEvent::StepFailed,
        AgentEvent::StepFailedFatally,
        AgentEvent::StoppingFailedFatally,
        AgentEvent::AgentAskedReset,
        AgentEvent::Reinstalled,
        AgentEvent::UserPaused,
        AgentEvent::UserResumed,
        AgentEvent::UserReset,
        AgentEvent::UserStopped,
        AgentEvent::LeftStage,
        AgentEvent::WentSilent,
    ];

    /// The event a reported step result is.
    pub fn of_report(status: AgentStatus, stage: DeployStage) -> AgentEvent {
        if status == AgentStatus::Succeeded {
            AgentEvent::StepSucceeded
        } else if status.is_fatal() && stage == DeployStage::Stopping {
            AgentEvent::StoppingFailedFatally
        } else if status.is_fatal() {
            AgentEvent::StepFailedFatally
        } else {
            AgentEvent::StepFailed
        }
    }

    /// The event of an operator's host action (`PAUSED_BY_USER`, `RESET`, `NORMAL`, `STOP`).
    pub fn of_user(state: AgentState) -> Option<AgentEvent> {
        match state {
            AgentState::PausedByUser => Some(AgentEvent::UserPaused),
            AgentState::Normal => Some(AgentEvent::UserResumed),
            AgentState::Reset => Some(AgentEvent::UserReset),
            AgentState::Stop => Some(AgentEvent::UserStopped),
            AgentState::PausedBySystem | AgentState::ResetBySystem | AgentState::Delete | AgentState::Unreachable => {
                None
            }
        }
    }
}

/// The state after `event`. Every pair is defined. The rules, in order:
/// operators get what they ask for; a host leaving the stage is DELETE; an operator's hold and
/// a pending reset or stop survive reports and silence (a fatal failure while stopping
/// excepted: it pauses the host); otherwise a success or a new start clears failures and
/// silence, a fatal failure pauses the host, the agent may ask to be reset, any report proves
/// a silent host alive, and silence marks the host UNREACHABLE.
pub fn next(state: AgentState, event: AgentEvent) -> AgentState {
    use AgentEvent as E;
    use AgentState as S;
    match event {
        E::UserPaused => return S::PausedByUser,
        E::UserResumed => return S::Normal,
        E::UserReset => return S::Reset,
        E::UserStopped => return S::Stop,
        E::LeftStage => return S::Delete,
        E::StepSucceeded
        | E::StepFailed
        | E::StepFailedFatally
        | E::StoppingFailedFatally
        | E::AgentAskedReset
        | E::Reinstalled
        | E::WentSilent => {}
    }
    match state {
        S::PausedByUser => S::PausedByUser,
        S::Stop => match event {
            E::StoppingFailedFatally => S::PausedBySystem,
            _ => S::Stop,
        },
        S::Reset | S::ResetBySystem => match event {
            E::Reinstalled => S::Normal,
            _ => state,
        },
        S::Normal | S::PausedBySystem | S::Delete | S::Unreachable => match event {
            E::StepSucceeded | E::Reinstalled => S::Normal,
            E::StepFailedFatally | E::StoppingFailedFatally => S::PausedBySystem,
            E::AgentAskedReset => S::ResetBySystem,
            E::WentSilent => S::Unreachable,
            E::StepFailed => match state {
                // A report proves a silent host alive.
                S::Unreachable => S::Normal,
                other => other,
            },
            E::UserPaused | E::UserResumed | E::UserReset | E::UserStopped | E::LeftStage => state,
        },
    }
}

/// The state a report leaves: the agent's reset request first, then the step's result.
pub fn after_report(state: AgentState, asks_reset: bool, status: AgentStatus, stage: DeployStage) -> AgentState {
    let state = if asks_reset { next(state, AgentEvent::AgentAskedReset) } else { state };
    next(state, AgentEvent::of_report(status, stage))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::AgentEvent as E;
    use super::*;
    use AgentState as S;

    static COVERED: Mutex<BTreeSet<(AgentState, AgentEvent)>> = Mutex::new(BTreeSet::new());

    fn check(from: S, event: E, to: S) {
        assert_eq!(next(from, event), to, "{from} --{event:?}-->");
        COVERED.lock().unwrap().insert((from, event));
    }

    #[test]
    fn operators_get_what_they_ask_for_from_any_state() {
        for from in AgentState::ALL {
            check(*from, E::UserPaused, S::PausedByUser);
            check(*from, E::UserResumed, S::Normal);
            check(*from, E::UserReset, S::Reset);
            check(*from, E::UserStopped, S::Stop);
        }
    }

    #[test]
    fn leaving_the_stage_deletes_from_any_state() {
        for from in AgentState::ALL {
            check(*from, E::LeftStage, S::Delete);
        }
    }

    #[test]
    fn an_operators_hold_survives_everything_but_an_operator() {
        for event in
            [E::StepSucceeded, E::StepFailed, E::StepFailedFatally, E::StoppingFailedFatally, E::AgentAskedReset]
        {
            check(S::PausedByUser, event, S::PausedByUser);
        }
        check(S::PausedByUser, E::Reinstalled, S::PausedByUser);
        check(S::PausedByUser, E::WentSilent, S::PausedByUser);
    }

    #[test]
    fn a_pending_reset_waits_for_the_new_start() {
        for from in [S::Reset, S::ResetBySystem] {
            for event in
                [E::StepSucceeded, E::StepFailed, E::StepFailedFatally, E::StoppingFailedFatally, E::WentSilent]
            {
                check(from, event, from);
            }
            check(from, E::AgentAskedReset, from);
            check(from, E::Reinstalled, S::Normal);
        }
    }

    #[test]
    fn a_stop_holds_until_stopping_fails_fatally() {
        for event in
            [E::StepSucceeded, E::StepFailed, E::StepFailedFatally, E::AgentAskedReset, E::Reinstalled, E::WentSilent]
        {
            check(S::Stop, event, S::Stop);
        }
        check(S::Stop, E::StoppingFailedFatally, S::PausedBySystem);
    }

    #[test]
    fn reports_move_free_hosts() {
        for from in [S::Normal, S::PausedBySystem, S::Delete, S::Unreachable] {
            check(from, E::StepSucceeded, S::Normal);
            check(from, E::Reinstalled, S::Normal);
            check(from, E::StepFailedFatally, S::PausedBySystem);
            check(from, E::StoppingFailedFatally, S::PausedBySystem);
            check(from, E::AgentAskedReset, S::ResetBySystem);
            check(from, E::WentSilent, S::Unreachable);
        }
        // A retryable failure or a step in progress changes nothing, except that it proves a
        // silent host alive.
        check(S::Normal, E::StepFailed, S::Normal);
        check(S::PausedBySystem, E::StepFailed, S::PausedBySystem);
        check(S::Delete, E::StepFailed, S::Delete);
        check(S::Unreachable, E::StepFailed, S::Normal);
    }

    /// Fails when a state and event pair has no test.
    #[test]
    fn every_transition_has_a_test() {
        operators_get_what_they_ask_for_from_any_state();
        leaving_the_stage_deletes_from_any_state();
        an_operators_hold_survives_everything_but_an_operator();
        a_pending_reset_waits_for_the_new_start();
        a_stop_holds_until_stopping_fails_fatally();
        reports_move_free_hosts();
        let covered = COVERED.lock().unwrap();
        for state in AgentState::ALL {
            for event in AgentEvent::ALL {
                assert!(covered.contains(&(*state, event)), "no test for {state} --{event:?}-->");
            }
        }
    }

    #[test]
    fn reports_are_read_as_events() {
        assert_eq!(AgentEvent::of_report(AgentStatus::Succeeded, DeployStage::Stopping), E::StepSucceeded);
        assert_eq!(AgentEvent::of_report(AgentStatus::TooManyRetry, DeployStage::Stopping), E::StoppingFailedFatally);
        assert_eq!(AgentEvent::of_report(AgentStatus::ScriptTimeout, DeployStage::Restarting), E::StepFailedFatally);
        assert_eq!(AgentEvent::of_report(AgentStatus::ScriptFailed, DeployStage::Restarting), E::StepFailed);
        assert_eq!(AgentEvent::of_report(AgentStatus::Unknown, DeployStage::Restarting), E::StepFailed);
        assert_eq!(AgentEvent::of_user(AgentState::Reset), Some(E::UserReset));
        assert_eq!(AgentEvent::of_user(AgentState::Unreachable), None);
    }

    #[test]
    fn an_agents_reset_request_is_read_before_its_result() {
        assert_eq!(after_report(S::Normal, true, AgentStatus::Succeeded, DeployStage::ServingBuild), S::ResetBySystem);
        assert_eq!(
            after_report(S::PausedByUser, true, AgentStatus::Succeeded, DeployStage::ServingBuild),
            S::PausedByUser
        );
        assert_eq!(
            after_report(S::Normal, false, AgentStatus::AgentFailed, DeployStage::Downloading),
            S::PausedBySystem
        );
    }
}
