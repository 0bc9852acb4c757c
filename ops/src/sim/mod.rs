//! The fleet simulator: N virtual agents in one process speaking the real agent protocol
//! (`POST <gateway>/v1/system/ping`) to a gateway, for rollout tests and scale benchmarks.
//!
//! Each virtual agent behaves like `teletraan-agent` without touching the disk: it keeps the
//! status of each environment, runs the goal's step (a pause of the configured duration, then
//! success or failure by the [`FailurePlan`]), reports every environment in every ping, pings
//! again at once with a result, and sleeps its interval (with jitter) after a NOOP. Thousands
//! of agents share one pooled HTTP client and run as one tokio task each.
//!
//! What the fleet observes: per-host snapshots, a bounded timeline, counters and ping latency,
//! and — the point of it — the cap invariant from the agents' side ([`RolloutReport::max_out`],
//! see [`rollout`] for the exact definition). `teletraan sim` ([`cli`]) runs a fleet from the
//! command line.
//!
//! It never panics on what a gateway answers: bad answers are counted and retried later.
#![warn(missing_docs)]

mod agent;
pub mod cli;
mod config;
mod fleet;
mod host;
mod observe;
mod prng;
pub mod rollout;
mod stats;

pub use config::{FailurePlan, HostSpec, STAGES, SimConfig, StageMap, WORK_STAGES, numbered_hosts};
pub use fleet::{Fleet, HostSnapshot, SimError, StageCounts};
pub use host::EnvStatus;
pub use observe::{Event, EventKind};
pub use prng::{SplitMix64, mix};
pub use rollout::{RolloutBook, RolloutReport, TagReport};
pub use stats::{CounterSnapshot, LatencyHistogram};
