//! The log of changes to hosts' records (`agent_steps`, written by a trigger of migration 0015):
//! a deploy's hosts with their steps, page by page, and a host's deploys.

use schema::model::{AgentStep, DeploySteps, HostDeploy, HostSteps};
use schema::{DeployId, HostName};
use tokio_postgres::Row;

use schema::time::{EpochMs, secs};

use crate::rows::{get, get_id, get_ms, get_opt_id, get_parsed, ts};
use crate::{Result, Store};

const STEP_COLUMNS: &str =
    "seq, host_id, host_name, env_id, deploy_id, deploy_stage, state, status, err_no, operator, at";

fn step_from_row(r: &Row) -> Result<AgentStep> {
    Ok(AgentStep {
        seq: get(r, "seq")?,
        host_id: get_id(r, "host_id")?,
        host_name: get_id(r, "host_name")?,
        env_id: get_id(r, "env_id")?,
        deploy_id: get_id(r, "deploy_id")?,
        deploy_stage: get_parsed(r, "deploy_stage")?,
        state: get_parsed(r, "state")?,
        status: get_parsed(r, "status")?,
        err_no: get(r, "err_no")?,
        operator: get(r, "operator")?,
        date: get_ms(r, "at")?,
    })
}

impl Store {
    /// The hosts whose records named this deploy, `hosts` at a time by name after `after`,
    /// each with every change logged on the deploy.
    pub async fn deploy_steps(&self, deploy: &DeployId, after: Option<&HostName>, hosts: i64) -> Result<DeploySteps> {
        let client = self.client().await?;
        let after = after.map_or("", HostName::as_str);
        let rows = client
            .query(
                &format!(
                    "WITH page AS (SELECT DISTINCT host_name FROM agent_steps
                                   WHERE deploy_id = $1 AND host_name > $2 ORDER BY host_name LIMIT $3)
                     SELECT {STEP_COLUMNS} FROM agent_steps
                     WHERE deploy_id = $1 AND host_name IN (SELECT host_name FROM page)
                     ORDER BY host_name, seq"
                ),
                &[&deploy.as_str(), &after, &(hosts + 1)],
            )
            .await?;
        let total_hosts: i64 = client
            .query_one("SELECT count(DISTINCT host_name) FROM agent_steps WHERE deploy_id = $1", &[&deploy.as_str()])
            .await?
            .get(0);
        let mut page: Vec<HostSteps> = Vec::new();
        for r in &rows {
            let step = step_from_row(r)?;
            match page.last_mut() {
                Some(h) if h.host_name == step.host_name => h.steps.push(step),
                _ => page.push(HostSteps { host_name: step.host_name.clone(), steps: vec![step] }),
            }
        }
        let next = if page.len() as i64 > hosts {
            page.truncate(hosts.max(0) as usize);
            page.last().map(|h| h.host_name.clone())
        } else {
            None
        };
        Ok(DeploySteps { hosts: page, total_hosts, next })
    }

    /// The changes logged for the hosts of this name, newest first, at most `limit`, before
    /// `before` (a `seq`) when given.
    pub async fn host_steps(&self, host: &HostName, before: Option<i64>, limit: i64) -> Result<Vec<AgentStep>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {STEP_COLUMNS} FROM agent_steps WHERE host_name = $1 AND seq < $2
                     ORDER BY seq DESC LIMIT $3"
                ),
                &[&host.as_str(), &before.unwrap_or(i64::MAX), &limit],
            )
            .await?;
        rows.iter().map(step_from_row).collect()
    }

    /// The deploys the hosts of this name took part in, the latest first, at most `limit`.
    pub async fn host_deploys(&self, host: &HostName, limit: i64) -> Result<Vec<HostDeploy>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT s.deploy_id, s.env_id, d.build_id, min(s.at) AS first_at, max(s.at) AS last_at,
                     (array_agg(s.deploy_stage ORDER BY s.seq DESC))[1] AS last_stage,
                     (array_agg(s.status ORDER BY s.seq DESC))[1] AS last_status,
                     (array_agg(s.state ORDER BY s.seq DESC))[1] AS last_state,
                     count(*) FILTER (WHERE s.status NOT IN ('SUCCEEDED', 'UNKNOWN', 'ABORTED_BY_SERVICE')) AS failures
                 FROM agent_steps s LEFT JOIN deploys d ON d.deploy_id = s.deploy_id
                 WHERE s.host_name = $1
                 GROUP BY s.deploy_id, s.env_id, d.build_id
                 ORDER BY max(s.seq) DESC LIMIT $2",
                &[&host.as_str(), &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HostDeploy {
                    deploy_id: get_id(r, "deploy_id")?,
                    env_id: get_id(r, "env_id")?,
                    build_id: get_opt_id(r, "build_id")?,
                    first_date: get_ms(r, "first_at")?,
                    last_date: get_ms(r, "last_at")?,
                    last_stage: get_parsed(r, "last_stage")?,
                    last_status: get_parsed(r, "last_status")?,
                    last_state: get_parsed(r, "last_state")?,
                    failures: get(r, "failures")?,
                })
            })
            .collect()
    }

    /// Deletes the changes logged more than `days` ago, oldest first, at most `batch` per
    /// statement, until none is left or `stop()` says so. Returns how many went. The log is
    /// cut where the first change younger than the limit sits in log order, so a run costs
    /// the rows it deletes, not a scan of the log.
    pub async fn purge_steps(&self, now: EpochMs, days: i64, batch: i64, stop: impl Fn() -> bool) -> Result<u64> {
        let cutoff = ts(now - secs(days.saturating_mul(86_400)));
        let client = self.client().await?;
        let boundary: Option<i64> = client
            .query_opt("SELECT seq FROM agent_steps WHERE at >= $1 ORDER BY seq LIMIT 1", &[&cutoff])
            .await?
            .map(|r| r.get(0));
        let boundary = boundary.unwrap_or(i64::MAX);
        let mut deleted = 0;
        while !stop() {
            let n = client
                .execute(
                    "DELETE FROM agent_steps WHERE seq IN (SELECT seq FROM agent_steps WHERE seq < $1 ORDER BY seq LIMIT $2)",
                    &[&boundary, &batch],
                )
                .await?;
            deleted += n;
            if n < batch as u64 {
                break;
            }
        }
        Ok(deleted)
    }
}
