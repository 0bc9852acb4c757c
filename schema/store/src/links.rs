//! A stage's dashboard graphs and alarms (`…/metrics`, `…/alarms`): lists shown on the board,
//! replaced whole, each change with its history row. Gateways do not need them.

use schema::model::{Alarm, MetricsConfig};
use schema::time::EpochMs;
use schema::{EnvName, StageName};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::history::{self, Change, Place, kind};
use crate::rows::{get, ts};
use crate::stages::lock_stage;
use crate::{Error, Result, Store};

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Links {
    Metrics,
    Alarms,
}

impl Links {
    fn column(self) -> &'static str {
        match self {
            Links::Metrics => "metrics_links",
            Links::Alarms => "alarm_links",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Links::Metrics => kind::METRICS,
            Links::Alarms => kind::ALARMS,
        }
    }
}

impl Store {
    async fn links<T: DeserializeOwned>(&self, env: &EnvName, stage: &StageName, which: Links) -> Result<Vec<T>> {
        let e = self.stage(env, stage).await?;
        let client = self.client().await?;
        let row = client
            .query_one(&format!("SELECT {} FROM environs WHERE env_id = $1", which.column()), &[&e.id.as_str()])
            .await?;
        serde_json::from_value(get(&row, which.column())?)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", which.column())))
    }

    async fn set_links<T: Serialize>(
        &self,
        env: &EnvName,
        stage: &StageName,
        which: Links,
        links: &[T],
        operator: &str,
        now: EpochMs,
    ) -> Result<()> {
        let value = history::json(&links)?;
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
        let change = Change { kind: which.kind(), action: "update", before: Some(before), after: Some(value) };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A stage's dashboard graphs.
    pub async fn metrics_links(&self, env: &EnvName, stage: &StageName) -> Result<Vec<MetricsConfig>> {
        self.links(env, stage, Links::Metrics).await
    }

    /// Replaces a stage's dashboard graphs (already checked).
    pub async fn set_metrics_links(
        &self,
        env: &EnvName,
        stage: &StageName,
        links: &[MetricsConfig],
        operator: &str,
        now: EpochMs,
    ) -> Result<()> {
        self.set_links(env, stage, Links::Metrics, links, operator, now).await
    }

    /// A stage's alarms.
    pub async fn alarm_links(&self, env: &EnvName, stage: &StageName) -> Result<Vec<Alarm>> {
        self.links(env, stage, Links::Alarms).await
    }

    /// Replaces a stage's alarms (already checked).
    pub async fn set_alarm_links(
        &self,
        env: &EnvName,
        stage: &StageName,
        links: &[Alarm],
        operator: &str,
        now: EpochMs,
    ) -> Result<()> {
        self.set_links(env, stage, Links::Alarms, links, operator, now).await
    }
}
