//! `schema`: the domain of the deploy system as plain data and pure functions.
//!
//! This crate holds the identifiers, enumerations and JSON shapes that the API, the gateway,
//! the workers and the agent share (Teletraan-compatible camelCase JSON), the messages that
//! travel over RabbitMQ, and the rollout rules themselves: the per-host stage sequence, the
//! goal decision for a ping, admission under the parallelism caps, and the deploy state
//! machine.
//!
//! It must never do IO: no tokio, no database, no broker, no HTTP. Time and randomness come in
//! as arguments to the rules (reading the clock, `time::now_ms`, and generating ids are for
//! their callers, and are kept out of the rules). A test in
//! `ops` reads `cargo metadata` and fails if this crate gains such a dependency.

pub mod artifact;
pub mod bus;
pub mod enums;
pub mod ids;
pub mod model;
pub mod partition;
pub mod ping;
pub mod rules;
pub mod time;

pub use enums::*;
pub use ids::*;
