//! Retention: old deploys beyond each stage's `maxDeployNum` and `maxDeployDay`, unreferenced
//! builds beyond a count and an age per build name, and finished bookkeeping (commands, job
//! runs, errors of records that are gone). Deleted in bounded batches, one transaction each,
//! oldest first, so a large backlog never holds locks for long and a run that stops half-way
//! leaves a consistent table.
//!
//! Never deleted: a deploy that is a stage's current one, that a host's record still names,
//! that a current rollback returns to, or that is a stage's last succeeded deploy (the
//! default target of a rollback); a build that a deploy references.

use schema::time::{EpochMs, secs};

use crate::rows::{get, ts};
use crate::{Result, Store};

/// Deploys a stage keeps when it no longer exists (its own settings went with it).
const DELETED_STAGE_KEEP: (i32, i32) = (5000, 365);

/// The deploys of one stage that may go, oldest first (see the module doc for what stays).
const PURGEABLE_DEPLOYS: &str = "SELECT d.deploy_id FROM deploys d
     WHERE d.env_id = $1 AND d.last_update < $2
       AND NOT EXISTS (SELECT 1 FROM environs e WHERE e.deploy_id = d.deploy_id)
       AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.env_id = d.env_id AND a.deploy_id = d.deploy_id)
       AND NOT EXISTS (SELECT 1 FROM environs e JOIN deploys c ON c.deploy_id = e.deploy_id
                       WHERE c.alias = d.deploy_id)
       AND d.deploy_id IS DISTINCT FROM $4
     ORDER BY d.start_date LIMIT $3";

/// A stage's last succeeded deploy (the default target of a rollback), found once per batch
/// rather than once per candidate row.
const LAST_SUCCEEDED: &str = "SELECT deploy_id FROM deploys WHERE env_id = $1 AND state = 'SUCCEEDED'
     ORDER BY start_date DESC LIMIT 1";

impl Store {
    /// Deletes deploys beyond each stage's limits, at most `batch` per transaction, until
    /// none is left or `stop()` says so. Returns how many went.
    pub async fn purge_deploys(&self, now: EpochMs, batch: i64, stop: impl Fn() -> bool) -> Result<u64> {
        let stages: Vec<(String, i32, i32)> = {
            let client = self.client().await?;
            client
                .query(
                    "SELECT s.env_id, e.max_deploy_num, e.max_deploy_day
                     FROM (SELECT DISTINCT env_id FROM deploys) s LEFT JOIN environs e ON e.env_id = s.env_id",
                    &[],
                )
                .await?
                .iter()
                .map(|r| {
                    let num: Option<i32> = get(r, "max_deploy_num")?;
                    let day: Option<i32> = get(r, "max_deploy_day")?;
                    Ok((get(r, "env_id")?, num.unwrap_or(DELETED_STAGE_KEEP.0), day.unwrap_or(DELETED_STAGE_KEEP.1)))
                })
                .collect::<Result<_>>()?
        };
        let mut deleted = 0;
        for (env_id, keep, days) in stages {
            let cutoff = ts(now - secs(i64::from(days) * 86_400));
            loop {
                if stop() {
                    return Ok(deleted);
                }
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                let count: i64 =
                    tx.query_one("SELECT count(*) FROM deploys WHERE env_id = $1", &[&env_id]).await?.get(0);
                let excess = (count - i64::from(keep)).min(batch);
                if excess <= 0 {
                    break;
                }
                let last_succeeded: Option<String> = tx.query_opt(LAST_SUCCEEDED, &[&env_id]).await?.map(|r| r.get(0));
                let n = tx
                    .execute(
                        &format!("DELETE FROM deploys WHERE deploy_id IN ({PURGEABLE_DEPLOYS})"),
                        &[&env_id, &cutoff, &excess, &last_succeeded],
                    )
                    .await?;
                tx.commit().await?;
                deleted += n;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes builds beyond `keep` per build name that were published before `max_days` ago
    /// and that no deploy references, at most `batch` per transaction. Returns how many went.
    pub async fn purge_builds(
        &self,
        now: EpochMs,
        keep: i64,
        max_days: i64,
        batch: i64,
        stop: impl Fn() -> bool,
    ) -> Result<u64> {
        let names: Vec<(String, i64)> = {
            let client = self.client().await?;
            client
                .query(
                    "SELECT build_name, count(*) AS n FROM builds GROUP BY build_name HAVING count(*) > $1",
                    &[&keep],
                )
                .await?
                .iter()
                .map(|r| Ok((get(r, "build_name")?, get(r, "n")?)))
                .collect::<Result<_>>()?
        };
        let cutoff = ts(now - secs(max_days.saturating_mul(86_400)));
        let mut deleted = 0;
        for (name, mut count) in names {
            while count > keep {
                if stop() {
                    return Ok(deleted);
                }
                let client = self.client().await?;
                let n = client
                    .execute(
                        "DELETE FROM builds WHERE build_id IN (
                             SELECT b.build_id FROM builds b
                             WHERE b.build_name = $1 AND b.publish_date < $2
                               AND NOT EXISTS (SELECT 1 FROM deploys d WHERE d.build_id = b.build_id)
                             ORDER BY b.publish_date LIMIT $3)",
                        &[&name, &cutoff, &(count - keep).min(batch)],
                    )
                    .await?;
                if n == 0 {
                    break;
                }
                deleted += n;
                count -= n as i64;
            }
        }
        Ok(deleted)
    }

    /// Deletes finished commands and settled webhook deliveries older than `command_days`, job
    /// runs older than `job_run_days`, history rows older than `history_days`, and the last
    /// errors of records that no longer exist, at most `batch` rows per statement. Returns how
    /// many rows went.
    pub async fn purge_records(
        &self,
        now: EpochMs,
        command_days: i64,
        job_run_days: i64,
        history_days: i64,
        batch: i64,
        stop: impl Fn() -> bool,
    ) -> Result<u64> {
        let commands = ts(now - secs(command_days.saturating_mul(86_400)));
        let runs = ts(now - secs(job_run_days.saturating_mul(86_400)));
        let history = ts(now - secs(history_days.saturating_mul(86_400)));
        let statements: [(&str, Option<std::time::SystemTime>); 5] = [
            (
                "DELETE FROM commands WHERE command_id IN (SELECT command_id FROM commands
                     WHERE status <> 'PENDING' AND finished_at < $1 LIMIT $2)",
                Some(commands),
            ),
            (
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries
                     WHERE status <> 'PENDING' AND updated_at < $1 LIMIT $2)",
                Some(commands),
            ),
            (
                "DELETE FROM job_runs WHERE (job, due_at, attempt) IN (SELECT job, due_at, attempt FROM job_runs
                     WHERE started_at < $1 LIMIT $2)",
                Some(runs),
            ),
            ("DELETE FROM history WHERE id IN (SELECT id FROM history WHERE at < $1 LIMIT $2)", Some(history)),
            (
                "DELETE FROM agent_errors WHERE (host_id, env_id) IN (SELECT e.host_id, e.env_id FROM agent_errors e
                     WHERE NOT EXISTS (SELECT 1 FROM agents a WHERE a.host_id = e.host_id AND a.env_id = e.env_id)
                     LIMIT $1)",
                None,
            ),
        ];
        let mut deleted = 0;
        for (sql, cutoff) in statements {
            loop {
                if stop() {
                    return Ok(deleted);
                }
                let client = self.client().await?;
                let n = match cutoff {
                    Some(c) => client.execute(sql, &[&c, &batch]).await?,
                    None => client.execute(sql, &[&batch]).await?,
                };
                deleted += n;
                if n < batch as u64 {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}
