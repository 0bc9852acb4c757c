//! Connections to the broker: one attempt, or attempts with backoff until one works; and the
//! bound on every exchange with the broker ([`within`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
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

/// The broker's nodes: `cfg.url` is one URL, or several separated by commas (the nodes of a
/// RabbitMQ cluster), tried in turn.
pub fn node_urls(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// The node this process connects to first, per list of nodes: the last one that worked, or
/// the one after the last that failed, so that a process moves on from a lost node at once.
static FIRST_NODE: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn first_node(url: &str) -> usize {
    FIRST_NODE.lock().unwrap_or_else(|p| p.into_inner()).get(url).copied().unwrap_or(0)
}

fn set_first_node(url: &str, node: usize) {
    FIRST_NODE.lock().unwrap_or_else(|p| p.into_inner()).insert(url.to_string(), node);
}

/// Opens a connection to one of the broker's nodes (each try bounded by `cfg.timeout`): TLS
/// for an `amqps://` URL, checking the broker's certificate and name against the system's roots
/// and `cfg.ca_pem`. With several nodes, an unreachable one is skipped for the next; the
/// caller declares its topology on the connection it gets, so a failover re-declares it.
pub async fn connect(cfg: &BusConfig) -> Result<Connection, BusError> {
    let nodes = node_urls(&cfg.url);
    if nodes.is_empty() {
        return Err(BusError::Unavailable("no broker address configured".into()));
    }
    let first = first_node(&cfg.url) % nodes.len();
    let mut last = None;
    for i in 0..nodes.len() {
        let node = (first + i) % nodes.len();
        let props =
            ConnectionProperties::default().with_connection_name(format!("teletraan-{}", std::process::id()).into());
        let tls = OwnedTLSConfig { cert_chain: cfg.ca_pem.clone(), ..OwnedTLSConfig::default() };
        let runtime = lapin::runtime::default_runtime()?;
        match within(cfg.timeout, "connecting", Connection::connect_with_config(nodes[node], props, tls, runtime)).await
        {
            Ok(c) => {
                set_first_node(&cfg.url, node);
                if i > 0 {
                    tracing::info!(node, "connected to another broker node");
                }
                return Ok(c);
            }
            Err(e) => {
                if nodes.len() > 1 {
                    tracing::warn!(node, error = %e, "broker node unreachable; trying the next");
                }
                last = Some(e);
            }
        }
    }
    set_first_node(&cfg.url, first + 1);
    Err(last.unwrap_or_else(|| BusError::Unavailable("no broker node reachable".into())))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_may_list_the_nodes_of_a_cluster() {
        assert_eq!(node_urls("amqp://a:5672/%2f"), ["amqp://a:5672/%2f"]);
        assert_eq!(node_urls(" amqp://a:5672/%2f, amqp://b:5673/%2f ,"), ["amqp://a:5672/%2f", "amqp://b:5673/%2f"]);
        assert!(node_urls(" , ").is_empty());
    }
}
