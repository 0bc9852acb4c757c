//! Deploy constraints: one per stage, written by users, read by admission.

use schema::model::{ConstraintBean, ConstraintInput};
use schema::rules::constraint::Constraint;
use schema::time::EpochMs;
use schema::{DeployConstraintType, EnvId, EnvName, StageName};
use tokio_postgres::GenericClient;

use crate::history::{self, Change, Place, json, kind};
use crate::rows::{get, get_ms, get_parsed, ts};
use crate::stages::lock_stage;
use crate::{Error, Result, Store};

/// The bean's columns, with its tag sync state: PROCESSING while a host of the stage has a
/// record and neither stored facts nor a value for the tag (admission's `TagOf::Unknown`).
const BEAN_COLUMNS: &str = "constraint_id, constraint_key, max_parallel, constraint_type, start_date, last_update,
    CASE WHEN EXISTS (
        SELECT 1 FROM agents a LEFT JOIN hosts ho ON ho.host_id = a.host_id
        WHERE a.env_id = deploy_constraints.env_id AND ho.facts_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM host_tags t
                          WHERE t.host_id = a.host_id AND t.tag_name = deploy_constraints.constraint_key)
    ) THEN 'PROCESSING' ELSE 'FINISHED' END AS tag_sync";

fn bean_of(r: &tokio_postgres::Row) -> Result<ConstraintBean> {
    Ok(ConstraintBean {
        id: get(r, "constraint_id")?,
        constraint_key: get(r, "constraint_key")?,
        max_parallel: i64::from(get::<i32>(r, "max_parallel")?),
        constraint_type: get_parsed(r, "constraint_type")?,
        state: get(r, "tag_sync")?,
        start_date: get_ms(r, "start_date")?,
        last_update: get_ms(r, "last_update")?,
    })
}

/// The constraint of a stage, for admission.
pub(crate) async fn load(c: &impl GenericClient, env_id: &EnvId) -> Result<Option<Constraint>> {
    let row = c
        .query_opt(
            "SELECT constraint_key, max_parallel, constraint_type FROM deploy_constraints WHERE env_id = $1",
            &[&env_id.as_str()],
        )
        .await?;
    row.map(|r| {
        Constraint::new(
            get(&r, "constraint_key")?,
            i64::from(get::<i32>(&r, "max_parallel")?),
            get_parsed(&r, "constraint_type")?,
        )
        .map_err(|e| Error::Corrupt(format!("constraint of {env_id}: {e}")))
    })
    .transpose()
}

/// The constraint as it was, for the history.
async fn before(c: &impl GenericClient, env_id: &EnvId) -> Result<Option<serde_json::Value>> {
    let row = c
        .query_opt(&format!("SELECT {BEAN_COLUMNS} FROM deploy_constraints WHERE env_id = $1"), &[&env_id.as_str()])
        .await?;
    row.as_ref().map(|r| json(&bean_of(r)?)).transpose()
}

impl Store {
    /// Creates or replaces a stage's constraint.
    pub async fn set_constraint(
        &self,
        env: &EnvName,
        stage: &StageName,
        input: ConstraintInput,
        operator: &str,
        now: EpochMs,
    ) -> Result<ConstraintBean> {
        let c = Constraint::new(
            input.constraint_key.as_deref().unwrap_or_default(),
            input.max_parallel.unwrap_or(0),
            input.constraint_type.unwrap_or(DeployConstraintType::AllGroupsInParallel),
        )?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let e = lock_stage(&*tx, env, stage).await?;
        let before = before(&*tx, &e.id).await?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO deploy_constraints (env_id, constraint_id, constraint_key, max_parallel, constraint_type,
                     start_date, last_update)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT (env_id) DO UPDATE SET constraint_key = EXCLUDED.constraint_key,
                     max_parallel = EXCLUDED.max_parallel, constraint_type = EXCLUDED.constraint_type,
                     last_update = EXCLUDED.last_update
                 RETURNING {BEAN_COLUMNS}"
                ),
                &[
                    &e.id.as_str(),
                    &EnvId::generate().as_str(),
                    &c.key,
                    &(c.max_parallel.min(i32::MAX as u32) as i32),
                    &c.kind.as_str(),
                    &ts(now),
                ],
            )
            .await?;
        let bean = bean_of(&row)?;
        let action = if before.is_some() { "update" } else { "create" };
        let change = Change { kind: kind::CONSTRAINT, action, before, after: Some(json(&bean)?) };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(bean)
    }

    /// A stage's constraint.
    pub async fn constraint(&self, env: &EnvName, stage: &StageName) -> Result<Option<ConstraintBean>> {
        let e = self.stage(env, stage).await?;
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {BEAN_COLUMNS} FROM deploy_constraints WHERE env_id = $1"), &[&e.id.as_str()])
            .await?;
        row.as_ref().map(bean_of).transpose()
    }

    /// Removes a stage's constraint; `false` when it had none.
    pub async fn delete_constraint(
        &self,
        env: &EnvName,
        stage: &StageName,
        operator: &str,
        now: EpochMs,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let e = lock_stage(&*tx, env, stage).await?;
        let before = before(&*tx, &e.id).await?;
        let deleted = tx.execute("DELETE FROM deploy_constraints WHERE env_id = $1", &[&e.id.as_str()]).await? > 0;
        if deleted {
            let change = Change { kind: kind::CONSTRAINT, action: "delete", before, after: None };
            history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
