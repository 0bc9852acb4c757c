//! Membership of the worker pool, and the report partitions it gives this worker.
//!
//! Every [`HEARTBEAT`] a worker writes its row in Postgres and reads who else wrote within
//! [`LEASE`]; from that list each computes the same share-out (`schema::partition::assigned`)
//! and consumes its own partitions (`bus::consume_partitions`). A worker that stops deletes its
//! row, so the others take its partitions at the next heartbeat; one that dies is dropped when
//! its lease runs out. Views may differ for a moment (one worker has seen a newcomer, another
//! not yet): the broker still lets one consumer at a time take a partition's messages, so this
//! only delays a hand-over, never doubles one.
//!
//! A worker that cannot reach Postgres for longer than a lease lets go of its partitions: the
//! others count it gone, and it could not store their reports anyway.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use schema::partition;
use store::Store;
use tokio::sync::watch;

/// How often a worker says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long after its last heartbeat a worker counts as gone.
pub const LEASE: Duration = Duration::from_secs(6);

/// Keeps `name`'s membership and sends its partitions on `assigned` until `shutdown` turns
/// true; then leaves the pool. `heartbeat` and `lease` are [`HEARTBEAT`] and [`LEASE`] except in
/// tests.
pub async fn run(
    store: Store,
    name: String,
    assigned: watch::Sender<BTreeSet<u16>>,
    heartbeat: Duration,
    lease: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_ok = Instant::now();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let share = match store.worker_heartbeat(&name, lease).await {
            Ok(members) => {
                last_ok = Instant::now();
                Some(partition::assigned(&members, &name).into_iter().collect::<BTreeSet<u16>>())
            }
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, "worker heartbeat failed");
                // Past a lease without Postgres the others have taken over: let go.
                (last_ok.elapsed() > lease).then(BTreeSet::new)
            }
        };
        if let Some(share) = share {
            assigned.send_if_modified(|held| {
                if *held == share {
                    return false;
                }
                tracing::info!(worker = %name, partitions = ?share, "report partitions assigned");
                *held = share;
                true
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(heartbeat) => {}
            _ = shutdown.changed() => {}
        }
    }
    assigned.send_replace(BTreeSet::new());
    if let Err(e) = store.worker_leave(&name).await {
        tracing::warn!(worker = %name, error = %e, "could not leave the worker pool; its lease will run out");
    }
}
