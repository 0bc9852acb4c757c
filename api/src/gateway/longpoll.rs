//! Long-poll: a ping with nothing to do may wait (up to `waitSeconds`) until something that
//! could change its answer happens: its record changed (an admission, a user action), one of
//! its stages changed (a new deploy, a resume), or the gateway reloaded. Waiters are woken per
//! host or per stage, never all at once on every change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use schema::*;
use tokio::sync::Notify;

struct Waiter {
    notify: Arc<Notify>,
    stages: Vec<EnvId>,
    token: u64,
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
    /// Registers a waiting ping of `host`, which belongs to `stages`. Register before deciding
    /// the answer: a change that lands in between is kept and wakes the wait at once.
    pub fn register(&self, host: &HostId, stages: Vec<EnvId>) -> Registration<'_> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let waiter = Waiter { notify: notify.clone(), stages, token };
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

    /// Wakes the waiting pings of the hosts of a stage.
    pub fn wake_stage(&self, env_id: &EnvId) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for w in waiters.values().filter(|w| w.stages.contains(env_id)) {
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

    #[tokio::test]
    async fn a_change_before_the_wait_is_not_lost() {
        let polls = LongPoll::default();
        let r = polls.register(&host("h1"), vec![env("e1")]);
        polls.wake_hosts([&host("h1")]);
        tokio::time::timeout(std::time::Duration::from_secs(5), r.changed()).await.expect("woken");
    }

    #[tokio::test]
    async fn stage_changes_wake_only_that_stages_hosts() {
        let polls = LongPoll::default();
        let a = polls.register(&host("a"), vec![env("e1")]);
        let b = polls.register(&host("b"), vec![env("e2")]);
        polls.wake_stage(&env("e1"));
        tokio::time::timeout(std::time::Duration::from_secs(5), a.changed()).await.expect("a woken");
        let not_woken = tokio::time::timeout(std::time::Duration::from_millis(20), b.changed()).await;
        assert!(not_woken.is_err(), "b belongs to another stage");
    }

    #[test]
    fn a_registration_unregisters_when_dropped_unless_replaced() {
        let polls = LongPoll::default();
        let first = polls.register(&host("h"), vec![]);
        let second = polls.register(&host("h"), vec![]);
        drop(first);
        assert_eq!(polls.len(), 1, "the newer registration stays");
        drop(second);
        assert!(polls.is_empty());
    }
}
