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
mod capacity;
mod commands;
mod constraints;
mod deploys;
mod freeze;
mod gateway;
mod gauges;
mod history;
mod hosts;
mod identity;
mod janitor;
mod jobs;
mod links;
mod live;
mod members;
mod migrate;
mod outbox;
mod promotes;
mod reads;
mod retention;
mod rows;
mod schedules;
mod secrets;
mod stages;
mod steps;
mod tags;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod tokens;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use access::{GrantRow, PrincipalRow, Subject};
pub use agents::{AgentRow, AppliedBatch, counting_admissions};
pub use builds::BuildSearch;
pub use commands::{NewCommand, Recorded};
pub use gateway::{GatewayLoad, LoadPart};
pub use gauges::FleetGauges;
pub use history::{HistoryEntry, HistoryQuery, kind as history_kind};
pub use identity::{Enrolled, Enrollment, HOST_CREDENTIAL_KEY, HostCredential};
pub use janitor::{Forgotten, JANITOR};
pub use jobs::{JobClaim, JobRun, JobStatus, MAX_ATTEMPTS as JOB_ATTEMPTS};
pub use live::{CommandStage, Refreshed};
pub use migrate::MIGRATIONS;
pub use outbox::{Exchange, OutboxMessage};
pub use promotes::PromoteOutcome;
pub use reads::{AgentCount, AgentTally, DeployPage, DeployProgress, DeploySearch, HostSummary};
pub use stages::{StageFilter, StageKey, StageMap};
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
    /// shutting down, out of resources, read-only (a failover in progress), or the
    /// transaction lost a deadlock or serialization race.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Db(e) => e.code().is_some_and(|c| is_transient_state(c.code())),
            Error::NotFound(_) | Error::Conflict(_) | Error::Invalid(_) | Error::Corrupt(_) | Error::BadData(_) => {
                false
            }
        }
    }
}

/// SQLSTATEs that say the database, not the request, is the problem: connection exceptions
/// (08), transaction rollbacks (40: serialization failures, deadlocks), insufficient resources
/// (53: too many connections, out of memory or disk), operator intervention (57: admin or crash
/// shutdown, cannot connect now, a statement timeout), and a read-only transaction (25006: the
/// server is a standby, as during a failover).
fn is_transient_state(code: &str) -> bool {
    ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) || code == "25006"
}

/// Whether a client error means that Postgres could not be reached or the connection broke
/// (as opposed to an error in the request): closed, reset, refused, timed out while connecting.
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if e.as_db_error().is_some() {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if inner.is::<std::io::Error>() {
            return true;
        }
        source = inner.source();
    }
    // The client's own kinds without a source: a connect or startup timeout.
    let text = e.to_string();
    text.starts_with("timeout") || text.starts_with("error connecting") || text.starts_with("error communicating")
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error()
            && db.code().code().starts_with("22")
        {
            return Error::BadData(db.message().to_string());
        }
        if is_connection_error(&e) { Error::Unavailable(describe(&e)) } else { Error::Db(e) }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::{PoolError, TimeoutType};
        Error::Unavailable(match e {
            PoolError::Timeout(TimeoutType::Wait) => "no free database connection in time (the pool is busy)".into(),
            PoolError::Timeout(TimeoutType::Create) => "connecting to the database timed out".into(),
            PoolError::Timeout(TimeoutType::Recycle) => "checking a database connection timed out".into(),
            PoolError::Backend(e) => format!("cannot connect to the database: {}", describe(&e)),
            other => other.to_string(),
        })
    }
}

/// A client error with its causes (`error connecting to server: Connection refused`).
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
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
    /// Longest the opening of one connection may take (TCP connect, TLS, authentication and
    /// the session settings).
    pub connect_timeout: Duration,
    /// Longest a caller waits for a free connection when all of them are in use.
    pub pool_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 32,
            host_silence: Duration::from_secs(150),
            statement_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            pool_timeout: Duration::from_secs(10),
        }
    }
}

/// TCP keepalive probes start after this much silence on a connection...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ...are sent this often...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and this many unanswered ones close it: a server that vanished without closing its
/// connections (a host lost, a network partition) is noticed within about a minute, even by a
/// connection waiting for a long statement.
const KEEPALIVE_RETRIES: u32 = 3;
/// Data sent and not acknowledged by the server for this long closes the connection.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The client configuration of `url` with the timeouts every connection of this crate has:
/// `connect_timeout` per connection attempt, keepalives and a TCP user timeout that detect a
/// vanished server, and a writable server required (a standby left over from a failover is
/// refused at connect rather than answering every write with an error). Settings of the URL
/// win where it sets them.
///
/// With it comes the TLS connector the URL's `sslmode` and `sslrootcert` ask for (see
/// [`tls`]: libpq's modes, `verify-full` checking the server's certificate and name).
pub(crate) fn client_config(
    url: &str,
    connect_timeout: Duration,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    let (url, tls) = tls::split_url(url)?;
    let mut config =
        tokio_postgres::Config::from_str(&url).map_err(|e| Error::Unavailable(format!("bad database URL: {e}")))?;
    config.ssl_mode(tls.client_mode());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    // tokio-postgres' own default idle time is two hours.
    if config.get_keepalives_idle() >= Duration::from_secs(7200) {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
    config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    Ok((config, tls.connector()?))
}

impl Store {
    /// Connects a pool of up to `max_connections` to `url` (connections open lazily), with
    /// the default options.
    pub fn connect(url: &str, max_connections: usize) -> Result<Store> {
        Store::connect_with(url, &StoreOptions { max_connections, ..StoreOptions::default() })
    }

    /// Connects a pool to `url` with `options`; every connection carries them as session
    /// settings.
    ///
    /// Every wait is bounded: for a free connection (`pool_timeout`), for a new one
    /// (`connect_timeout`), for a statement (`statement_timeout`, enforced by Postgres), and
    /// for a server that vanished (TCP keepalives). A connection that broke is noticed when it
    /// is next taken from the pool (the client knows its connection closed) and replaced, so
    /// the store recovers by itself when the database comes back.
    pub fn connect_with(url: &str, options: &StoreOptions) -> Result<Store> {
        let max_connections = options.max_connections;
        let (mut config, tls) = client_config(url, options.connect_timeout)?;
        let mut settings = config.get_options().map(str::to_string).unwrap_or_default();
        settings.push_str(&format!(
            " -c statement_timeout={} -c teletraan.host_silence_secs={}",
            options.statement_timeout.as_millis(),
            options.host_silence.as_secs_f64()
        ));
        config.options(settings.trim());
        // Fast: a connection is checked without a round trip, by whether the client saw it
        // close; every connection error closes it, so a broken one is never handed out twice.
        let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .wait_timeout(Some(options.pool_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(Store { pool })
    }

    /// Creates the database named in `url` when it does not exist (connecting to the server's
    /// `postgres` database to do so).
    pub async fn ensure_database(url: &str) -> Result<()> {
        let (config, tls) = client_config(url, StoreOptions::default().connect_timeout)?;
        let name = config.get_dbname().unwrap_or("postgres").to_string();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::Invalid(schema::model::Invalid {
                field: "database",
                message: format!("database name {name:?} may only contain letters, digits and '_'"),
            }));
        }
        let mut admin = config.clone();
        admin.dbname("postgres");
        let (client, conn) = admin.connect(tls).await.map_err(|e| Error::Unavailable(describe(&e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_and_failovers_are_transient_and_request_errors_are_not() {
        for code in ["57P01", "57P02", "57P03", "57014", "25006", "40001", "40P01", "08006", "08001", "53300"] {
            assert!(is_transient_state(code), "{code} should be transient");
        }
        for code in ["23505", "23503", "42P01", "42703", "25001", "P0001"] {
            assert!(!is_transient_state(code), "{code} should not be transient");
        }
    }

    /// A port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
        listener.local_addr().expect("its address").port()
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable() {
        let store = Store::connect(&format!("postgres://teletraan@127.0.0.1:{}/x", closed_port()), 1).unwrap();
        let e = store.ping().await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)) && e.is_transient(), "{e:?}");
        assert!(e.to_string().contains("refused"), "the cause is named: {e}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_unavailable_once_the_connect_timeout_passed() {
        // Accepts connections and never says a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let options =
            StoreOptions { max_connections: 1, connect_timeout: Duration::from_millis(200), ..StoreOptions::default() };
        let store = Store::connect_with(&format!("postgres://teletraan@127.0.0.1:{port}/x"), &options).unwrap();
        let e = store.ping().await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("timed out") || text.contains("timeout"), "the cause is named: {text}");
        silent.abort();
    }
}
