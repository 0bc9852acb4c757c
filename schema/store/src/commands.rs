//! Commands: what the API asked the workers to do, applied once per command id.

use schema::bus::{CommandEnvelope, CommandError, CommandOutcome};
use schema::model::CommandStatus;
use schema::time::EpochMs;
use tokio_postgres::GenericClient;

use crate::rows::{get, get_ms, get_opt_ms, ts};
use crate::{Error, Result, Store};

/// A command the API is about to publish.
#[derive(Debug, Clone)]
pub struct NewCommand<'a> {
    /// Command id.
    pub id: &'a str,
    /// Kind (`create_deploy`…).
    pub kind: &'a str,
    /// Who asked.
    pub operator: &'a str,
    /// The envelope as JSON.
    pub payload: serde_json::Value,
    /// When.
    pub now: EpochMs,
}

/// What recording a command found.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The command is new, PENDING.
    New,
    /// A command of this id was recorded before (a retried request): its envelope as stored
    /// and where it stands.
    Existing {
        /// The envelope as JSON.
        payload: serde_json::Value,
        /// Its status.
        status: Box<CommandStatus>,
    },
}

/// Records a command before it is applied; returns the stored outcome when the command was
/// applied already (a redelivery), so the caller replies with it and changes nothing.
pub(crate) async fn begin(
    c: &impl GenericClient,
    envelope: &CommandEnvelope,
    now: EpochMs,
) -> Result<Option<CommandOutcome>> {
    let payload = serde_json::to_value(envelope).map_err(|e| Error::Corrupt(e.to_string()))?;
    c.execute(
        "INSERT INTO commands (command_id, kind, operator, payload, status, created_at)
         VALUES ($1, $2, $3, $4, 'PENDING', $5) ON CONFLICT (command_id) DO NOTHING",
        &[&envelope.id, &envelope.command.kind(), &envelope.operator, &payload, &ts(now)],
    )
    .await?;
    let row = c
        .query_one("SELECT status, result, error FROM commands WHERE command_id = $1 FOR UPDATE", &[&envelope.id])
        .await?;
    let status: &str = get(&row, "status")?;
    Ok(match status {
        "DONE" => {
            Some(CommandOutcome::Ok { result: get::<Option<serde_json::Value>>(&row, "result")?.unwrap_or_default() })
        }
        "FAILED" => {
            let error: serde_json::Value = get::<Option<serde_json::Value>>(&row, "error")?.unwrap_or_default();
            Some(CommandOutcome::Err {
                error: serde_json::from_value(error).map_err(|e| Error::Corrupt(format!("command error: {e}")))?,
            })
        }
        _ => None,
    })
}

/// Stores the outcome of a command.
pub(crate) async fn finish(c: &impl GenericClient, id: &str, outcome: &CommandOutcome, now: EpochMs) -> Result<()> {
    let (status, result, error) = match outcome {
        CommandOutcome::Ok { result } => ("DONE", Some(result.clone()), None),
        CommandOutcome::Err { error } => {
            ("FAILED", None, Some(serde_json::to_value(error).map_err(|e| Error::Corrupt(e.to_string()))?))
        }
    };
    c.execute(
        "UPDATE commands SET status = $2, result = $3, error = $4, finished_at = $5 WHERE command_id = $1",
        &[&id, &status, &result, &error, &ts(now)],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Records a command as PENDING before it is published (so its URL answers at once).
    pub async fn insert_command(&self, cmd: NewCommand<'_>) -> Result<Recorded> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO commands (command_id, kind, operator, payload, status, created_at)
                 VALUES ($1, $2, $3, $4, 'PENDING', $5) ON CONFLICT (command_id) DO NOTHING",
                &[&cmd.id, &cmd.kind, &cmd.operator, &cmd.payload, &ts(cmd.now)],
            )
            .await?;
        if n == 1 {
            return Ok(Recorded::New);
        }
        let payload: serde_json::Value =
            client.query_one("SELECT payload FROM commands WHERE command_id = $1", &[&cmd.id]).await?.get(0);
        let status = self.command(cmd.id).await?.ok_or_else(|| Error::NotFound(format!("command {}", cmd.id)))?;
        Ok(Recorded::Existing { payload, status: Box::new(status) })
    }

    /// Makes a command that failed because the broker was unavailable (nothing was done)
    /// PENDING again, so that a retried request sends it again. Returns whether it did.
    pub async fn reopen_unsent_command(&self, id: &str) -> Result<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE commands SET status = 'PENDING', error = NULL, finished_at = NULL
                 WHERE command_id = $1 AND status = 'FAILED' AND error->>'code' = 'unavailable'",
                &[&id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Marks a PENDING command FAILED (it could not be published).
    pub async fn fail_command(&self, id: &str, error: &CommandError, now: EpochMs) -> Result<()> {
        let client = self.client().await?;
        let error = serde_json::to_value(error).map_err(|e| Error::Corrupt(e.to_string()))?;
        client
            .execute(
                "UPDATE commands SET status = 'FAILED', error = $2, finished_at = $3 WHERE command_id = $1 AND status = 'PENDING'",
                &[&id, &error, &ts(now)],
            )
            .await?;
        Ok(())
    }

    /// Marks FAILED a command whose message was dead-lettered (its worker gave up on it, or the
    /// broker did): it will never be applied, so its status must say so. `envelope` is the
    /// message when it could be read (a command the API never recorded is then recorded);
    /// without it only a recorded command is marked. A command already DONE or FAILED keeps
    /// its outcome. Returns whether the command was marked.
    pub async fn fail_dead_command(
        &self,
        id: &str,
        envelope: Option<&CommandEnvelope>,
        reason: &str,
        now: EpochMs,
    ) -> Result<bool> {
        let error = CommandError {
            status: 500,
            code: "dead_lettered".into(),
            message: format!(
                "the command could not be applied and was given up ({reason}); nothing was changed, and its \
                 message is kept in the dead-letter queue for operators"
            ),
        };
        let error = serde_json::to_value(&error).map_err(|e| Error::Corrupt(e.to_string()))?;
        let client = self.client().await?;
        let marked = match envelope {
            Some(env) => {
                let payload = serde_json::to_value(env).map_err(|e| Error::Corrupt(e.to_string()))?;
                client
                    .execute(
                        "INSERT INTO commands (command_id, kind, operator, payload, status, error, created_at, finished_at)
                         VALUES ($1, $2, $3, $4, 'FAILED', $5, $6, $7)
                         ON CONFLICT (command_id) DO UPDATE SET status = 'FAILED', error = EXCLUDED.error,
                             finished_at = EXCLUDED.finished_at
                         WHERE commands.status = 'PENDING'",
                        &[&id, &env.command.kind(), &env.operator, &payload, &error, &ts(env.issued_at), &ts(now)],
                    )
                    .await?
            }
            None => {
                client
                    .execute(
                        "UPDATE commands SET status = 'FAILED', error = $2, finished_at = $3
                         WHERE command_id = $1 AND status = 'PENDING'",
                        &[&id, &error, &ts(now)],
                    )
                    .await?
            }
        };
        Ok(marked == 1)
    }

    /// A command's progress.
    pub async fn command(&self, id: &str) -> Result<Option<CommandStatus>> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                "SELECT command_id, kind, status, result, error, created_at, finished_at FROM commands WHERE command_id = $1",
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let error: Option<serde_json::Value> = get(&row, "error")?;
        Ok(Some(CommandStatus {
            id: get(&row, "command_id")?,
            kind: get(&row, "kind")?,
            status: get(&row, "status")?,
            created_at: get_ms(&row, "created_at")?,
            finished_at: get_opt_ms(&row, "finished_at")?,
            result: get(&row, "result")?,
            error: error.map(serde_json::from_value).transpose().map_err(|e| Error::Corrupt(e.to_string()))?,
        }))
    }
}
