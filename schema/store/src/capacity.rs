//! A stage's capacity: the host groups and host names it deploys to. Every change locks the
//! stage, is announced to the gateways (they decide which hosts a stage takes) and leaves a
//! history row with the list before and after.

use schema::time::EpochMs;
use schema::{CapacityType, EnvName, StageName};
use tokio_postgres::GenericClient;

use crate::history::{self, Change, Place, json, kind};
use crate::rows::{get, ts};
use crate::stages::{announce_stage, lock_stage};
use crate::{Result, Store};

/// The table and column of a kind of capacity.
fn table(kind: CapacityType) -> (&'static str, &'static str) {
    match kind {
        CapacityType::Group => ("stage_groups", "group_name"),
        CapacityType::Host => ("stage_hosts", "host_name"),
    }
}

async fn names_of(c: &impl GenericClient, env_id: &str, kind: CapacityType) -> Result<Vec<String>> {
    let (table, column) = table(kind);
    c.query(&format!("SELECT {column} FROM {table} WHERE env_id = $1 ORDER BY {column}"), &[&env_id])
        .await?
        .iter()
        .map(|r| get(r, column))
        .collect()
}

/// How a capacity change goes.
enum Edit<'a> {
    /// The whole list.
    Replace(&'a [String]),
    /// One more name.
    Add(&'a str),
    /// One name less.
    Remove(&'a str),
}

impl Store {
    /// The groups or hosts attached to a stage.
    pub async fn capacity(&self, env: &EnvName, stage: &StageName, kind: CapacityType) -> Result<Vec<String>> {
        let e = self.stage(env, stage).await?;
        let client = self.client().await?;
        names_of(&**client, e.id.as_str(), kind).await
    }

    /// Replaces the groups or hosts attached to a stage (names already validated).
    pub async fn set_capacity(
        &self,
        env: &EnvName,
        stage: &StageName,
        kind: CapacityType,
        names: &[String],
        operator: &str,
        now: EpochMs,
    ) -> Result<()> {
        self.edit_capacity(env, stage, kind, Edit::Replace(names), operator, now).await.map(|_| ())
    }

    /// Attaches one group or host to a stage (`POST …/capacity`); `false` when it was
    /// attached already (nothing changes, nothing is recorded).
    pub async fn add_capacity(
        &self,
        env: &EnvName,
        stage: &StageName,
        kind: CapacityType,
        name: &str,
        operator: &str,
        now: EpochMs,
    ) -> Result<bool> {
        self.edit_capacity(env, stage, kind, Edit::Add(name), operator, now).await
    }

    /// Detaches one group or host from a stage (`DELETE …/capacity`); `false` when it was not
    /// attached (nothing changes, nothing is recorded).
    pub async fn remove_capacity(
        &self,
        env: &EnvName,
        stage: &StageName,
        kind: CapacityType,
        name: &str,
        operator: &str,
        now: EpochMs,
    ) -> Result<bool> {
        self.edit_capacity(env, stage, kind, Edit::Remove(name), operator, now).await
    }

    async fn edit_capacity(
        &self,
        env: &EnvName,
        stage: &StageName,
        kind: CapacityType,
        edit: Edit<'_>,
        operator: &str,
        now: EpochMs,
    ) -> Result<bool> {
        let (table, column) = table(kind);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let e = lock_stage(&*tx, env, stage).await?;
        let id = e.id.as_str();
        let before = names_of(&*tx, id, kind).await?;
        let mut after = match edit {
            Edit::Replace(names) => names.to_vec(),
            Edit::Add(name) => before.iter().map(String::as_str).chain([name]).map(str::to_string).collect(),
            Edit::Remove(name) => before.iter().filter(|n| n.as_str() != name).cloned().collect(),
        };
        after.sort();
        after.dedup();
        let (action, changed) = match edit {
            Edit::Replace(_) => ("update", true),
            Edit::Add(_) => ("add", after != before),
            Edit::Remove(_) => ("remove", after != before),
        };
        if !changed {
            return Ok(false);
        }
        tx.execute(&format!("DELETE FROM {table} WHERE env_id = $1 AND NOT ({column} = ANY($2))"), &[&id, &after])
            .await?;
        tx.execute(
            &format!("INSERT INTO {table} (env_id, {column}) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING"),
            &[&id, &after],
        )
        .await?;
        tx.execute(
            "UPDATE environs SET last_operator = $2, last_update = $3 WHERE env_id = $1",
            &[&id, &operator, &ts(now)],
        )
        .await?;
        announce_stage(&*tx, &e.id).await?;
        let what = match kind {
            CapacityType::Group => kind::GROUP_CAPACITY,
            CapacityType::Host => kind::HOST_CAPACITY,
        };
        let change = Change { kind: what, action, before: Some(json(&before)?), after: Some(json(&after)?) };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}
