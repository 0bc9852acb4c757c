//! What `/metrics` reads at scrape time: the fleet as Postgres holds it, in three grouped
//! queries (a few rows each, however many hosts).

use std::time::Duration;

use schema::time::EpochMs;

use crate::rows::{get, ts};
use crate::{Result, Store};

/// The fleet in numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetGauges {
    /// Stages' current deploys by state: (state, count).
    pub deploys: Vec<(String, i64)>,
    /// Agent records by stage and agent state: (env, stage, state, count).
    pub hosts: Vec<(String, String, String, i64)>,
    /// Hosts whose last ping is older than the `unseen_after` given.
    pub unseen: i64,
    /// Stages.
    pub stages: i64,
}

impl Store {
    /// Reads the fleet's gauges; hosts silent for longer than `unseen_after` count as unseen.
    pub async fn fleet_gauges(&self, now: EpochMs, unseen_after: Duration) -> Result<FleetGauges> {
        let client = self.client().await?;
        let deploys = client
            .query(
                "SELECT d.state, count(*) AS n FROM environs e JOIN deploys d ON d.deploy_id = e.deploy_id
                 GROUP BY d.state ORDER BY d.state",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((get(r, "state")?, get(r, "n")?)))
            .collect::<Result<_>>()?;
        let hosts = client
            .query(
                "SELECT e.env_name, e.stage_name, a.state, count(*) AS n FROM agents a JOIN environs e ON e.env_id = a.env_id
                 GROUP BY e.env_name, e.stage_name, a.state ORDER BY 1, 2, 3",
                &[],
            )
            .await?
            .iter()
            .map(|r| Ok((get(r, "env_name")?, get(r, "stage_name")?, get(r, "state")?, get(r, "n")?)))
            .collect::<Result<_>>()?;
        let cutoff = ts(now - unseen_after.as_millis() as EpochMs);
        let unseen: i64 =
            client.query_one("SELECT count(*) FROM host_heartbeats WHERE last_seen < $1", &[&cutoff]).await?.get(0);
        let stages: i64 = client.query_one("SELECT count(*) FROM environs", &[]).await?.get(0);
        Ok(FleetGauges { deploys, hosts, unseen, stages })
    }
}
