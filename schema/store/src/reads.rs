//! Read models for the API: deploy search, a stage's progress, agent counts.

use schema::model::{Agent, Deploy};
use schema::time::EpochMs;
use schema::{AgentState, AgentStatus, DeployId, DeployStage, EnvId, EnvName, StageName};
use serde::Serialize;

use crate::deploys::{DEPLOY_COLUMNS, deploy_from_row};
use crate::rows::{get, get_id, get_ms, get_parsed, ts};
use crate::{Result, Store};

/// Filters of `GET /v1/deploys` (Teletraan's search); empty lists filter nothing.
#[derive(Debug, Clone, Default)]
pub struct DeploySearch {
    /// Stages.
    pub env_ids: Vec<String>,
    /// Operators.
    pub operators: Vec<String>,
    /// Deploy types.
    pub deploy_types: Vec<String>,
    /// Deploy states.
    pub deploy_states: Vec<String>,
    /// Acceptance statuses.
    pub acceptance_statuses: Vec<String>,
    /// Deploys of builds of this commit or later ("deploys containing this commit"): builds
    /// committed at or after the commit's date.
    pub commit: Option<String>,
    /// Deploys of builds committed at or after this time (ms); given with `commit`, it is
    /// the date used instead of the commit's.
    pub commit_date: Option<EpochMs>,
    /// Deploys of builds of this repository.
    pub repo: Option<String>,
    /// Deploys of builds of this branch.
    pub branch: Option<String>,
    /// Deploys of this build.
    pub build_id: Option<String>,
    /// Started before (ms).
    pub before: Option<EpochMs>,
    /// Started after (ms).
    pub after: Option<EpochMs>,
    /// 1-based page.
    pub page_index: i64,
    /// Page size.
    pub page_size: i64,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

/// One page of deploys.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployPage {
    /// The deploys.
    pub deploys: Vec<Deploy>,
    /// Build tags of the deploys' builds (none are kept yet).
    pub deploy_tags: serde_json::Map<String, serde_json::Value>,
    /// How many deploys match.
    pub total: i64,
    /// Whether more pages follow.
    pub truncated: bool,
}

/// A host of a stage's capacity that has no record yet (launched, never pinged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct HostSummary {
    pub host_id: String,
    pub host_name: String,
    pub ip: Option<String>,
    pub state: String,
    pub create_date: EpochMs,
    pub last_update_date: EpochMs,
}

/// Teletraan's `DeployProgressBean`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployProgress {
    /// Every record of the stage.
    pub agents: Vec<Agent>,
    /// Host names of the host capacity that no agent ever reported.
    pub missing_hosts: Vec<String>,
    /// Hosts of the capacity without a record on the stage yet.
    pub provisioning_hosts: Vec<HostSummary>,
}

/// How many records of a stage are alike: the board counts hosts by kind from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTally {
    /// Their state.
    pub state: AgentState,
    /// Their last step's outcome.
    pub status: AgentStatus,
    /// Their step.
    pub deploy_stage: DeployStage,
    /// Their deploy.
    pub deploy_id: DeployId,
    /// How many.
    pub count: i64,
}

/// What `GET …/agents/count?actionType=` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCount {
    /// Hosts at SERVING_BUILD.
    Serving,
    /// Hosts at SERVING_BUILD in state NORMAL.
    ServingAndNormal,
    /// Hosts on their first deploy.
    FirstDeploy,
    /// Hosts whose first deploy failed.
    FailedFirstDeploy,
}

fn list(v: &[String]) -> Option<&[String]> {
    (!v.is_empty()).then_some(v)
}

impl Store {
    /// Searches deploys.
    pub async fn search_deploys(&self, q: &DeploySearch) -> Result<DeployPage> {
        let client = self.client().await?;
        let order = if q.oldest_first { "ASC" } else { "DESC" };
        let offset = (q.page_index.max(1) - 1).saturating_mul(q.page_size);
        let columns = DEPLOY_COLUMNS.split(", ").map(|c| format!("d.{}", c.trim())).collect::<Vec<_>>().join(", ");
        let rows = client
            .query(
                &format!(
                    "SELECT {columns}, count(*) OVER () AS matching
                     FROM deploys d JOIN builds b ON b.build_id = d.build_id
                     WHERE ($1::text[] IS NULL OR d.env_id = ANY($1))
                       AND ($2::text[] IS NULL OR d.operator = ANY($2))
                       AND ($3::text[] IS NULL OR d.deploy_type = ANY($3))
                       AND ($4::text[] IS NULL OR d.state = ANY($4))
                       AND ($5::text[] IS NULL OR d.acc_status = ANY($5))
                       AND ($6::timestamptz IS NULL OR d.start_date < $6)
                       AND ($7::timestamptz IS NULL OR d.start_date > $7)
                       AND ($13::timestamptz IS NOT NULL OR $8::text IS NULL
                            OR b.commit_date >= (SELECT min(commit_date) FROM builds WHERE starts_with(scm_commit, $8)))
                       AND ($13::timestamptz IS NULL OR b.commit_date >= $13)
                       AND ($9::text IS NULL OR b.scm_repo = $9)
                       AND ($10::text IS NULL OR b.scm_branch = $10)
                       AND ($14::text IS NULL OR d.build_id = $14)
                     ORDER BY d.start_date {order}, d.deploy_id
                     LIMIT $11 OFFSET $12"
                ),
                &[
                    &list(&q.env_ids),
                    &list(&q.operators),
                    &list(&q.deploy_types),
                    &list(&q.deploy_states),
                    &list(&q.acceptance_statuses),
                    &q.before.map(ts),
                    &q.after.map(ts),
                    &q.commit,
                    &q.repo,
                    &q.branch,
                    &q.page_size,
                    &offset,
                    &q.commit_date.map(ts),
                    &q.build_id,
                ],
            )
            .await?;
        let total = match rows.first() {
            Some(r) => get::<i64>(r, "matching")?,
            None => 0,
        };
        let deploys = rows.iter().map(deploy_from_row).collect::<Result<Vec<_>>>()?;
        let truncated = offset + (deploys.len() as i64) < total;
        Ok(DeployPage { deploys, deploy_tags: serde_json::Map::new(), total, truncated })
    }

    /// The records of a stage grouped by state, outcome, step and deploy (a few rows however
    /// many hosts: what the board's live summary counts).
    pub async fn agent_tallies(&self, env_id: &EnvId) -> Result<Vec<AgentTally>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT state, status, deploy_stage, deploy_id, count(*) AS n FROM agents WHERE env_id = $1
                 GROUP BY state, status, deploy_stage, deploy_id",
                &[&env_id.as_str()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AgentTally {
                    state: get_parsed(r, "state")?,
                    status: get_parsed(r, "status")?,
                    deploy_stage: get_parsed(r, "deploy_stage")?,
                    deploy_id: get_id(r, "deploy_id")?,
                    count: get(r, "n")?,
                })
            })
            .collect()
    }

    /// How many deploys started at or after `since` (`GET /v1/deploys/dailycount` passes the
    /// day's midnight, UTC).
    pub async fn deploys_started_since(&self, since: EpochMs) -> Result<i64> {
        let client = self.client().await?;
        Ok(client.query_one("SELECT count(*) FROM deploys WHERE start_date >= $1", &[&ts(since)]).await?.get(0))
    }

    /// A stage's progress: its records, missing and provisioning hosts.
    pub async fn stage_progress(&self, env: &EnvName, stage: &StageName) -> Result<DeployProgress> {
        let e = self.stage(env, stage).await?;
        let agents = self.agents_of_stage(&e.id).await?;
        let missing_hosts = self.missing_hosts_of(&e.id).await?;
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT h.host_id, h.host_name, h.ip, h.state, h.create_date, h.last_update FROM hosts h
                 WHERE (EXISTS (SELECT 1 FROM host_groups g JOIN stage_groups sg ON sg.group_name = g.group_name
                                WHERE g.host_id = h.host_id AND sg.env_id = $1)
                        OR EXISTS (SELECT 1 FROM stage_hosts sh WHERE sh.host_name = h.host_name AND sh.env_id = $1))
                   AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.host_id = h.host_id AND a.env_id = $1)
                 ORDER BY h.host_name",
                &[&e.id.as_str()],
            )
            .await?;
        let provisioning_hosts = rows
            .iter()
            .map(|r| {
                Ok(HostSummary {
                    host_id: get(r, "host_id")?,
                    host_name: get(r, "host_name")?,
                    ip: get(r, "ip")?,
                    state: get(r, "state")?,
                    create_date: get_ms(r, "create_date")?,
                    last_update_date: get_ms(r, "last_update")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(DeployProgress { agents, missing_hosts, provisioning_hosts })
    }

    /// Host names of a stage's HOST capacity that no agent ever reported
    /// (`GET …/deploys/current/missing-hosts`).
    pub async fn missing_hosts(&self, env: &EnvName, stage: &StageName) -> Result<Vec<String>> {
        let e = self.stage(env, stage).await?;
        self.missing_hosts_of(&e.id).await
    }

    async fn missing_hosts_of(&self, env_id: &EnvId) -> Result<Vec<String>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT s.host_name FROM stage_hosts s
                 WHERE s.env_id = $1 AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.host_name = s.host_name)
                 ORDER BY s.host_name",
                &[&env_id.as_str()],
            )
            .await?
            .iter()
            .map(|r| get(r, "host_name"))
            .collect()
    }

    /// Counts records of a stage.
    pub async fn count_agents(&self, env: &EnvName, stage: &StageName, what: AgentCount) -> Result<i64> {
        let e = self.stage(env, stage).await?;
        let filter = match what {
            AgentCount::Serving => "deploy_stage = 'SERVING_BUILD'",
            AgentCount::ServingAndNormal => "deploy_stage = 'SERVING_BUILD' AND state = 'NORMAL'",
            AgentCount::FirstDeploy => "first_deploy",
            AgentCount::FailedFirstDeploy => {
                "first_deploy AND deploy_stage <> 'SERVING_BUILD' AND status NOT IN ('SUCCEEDED', 'UNKNOWN')"
            }
        };
        let client = self.client().await?;
        Ok(client
            .query_one(&format!("SELECT count(*) FROM agents WHERE env_id = $1 AND {filter}"), &[&e.id.as_str()])
            .await?
            .get(0))
    }
}
