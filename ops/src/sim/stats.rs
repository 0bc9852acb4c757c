//! Counters of a run and a lock-free latency histogram of ping round trips.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: 8, so a reported percentile is within 12.5% of the truth.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this many microseconds get a bucket each.
const LINEAR: u64 = 2 * SUB;
/// Longest latency told apart: 2^36 µs (about 19 hours); longer ones share the last bucket.
const MAX_OCTAVE: u32 = 36;
const BUCKETS: usize = (LINEAR + (MAX_OCTAVE as u64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// Log-linear histogram of durations in microseconds (the HDR idea at 3 bits of precision):
/// fixed memory, `record` is one atomic add.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let octave = (63 - us.leading_zeros()).min(MAX_OCTAVE - 1);
    let us = us.min((1 << MAX_OCTAVE) - 1);
    let sub = (us >> (octave - SUB_BITS)) & (SUB - 1);
    (LINEAR + (octave as u64 - SUB_BITS as u64 - 1) * SUB + sub) as usize
}

/// The largest value (µs) that falls in bucket `i`.
fn bucket_top(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let octave = (i - LINEAR) / SUB + SUB_BITS as u64 + 1;
    let sub = (i - LINEAR) % SUB;
    let width = 1u64 << (octave - SUB_BITS as u64);
    (SUB + sub) * width + width - 1
}

impl LatencyHistogram {
    /// Counts one duration.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The duration below which a fraction `q` (0–1) of the counted ones fall (the top of its
    /// bucket); `None` when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(bucket_top(i)));
            }
        }
        Some(Duration::from_micros(bucket_top(BUCKETS - 1)))
    }
}

/// The counters a fleet keeps while it runs.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub pings: AtomicU64,
    pub goals: AtomicU64,
    pub noops: AtomicU64,
    pub deletes: AtomicU64,
    pub steps: AtomicU64,
    pub failed_steps: AtomicU64,
    pub errors: AtomicU64,
    pub latency: LatencyHistogram,
    pub last_error: Mutex<Option<String>>,
}

impl Counters {
    pub fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self, message: String) {
        Counters::add(&self.errors);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            pings: get(&self.pings),
            goals: get(&self.goals),
            noops: get(&self.noops),
            deletes: get(&self.deletes),
            steps: get(&self.steps),
            failed_steps: get(&self.failed_steps),
            errors: get(&self.errors),
            ping_p50: self.latency.quantile(0.50),
            ping_p99: self.latency.quantile(0.99),
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// The counters of a fleet at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Pings sent (answered or not).
    pub pings: u64,
    /// Answers that carried a goal (DELETE included).
    pub goals: u64,
    /// NOOP answers.
    pub noops: u64,
    /// DELETE goals obeyed.
    pub deletes: u64,
    /// Steps executed.
    pub steps: u64,
    /// Steps that failed (SCRIPT_FAILED or TOO_MANY_RETRY).
    pub failed_steps: u64,
    /// Pings that failed: transport errors, answers above 300, undecodable answers.
    pub errors: u64,
    /// Median round trip of answered pings.
    pub ping_p50: Option<Duration>,
    /// 99th percentile round trip of answered pings.
    pub ping_p99: Option<Duration>,
    /// The last ping error, if any.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_hold_their_values() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 30, (1 << 36) - 1]) {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            assert!(bucket_top(b) >= us, "{us} above the top of its bucket {b}");
            assert!(b == 0 || bucket_top(b - 1) < us, "{us} belongs to an earlier bucket");
            last = b;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_an_eighth() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in 1..=1000 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.quantile(0.5).unwrap().as_micros() as f64;
        let p99 = h.quantile(0.99).unwrap().as_micros() as f64;
        assert!((500.0..=562.5).contains(&p50), "{p50}");
        assert!((990.0..=1114.0).contains(&p99), "{p99}");
        assert_eq!(h.quantile(0.0), Some(Duration::from_micros(1)));
    }
}
