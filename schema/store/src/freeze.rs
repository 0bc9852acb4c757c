//! Stages switched off and on, the system-wide change freeze (Teletraan's
//! `POST /v1/envs/{env}/{stage}/actions` and `POST /v1/envs/actions`), and the check every new
//! deploy makes against them under its stage's lock (the rule is `schema::rules::freeze`).
//! Each switch is recorded twice in its transaction: a tag (`ENABLE_ENV`/`DISABLE_ENV` on the
//! stage, or on `TELETRAAN` for the freeze, as Teletraan's board reads them) and a history row.

use schema::model::{Environ, NewTag};
use schema::rules::freeze::{self, Switched};
use schema::time::EpochMs;
use schema::{DeployType, EnvName, EnvironAction, EnvironState, StageName, TagTargetType, TagValue};
use serde_json::json;
use tokio_postgres::{GenericClient, Row};

use crate::history::{self, Change, Place, kind};
use crate::rows::{get, get_ms, get_opt_ms, ts};
use crate::stages::lock_stage;
use crate::{Error, Result, Store};

/// The target id of system-wide tags.
const SYSTEM_TARGET: &str = "TELETRAAN";

fn tag_value(action: EnvironAction) -> TagValue {
    match action {
        EnvironAction::Enable => TagValue::EnableEnv,
        EnvironAction::Disable => TagValue::DisableEnv,
    }
}

fn freeze_from_row(r: &Row) -> Result<Option<Switched>> {
    if !get::<bool>(r, "frozen")? {
        return Ok(None);
    }
    Ok(Some(Switched {
        operator: get::<Option<String>>(r, "operator")?.unwrap_or_default(),
        at: get_opt_ms(r, "since")?.unwrap_or(0),
        description: get(r, "description")?,
    }))
}

/// Who disabled a stage, from its latest ENABLE_ENV/DISABLE_ENV tag (`None` when the latest
/// is not a DISABLE_ENV: the stage was disabled by a plain update).
async fn disabled_by(c: &impl GenericClient, e: &Environ) -> Result<Option<Switched>> {
    let row = c
        .query_opt(
            "SELECT value, operator, created_date, comments FROM tags
             WHERE target_type = 'ENVIRONMENT' AND target_id = $1 AND value IN ('ENABLE_ENV', 'DISABLE_ENV')
             ORDER BY created_date DESC, tag_id DESC LIMIT 1",
            &[&e.id.as_str()],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    if get::<&str>(&r, "value")? != TagValue::DisableEnv.as_str() {
        return Ok(None);
    }
    Ok(Some(Switched {
        operator: get(&r, "operator")?,
        at: get_ms(&r, "created_date")?,
        description: get(&r, "comments")?,
    }))
}

/// Refuses (409, with the reason) a deploy of `deploy_type` on the locked stage `e` when the
/// stage is disabled or the system frozen. Reads the freeze FOR SHARE: a freeze that commits
/// while this deploy's transaction runs waits for it, and any deploy after it sees it.
pub(crate) async fn check_deploy(c: &impl GenericClient, e: &Environ, deploy_type: DeployType) -> Result<()> {
    if !freeze::brings_new_build(deploy_type) {
        return Ok(());
    }
    let row = c.query_one("SELECT frozen, operator, since, description FROM change_freeze FOR SHARE", &[]).await?;
    let frozen = freeze_from_row(&row)?;
    let by = match e.state {
        EnvironState::Disabled => disabled_by(c, e).await?,
        EnvironState::Normal => None,
    };
    match freeze::refusal(&e.env_name, &e.stage_name, deploy_type, e.state, by.as_ref(), frozen.as_ref()) {
        Some(why) => Err(Error::Conflict(why)),
        None => Ok(()),
    }
}

/// Whether the system is frozen (read without a lock: for the auto-promoter's first look).
pub(crate) async fn frozen(c: &impl GenericClient) -> Result<Option<Switched>> {
    let row = c.query_one("SELECT frozen, operator, since, description FROM change_freeze", &[]).await?;
    freeze_from_row(&row)
}

impl Store {
    /// Enables or disables a stage (its `state`): a disabled stage takes no new build, from
    /// anyone, until it is enabled again. Records an ENABLE_ENV/DISABLE_ENV tag on the stage
    /// and a history row. Returns the stage.
    pub async fn switch_stage(
        &self,
        env: &EnvName,
        stage: &StageName,
        action: EnvironAction,
        description: Option<&str>,
        operator: &str,
        now: EpochMs,
    ) -> Result<Environ> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut e = lock_stage(&*tx, env, stage).await?;
        let before = e.state;
        e.state = match action {
            EnvironAction::Enable => EnvironState::Normal,
            EnvironAction::Disable => EnvironState::Disabled,
        };
        e.last_operator = operator.to_string();
        e.last_update = now;
        tx.execute(
            "UPDATE environs SET state = $2, last_operator = $3, last_update = $4 WHERE env_id = $1",
            &[&e.id.as_str(), &e.state.as_str(), &operator, &ts(now)],
        )
        .await?;
        let tag = NewTag {
            value: tag_value(action),
            target_type: TagTargetType::Environment,
            target_id: e.id.as_str().to_string(),
            comments: description.map(str::to_string),
        };
        crate::tags::insert(&*tx, &tag, operator, now).await?;
        let change = Change {
            kind: kind::ACTION,
            action: action.as_str(),
            before: Some(json!({ "state": before })),
            after: Some(json!({ "state": e.state, "description": description })),
        };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Freezes (DISABLE) or unfreezes (ENABLE) deploys of new builds on every stage. Records
    /// an ENABLE_ENV/DISABLE_ENV tag on `TELETRAAN` and a history row. Stages keep their own
    /// switch: lifting the freeze does not enable a stage someone disabled.
    pub async fn switch_freeze(
        &self,
        action: EnvironAction,
        description: Option<&str>,
        operator: &str,
        now: EpochMs,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let before = frozen(&*tx).await?.is_some();
        let on = action == EnvironAction::Disable;
        tx.execute(
            "UPDATE change_freeze SET frozen = $1, operator = $2, since = $3, description = $4",
            &[&on, &operator, &ts(now), &description],
        )
        .await?;
        let tag = NewTag {
            value: tag_value(action),
            target_type: TagTargetType::Teletraan,
            target_id: SYSTEM_TARGET.to_string(),
            comments: description.map(str::to_string),
        };
        crate::tags::insert(&*tx, &tag, operator, now).await?;
        let change = Change {
            kind: kind::ACTION,
            action: action.as_str(),
            before: Some(json!({ "frozen": before })),
            after: Some(json!({ "frozen": on, "description": description })),
        };
        history::record(&*tx, Place::System, operator, None, change, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The system-wide freeze, when it is on: who, since when, why.
    pub async fn change_freeze(&self) -> Result<Option<Switched>> {
        let client = self.client().await?;
        frozen(&**client).await
    }
}
