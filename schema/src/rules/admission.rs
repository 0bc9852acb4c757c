//! Admission: which hosts may leave service to start the current deploy, within the stage's
//! parallelism cap. Workers run it under the stage's row lock; first deploys of new hosts are
//! never capped and are started by the gateway directly.

use crate::rules::constraint::{self, Constraint, TaggedHost};
use crate::rules::goal::AgentRecord;
use crate::{AgentState, DeployId, DeployStage, HostId};

/// The number of hosts of a stage that may be out of service at once.
///
/// `existing` is the number of hosts that are not on their first deploy. With only
/// `max_parallel` set the cap is that number; with only `max_parallel_pct`, that percentage of
/// `existing` rounded down; with both, the smaller. The cap is never below 1 (Teletraan lets
/// it reach 0 on an empty stage) and never above `existing` unless that is 0.
pub fn parallel_cap(max_parallel: i32, max_parallel_pct: i32, existing: u32) -> u32 {
    let by_count = u32::try_from(max_parallel).ok().filter(|n| *n > 0);
    let by_pct = u32::try_from(max_parallel_pct)
        .ok()
        .filter(|p| *p > 0)
        .map(|p| (u64::from(existing) * u64::from(p.min(100)) / 100) as u32);
    let cap = match (by_count, by_pct) {
        (Some(n), Some(p)) => n.min(p),
        (Some(n), None) => n,
        (None, Some(p)) => p,
        (None, None) => 1,
    };
    cap.min(existing).max(1)
}

/// How many more hosts may start now.
pub fn open_slots(cap: u32, active: u32) -> u32 {
    cap.saturating_sub(active)
}

/// The slots a stage's hosts take, counting hosts lost mid-deploy: a host that went silent
/// while working on the current deploy (UNREACHABLE, not serving it) frees its slot, so a
/// rollout goes on without a dead host; but only `cap` of them do. Beyond that each takes its
/// slot again: a build that makes every host it touches go silent stops after 2 × `cap` hosts
/// instead of spreading through the fleet.
pub fn charged(active: u32, lost: u32, cap: u32) -> u32 {
    active.saturating_add(lost.saturating_sub(cap))
}

/// What admission knows of a stage at one moment.
#[derive(Debug, Clone, Copy)]
pub struct StageAdmission<'a> {
    /// The stage's parallelism cap ([`parallel_cap`]).
    pub cap: u32,
    /// Hosts out of service now ([`AgentRecord::is_active`]).
    pub active: u32,
    /// More hosts the deploy schedule lets start; `None` when it sets no limit.
    pub schedule_allowance: Option<u32>,
    /// The deploy constraint, with every host of the stage as it sees them.
    pub constraint: Option<(&'a Constraint, &'a [TaggedHost])>,
}

/// Chooses the hosts that start now among `waiting` (in preference order): as many as the
/// cap leaves room for, no more than the schedule allows, and only those the constraint lets
/// through.
pub fn select(a: &StageAdmission<'_>, waiting: &[HostId]) -> Vec<HostId> {
    let slots = open_slots(a.cap, a.active).min(a.schedule_allowance.unwrap_or(u32::MAX));
    if slots == 0 {
        return Vec::new();
    }
    match a.constraint {
        Some((c, hosts)) => constraint::admit(c, hosts, waiting, slots),
        None => waiting.iter().take(slots as usize).cloned().collect(),
    }
}

/// Whether a host with this record waits for admission to start `current`: it serves
/// another deploy (or was asked to redo this one) and is not held, stopped or gone. A host
/// serving the deploy a rollback goes back to (`alias`) does not wait: it already runs that
/// build and counts as done once it pings.
pub fn waits_for_admission(record: &AgentRecord, current: &DeployId, alias: Option<&DeployId>) -> bool {
    if record.stage != DeployStage::ServingBuild || alias == Some(&record.deploy_id) {
        return false;
    }
    match record.state {
        AgentState::Normal => &record.deploy_id != current,
        AgentState::Reset | AgentState::ResetBySystem => true,
        AgentState::PausedBySystem
        | AgentState::PausedByUser
        | AgentState::Delete
        | AgentState::Unreachable
        | AgentState::Stop => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeployConstraintType;
    use crate::rules::constraint::TagOf;

    #[test]
    fn count_cap_alone() {
        assert_eq!(parallel_cap(1, 0, 3), 1);
        assert_eq!(parallel_cap(2, 0, 3), 2);
        assert_eq!(parallel_cap(5, 0, 3), 3, "never more than the hosts there are");
    }

    #[test]
    fn percent_cap_rounds_down_but_stays_at_least_one() {
        assert_eq!(parallel_cap(0, 10, 20), 2);
        assert_eq!(parallel_cap(0, 10, 25), 2);
        assert_eq!(parallel_cap(0, 10, 5), 1);
        assert_eq!(parallel_cap(0, 100, 7), 7);
    }

    #[test]
    fn both_caps_take_the_smaller() {
        assert_eq!(parallel_cap(3, 50, 20), 3);
        assert_eq!(parallel_cap(30, 50, 20), 10);
    }

    #[test]
    fn empty_stage_still_admits_one() {
        assert_eq!(parallel_cap(0, 10, 0), 1);
        assert_eq!(parallel_cap(4, 0, 0), 1);
    }

    #[test]
    fn hosts_lost_mid_deploy_free_at_most_a_cap_of_slots() {
        assert_eq!(charged(0, 0, 1), 0);
        assert_eq!(charged(0, 1, 1), 0, "one dead host: the rollout goes on");
        assert_eq!(charged(0, 2, 1), 1, "a second one: the rollout stops");
        assert_eq!(charged(2, 5, 3), 4);
        assert_eq!(open_slots(3, charged(0, 6, 3)), 0);
        assert_eq!(charged(u32::MAX, u32::MAX, 0), u32::MAX);
    }

    #[test]
    fn open_slots_never_go_negative() {
        assert_eq!(open_slots(2, 0), 2);
        assert_eq!(open_slots(2, 2), 0);
        assert_eq!(open_slots(2, 5), 0);
    }

    fn rec(deploy: &str, stage: DeployStage, state: AgentState) -> AgentRecord {
        AgentRecord { stage, state, ..AgentRecord::fresh(DeployId::parse(deploy).unwrap(), false) }
    }

    #[test]
    fn who_waits_for_admission() {
        let cur = DeployId::parse("d2").unwrap();
        assert!(waits_for_admission(&rec("d1", DeployStage::ServingBuild, AgentState::Normal), &cur, None));
        assert!(!waits_for_admission(&rec("d2", DeployStage::ServingBuild, AgentState::Normal), &cur, None));
        assert!(waits_for_admission(&rec("d2", DeployStage::ServingBuild, AgentState::Reset), &cur, None));
        assert!(
            !waits_for_admission(&rec("d1", DeployStage::Restarting, AgentState::Normal), &cur, None),
            "mid-deploy hosts switch at once"
        );
        assert!(!waits_for_admission(&rec("d1", DeployStage::ServingBuild, AgentState::PausedByUser), &cur, None));
        assert!(!waits_for_admission(&rec("d1", DeployStage::ServingBuild, AgentState::Unreachable), &cur, None));
        let target = DeployId::parse("d1").unwrap();
        assert!(
            !waits_for_admission(&rec("d1", DeployStage::ServingBuild, AgentState::Normal), &cur, Some(&target)),
            "hosts on a rollback's target are left alone"
        );
    }

    fn hosts(n: usize) -> Vec<HostId> {
        (0..n).map(|i| HostId::parse(format!("h{i}")).unwrap()).collect()
    }

    #[test]
    fn selection_takes_the_smallest_of_cap_and_schedule() {
        let waiting = hosts(10);
        let a = StageAdmission { cap: 3, active: 1, schedule_allowance: None, constraint: None };
        assert_eq!(select(&a, &waiting), waiting[..2].to_vec());
        let a = StageAdmission { schedule_allowance: Some(1), ..a };
        assert_eq!(select(&a, &waiting), waiting[..1].to_vec());
        let a = StageAdmission { schedule_allowance: Some(0), ..a };
        assert!(select(&a, &waiting).is_empty(), "a cooling-down schedule admits nobody");
    }

    #[test]
    fn selection_applies_the_constraint_within_the_slots() {
        let waiting = hosts(4);
        let tagged: Vec<TaggedHost> = waiting
            .iter()
            .enumerate()
            .map(|(i, h)| TaggedHost {
                host_id: h.clone(),
                tag: TagOf::Value(["a", "b"][i % 2].into()),
                active: false,
                done: false,
            })
            .collect();
        let c = Constraint::new("az", 1, DeployConstraintType::AllGroupsInParallel).unwrap();
        let a = StageAdmission { cap: 4, active: 0, schedule_allowance: None, constraint: Some((&c, &tagged)) };
        assert_eq!(select(&a, &waiting), vec![waiting[0].clone(), waiting[1].clone()]);
    }
}
