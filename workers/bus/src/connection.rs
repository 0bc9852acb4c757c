//! Connections to the broker: one attempt, or attempts with backoff until one works; and the
//! bound on every exchange with the broker ([`within`]).

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;

use crate::topology::BusConfig;

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker is unreachable or the connection broke.
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a message (nack) or could not route it.
    #[error("message broker refused the message: {0}")]
    Refused(String),
}

impl From<lapin::Error> for BusError {
    fn from(e: lapin::Error) -> Self {
        BusError::Unavailable(e.to_string())
    }
}

/// Runs one exchange with the broker (a connect, a channel opened, a publish, a confirm),
/// bounded by `limit`: its own outcome, or [`BusError::Unavailable`] naming `what` when the
/// broker did not answer in time.
pub async fn within<T, E>(
    limit: Duration,
    what: &str,
    exchange: impl Future<Output = Result<T, E>>,
) -> Result<T, BusError>
where
    E: Into<BusError>,
{
    match tokio::time::timeout(limit, exchange).await {
        Ok(outcome) => outcome.map_err(Into::into),
        Err(_) => Err(BusError::Unavailable(format!("{what}: no answer from the broker within {limit:?}"))),
    }
}

/// Opens a connection (at most `cfg.timeout`): TLS for an `amqps://` URL, checking the
/// broker's certificate and name against the system's roots and `cfg.ca_pem`.
pub async fn connect(cfg: &BusConfig) -> Result<Connection, BusError> {
    let props =
        ConnectionProperties::default().with_connection_name(format!("teletraan-{}", std::process::id()).into());
    let tls = OwnedTLSConfig { cert_chain: cfg.ca_pem.clone(), ..OwnedTLSConfig::default() };
    let runtime = lapin::runtime::default_runtime()?;
    within(cfg.timeout, "connecting", Connection::connect_with_config(&cfg.url, props, tls, runtime)).await
}

/// Opens a connection, retrying with exponential backoff and jitter until it works or
/// `shutdown` turns true (then `None`).
pub async fn connect_with_retry(cfg: &BusConfig, shutdown: &mut watch::Receiver<bool>) -> Option<Connection> {
    let mut delays = backoff();
    loop {
        if *shutdown.borrow() {
            return None;
        }
        match connect(cfg).await {
            Ok(c) => return Some(c),
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach the message broker");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// Reconnection delays: 100 ms doubling to 10 s, with jitter, forever.
pub fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
