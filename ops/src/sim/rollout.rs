//! The cap invariant seen from the agents' side.
//!
//! A host is *out of service* for a deploy from the moment it takes that deploy's PRE_DOWNLOAD
//! goal while it serves a build (its first deploy, serving nothing, is never capped and does
//! not count) until it takes the deploy's SERVING_BUILD goal: its new build has been restarted
//! and the server counts it as in service again from that answer on. Counting until the
//! SERVING_BUILD step *finished* would charge the fleet with a host the server has already
//! released, and a slow SERVING_BUILD hook would then look like a cap violation. An interval
//! also ends, without the host being done, when the host turns to a newer deploy or forgets
//! the environment.
//!
//! [`RolloutBook`] is pure bookkeeping over those moves, in the order the fleet records them:
//! the most hosts out at once per deploy and per tag value, and the order tag values started.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// A host's tags as `(key, value)` pairs.
pub type Tags = Vec<(Arc<str>, Arc<str>)>;

#[derive(Debug, Default, Clone)]
struct TagTally {
    out_now: u32,
    max_out: u32,
    hosts: u32,
    first_start: Option<Duration>,
    last_done: Option<Duration>,
}

#[derive(Debug, Default)]
struct Tally {
    first_start: Option<Duration>,
    last_done: Option<Duration>,
    started: u32,
    taken_out: u32,
    taken_out_as_first: u32,
    done: u32,
    abandoned: u32,
    out_now: u32,
    max_out: u32,
    tags: BTreeMap<(Arc<str>, Arc<str>), TagTally>,
    tag_order: Vec<(Arc<str>, Arc<str>)>,
}

#[derive(Debug)]
struct Open {
    deploy: Arc<str>,
    /// Out of service (the host served a build when it started).
    counted: bool,
}

/// Out-of-service intervals of every host and environment, summed up per deploy.
#[derive(Debug, Default)]
pub struct RolloutBook {
    host_tags: Vec<Tags>,
    deploys: HashMap<Arc<str>, Tally>,
    order: Vec<Arc<str>>,
    open: HashMap<(u32, Arc<str>), Open>,
}

/// Tag value figures of one deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagReport {
    /// Tag key.
    pub key: String,
    /// Tag value.
    pub value: String,
    /// Hosts with this value taken out of service.
    pub hosts: u32,
    /// Most of them out of service at once.
    pub max_out: u32,
    /// Out of service now.
    pub out_now: u32,
    /// When the first of them went out of service.
    pub first_start: Option<Duration>,
    /// When the last of them came back.
    pub last_done: Option<Duration>,
}

/// What the agents saw of one deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutReport {
    /// The deploy id.
    pub deploy_id: String,
    /// When the first host took its PRE_DOWNLOAD goal (time since the fleet started).
    pub first_start: Option<Duration>,
    /// When the last host to finish took its SERVING_BUILD goal.
    pub last_done: Option<Duration>,
    /// Hosts that started it (first deploys included).
    pub hosts_started: u32,
    /// Hosts it took out of service (they served a build when they started).
    pub hosts_taken_out: u32,
    /// Of those, hosts whose goal said `firstDeploy`: the server let them skip the cap
    /// although they served a build.
    pub hosts_taken_out_as_first: u32,
    /// Hosts that reached SERVING_BUILD.
    pub hosts_done: u32,
    /// Hosts that left it unfinished (a newer deploy, or DELETE).
    pub hosts_abandoned: u32,
    /// Hosts out of service for it now.
    pub out_now: u32,
    /// The most hosts out of service for it at the same moment: the cap check.
    pub max_out: u32,
    /// Per tag value, sorted by key and value.
    pub tags: Vec<TagReport>,
    /// Per tag key, its values in the order their first host went out of service.
    pub tag_order: Vec<(String, Vec<String>)>,
}

impl RolloutBook {
    /// A book for hosts `0..host_tags.len()` with these tags.
    pub fn new(host_tags: Vec<Tags>) -> RolloutBook {
        RolloutBook { host_tags, ..RolloutBook::default() }
    }

    fn tally(&mut self, deploy: &Arc<str>) -> &mut Tally {
        if !self.deploys.contains_key(deploy) {
            self.order.push(deploy.clone());
        }
        self.deploys.entry(deploy.clone()).or_default()
    }

    fn close(&mut self, at: Duration, host: u32, open: Open, done: bool) {
        let tags = self.host_tags.get(host as usize).cloned().unwrap_or_default();
        let t = self.tally(&open.deploy);
        if done {
            t.done += 1;
            t.last_done = Some(at);
        } else {
            t.abandoned += 1;
        }
        if open.counted {
            t.out_now -= 1;
            for tag in tags {
                if let Some(tt) = t.tags.get_mut(&tag) {
                    tt.out_now -= 1;
                    if done {
                        tt.last_done = Some(at);
                    }
                }
            }
        }
    }

    /// `host` took the PRE_DOWNLOAD goal of `deploy` for `env`; `was_serving` says whether it
    /// served a build then, `first_deploy` whether the goal said `firstDeploy`. A repeat of the
    /// same deploy's start (a retried step) changes nothing.
    pub fn start(
        &mut self,
        at: Duration,
        host: u32,
        env: &Arc<str>,
        deploy: &Arc<str>,
        was_serving: bool,
        first_deploy: bool,
    ) {
        let key = (host, env.clone());
        match self.open.remove(&key) {
            Some(o) if o.deploy == *deploy => {
                self.open.insert(key, o);
                return;
            }
            Some(o) => self.close(at, host, o, false),
            None => {}
        }
        let tags = self.host_tags.get(host as usize).cloned().unwrap_or_default();
        let t = self.tally(deploy);
        t.started += 1;
        t.first_start.get_or_insert(at);
        if was_serving {
            t.taken_out += 1;
            t.taken_out_as_first += first_deploy as u32;
            t.out_now += 1;
            t.max_out = t.max_out.max(t.out_now);
            for tag in tags {
                if !t.tags.contains_key(&tag) {
                    t.tag_order.push(tag.clone());
                }
                let tt = t.tags.entry(tag).or_default();
                tt.hosts += 1;
                tt.out_now += 1;
                tt.max_out = tt.max_out.max(tt.out_now);
                tt.first_start.get_or_insert(at);
            }
        }
        self.open.insert(key, Open { deploy: deploy.clone(), counted: was_serving });
    }

    /// `host` took the SERVING_BUILD goal of `deploy` for `env`: back in service.
    pub fn back(&mut self, at: Duration, host: u32, env: &Arc<str>, deploy: &Arc<str>) {
        let key = (host, env.clone());
        match self.open.remove(&key) {
            Some(o) if o.deploy == *deploy => self.close(at, host, o, true),
            Some(o) => {
                self.open.insert(key, o);
            }
            None => {}
        }
    }

    /// `host` forgot `env` (a DELETE goal): an open interval ends unfinished.
    pub fn leave(&mut self, at: Duration, host: u32, env: &Arc<str>) {
        if let Some(o) = self.open.remove(&(host, env.clone())) {
            self.close(at, host, o, false);
        }
    }

    /// Deploys in the order they were first seen.
    pub fn reports(&self) -> Vec<RolloutReport> {
        self.order.iter().filter_map(|d| self.report(d)).collect()
    }

    /// One deploy's figures.
    pub fn report(&self, deploy: &str) -> Option<RolloutReport> {
        let t = self.deploys.get(deploy)?;
        let mut tag_order: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in &t.tag_order {
            match tag_order.iter_mut().find(|(key, _)| key.as_str() == &**k) {
                Some((_, values)) => values.push(v.to_string()),
                None => tag_order.push((k.to_string(), vec![v.to_string()])),
            }
        }
        tag_order.sort_by(|a, b| a.0.cmp(&b.0));
        Some(RolloutReport {
            deploy_id: deploy.to_string(),
            first_start: t.first_start,
            last_done: t.last_done,
            hosts_started: t.started,
            hosts_taken_out: t.taken_out,
            hosts_taken_out_as_first: t.taken_out_as_first,
            hosts_done: t.done,
            hosts_abandoned: t.abandoned,
            out_now: t.out_now,
            max_out: t.max_out,
            tags: t
                .tags
                .iter()
                .map(|((k, v), tt)| TagReport {
                    key: k.to_string(),
                    value: v.to_string(),
                    hosts: tt.hosts,
                    max_out: tt.max_out,
                    out_now: tt.out_now,
                    first_start: tt.first_start,
                    last_done: tt.last_done,
                })
                .collect(),
            tag_order,
        })
    }

    /// Deploys seen.
    pub fn deploys(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Arc<str> {
        Arc::from(v)
    }

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Hosts 0 and 2 in zone a, host 1 in zone b.
    fn book() -> RolloutBook {
        let zone = |z: &str| vec![(s("zone"), s(z))];
        RolloutBook::new(vec![zone("a"), zone("b"), zone("a")])
    }

    #[test]
    fn first_deploys_are_never_out_of_service() {
        let (mut b, env, d1) = (book(), s("web"), s("d1"));
        for h in 0..3 {
            b.start(at(h as u64), h, &env, &d1, false, false);
        }
        for h in 0..3 {
            b.back(at(10 + h as u64), h, &env, &d1);
        }
        let r = b.report("d1").unwrap();
        assert_eq!((r.hosts_started, r.hosts_taken_out, r.hosts_done, r.max_out), (3, 0, 3, 0));
        assert_eq!((r.first_start, r.last_done), (Some(at(0)), Some(at(12))));
        assert!(r.tags.is_empty() && r.tag_order.is_empty());
    }

    #[test]
    fn overlapping_intervals_give_the_most_out_at_once() {
        let (mut b, env, d2) = (book(), s("web"), s("d2"));
        b.start(at(10), 0, &env, &d2, true, false);
        b.start(at(11), 1, &env, &d2, true, false);
        b.start(at(12), 0, &env, &d2, true, false); // a retried PRE_DOWNLOAD: still one interval
        b.back(at(13), 0, &env, &d2);
        b.start(at(14), 2, &env, &d2, true, false); // starts as host 0 is back: 2 out, not 3
        b.back(at(15), 1, &env, &d2);
        let mid = b.report("d2").unwrap();
        assert_eq!((mid.out_now, mid.max_out, mid.hosts_done), (1, 2, 2));
        b.back(at(16), 2, &env, &d2);
        let r = b.report("d2").unwrap();
        assert_eq!((r.hosts_started, r.hosts_taken_out, r.hosts_done, r.out_now, r.max_out), (3, 3, 3, 0, 2));
        assert_eq!((r.first_start, r.last_done), (Some(at(10)), Some(at(16))));
        let zones: Vec<(&str, u32, u32)> = r.tags.iter().map(|t| (t.value.as_str(), t.hosts, t.max_out)).collect();
        assert_eq!(zones, [("a", 2, 1), ("b", 1, 1)], "zone a's intervals [10,13] and [14,16] never overlap");
        assert_eq!(r.tag_order, [("zone".to_string(), vec!["a".to_string(), "b".to_string()])]);
        assert_eq!(r.tags[0].last_done, Some(at(16)));
    }

    #[test]
    fn three_at_once_and_a_tag_value_counted_twice() {
        let (mut b, env, d) = (book(), s("web"), s("d"));
        b.start(at(1), 1, &env, &d, true, false);
        b.start(at(2), 0, &env, &d, true, false);
        b.start(at(3), 2, &env, &d, true, true);
        let r = b.report("d").unwrap();
        assert_eq!(r.max_out, 3);
        assert_eq!(r.hosts_taken_out_as_first, 1, "a serving host the server called a first deploy");
        assert_eq!(r.tags[0].max_out, 2, "hosts 0 and 2 of zone a out together");
        assert_eq!(r.tag_order[0].1, ["b", "a"]);
    }

    #[test]
    fn turning_to_a_newer_deploy_or_forgetting_ends_the_interval_unfinished() {
        let (mut b, env, d3, d4) = (book(), s("web"), s("d3"), s("d4"));
        b.start(at(1), 0, &env, &d3, true, false);
        b.start(at(2), 0, &env, &d4, true, false);
        b.start(at(3), 1, &env, &d4, true, false);
        b.back(at(4), 1, &env, &d3); // not the deploy it works on: ignored
        let r3 = b.report("d3").unwrap();
        assert_eq!((r3.out_now, r3.max_out, r3.hosts_abandoned, r3.hosts_done), (0, 1, 1, 0));
        assert_eq!(b.report("d4").unwrap().out_now, 2);
        b.leave(at(5), 1, &env);
        b.leave(at(6), 2, &env); // nothing open: nothing to do
        let r4 = b.report("d4").unwrap();
        assert_eq!((r4.out_now, r4.max_out, r4.hosts_abandoned), (1, 2, 1));
        let other_env = s("api");
        b.start(at(7), 0, &other_env, &d4, true, false);
        assert_eq!(b.report("d4").unwrap().out_now, 2, "environments of one host count apart");
        assert_eq!(b.reports().iter().map(|r| r.deploy_id.as_str()).collect::<Vec<_>>(), ["d3", "d4"]);
        assert_eq!(b.deploys(), 2);
    }
}
