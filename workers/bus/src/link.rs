//! A broker connection shared by concurrent callers without a lock around its use.
//!
//! The current connection sits in a cell whose lock is held only to clone an `Arc` (never
//! across an `await`), so any number of publishes run on a healthy connection at once. When
//! it is missing or broken, one caller at a time opens a new one; the others wait for it a
//! bounded time and then use what it opened, or fail with [`BusError::Unavailable`].

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::connection::BusError;

/// Something opened on the broker that can tell whether it still works.
pub(crate) trait Healthy {
    /// Whether it can still be used (the connection and its channel are open).
    fn healthy(&self) -> bool;
}

/// The current connection of a publisher or command client.
pub(crate) struct Shared<T> {
    current: RwLock<Option<Arc<T>>>,
    opening: tokio::sync::Mutex<()>,
}

impl<T: Healthy> Shared<T> {
    /// Nothing opened yet.
    pub(crate) fn new() -> Self {
        Shared { current: RwLock::new(None), opening: tokio::sync::Mutex::new(()) }
    }

    /// The current connection when it is healthy; takes no lock beyond the clone.
    pub(crate) fn healthy(&self) -> Option<Arc<T>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|link| link.healthy()).cloned()
    }

    /// The current connection, or a new one opened by `open` when there is none that works.
    /// Only one caller opens at a time; a caller that waited longer than `wait` for another
    /// one's attempt fails with [`BusError::Unavailable`] rather than queue up without bound.
    pub(crate) async fn get<F, Fut>(&self, wait: Duration, open: F) -> Result<Arc<T>, BusError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, BusError>>,
    {
        if let Some(link) = self.healthy() {
            return Ok(link);
        }
        let _turn = tokio::time::timeout(wait, self.opening.lock()).await.map_err(|_| {
            BusError::Unavailable(format!("still reconnecting to the broker after {wait:?}; try again"))
        })?;
        // Whoever held the turn before may have opened one meanwhile.
        if let Some(link) = self.healthy() {
            return Ok(link);
        }
        let link = Arc::new(open().await?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(link.clone());
        Ok(link)
    }

    /// Forgets `broken` (when it is still the current one: a newer connection stays), so the
    /// next caller opens another. It closes when its last user drops it.
    pub(crate) fn discard(&self, broken: &Arc<T>) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            *current = None;
        }
    }

    /// Holds the turn to open, as a caller stuck connecting would (tests only).
    #[cfg(test)]
    pub(crate) async fn hold_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.opening.lock().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures_util::FutureExt;

    use super::*;

    struct Fake {
        id: usize,
        up: AtomicBool,
    }

    impl Healthy for Fake {
        fn healthy(&self) -> bool {
            self.up.load(Ordering::Acquire)
        }
    }

    async fn opener(counter: &AtomicUsize) -> Result<Fake, BusError> {
        Ok(Fake { id: counter.fetch_add(1, Ordering::AcqRel), up: AtomicBool::new(true) })
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_healthy_connection_is_shared_without_waiting_for_anyone() {
        let shared = Shared::<Fake>::new();
        let opened = AtomicUsize::new(0);
        let first = shared.get(WAIT, || opener(&opened)).await.unwrap();
        // Another caller is stuck reconnecting: users of the healthy connection do not care,
        // they get it without awaiting anything.
        let _stuck = shared.hold_turn().await;
        let again = shared.get(WAIT, || opener(&opened)).now_or_never().expect("no wait").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(opened.load(Ordering::Acquire), 1);
    }

    #[tokio::test]
    async fn a_broken_connection_is_replaced_once_whatever_the_callers() {
        let shared = Shared::<Fake>::new();
        let opened = AtomicUsize::new(0);
        let first = shared.get(WAIT, || opener(&opened)).await.unwrap();
        first.up.store(false, Ordering::Release);
        let callers = (0..8).map(|_| shared.get(WAIT, || opener(&opened)));
        let links = futures_util::future::join_all(callers).await;
        let ids: Vec<usize> = links.into_iter().map(|l| l.unwrap().id).collect();
        assert_eq!(ids, vec![1; 8], "every caller got the one new connection");
        assert_eq!(opened.load(Ordering::Acquire), 2);
    }

    #[tokio::test]
    async fn discarding_a_stale_connection_keeps_the_newer_one() {
        let shared = Shared::<Fake>::new();
        let opened = AtomicUsize::new(0);
        let old = shared.get(WAIT, || opener(&opened)).await.unwrap();
        shared.discard(&old);
        let new = shared.get(WAIT, || opener(&opened)).await.unwrap();
        // A caller that still held the old one reports it broken late.
        shared.discard(&old);
        assert!(Arc::ptr_eq(&shared.healthy().expect("the new one stays"), &new));
    }

    #[tokio::test]
    async fn a_caller_gives_up_when_another_one_is_stuck_connecting() {
        let shared = Shared::<Fake>::new();
        let opened = AtomicUsize::new(0);
        let _stuck = shared.hold_turn().await;
        let e = shared.get(Duration::from_millis(50), || opener(&opened)).await.err().expect("unavailable");
        assert!(matches!(e, BusError::Unavailable(_)), "{e:?}");
        assert_eq!(opened.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_failed_attempt_leaves_the_next_caller_free_to_try() {
        let shared = Shared::<Fake>::new();
        let opened = AtomicUsize::new(0);
        let e = shared.get(WAIT, || async { Err(BusError::Unavailable("refused".into())) }).await.err();
        assert!(matches!(e, Some(BusError::Unavailable(_))));
        assert!(shared.get(WAIT, || opener(&opened)).await.is_ok());
    }
}
