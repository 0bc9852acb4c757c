//! What gateways load: everything at start, one stage on a version gap. Each load is one
//! REPEATABLE READ transaction, so the versions it returns match the rows it returns: a change
//! committed meanwhile has a higher version and is applied from the change stream.

use schema::EnvId;
use schema::bus::StageSnapshot;
use schema::time::EpochMs;
use tokio_postgres::IsolationLevel;

use crate::agents::{AgentRow, all_rows, stage_rows};
use crate::identity::{HostCredential, credentials_since};
use crate::stages::{all_snapshots, snapshot};
use crate::tokens::{GatewayToken, token_hashes};
use crate::{Result, Store};

/// Everything a gateway holds, as of one instant.
#[derive(Debug, Clone, Default)]
pub struct GatewayLoad {
    /// Valid tokens.
    pub tokens: Vec<GatewayToken>,
    /// Every stage with its version.
    pub stages: Vec<(i64, StageSnapshot)>,
    /// Every agent record.
    pub agents: Vec<AgentRow>,
    /// Every host enrollment.
    pub credentials: Vec<HostCredential>,
}

impl Store {
    /// Loads everything a gateway holds, consistently.
    pub async fn gateway_load(&self, now: EpochMs) -> Result<GatewayLoad> {
        let mut client = self.client().await?;
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let load = GatewayLoad {
            tokens: token_hashes(&*tx, now).await?,
            stages: all_snapshots(&*tx).await?,
            agents: all_rows(&*tx).await?,
            credentials: credentials_since(&*tx, 0).await?,
        };
        tx.commit().await?;
        Ok(load)
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
