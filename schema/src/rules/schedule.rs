//! Deploy schedules: a rollout in sessions. Session `n` lets a number of hosts (a count,
//! cumulative over sessions, or a percentage of the stage) run the deploy; once they are done
//! the schedule cools down for the session's minutes (negative: until an operator overrides),
//! then the next session starts; after the last one the rest of the fleet proceeds.

use serde::{Deserialize, Serialize};

use crate::ScheduleState;
use crate::model::Invalid;
use crate::time::EpochMs;

/// How many hosts a session lets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum HostNumber {
    /// This many more hosts than the previous session.
    Count(u32),
    /// This percentage of the stage's hosts in all (rounded up).
    Percent(u32),
}

/// One session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Session {
    /// Hosts it lets in.
    pub hosts: HostNumber,
    /// Minutes to wait once its hosts are done; negative waits for an operator.
    pub cooldown_minutes: i32,
}

/// A stage's schedule as configured (Teletraan's `totalSessions`, `hostNumbers`, `cooldownTimes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScheduleConfig {
    /// The sessions, first to last.
    pub sessions: Vec<Session>,
}

/// Where a schedule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScheduleProgress {
    /// State.
    pub state: ScheduleState,
    /// Current session, 1-based (0 before the first start).
    pub session: u32,
    /// When the state was entered.
    pub since: EpochMs,
}

impl ScheduleProgress {
    /// A schedule no deploy started.
    pub const fn not_started() -> Self {
        ScheduleProgress { state: ScheduleState::NotStarted, session: 0, since: 0 }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { field, message: message.into() }
}

impl ScheduleConfig {
    /// Reads Teletraan's comma lists: `hostNumbers` like `"2,10%,50%"` and `cooldownTimes`
    /// like `"10,30,-1"` (minutes), one entry per session.
    pub fn parse(total_sessions: i32, host_numbers: &str, cooldown_times: &str) -> Result<ScheduleConfig, Invalid> {
        if !(1..=100).contains(&total_sessions) {
            return Err(invalid("totalSessions", "must be between 1 and 100 (0 removes the schedule)"));
        }
        let split =
            |s: &str| s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect::<Vec<_>>();
        let hosts = split(host_numbers);
        let cooldowns = split(cooldown_times);
        let n = total_sessions as usize;
        if hosts.len() != n {
            return Err(invalid("hostNumbers", format!("needs {n} entries, one per session; found {}", hosts.len())));
        }
        if cooldowns.len() != n {
            return Err(invalid(
                "cooldownTimes",
                format!("needs {n} entries, one per session; found {}", cooldowns.len()),
            ));
        }
        let mut sessions = Vec::with_capacity(n);
        for (h, c) in hosts.iter().zip(&cooldowns) {
            let hosts = match h.strip_suffix('%') {
                Some(p) => match p.trim().parse::<u32>() {
                    Ok(p) if (1..=100).contains(&p) => HostNumber::Percent(p),
                    _ => return Err(invalid("hostNumbers", format!("{h:?}: a percentage must be 1% to 100%"))),
                },
                None => match h.parse::<u32>() {
                    Ok(n) if n >= 1 => HostNumber::Count(n),
                    _ => return Err(invalid("hostNumbers", format!("{h:?}: a count must be a positive whole number"))),
                },
            };
            let cooldown_minutes = c.parse::<i32>().ok().filter(|m| (-1..=10_080).contains(m)).ok_or_else(|| {
                invalid("cooldownTimes", format!("{c:?}: minutes from -1 (wait for an operator) to 10080"))
            })?;
            sessions.push(Session { hosts, cooldown_minutes });
        }
        Ok(ScheduleConfig { sessions })
    }

    /// Teletraan's `hostNumbers` text.
    pub fn host_numbers(&self) -> String {
        self.sessions
            .iter()
            .map(|s| match s.hosts {
                HostNumber::Count(n) => n.to_string(),
                HostNumber::Percent(p) => format!("{p}%"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Teletraan's `cooldownTimes` text.
    pub fn cooldown_times(&self) -> String {
        self.sessions.iter().map(|s| s.cooldown_minutes.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Hosts allowed on the deploy up to `session` (1-based) for a stage of `total` hosts:
    /// counts add up over sessions, a percentage is of the whole stage; never less than the
    /// session before.
    pub fn allowed(&self, session: u32, total: u32) -> u32 {
        let mut allowed = 0u32;
        for s in self.sessions.iter().take(session as usize) {
            let this = match s.hosts {
                HostNumber::Count(n) => allowed.saturating_add(n),
                HostNumber::Percent(p) => ((u64::from(total) * u64::from(p)).div_ceil(100)) as u32,
            };
            allowed = allowed.max(this);
        }
        allowed
    }

    fn is_last(&self, session: u32) -> bool {
        session as usize >= self.sessions.len()
    }
}

/// What moves a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScheduleEvent {
    /// A deploy starts: the schedule restarts at session 1.
    Start,
    /// The session's hosts are done.
    SessionDone,
    /// The cooldown of a session that is not the last is over.
    CooldownOver,
    /// The cooldown of the last session is over.
    LastCooldownOver,
    /// An operator ends the current session early (not the last one).
    Override,
    /// An operator ends the last session early.
    OverrideLast,
}

impl ScheduleEvent {
    /// Every event.
    pub const ALL: [ScheduleEvent; 6] = [
        ScheduleEvent::Start,
        ScheduleEvent::SessionDone,
        ScheduleEvent::CooldownOver,
        ScheduleEvent::LastCooldownOver,
        ScheduleEvent::Override,
        ScheduleEvent::OverrideLast,
    ];
}

use ScheduleEvent as E;
use ScheduleState as S;

/// Every transition; pairs not listed leave the state as it is (a finished or not started
/// schedule ignores everything but a start).
pub const TRANSITIONS: &[(ScheduleState, ScheduleEvent, ScheduleState)] = &[
    (S::NotStarted, E::Start, S::Running),
    (S::Running, E::Start, S::Running),
    (S::Running, E::SessionDone, S::CoolingDown),
    (S::Running, E::Override, S::Running),
    (S::Running, E::OverrideLast, S::Final),
    (S::CoolingDown, E::Start, S::Running),
    (S::CoolingDown, E::CooldownOver, S::Running),
    (S::CoolingDown, E::LastCooldownOver, S::Final),
    (S::CoolingDown, E::Override, S::Running),
    (S::CoolingDown, E::OverrideLast, S::Final),
    (S::Final, E::Start, S::Running),
];

/// The state after `event`.
pub fn transition(state: ScheduleState, event: ScheduleEvent) -> ScheduleState {
    TRANSITIONS.iter().find(|(from, e, _)| *from == state && *e == event).map(|(_, _, to)| *to).unwrap_or(state)
}

fn apply(p: ScheduleProgress, event: ScheduleEvent, now: EpochMs) -> ScheduleProgress {
    let state = transition(p.state, event);
    if state == p.state && event != E::Start && !matches!(event, E::Override) {
        return p;
    }
    let session = match event {
        E::Start => 1,
        E::CooldownOver | E::Override if state == S::Running => p.session + 1,
        _ => p.session,
    };
    ScheduleProgress { state, session, since: now }
}

/// Restarts the schedule for a new deploy.
pub fn start(now: EpochMs) -> ScheduleProgress {
    apply(ScheduleProgress::not_started(), E::Start, now)
}

/// Moves the schedule along: a session whose hosts are done (`finished`: hosts on the current
/// deploy that serve it or are held) cools down; a cooldown that is over starts the next
/// session, or ends the schedule after the last.
pub fn advance(
    config: &ScheduleConfig,
    p: ScheduleProgress,
    finished: u32,
    total: u32,
    now: EpochMs,
) -> ScheduleProgress {
    match p.state {
        S::Running if finished >= config.allowed(p.session, total) => apply(p, E::SessionDone, now),
        S::CoolingDown => {
            let cooldown =
                config.sessions.get(p.session.saturating_sub(1) as usize).map(|s| s.cooldown_minutes).unwrap_or(0);
            if cooldown >= 0 && now - p.since >= i64::from(cooldown) * 60_000 {
                let event = if config.is_last(p.session) { E::LastCooldownOver } else { E::CooldownOver };
                apply(p, event, now)
            } else {
                p
            }
        }
        S::NotStarted | S::Running | S::Final => p,
    }
}

/// An operator ends session `session` early; `None` when it is not the current session (or
/// the schedule is not in one).
pub fn override_session(
    config: &ScheduleConfig,
    p: ScheduleProgress,
    session: u32,
    now: EpochMs,
) -> Option<ScheduleProgress> {
    if session != p.session || !matches!(p.state, S::Running | S::CoolingDown) {
        return None;
    }
    let event = if config.is_last(session) { E::OverrideLast } else { E::Override };
    Some(apply(p, event, now))
}

/// How many more hosts may start the current deploy now (`on_deploy`: hosts whose record is on
/// it); `None` means the schedule sets no limit.
pub fn allowance(config: &ScheduleConfig, p: ScheduleProgress, on_deploy: u32, total: u32) -> Option<u32> {
    match p.state {
        S::NotStarted | S::Final => None,
        S::CoolingDown => Some(0),
        S::Running => Some(config.allowed(p.session, total).saturating_sub(on_deploy)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;

    static COVERED: Mutex<BTreeSet<(S, E)>> = Mutex::new(BTreeSet::new());

    fn check(from: S, event: E, to: S) {
        assert_eq!(transition(from, event), to, "{from} --{event:?}-->");
        COVERED.lock().unwrap().insert((from, event));
    }

    #[test]
    fn every_transition() {
        let cases: &[(S, E, S)] = &[
            (S::NotStarted, E::Start, S::Running),
            (S::NotStarted, E::SessionDone, S::NotStarted),
            (S::NotStarted, E::CooldownOver, S::NotStarted),
            (S::NotStarted, E::LastCooldownOver, S::NotStarted),
            (S::NotStarted, E::Override, S::NotStarted),
            (S::NotStarted, E::OverrideLast, S::NotStarted),
            (S::Running, E::Start, S::Running),
            (S::Running, E::SessionDone, S::CoolingDown),
            (S::Running, E::CooldownOver, S::Running),
            (S::Running, E::LastCooldownOver, S::Running),
            (S::Running, E::Override, S::Running),
            (S::Running, E::OverrideLast, S::Final),
            (S::CoolingDown, E::Start, S::Running),
            (S::CoolingDown, E::SessionDone, S::CoolingDown),
            (S::CoolingDown, E::CooldownOver, S::Running),
            (S::CoolingDown, E::LastCooldownOver, S::Final),
            (S::CoolingDown, E::Override, S::Running),
            (S::CoolingDown, E::OverrideLast, S::Final),
            (S::Final, E::Start, S::Running),
            (S::Final, E::SessionDone, S::Final),
            (S::Final, E::CooldownOver, S::Final),
            (S::Final, E::LastCooldownOver, S::Final),
            (S::Final, E::Override, S::Final),
            (S::Final, E::OverrideLast, S::Final),
        ];
        for (from, event, to) in cases {
            check(*from, *event, *to);
        }
    }

    /// Fails when a state and event pair has no test.
    #[test]
    fn every_transition_has_a_test() {
        every_transition();
        let covered = COVERED.lock().unwrap();
        for state in ScheduleState::ALL {
            for event in ScheduleEvent::ALL {
                assert!(covered.contains(&(*state, event)), "no test for {state} --{event:?}-->");
            }
        }
    }

    fn config(hosts: &str, cooldowns: &str) -> ScheduleConfig {
        let n = hosts.split(',').count() as i32;
        ScheduleConfig::parse(n, hosts, cooldowns).unwrap()
    }

    #[test]
    fn parses_and_prints_teletraans_lists() {
        let c = config("2, 10%,50%", "10,-1,0");
        assert_eq!(c.host_numbers(), "2,10%,50%");
        assert_eq!(c.cooldown_times(), "10,-1,0");
        assert_eq!(ScheduleConfig::parse(2, "1", "1,1").unwrap_err().field, "hostNumbers");
        assert_eq!(ScheduleConfig::parse(1, "0", "1").unwrap_err().field, "hostNumbers");
        assert_eq!(ScheduleConfig::parse(1, "101%", "1").unwrap_err().field, "hostNumbers");
        assert_eq!(ScheduleConfig::parse(1, "1", "x").unwrap_err().field, "cooldownTimes");
        assert_eq!(ScheduleConfig::parse(0, "", "").unwrap_err().field, "totalSessions");
    }

    #[test]
    fn counts_add_up_and_percentages_are_of_the_stage() {
        let c = config("2,3,50%,5", "0,0,0,0");
        assert_eq!(c.allowed(1, 20), 2);
        assert_eq!(c.allowed(2, 20), 5);
        assert_eq!(c.allowed(3, 20), 10);
        assert_eq!(c.allowed(4, 20), 15);
        assert_eq!(config("10%", "0").allowed(1, 25), 3, "rounded up");
        assert_eq!(config("50%,10%", "0,0").allowed(2, 20), 10, "never less than the session before");
    }

    #[test]
    fn a_schedule_walks_its_sessions() {
        let c = config("1,2", "1,-1");
        let mut p = start(0);
        assert_eq!((p.state, p.session), (S::Running, 1));
        assert_eq!(allowance(&c, p, 0, 10), Some(1));
        assert_eq!(advance(&c, p, 0, 10, 5), p, "session 1 not done");
        p = advance(&c, p, 1, 10, 5);
        assert_eq!((p.state, p.session, p.since), (S::CoolingDown, 1, 5));
        assert_eq!(allowance(&c, p, 1, 10), Some(0), "nobody starts while cooling down");
        assert_eq!(advance(&c, p, 1, 10, 5 + 59_999).state, S::CoolingDown);
        p = advance(&c, p, 1, 10, 5 + 60_000);
        assert_eq!((p.state, p.session), (S::Running, 2));
        assert_eq!(allowance(&c, p, 1, 10), Some(2), "3 in all by session 2");
        p = advance(&c, p, 3, 10, 100_000);
        assert_eq!(p.state, S::CoolingDown);
        assert_eq!(
            advance(&c, p, 3, 10, i64::MAX / 2).state,
            S::CoolingDown,
            "a negative cooldown waits for an operator"
        );
        assert_eq!(override_session(&c, p, 1, 7), None, "only the current session can be overridden");
        let p = override_session(&c, p, 2, 7).unwrap();
        assert_eq!(p.state, S::Final);
        assert_eq!(allowance(&c, p, 3, 10), None, "the rest of the fleet proceeds");
    }

    #[test]
    fn overriding_a_running_session_moves_to_the_next() {
        let c = config("1,1,1", "-1,-1,-1");
        let p = start(0);
        let p = override_session(&c, p, 1, 3).unwrap();
        assert_eq!((p.state, p.session, p.since), (S::Running, 2, 3));
        assert_eq!(allowance(&c, ScheduleProgress::not_started(), 0, 10), None);
    }
}
