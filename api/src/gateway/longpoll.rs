//! Long-poll: a ping with nothing to do may wait (up to `waitSeconds`) until something that
//! could change its answer happens: its record changed (an admission, a user action), one of
//! its stages changed (a new deploy, a resume), a stage took it in by its name or one of its
//! groups (capacity added, a stage created), or the gateway reloaded. Waiters are woken per
//! host or per stage, never all at once on every change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use schema::{EnvId, GroupName, HostId, HostName};
use tokio::sync::Notify;

struct Waiter {
    notify: Arc<Notify>,
    stages: Vec<EnvId>,
    name: HostName,
    groups: Vec<GroupName>,
    token: u64,
}

/// Who a stage covers: its id and capacity, before and after a change.
pub struct StageReach<'a> {
    /// The stage.
    pub env_id: &'a EnvId,
    /// Host names of its capacity.
    pub hosts: Vec<&'a HostName>,
    /// Groups of its capacity.
    pub groups: Vec<&'a GroupName>,
}

/// The pings waiting for their goal to change.
#[derive(Default)]
pub struct LongPoll {
    waiters: Mutex<HashMap<HostId, Waiter>>,
    next: AtomicU64,
}

/// A registered waiter; it unregisters when dropped.
pub struct Registration<'a> {
    polls: &'a LongPoll,
    host: HostId,
    token: u64,
    notify: Arc<Notify>,
}

impl Registration<'_> {
    /// Resolves when the host's goal may have changed.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiters = self.polls.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.get(&self.host).is_some_and(|w| w.token == self.token) {
            waiters.remove(&self.host);
        }
    }
}

impl LongPoll {
    /// Registers a waiting ping of `host` (named `name`, in `groups`), which belongs to
    /// `stages`. Register before deciding the answer: a change that lands in between is kept
    /// and wakes the wait at once.
    pub fn register(
        &self,
        host: &HostId,
        stages: Vec<EnvId>,
        name: HostName,
        groups: Vec<GroupName>,
    ) -> Registration<'_> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let waiter = Waiter { notify: notify.clone(), stages, name, groups, token };
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(host.clone(), waiter);
        Registration { polls: self, host: host.clone(), token, notify }
    }

    /// Wakes the waiting pings of these hosts.
    pub fn wake_hosts<'h>(&self, hosts: impl IntoIterator<Item = &'h HostId>) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.is_empty() {
            return;
        }
        for h in hosts {
            if let Some(w) = waiters.get(h) {
                w.notify.notify_one();
            }
        }
    }

    /// Wakes the waiting pings of the hosts a stage covers: those that belonged to it when
    /// they arrived, and those its capacity names (by host name or group), which may have
    /// just joined it.
    pub fn wake_stage(&self, reach: &StageReach<'_>) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let covered = |w: &Waiter| {
            w.stages.contains(reach.env_id)
                || reach.hosts.contains(&&w.name)
                || w.groups.iter().any(|g| reach.groups.contains(&g))
        };
        for w in waiters.values().filter(|w| covered(w)) {
            w.notify.notify_one();
        }
    }

    /// Wakes every waiting ping.
    pub fn wake_all(&self) {
        for w in self.waiters.lock().unwrap_or_else(|p| p.into_inner()).values() {
            w.notify.notify_one();
        }
    }

    /// Pings waiting now.
    pub fn len(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no ping waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> HostId {
        HostId::parse(s).unwrap()
    }

    fn env(s: &str) -> EnvId {
        EnvId::parse(s).unwrap()
    }

    fn name(s: &str) -> HostName {
        HostName::parse(s).unwrap()
    }

    fn group(s: &str) -> GroupName {
        GroupName::parse(s).unwrap()
    }

    fn reach(env_id: &EnvId) -> StageReach<'_> {
        StageReach { env_id, hosts: vec![], groups: vec![] }
    }

    async fn woken(r: &Registration<'_>) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(50), r.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn a_change_before_the_wait_is_not_lost() {
        let polls = LongPoll::default();
        let r = polls.register(&host("h1"), vec![env("e1")], name("h1"), vec![]);
        polls.wake_hosts([&host("h1")]);
        tokio::time::timeout(std::time::Duration::from_secs(5), r.changed()).await.expect("woken");
    }

    #[tokio::test]
    async fn stage_changes_wake_only_that_stages_hosts() {
        let polls = LongPoll::default();
        let a = polls.register(&host("a"), vec![env("e1")], name("a"), vec![group("g1")]);
        let b = polls.register(&host("b"), vec![env("e2")], name("b"), vec![group("g2")]);
        polls.wake_stage(&reach(&env("e1")));
        assert!(woken(&a).await);
        assert!(!woken(&b).await, "b belongs to another stage");
    }

    #[tokio::test]
    async fn a_stage_that_takes_a_host_in_wakes_it() {
        let polls = LongPoll::default();
        let by_group = polls.register(&host("a"), vec![], name("a"), vec![group("g1"), group("g2")]);
        let by_name = polls.register(&host("b"), vec![], name("b"), vec![group("g3")]);
        let other = polls.register(&host("c"), vec![], name("c"), vec![group("g3")]);
        let (e, g2, b) = (env("new"), group("g2"), name("b"));
        polls.wake_stage(&StageReach { env_id: &e, hosts: vec![&b], groups: vec![&g2] });
        assert!(woken(&by_group).await, "one of its groups is now capacity");
        assert!(woken(&by_name).await, "its name is now capacity");
        assert!(!woken(&other).await, "not covered");
    }

    #[test]
    fn a_registration_unregisters_when_dropped_unless_replaced() {
        let polls = LongPoll::default();
        let first = polls.register(&host("h"), vec![], name("h"), vec![]);
        let second = polls.register(&host("h"), vec![], name("h"), vec![]);
        drop(first);
        assert_eq!(polls.len(), 1, "the newer registration stays");
        drop(second);
        assert!(polls.is_empty());
    }
}
