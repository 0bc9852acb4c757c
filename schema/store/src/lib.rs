//! `store`: everything the deploy system keeps in Postgres.
//!
//! SQL lives here, next to the mapping of its rows; callers see typed methods on [`Store`].
//! Operations that must be atomic (a deploy with the retirement of the previous one, its
//! admissions and the messages announcing them) are one method and one transaction; messages
//! for RabbitMQ are written to the outbox in that transaction and relayed afterwards.
//!
//! This crate must never talk to RabbitMQ or HTTP, and never decide rollout rules itself: the
//! rules are the pure functions of `schema::rules`, which it calls.

mod access;
mod actions;
mod agents;
mod builds;
mod commands;
mod constraints;
mod deploys;
mod gateway;
mod history;
mod hosts;
mod identity;
mod janitor;
mod jobs;
mod migrate;
mod outbox;
mod promotes;
mod reads;
mod retention;
mod rows;
mod schedules;
mod secrets;
mod stages;
mod tags;
#[cfg(feature = "testing")]
pub mod testing;
mod tokens;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

pub use access::{GrantRow, PrincipalRow, Subject};
pub use agents::{AgentRow, AppliedBatch};
pub use commands::NewCommand;
pub use gateway::GatewayLoad;
pub use history::{HistoryEntry, HistoryQuery, kind as history_kind};
pub use identity::{Enrolled, Enrollment, HOST_CREDENTIAL_KEY, HostCredential};
pub use janitor::{Forgotten, JANITOR};
pub use jobs::{JobClaim, JobRun, JobStatus, MAX_ATTEMPTS as JOB_ATTEMPTS};
pub use migrate::MIGRATIONS;
pub use outbox::{Exchange, OutboxMessage};
pub use promotes::PromoteOutcome;
pub use reads::{AgentCount, DeployPage, DeployProgress, DeploySearch, HostSummary};
pub use stages::{StageKey, StageMap};
pub use tokens::{GatewayToken, NewToken, TokenInfo, TokenKind, TokenOwner, hash_token, new_secret};
pub use webhooks::{AttemptRecord, ClaimedDelivery, DeliveryClaim};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// The input breaks a rule.
    #[error(transparent)]
    Invalid(#[from] schema::model::Invalid),
    /// Postgres cannot be reached (pool exhausted, connection refused or lost).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Any other database error (a bug or a broken database).
    #[error("database error: {0}")]
    Db(tokio_postgres::Error),
    /// A stored value could not be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Postgres refused a value (out of range, invalid text): bad input that got past
    /// validation.
    #[error("invalid value: {0}")]
    BadData(String),
}

impl Error {
    /// Whether trying again later may succeed without any change: the database is away,
    /// shutting down, out of resources, or the transaction lost a deadlock or serialization
    /// race.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Db(e) => {
                e.code().is_some_and(|c| ["08", "40", "53", "57"].iter().any(|class| c.code().starts_with(class)))
            }
            Error::NotFound(_) | Error::Conflict(_) | Error::Invalid(_) | Error::Corrupt(_) | Error::BadData(_) => {
                false
            }
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error()
            && db.code().code().starts_with("22")
        {
            return Error::BadData(db.message().to_string());
        }
        if e.is_closed() || e.as_db_error().is_none() && e.to_string().contains("connection") {
            Error::Unavailable(e.to_string())
        } else {
            Error::Db(e)
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A pool of Postgres connections and the queries of the deploy system.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// How a process's connections behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Connections in the pool (opened lazily).
    pub max_connections: usize,
    /// Hosts silent longer than this are not admitted (the janitor's first threshold).
    pub host_silence: Duration,
    /// Longest a statement may run before Postgres cancels it (0: no limit).
    pub statement_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 32,
            host_silence: Duration::from_secs(150),
            statement_timeout: Duration::from_secs(120),
        }
    }
}

impl Store {
    /// Connects a pool of up to `max_connections` to `url` (connections open lazily), with
    /// the default options.
    pub fn connect(url: &str, max_connections: usize) -> Result<Store> {
        Store::connect_with(url, &StoreOptions { max_connections, ..StoreOptions::default() })
    }

    /// Connects a pool to `url` with `options`; every connection carries them as session
    /// settings.
    pub fn connect_with(url: &str, options: &StoreOptions) -> Result<Store> {
        let max_connections = options.max_connections;
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| Error::Unavailable(format!("bad database URL: {e}")))?;
        let mut settings = config.get_options().map(str::to_string).unwrap_or_default();
        settings.push_str(&format!(
            " -c statement_timeout={} -c teletraan.host_silence_secs={}",
            options.statement_timeout.as_millis(),
            options.host_silence.as_secs_f64()
        ));
        config.options(settings.trim());
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(Store { pool })
    }

    /// Creates the database named in `url` when it does not exist (connecting to the server's
    /// `postgres` database to do so).
    pub async fn ensure_database(url: &str) -> Result<()> {
        let config =
            tokio_postgres::Config::from_str(url).map_err(|e| Error::Unavailable(format!("bad database URL: {e}")))?;
        let name = config.get_dbname().unwrap_or("postgres").to_string();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::Invalid(schema::model::Invalid {
                field: "database",
                message: format!("database name {name:?} may only contain letters, digits and '_'"),
            }));
        }
        let mut admin = config.clone();
        admin.dbname("postgres");
        let (client, conn) = admin.connect(NoTls).await.map_err(|e| Error::Unavailable(e.to_string()))?;
        let task = tokio::spawn(conn);
        let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await?.is_some();
        if !exists {
            match client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await {
                Ok(()) => tracing::info!(database = %name, "created database"),
                // Another process created it meanwhile.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
                Err(e) => return Err(e.into()),
            }
        }
        drop(client);
        let _ = task.await;
        Ok(())
    }

    /// Applies the migrations that are not applied yet (safe to run from several processes).
    pub async fn migrate(&self) -> Result<Vec<i32>> {
        let mut client = self.pool.get().await?;
        migrate::run(&mut client).await
    }

    /// Checks that a connection works (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }
}
