//! The worker processes alive, for sharing the report partitions out (`schema::partition`).
//! Postgres's clock decides who counts as alive, so workers on machines whose clocks differ
//! still agree.

use std::time::Duration;

use crate::rows::get;
use crate::{Result, Store};

impl Store {
    /// Records that worker `name` is alive now and returns the workers seen within `lease`,
    /// `name` included; deletes the rows of workers gone for an hour.
    pub async fn worker_heartbeat(&self, name: &str, lease: Duration) -> Result<Vec<String>> {
        let client = self.client().await?;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        // The statement's snapshot does not see the row it inserts, hence the union.
        let rows = client
            .query(
                "WITH me AS (
                     INSERT INTO workers (name, seen_at) VALUES ($1, now())
                     ON CONFLICT (name) DO UPDATE SET seen_at = now()
                     RETURNING name
                 ), gone AS (
                     DELETE FROM workers WHERE seen_at < now() - interval '1 hour' AND name <> $1
                 )
                 SELECT name FROM workers WHERE seen_at > now() - $2 * interval '1 millisecond' AND name <> $1
                 UNION SELECT name FROM me
                 ORDER BY name",
                &[&name, &(lease_ms as f64)],
            )
            .await?;
        rows.iter().map(|r| get(r, "name")).collect()
    }

    /// Removes worker `name` at once (it is stopping), so the others take its share without
    /// waiting for its lease to end.
    pub async fn worker_leave(&self, name: &str) -> Result<()> {
        let client = self.client().await?;
        client.execute("DELETE FROM workers WHERE name = $1", &[&name]).await?;
        Ok(())
    }
}
