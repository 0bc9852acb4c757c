//! What gateways load: everything at start, one stage on a version gap. Each load is one
//! REPEATABLE READ transaction, so the versions it returns match the rows it returns: a change
//! committed meanwhile has a higher version and is applied from the change stream.

use schema::EnvId;
use schema::bus::StageSnapshot;
use schema::time::EpochMs;
use tokio_postgres::IsolationLevel;

use futures_util::TryStreamExt;

use crate::agents::{AgentRow, agent_row, all_rows, stage_rows};
use crate::identity::{HostCredential, credentials_since};
use crate::stages::{all_snapshots, snapshot};
use crate::tokens::{GatewayToken, token_hashes};
use crate::{Result, Store};

/// What a gateway holds besides the agent records, as of one instant.
#[derive(Debug, Clone, Default)]
pub struct GatewayLoad {
    /// Valid tokens.
    pub tokens: Vec<GatewayToken>,
    /// Every stage with its version.
    pub stages: Vec<(i64, StageSnapshot)>,
    /// Every host enrollment.
    pub credentials: Vec<HostCredential>,
}

/// One part of a gateway's full load, handed over in this order: the [`GatewayLoad`] first,
/// then the agent records a chunk at a time.
#[derive(Debug, Clone)]
pub enum LoadPart {
    /// Tokens, stages and enrollments.
    Head(GatewayLoad),
    /// The next agent records (at most the chunk size asked for).
    Agents(Vec<AgentRow>),
}

impl Store {
    /// Loads everything a gateway holds, consistently, handing it to `sink` part by part:
    /// the agent records of a million hosts stream through in chunks of `chunk` rows, so the
    /// rows are never all in memory next to what the gateway builds from them (Postgres waits
    /// while the sink does). `sink` answers whether to go on; when it says no, the load stops
    /// and returns `Ok(false)`. `Ok(true)`: every part was handed over.
    pub async fn gateway_load<F, Fut>(&self, now: EpochMs, chunk: usize, mut sink: F) -> Result<bool>
    where
        F: FnMut(LoadPart) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut client = self.client().await?;
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let head = GatewayLoad {
            tokens: token_hashes(&*tx, now).await?,
            stages: all_snapshots(&*tx).await?,
            credentials: credentials_since(&*tx, 0).await?,
        };
        if !sink(LoadPart::Head(head)).await {
            return Ok(false);
        }
        let rows = all_rows(&*tx).await?;
        let mut rows = std::pin::pin!(rows);
        let chunk = chunk.max(1);
        let mut part = Vec::with_capacity(chunk);
        while let Some(row) = rows.try_next().await? {
            part.push(agent_row(&row)?);
            if part.len() == chunk
                && !sink(LoadPart::Agents(std::mem::replace(&mut part, Vec::with_capacity(chunk)))).await
            {
                return Ok(false);
            }
        }
        if !part.is_empty() && !sink(LoadPart::Agents(part)).await {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Loads one stage (with its version) and its agent records, consistently; `None` when
    /// the stage no longer exists.
    pub async fn stage_load(&self, env_id: &EnvId) -> Result<(Option<(i64, StageSnapshot)>, Vec<AgentRow>)> {
        let mut client = self.client().await?;
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let stage = snapshot(&*tx, env_id).await?;
        let rows = stage_rows(&*tx, env_id).await?;
        tx.commit().await?;
        Ok((stage, rows))
    }
}
