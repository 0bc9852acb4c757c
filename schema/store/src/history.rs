//! The audit history: one row per configuration write or action, written in the transaction
//! that makes it (so there is no change without its row, and no row without its change), with
//! the principal, the time, what it was before and after, and the command it came from.

use schema::model::Environ;
use schema::time::EpochMs;
use schema::{EnvName, StageName};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{GenericClient, Row};

use crate::rows::{get, get_ms, ts};
use crate::{Error, Result, Store};

/// Kinds of change (Teletraan's config history types where there is one).
pub mod kind {
    /// A stage's settings (created, changed, deleted).
    pub const STAGE: &str = "Env General Config";
    /// Its group capacity.
    pub const GROUP_CAPACITY: &str = "Env Group Capacity Config";
    /// Its host capacity.
    pub const HOST_CAPACITY: &str = "Env Host Capacity Config";
    /// Its script variables.
    pub const SCRIPT: &str = "Env Script Config";
    /// Its secret script variables (names only).
    pub const SCRIPT_SECRETS: &str = "Env Script Secrets";
    /// Its agent settings.
    pub const AGENT: &str = "Env Advanced Config";
    /// Its pipeline.
    pub const PROMOTE: &str = "Env Promote Config";
    /// Its webhooks.
    pub const WEBHOOK: &str = "Env Webhook Config";
    /// Its dashboard graphs.
    pub const METRICS: &str = "Env Metrics Config";
    /// Its alarms.
    pub const ALARMS: &str = "Env Alarm Config";
    /// Its deploy schedule.
    pub const SCHEDULE: &str = "Env Schedule Config";
    /// Its deploy constraint.
    pub const CONSTRAINT: &str = "Env Constraint Config";
    /// An action on its deploys (deploy, promote, rollback, restart, pause, resume, verdict).
    pub const ACTION: &str = "Env Action";
    /// An action on its hosts.
    pub const HOST_ACTION: &str = "Host Action";
    /// A build published.
    pub const BUILD: &str = "Build";
    /// A tag made or removed.
    pub const TAG: &str = "Tag";
    /// A role granted or removed.
    pub const ROLE: &str = "Role";
    /// A principal made or removed.
    pub const PRINCIPAL: &str = "Principal";
    /// A token made or revoked.
    pub const TOKEN: &str = "Token";
    /// A host enrolled, or its credential revoked.
    pub const HOST_CREDENTIAL: &str = "Host Credential";
    /// A host pre-registered by a provisioner.
    pub const HOST: &str = "Host";
}

/// One change to record.
pub(crate) struct Change<'a> {
    /// What changed ([`kind`]).
    pub kind: &'a str,
    /// How (`create`, `update`, `delete`, `DEPLOY`, `PROMOTE`…).
    pub action: &'a str,
    /// Before, when it existed.
    pub before: Option<Value>,
    /// After, unless removed.
    pub after: Option<Value>,
}

/// Where a change happened.
#[derive(Clone, Copy)]
pub(crate) enum Place<'a> {
    /// A stage.
    Stage(&'a Environ),
    /// A stage known by names only (a deleted one keeps them).
    Names(Option<&'a str>, &'a EnvName, &'a StageName),
    /// An environment as a whole (its roles).
    Env(&'a EnvName),
    /// The system (builds, tokens, system roles).
    System,
}

/// The JSON of anything, for `before` and `after`.
pub(crate) fn json(v: &impl Serialize) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Corrupt(format!("history value: {e}")))
}

/// Writes a history row inside the caller's transaction.
pub(crate) async fn record(
    c: &impl GenericClient,
    place: Place<'_>,
    principal: &str,
    command_id: Option<&str>,
    change: Change<'_>,
    now: EpochMs,
) -> Result<()> {
    let (env_id, env_name, stage_name): (Option<&str>, Option<&str>, Option<&str>) = match place {
        Place::Stage(e) => (Some(e.id.as_str()), Some(e.env_name.as_str()), Some(e.stage_name.as_str())),
        Place::Names(id, env, stage) => (id, Some(env.as_str()), Some(stage.as_str())),
        Place::Env(env) => (None, Some(env.as_str()), None),
        Place::System => (None, None, None),
    };
    c.execute(
        "INSERT INTO history (at, principal, env_id, env_name, stage_name, kind, action, before, after, command_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &ts(now),
            &principal,
            &env_id,
            &env_name,
            &stage_name,
            &change.kind,
            &change.action,
            &change.before,
            &change.after,
            &command_id,
        ],
    )
    .await?;
    Ok(())
}

/// One history row as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Order of the change (Teletraan's `changeId`).
    pub change_id: i64,
    /// When.
    pub created_time: EpochMs,
    /// Who.
    pub operator: String,
    /// What changed ([`kind`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// How.
    pub action: String,
    /// Environment, when the change was in one.
    pub env_name: Option<String>,
    /// Stage, when the change was in one.
    pub stage_name: Option<String>,
    /// Before.
    pub before: Option<Value>,
    /// After (Teletraan's `configChange`).
    pub config_change: Option<Value>,
    /// The command it came from.
    pub command_id: Option<String>,
}

fn entry_from_row(r: &Row) -> Result<HistoryEntry> {
    Ok(HistoryEntry {
        change_id: get(r, "id")?,
        created_time: get_ms(r, "at")?,
        operator: get(r, "principal")?,
        kind: get(r, "kind")?,
        action: get(r, "action")?,
        env_name: get(r, "env_name")?,
        stage_name: get(r, "stage_name")?,
        before: get(r, "before")?,
        config_change: get(r, "after")?,
        command_id: get(r, "command_id")?,
    })
}

/// What to look for in the history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// One environment.
    pub env_name: Option<String>,
    /// One principal.
    pub operator: Option<String>,
    /// One kind.
    pub kind: Option<String>,
    /// Page, from 1.
    pub page_index: i64,
    /// Rows per page.
    pub page_size: i64,
}

const HISTORY_COLUMNS: &str = "id, at, principal, env_name, stage_name, kind, action, before, after, command_id";

impl Store {
    /// A stage's history, newest first.
    pub async fn stage_history(
        &self,
        env: &EnvName,
        stage: &StageName,
        page_index: i64,
        page_size: i64,
    ) -> Result<Vec<HistoryEntry>> {
        let e = self.stage(env, stage).await?;
        let client = self.client().await?;
        let offset = (page_index.max(1) - 1).saturating_mul(page_size);
        client
            .query(
                &format!("SELECT {HISTORY_COLUMNS} FROM history WHERE env_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"),
                &[&e.id.as_str(), &page_size, &offset],
            )
            .await?
            .iter()
            .map(entry_from_row)
            .collect()
    }

    /// The whole history, newest first, filtered.
    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryEntry>> {
        let client = self.client().await?;
        let offset = (q.page_index.max(1) - 1).saturating_mul(q.page_size);
        client
            .query(
                &format!(
                    "SELECT {HISTORY_COLUMNS} FROM history
                     WHERE ($1::text IS NULL OR env_name = $1) AND ($2::text IS NULL OR principal = $2)
                       AND ($3::text IS NULL OR kind = $3)
                     ORDER BY id DESC LIMIT $4 OFFSET $5"
                ),
                &[&q.env_name, &q.operator, &q.kind, &q.page_size, &offset],
            )
            .await?
            .iter()
            .map(entry_from_row)
            .collect()
    }
}
