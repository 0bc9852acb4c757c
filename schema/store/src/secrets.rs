//! Secret script variables of a stage: written by operators, sent to hosts with the other
//! script variables (in the stage's snapshot), never read back. Only their names leave this
//! module: the API lists names, the history records names.

use std::collections::BTreeMap;

use schema::model::StringMap;
use schema::time::EpochMs;
use schema::{EnvName, StageName};

use crate::history::{self, Change, Place, kind};
use crate::rows::get;
use crate::stages::{announce_stage, lock_stage, map_from_json};
use crate::{Result, Store};

impl Store {
    /// The names of a stage's secret script variables, sorted.
    pub async fn script_secret_names(&self, env: &EnvName, stage: &StageName) -> Result<Vec<String>> {
        let e = self.stage(env, stage).await?;
        let client = self.client().await?;
        let row = client.query_one("SELECT script_secrets FROM environs WHERE env_id = $1", &[&e.id.as_str()]).await?;
        Ok(map_from_json(get(&row, "script_secrets")?, "script_secrets")?.into_keys().collect())
    }

    /// Sets (`Some`) or removes (`None`) secret script variables of a stage, leaving the
    /// others as they are; answers the names after the change.
    pub async fn set_script_secrets(
        &self,
        env: &EnvName,
        stage: &StageName,
        changes: &BTreeMap<String, Option<String>>,
        operator: &str,
        now: EpochMs,
    ) -> Result<Vec<String>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let e = lock_stage(&*tx, env, stage).await?;
        let row = tx.query_one("SELECT script_secrets FROM environs WHERE env_id = $1", &[&e.id.as_str()]).await?;
        let mut secrets: StringMap = map_from_json(get(&row, "script_secrets")?, "script_secrets")?;
        let before: Vec<String> = secrets.keys().cloned().collect();
        for (name, value) in changes {
            match value {
                Some(v) => secrets.insert(name.clone(), v.clone()),
                None => secrets.remove(name),
            };
        }
        let value = history::json(&secrets)?;
        tx.execute(
            "UPDATE environs SET script_secrets = $2, last_operator = $3, last_update = $4 WHERE env_id = $1",
            &[&e.id.as_str(), &value, &operator, &crate::rows::ts(now)],
        )
        .await?;
        announce_stage(&*tx, &e.id).await?;
        let after: Vec<String> = secrets.into_keys().collect();
        // Names only, and which were written: the values never reach the history.
        let written: Vec<&String> = changes.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| k).collect();
        let change = Change {
            kind: kind::SCRIPT_SECRETS,
            action: "update",
            before: Some(history::json(&before)?),
            after: Some(serde_json::json!({ "names": after, "written": written })),
        };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(after)
    }
}
