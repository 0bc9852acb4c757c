//! `bus`: everything that talks to RabbitMQ, shared by the API, the gateway and the workers.
//!
//! The topology of DESIGN §4 under a namespace prefix ([`topology`]), connections that come
//! back with backoff and a timeout on every exchange with the broker ([`connection`]), a
//! publisher that waits for publisher confirms and lets concurrent publishes share its
//! connection without a lock around them ([`publish`]), the consumer loop of a work queue
//! with manual acks, delayed retries and dead-lettering ([`consume`]), a watcher of dead
//! letters so what they stood for ends in a final state ([`dead`]), and commands with
//! replies on RabbitMQ's direct reply-to ([`rpc`]).
//!
//! This crate must never touch Postgres and never hold domain rules: it moves bytes with the
//! guarantees the design asks for; what they mean is for `schema` and the handlers.

pub mod connection;
pub mod consume;
pub mod dead;
mod link;
mod metrics;
pub mod partitioned;
pub mod publish;
pub mod rpc;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topology;

pub use connection::{BusError, backoff, connect, connect_with_retry, node_urls, within};
pub use consume::{DEAD_REASON_HEADER, DeliveryCtx, Disposition, Handler, MAX_ATTEMPTS, RETRY_DELAY, consume};
pub use dead::{DeadLetterHandler, watch_dead_letters};
pub use partitioned::{Assignment, consume_partitions};
pub use publish::{Outgoing, Publisher, json_props};
pub use topology::{
    BusConfig, DELAY, QueueDepth, WATCHED_DEAD_LETTERS, WorkQueue, declare_topology, delete_topology, queue_depths,
    watched_queues,
};
