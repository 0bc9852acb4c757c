//! Deploy constraints: a rollout shaped by a host tag (a zone, a shard…) read from the
//! pings' `ec2Tags`. At most `max_parallel` hosts per tag value are out of service at once,
//! on top of the stage's cap; with GROUP_BY_GROUP the values go one at a time, in their
//! order: a host starts only when every host of a lower value has finished the deploy, and
//! no host starts while a host's tags have not reached the store yet (its value may be the
//! lowest).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::Invalid;
use crate::{DeployConstraintType, HostId};

/// A stage's constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Constraint {
    /// The tag name.
    pub key: String,
    /// Hosts per tag value out of service at once.
    pub max_parallel: u32,
    /// Values in parallel, or one after the other.
    pub kind: DeployConstraintType,
}

impl Constraint {
    /// Validates a constraint as users send it.
    pub fn new(key: &str, max_parallel: i64, kind: DeployConstraintType) -> Result<Constraint, Invalid> {
        let key = key.trim();
        if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
            return Err(Invalid {
                field: "constraintKey",
                message: "must be a tag name of 1 to 128 characters".into(),
            });
        }
        let max_parallel = u32::try_from(max_parallel)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| Invalid { field: "maxParallel", message: "must be 1 or more".into() })?;
        Ok(Constraint { key: key.to_string(), max_parallel, kind })
    }
}

/// What the store knows of a host's value for the constraint's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagOf {
    /// The host's facts (its tags among them) have not been stored yet: a gateway sends a
    /// new host's record at once and its facts up to a heartbeat round later.
    Unknown,
    /// The host reported its tags, and not this one.
    Untagged,
    /// The host's value.
    Value(String),
}

impl TagOf {
    /// The value, when the host has one.
    pub fn value(&self) -> Option<&str> {
        match self {
            TagOf::Value(v) => Some(v),
            TagOf::Unknown | TagOf::Untagged => None,
        }
    }
}

/// One host of the stage as the constraint sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedHost {
    /// The host.
    pub host_id: HostId,
    /// Its value of the constraint's tag, as far as it is known.
    pub tag: TagOf,
    /// Out of service on some deploy (it counts against its value's limit).
    pub active: bool,
    /// Finished the current deploy (serves it, or is held, failed or lost on it).
    pub done: bool,
}

/// Chooses up to `slots` hosts among `waiting` (in preference order) that the constraint lets
/// start now. Hosts without a value for the tag never start: their place in the rollout is
/// unknown. With GROUP_BY_GROUP nothing starts while a host's tags are unknown and it has
/// not finished: once they arrive its value may turn out lower than the one under way.
pub fn admit(c: &Constraint, hosts: &[TaggedHost], waiting: &[HostId], slots: u32) -> Vec<HostId> {
    if c.kind == DeployConstraintType::GroupByGroup && hosts.iter().any(|h| h.tag == TagOf::Unknown && !h.done) {
        return Vec::new();
    }
    let mut active: BTreeMap<&str, u32> = BTreeMap::new();
    let mut unfinished: BTreeSet<&str> = BTreeSet::new();
    let mut value_of: BTreeMap<&HostId, &str> = BTreeMap::new();
    for h in hosts {
        let Some(v) = h.tag.value() else { continue };
        value_of.insert(&h.host_id, v);
        if h.active {
            *active.entry(v).or_default() += 1;
        }
        if !h.done {
            unfinished.insert(v);
        }
    }
    let mut out = Vec::new();
    for host in waiting {
        if out.len() as u32 >= slots {
            break;
        }
        let Some(v) = value_of.get(host).copied() else { continue };
        if c.kind == DeployConstraintType::GroupByGroup && unfinished.iter().any(|u| *u < v) {
            continue;
        }
        let n = active.entry(v).or_default();
        if *n >= c.max_parallel {
            continue;
        }
        *n += 1;
        out.push(host.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, value: Option<&str>, active: bool, done: bool) -> TaggedHost {
        let tag = value.map_or(TagOf::Untagged, |v| TagOf::Value(v.to_string()));
        TaggedHost { host_id: HostId::parse(id).unwrap(), tag, active, done }
    }

    fn ids(v: &[&str]) -> Vec<HostId> {
        v.iter().map(|s| HostId::parse(*s).unwrap()).collect()
    }

    fn zones() -> Vec<TaggedHost> {
        vec![
            host("a1", Some("a"), false, false),
            host("a2", Some("a"), false, false),
            host("b1", Some("b"), false, false),
            host("b2", Some("b"), false, false),
            host("c1", Some("c"), false, false),
            host("x", None, false, false),
        ]
    }

    #[test]
    fn in_parallel_each_value_is_capped() {
        let c = Constraint::new("az", 1, DeployConstraintType::AllGroupsInParallel).unwrap();
        let got = admit(&c, &zones(), &ids(&["a1", "a2", "b1", "b2", "c1", "x"]), 10);
        assert_eq!(got, ids(&["a1", "b1", "c1"]), "one per zone; the untagged host waits");
        assert_eq!(admit(&c, &zones(), &ids(&["a1", "a2", "b1"]), 1), ids(&["a1"]), "and the stage's slots still bind");
    }

    #[test]
    fn active_hosts_hold_their_values_slot() {
        let c = Constraint::new("az", 1, DeployConstraintType::AllGroupsInParallel).unwrap();
        let mut hosts = zones();
        hosts[0].active = true;
        assert_eq!(admit(&c, &hosts, &ids(&["a2", "b1"]), 10), ids(&["b1"]));
    }

    #[test]
    fn group_by_group_waits_for_lower_values_to_finish() {
        let c = Constraint::new("az", 2, DeployConstraintType::GroupByGroup).unwrap();
        let hosts = zones();
        assert_eq!(admit(&c, &hosts, &ids(&["b1", "a1", "a2", "c1"]), 10), ids(&["a1", "a2"]), "zone a first");
        let mut hosts = zones();
        for h in hosts.iter_mut().filter(|h| h.tag.value() == Some("a")) {
            h.done = true;
        }
        assert_eq!(admit(&c, &hosts, &ids(&["c1", "b1", "b2"]), 10), ids(&["b1", "b2"]), "then zone b, not c");
    }

    #[test]
    fn group_by_group_waits_for_every_hosts_tags_and_in_parallel_does_not() {
        let mut hosts = zones();
        hosts.push(TaggedHost { tag: TagOf::Unknown, ..host("new", None, false, false) });
        let waiting = ids(&["a1", "b1", "new"]);
        let by_group = Constraint::new("az", 2, DeployConstraintType::GroupByGroup).unwrap();
        assert!(admit(&by_group, &hosts, &waiting, 10).is_empty(), "the new host may be of a value below a");
        let in_parallel = Constraint { kind: DeployConstraintType::AllGroupsInParallel, ..by_group.clone() };
        assert_eq!(admit(&in_parallel, &hosts, &waiting, 10), ids(&["a1", "b1"]), "the unknown host waits alone");
        // A host that finished the deploy is past mattering, whatever its tags.
        hosts.last_mut().unwrap().done = true;
        assert_eq!(admit(&by_group, &hosts, &waiting, 10), ids(&["a1"]));
        // Its tags arrive: it takes its place in the order.
        *hosts.last_mut().unwrap() = host("new", Some("0"), false, false);
        assert_eq!(admit(&by_group, &hosts, &waiting, 10), ids(&["new"]), "zone 0 sorts before a");
    }

    #[test]
    fn bad_constraints_are_refused() {
        assert_eq!(Constraint::new(" ", 1, DeployConstraintType::GroupByGroup).unwrap_err().field, "constraintKey");
        assert_eq!(Constraint::new("az", 0, DeployConstraintType::GroupByGroup).unwrap_err().field, "maxParallel");
    }
}
