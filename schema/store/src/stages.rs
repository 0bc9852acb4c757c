//! Stages (environs), their capacity and their maps, and the snapshots gateways load.

use std::collections::HashMap;

use schema::bus::{ChangeMessage, StageSnapshot};
use schema::model::{Environ, EnvironInput, StringMap};
use schema::rules::goal::{CurrentDeploy, StageGoal};
use schema::time::EpochMs;
use schema::{DeployId, EnvId, EnvName, EnvType, GroupName, HostName, StageName};
use tokio_postgres::{GenericClient, Row};

use crate::builds::build_from_row;
use crate::history::{self, Change, Place, json, kind};
use crate::outbox::{Exchange, enqueue};
use crate::rows::{get, get_id, get_ms, get_opt_id, get_opt_parsed, get_parsed, ts};
use crate::{Error, Result, Store};

/// Addresses a stage by names, as the REST paths do.
pub type StageKey<'a> = (&'a EnvName, &'a StageName);

/// Which stages `GET /v1/envs` lists: every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageFilter {
    /// Stages of this environment.
    pub env_name: Option<EnvName>,
    /// Stages whose group capacity holds this group.
    pub group_name: Option<GroupName>,
    /// Stages of this type.
    pub stage_type: Option<EnvType>,
}

const ENVIRON_COLUMNS: &str = "e.env_id, e.env_name, e.stage_name, e.env_state, e.state, e.description, e.build_name, \
     e.branch, e.chatroom, e.deploy_id, e.deploy_type, e.max_parallel, e.max_parallel_pct, e.priority, e.system_priority, \
     e.stuck_th, e.success_th, e.accept_type, e.accept_timeout, e.email_recipients, e.notify_authors, e.watch_recipients, e.max_deploy_num, \
     e.max_deploy_day, e.is_docker, e.override_policy, e.allow_private_build, e.ensure_trusted_build, e.stage_type, \
     e.agent_configs, e.script_configs, e.last_operator, e.last_update, e.version, \
     (SELECT s.schedule_id FROM schedules s WHERE s.env_id = e.env_id) AS schedule_id, \
     (SELECT c.constraint_id FROM deploy_constraints c WHERE c.env_id = e.env_id) AS deploy_constraint_id";

pub(crate) fn environ_from_row(r: &Row) -> Result<Environ> {
    Ok(Environ {
        id: get_id(r, "env_id")?,
        env_name: get_id(r, "env_name")?,
        stage_name: get_id(r, "stage_name")?,
        env_state: get_parsed(r, "env_state")?,
        state: get_parsed(r, "state")?,
        description: get(r, "description")?,
        build_name: get_id(r, "build_name")?,
        branch: get(r, "branch")?,
        chatroom: get(r, "chatroom")?,
        deploy_id: get_opt_id(r, "deploy_id")?,
        deploy_type: get_opt_parsed(r, "deploy_type")?,
        max_parallel: get(r, "max_parallel")?,
        max_parallel_pct: get(r, "max_parallel_pct")?,
        priority: get_parsed(r, "priority")?,
        system_priority: get(r, "system_priority")?,
        stuck_threshold: get(r, "stuck_th")?,
        success_threshold: get(r, "success_th")?,
        acceptance_type: get_parsed(r, "accept_type")?,
        acceptance_timeout: get(r, "accept_timeout")?,
        email_recipients: get(r, "email_recipients")?,
        notify_authors: get(r, "notify_authors")?,
        watch_recipients: get(r, "watch_recipients")?,
        max_deploy_num: get(r, "max_deploy_num")?,
        max_deploy_day: get(r, "max_deploy_day")?,
        is_docker: get(r, "is_docker")?,
        override_policy: get_parsed(r, "override_policy")?,
        allow_private_build: get(r, "allow_private_build")?,
        ensure_trusted_build: get(r, "ensure_trusted_build")?,
        stage_type: get_parsed(r, "stage_type")?,
        last_operator: get(r, "last_operator")?,
        last_update: get_ms(r, "last_update")?,
        schedule_id: get(r, "schedule_id")?,
        deploy_constraint_id: get(r, "deploy_constraint_id")?,
    })
}

pub(crate) fn map_from_json(v: serde_json::Value, col: &str) -> Result<StringMap> {
    serde_json::from_value(v).map_err(|e| Error::Corrupt(format!("{col}: {e}")))
}

fn not_found(env: &EnvName, stage: &StageName) -> Error {
    Error::NotFound(format!("Environment {env}/{stage} does not exist."))
}

/// Reads and locks a stage row.
pub(crate) async fn lock_stage(c: &impl GenericClient, env: &EnvName, stage: &StageName) -> Result<Environ> {
    let row = c
        .query_opt(
            &format!("SELECT {ENVIRON_COLUMNS} FROM environs e WHERE e.env_name = $1 AND e.stage_name = $2 FOR UPDATE"),
            &[&env.as_str(), &stage.as_str()],
        )
        .await?
        .ok_or_else(|| not_found(env, stage))?;
    environ_from_row(&row)
}

/// Reads and locks a stage row by id; with `skip_locked`, answers `None` at once when another
/// transaction holds it.
pub(crate) async fn lock_stage_by_id(c: &impl GenericClient, id: &EnvId, skip_locked: bool) -> Result<Option<Environ>> {
    let lock = if skip_locked { "FOR UPDATE SKIP LOCKED" } else { "FOR UPDATE" };
    let row = c
        .query_opt(&format!("SELECT {ENVIRON_COLUMNS} FROM environs e WHERE e.env_id = $1 {lock}"), &[&id.as_str()])
        .await?;
    row.as_ref().map(environ_from_row).transpose()
}

async fn write_config(c: &impl GenericClient, e: &Environ) -> Result<u64> {
    Ok(c.execute(
        "UPDATE environs SET env_state = $2, state = $3, description = $4, build_name = $5, branch = $6, chatroom = $7,
            max_parallel = $8, max_parallel_pct = $9, priority = $10, system_priority = $11, stuck_th = $12,
            success_th = $13, accept_type = $14, email_recipients = $15, notify_authors = $16, watch_recipients = $17,
            max_deploy_num = $18, max_deploy_day = $19, is_docker = $20, override_policy = $21,
            allow_private_build = $22, ensure_trusted_build = $23, stage_type = $24, last_operator = $25,
            last_update = $26, accept_timeout = $27
         WHERE env_id = $1",
        &[
            &e.id.as_str(),
            &e.env_state.as_str(),
            &e.state.as_str(),
            &e.description,
            &e.build_name.as_str(),
            &e.branch,
            &e.chatroom,
            &e.max_parallel,
            &e.max_parallel_pct,
            &e.priority.as_str(),
            &e.system_priority,
            &e.stuck_threshold,
            &e.success_threshold,
            &e.acceptance_type.as_str(),
            &e.email_recipients,
            &e.notify_authors,
            &e.watch_recipients,
            &e.max_deploy_num,
            &e.max_deploy_day,
            &e.is_docker,
            &e.override_policy.as_str(),
            &e.allow_private_build,
            &e.ensure_trusted_build,
            &e.stage_type.as_str(),
            &e.last_operator,
            &ts(e.last_update),
            &e.acceptance_timeout,
        ],
    )
    .await?)
}

/// Bumps the stage's version and queues a snapshot of it for the gateways. Call after any
/// change that affects goals, in the same transaction.
pub(crate) async fn announce_stage(c: &impl GenericClient, env_id: &EnvId) -> Result<i64> {
    let version: i64 = c
        .query_one("UPDATE environs SET version = version + 1 WHERE env_id = $1 RETURNING version", &[&env_id.as_str()])
        .await?
        .get(0);
    let snapshot = snapshot(c, env_id).await?.map(|(_, s)| Box::new(s));
    let msg = ChangeMessage::StageV1 { env_id: env_id.clone(), version, stage: snapshot };
    enqueue(c, Exchange::Changes, "stage", &msg).await?;
    Ok(version)
}

/// Bumps the version for a change described by `msg_for(version)` (agent records).
pub(crate) async fn announce_with(
    c: &impl GenericClient,
    env_id: &EnvId,
    msg_for: impl FnOnce(i64) -> ChangeMessage,
) -> Result<i64> {
    let version: i64 = c
        .query_one("UPDATE environs SET version = version + 1 WHERE env_id = $1 RETURNING version", &[&env_id.as_str()])
        .await?
        .get(0);
    enqueue(c, Exchange::Changes, "agents", &msg_for(version)).await?;
    Ok(version)
}

const SNAPSHOT_QUERY: &str = "SELECT e.env_id, e.env_name, e.stage_name, e.stage_type, e.env_state, e.priority,
        e.system_priority, e.is_docker, e.agent_configs, e.script_configs, e.script_secrets, e.deploy_id, e.version,
        d.deploy_type AS d_type, d.alias AS d_alias,
        b.build_id AS b_build_id, b.build_name AS b_build_name, b.artifact_url AS b_artifact_url,
        b.artifact_sha256 AS b_artifact_sha256, b.scm AS b_scm, b.scm_repo AS b_scm_repo, b.scm_branch AS b_scm_branch,
        b.scm_commit AS b_scm_commit, b.scm_commit_7 AS b_scm_commit_7, b.commit_info AS b_commit_info,
        b.commit_date AS b_commit_date, b.publish_info AS b_publish_info, b.publisher AS b_publisher,
        b.publish_date AS b_publish_date
    FROM environs e LEFT JOIN deploys d ON d.deploy_id = e.deploy_id LEFT JOIN builds b ON b.build_id = d.build_id";

fn goal_from_row(r: &Row) -> Result<(i64, StageGoal)> {
    let deploy = match get_opt_id::<DeployId>(r, "deploy_id")? {
        Some(id) if get::<Option<String>>(r, "b_build_id")?.is_some() => Some(CurrentDeploy {
            id,
            deploy_type: get_parsed(r, "d_type")?,
            alias: get_opt_id(r, "d_alias")?,
            build: build_from_row(r, "b_")?,
        }),
        _ => None,
    };
    let goal = StageGoal {
        env_id: get_id(r, "env_id")?,
        env_name: get_id(r, "env_name")?,
        stage_name: get_id(r, "stage_name")?,
        stage_type: get_parsed(r, "stage_type")?,
        env_state: get_parsed(r, "env_state")?,
        priority: get_parsed(r, "priority")?,
        system_priority: get(r, "system_priority")?,
        is_docker: get(r, "is_docker")?,
        agent_configs: map_from_json(get(r, "agent_configs")?, "agent_configs")?,
        script_variables: {
            let mut vars = map_from_json(get(r, "script_configs")?, "script_configs")?;
            vars.extend(map_from_json(get(r, "script_secrets")?, "script_secrets")?);
            vars
        },
        deploy,
    };
    Ok((get(r, "version")?, goal))
}

/// The snapshot of one stage with its version, or `None` when it does not exist.
pub(crate) async fn snapshot(c: &impl GenericClient, env_id: &EnvId) -> Result<Option<(i64, StageSnapshot)>> {
    let Some(row) = c.query_opt(&format!("{SNAPSHOT_QUERY} WHERE e.env_id = $1"), &[&env_id.as_str()]).await? else {
        return Ok(None);
    };
    let (version, goal) = goal_from_row(&row)?;
    let groups = c
        .query("SELECT group_name FROM stage_groups WHERE env_id = $1 ORDER BY group_name", &[&env_id.as_str()])
        .await?
        .iter()
        .map(|r| get_id(r, "group_name"))
        .collect::<Result<Vec<_>>>()?;
    let hosts = c
        .query("SELECT host_name FROM stage_hosts WHERE env_id = $1 ORDER BY host_name", &[&env_id.as_str()])
        .await?
        .iter()
        .map(|r| get_id(r, "host_name"))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((version, StageSnapshot { goal, groups, hosts })))
}

/// Every stage as a gateway holds it, with its version.
pub(crate) async fn all_snapshots(c: &impl GenericClient) -> Result<Vec<(i64, StageSnapshot)>> {
    let mut groups: HashMap<String, Vec<GroupName>> = HashMap::new();
    for r in c.query("SELECT env_id, group_name FROM stage_groups ORDER BY group_name", &[]).await? {
        groups.entry(get(&r, "env_id")?).or_default().push(get_id(&r, "group_name")?);
    }
    let mut hosts: HashMap<String, Vec<HostName>> = HashMap::new();
    for r in c.query("SELECT env_id, host_name FROM stage_hosts ORDER BY host_name", &[]).await? {
        hosts.entry(get(&r, "env_id")?).or_default().push(get_id(&r, "host_name")?);
    }
    let rows = c.query(SNAPSHOT_QUERY, &[]).await?;
    rows.iter()
        .map(|r| {
            let (version, goal) = goal_from_row(r)?;
            let id = goal.env_id.as_str().to_string();
            Ok((
                version,
                StageSnapshot {
                    goal,
                    groups: groups.remove(&id).unwrap_or_default(),
                    hosts: hosts.remove(&id).unwrap_or_default(),
                },
            ))
        })
        .collect()
}

/// Which string map of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageMap {
    /// Script variables (sent to hooks).
    ScriptConfigs,
    /// Agent config overrides.
    AgentConfigs,
}

impl StageMap {
    fn column(self) -> &'static str {
        match self {
            StageMap::ScriptConfigs => "script_configs",
            StageMap::AgentConfigs => "agent_configs",
        }
    }
}

impl Store {
    /// Creates a stage; a stage of that name that exists already is a conflict.
    pub async fn create_stage(&self, e: &Environ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO environs (env_id, env_name, stage_name, build_name, last_operator, last_update)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (env_name, stage_name) DO NOTHING",
                &[
                    &e.id.as_str(),
                    &e.env_name.as_str(),
                    &e.stage_name.as_str(),
                    &e.build_name.as_str(),
                    &e.last_operator,
                    &ts(e.last_update),
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(Error::Conflict(format!("Environment {}/{} already exists.", e.env_name, e.stage_name)));
        }
        write_config(&*tx, e).await?;
        announce_stage(&*tx, &e.id).await?;
        let change = Change { kind: kind::STAGE, action: "create", before: None, after: Some(json(e)?) };
        history::record(&*tx, Place::Stage(e), &e.last_operator, None, change, e.last_update).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One stage by names.
    pub async fn stage(&self, env: &EnvName, stage: &StageName) -> Result<Environ> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {ENVIRON_COLUMNS} FROM environs e WHERE e.env_name = $1 AND e.stage_name = $2"),
                &[&env.as_str(), &stage.as_str()],
            )
            .await?
            .ok_or_else(|| not_found(env, stage))?;
        environ_from_row(&row)
    }

    /// One stage by id.
    pub async fn stage_by_id(&self, id: &EnvId) -> Result<Environ> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {ENVIRON_COLUMNS} FROM environs e WHERE e.env_id = $1"), &[&id.as_str()])
            .await?
            .ok_or_else(|| Error::NotFound(format!("Stage {id} does not exist.")))?;
        environ_from_row(&row)
    }

    /// The names (environment, stage) of these stages, for those that exist.
    pub async fn stage_names(&self, ids: &[EnvId]) -> Result<Vec<(EnvId, EnvName, StageName)>> {
        let client = self.client().await?;
        let ids: Vec<&str> = ids.iter().map(EnvId::as_str).collect();
        let rows =
            client.query("SELECT env_id, env_name, stage_name FROM environs WHERE env_id = ANY($1)", &[&ids]).await?;
        rows.iter().map(|r| Ok((get_id(r, "env_id")?, get_id(r, "env_name")?, get_id(r, "stage_name")?))).collect()
    }

    /// The stages of one environment, or every stage.
    pub async fn stages(&self, env: Option<&EnvName>) -> Result<Vec<Environ>> {
        let client = self.client().await?;
        let rows = match env {
            Some(env) => {
                client
                    .query(
                        &format!(
                            "SELECT {ENVIRON_COLUMNS} FROM environs e WHERE e.env_name = $1 ORDER BY e.stage_name"
                        ),
                        &[&env.as_str()],
                    )
                    .await?
            }
            None => {
                client
                    .query(&format!("SELECT {ENVIRON_COLUMNS} FROM environs e ORDER BY e.env_name, e.stage_name"), &[])
                    .await?
            }
        };
        rows.iter().map(environ_from_row).collect()
    }

    /// The stages that pass every filter given, by environment and stage name.
    pub async fn search_stages(&self, f: &StageFilter) -> Result<Vec<Environ>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ENVIRON_COLUMNS} FROM environs e
                     WHERE ($1::text IS NULL OR e.env_name = $1) AND ($3::text IS NULL OR e.stage_type = $3)
                       AND ($2::text IS NULL OR EXISTS
                            (SELECT 1 FROM stage_groups g WHERE g.env_id = e.env_id AND g.group_name = $2))
                     ORDER BY e.env_name, e.stage_name"
                ),
                &[
                    &f.env_name.as_ref().map(EnvName::as_str),
                    &f.group_name.as_ref().map(GroupName::as_str),
                    &f.stage_type.map(EnvType::as_str),
                ],
            )
            .await?;
        rows.iter().map(environ_from_row).collect()
    }

    /// Distinct environment names containing `filter` (any when `None`), in order, one page.
    pub async fn env_names(&self, filter: Option<&str>, page_index: i64, page_size: i64) -> Result<Vec<String>> {
        let client = self.client().await?;
        let offset = (page_index.max(1) - 1).saturating_mul(page_size);
        client
            .query(
                "SELECT DISTINCT env_name FROM environs WHERE ($1::text IS NULL OR strpos(env_name, $1) > 0)
                 ORDER BY env_name LIMIT $2 OFFSET $3",
                &[&filter, &page_size, &offset],
            )
            .await?
            .iter()
            .map(|r| get(r, "env_name"))
            .collect()
    }

    /// Applies a partial update to a stage's configuration.
    pub async fn update_stage(
        &self,
        env: &EnvName,
        stage: &StageName,
        input: EnvironInput,
        operator: &str,
        now: EpochMs,
    ) -> Result<Environ> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut e = lock_stage(&*tx, env, stage).await?;
        let before = json(&e)?;
        e.apply(input, operator, now)?;
        write_config(&*tx, &e).await?;
        announce_stage(&*tx, &e.id).await?;
        let change = Change { kind: kind::STAGE, action: "update", before: Some(before), after: Some(json(&e)?) };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Deletes a stage that has no capacity and no agent records left.
    pub async fn delete_stage(&self, env: &EnvName, stage: &StageName, operator: &str, now: EpochMs) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let e = lock_stage(&*tx, env, stage).await?;
        let busy: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM stage_groups WHERE env_id = $1)
                     OR EXISTS (SELECT 1 FROM stage_hosts WHERE env_id = $1)
                     OR EXISTS (SELECT 1 FROM agents WHERE env_id = $1)",
                &[&e.id.as_str()],
            )
            .await?
            .get(0);
        if busy {
            return Err(Error::Conflict(format!(
                "Environment {env}/{stage} still has capacity or hosts; remove them before deleting the stage."
            )));
        }
        let version: i64 =
            tx.query_one("DELETE FROM environs WHERE env_id = $1 RETURNING version", &[&e.id.as_str()]).await?.get(0);
        let msg = ChangeMessage::StageV1 { env_id: e.id.clone(), version: version + 1, stage: None };
        enqueue(&*tx, Exchange::Changes, "stage", &msg).await?;
        let change = Change { kind: kind::STAGE, action: "delete", before: Some(json(&e)?), after: None };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A stage's script variables or agent configs.
    pub async fn stage_map(&self, env: &EnvName, stage: &StageName, which: StageMap) -> Result<StringMap> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {} FROM environs WHERE env_name = $1 AND stage_name = $2", which.column()),
                &[&env.as_str(), &stage.as_str()],
            )
            .await?
            .ok_or_else(|| not_found(env, stage))?;
        map_from_json(get(&row, which.column())?, which.column())
    }

    /// Replaces a stage's script variables or agent configs.
    pub async fn set_stage_map(
        &self,
        env: &EnvName,
        stage: &StageName,
        which: StageMap,
        map: &StringMap,
        operator: &str,
        now: EpochMs,
    ) -> Result<()> {
        let value = serde_json::to_value(map).map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let e = lock_stage(&*tx, env, stage).await?;
        let before: serde_json::Value = tx
            .query_one(&format!("SELECT {} FROM environs WHERE env_id = $1", which.column()), &[&e.id.as_str()])
            .await?
            .get(0);
        tx.execute(
            &format!(
                "UPDATE environs SET {} = $2, last_operator = $3, last_update = $4 WHERE env_id = $1",
                which.column()
            ),
            &[&e.id.as_str(), &value, &operator, &ts(now)],
        )
        .await?;
        announce_stage(&*tx, &e.id).await?;
        let what = match which {
            StageMap::ScriptConfigs => kind::SCRIPT,
            StageMap::AgentConfigs => kind::AGENT,
        };
        let change = Change { kind: what, action: "update", before: Some(before), after: Some(value) };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One stage as a gateway holds it, with its version.
    pub async fn stage_snapshot(&self, env_id: &EnvId) -> Result<Option<(i64, StageSnapshot)>> {
        let client = self.client().await?;
        snapshot(&**client, env_id).await
    }

    /// The version of every stage (gateways compare them to catch missed changes).
    pub async fn stage_versions(&self) -> Result<Vec<(EnvId, i64)>> {
        let client = self.client().await?;
        client
            .query("SELECT env_id, version FROM environs", &[])
            .await?
            .iter()
            .map(|r| Ok((get_id(r, "env_id")?, get(r, "version")?)))
            .collect()
    }
}
