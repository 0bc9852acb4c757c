//! Progress pings during long work, Teletraan's way: while a step runs (a hook, a download, an
//! extraction, the sleep between two attempts), the agent pings with status UNKNOWN every
//! `min_running_time`; when the answer's goal differs from the one being executed, the work is
//! dropped and the new goal is executed instead.

use std::future::Future;
use std::time::Duration;

use schema::ping::PingResponse;
use tokio::time::{Instant, sleep_until};

/// Asked while a step runs; answers `Some(new answer)` when the server changed the goal.
pub trait Progress {
    /// Pings with status UNKNOWN for the running step.
    fn ping(&mut self) -> impl Future<Output = Option<PingResponse>>;
}

/// A [`Progress`] that never pings (tests, and steps with nobody to ask).
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    async fn ping(&mut self) -> Option<PingResponse> {
        None
    }
}

/// When the next progress ping is due. One per step, shared by all its phases (attempts,
/// sleeps between them, download then extraction), so the cadence does not restart with each.
#[derive(Debug, Clone)]
pub struct Ticker {
    period: Duration,
    next: Instant,
}

impl Ticker {
    /// The first ping is due one `period` from now.
    pub fn new(period: Duration) -> Ticker {
        Ticker { period, next: Instant::now() + period }
    }
}

/// How watched work ended.
#[derive(Debug, PartialEq)]
pub enum Watched<T> {
    /// The work finished with this.
    Done(T),
    /// The server changed the goal; the work was dropped. Carries the new answer.
    Aborted(Box<PingResponse>),
}

/// Drives `work` to completion, pinging through `progress` each time `ticker` is due. The work
/// keeps running while a ping is in flight. When a ping reports a changed goal, `work` is
/// dropped (so it must be cancel-safe) and the new answer is returned.
pub async fn watch<F: Future, P: Progress>(work: F, ticker: &mut Ticker, progress: &mut P) -> Watched<F::Output> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Watched::Done(out),
            _ = sleep_until(ticker.next) => {}
        }
        let answer = {
            let ping = progress.ping();
            tokio::pin!(ping);
            tokio::select! {
                out = &mut work => return Watched::Done(out),
                answer = &mut ping => answer,
            }
        };
        ticker.next = Instant::now() + ticker.period;
        if let Some(next) = answer {
            return Watched::Aborted(Box::new(next));
        }
    }
}

/// Sleeps `delay` (between two attempts), pinging as [`watch`] does; `Some` when the goal
/// changed meanwhile.
pub async fn sleep<P: Progress>(delay: Duration, ticker: &mut Ticker, progress: &mut P) -> Option<Box<PingResponse>> {
    match watch(tokio::time::sleep(delay), ticker, progress).await {
        Watched::Done(()) => None,
        Watched::Aborted(next) => Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers "changed" on ping number `change_at` (1-based), counting pings.
    struct Scripted {
        pings: usize,
        change_at: usize,
    }

    impl Progress for Scripted {
        async fn ping(&mut self) -> Option<PingResponse> {
            self.pings += 1;
            (self.pings == self.change_at).then(PingResponse::noop)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn quick_work_finishes_without_a_ping() {
        let mut ticker = Ticker::new(Duration::from_secs(60));
        let mut p = Scripted { pings: 0, change_at: 1 };
        let out = watch(tokio::time::sleep(Duration::from_secs(59)), &mut ticker, &mut p).await;
        assert_eq!(out, Watched::Done(()));
        assert_eq!(p.pings, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn long_work_pings_every_period_and_goes_on_while_the_goal_holds() {
        let mut ticker = Ticker::new(Duration::from_secs(10));
        let mut p = Scripted { pings: 0, change_at: usize::MAX };
        let out = watch(
            async {
                tokio::time::sleep(Duration::from_secs(35)).await;
                7
            },
            &mut ticker,
            &mut p,
        )
        .await;
        assert_eq!(out, Watched::Done(7));
        assert_eq!(p.pings, 3, "at 10, 20 and 30 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_goal_drops_the_work() {
        let mut ticker = Ticker::new(Duration::from_secs(10));
        let mut p = Scripted { pings: 0, change_at: 2 };
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Flag(dropped.clone());
        let work = async move {
            let _flag = flag;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        };
        let out = watch(work, &mut ticker, &mut p).await;
        assert_eq!(out, Watched::Aborted(Box::new(PingResponse::noop())));
        assert_eq!(p.pings, 2);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst), "the work was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sleep_between_attempts_pings_and_can_be_aborted() {
        let mut ticker = Ticker::new(Duration::from_secs(5));
        let mut p = Scripted { pings: 0, change_at: usize::MAX };
        assert_eq!(sleep(Duration::from_secs(12), &mut ticker, &mut p).await, None);
        assert_eq!(p.pings, 2);
        let mut p = Scripted { pings: 0, change_at: 1 };
        let mut ticker = Ticker::new(Duration::from_secs(5));
        assert!(sleep(Duration::from_secs(600), &mut ticker, &mut p).await.is_some());
    }
}
