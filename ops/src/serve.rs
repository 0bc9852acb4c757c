//! Runs server roles (API, gateway, workers) in this process until a signal arrives.

use std::sync::Arc;

use anyhow::Context;
use bus::BusConfig;
use store::{Store, TokenKind};
use teletraan::tls::{HANDSHAKE_TIMEOUT, RELOAD_INTERVAL, ReloadingCert, TlsListener};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Settings;

/// Which roles this process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub api: bool,
    pub gateway: bool,
    pub worker: bool,
}

/// A running server: where it listens and how to stop it.
pub struct Running {
    pub api_addr: Option<std::net::SocketAddr>,
    pub gateway_addr: Option<std::net::SocketAddr>,
    pub admin_token: Option<String>,
    pub agent_token: Option<String>,
    /// Whether the API and gateway speak HTTPS.
    pub https: bool,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Asks every task to stop and waits for them.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Prepares Postgres (database, migrations, seeded tokens) and starts the roles.
pub async fn start(settings: &Settings, roles: Roles, generate_tokens: bool) -> anyhow::Result<Running> {
    // Bad certificate files stop the start before anything else happens.
    let tls = match &settings.tls {
        Some(files) if roles.api || roles.gateway => {
            let cert = ReloadingCert::load(files.clone()).context("cannot load the TLS certificate")?;
            let config = cert.server_config().context("cannot configure TLS")?;
            Some((cert, config))
        }
        _ => None,
    };
    Store::ensure_database(&settings.database_url)
        .await
        .with_context(|| format!("cannot prepare the database at {}", redact(&settings.database_url)))?;
    let store = Store::connect_with(&settings.database_url, &settings.store_options())?;
    let applied = store.migrate().await.context("cannot apply the database migrations")?;
    if !applied.is_empty() {
        tracing::info!(?applied, "database migrated");
    }
    let now = schema::time::now_ms();
    let random = || uuid::Uuid::new_v4().simple().to_string();
    let admin_token = settings.admin_token.clone().or_else(|| generate_tokens.then(random));
    let agent_token = settings.agent_token.clone().or_else(|| generate_tokens.then(random));
    if let Some(t) = &admin_token {
        store.seed_token("admin", TokenKind::Api, t, now).await.context("cannot store the admin token")?;
    }
    if let Some(t) = &agent_token {
        store.seed_token("agent", TokenKind::Agent, t, now).await.context("cannot store the agent token")?;
    }

    let bus = BusConfig {
        timeout: settings.amqp_timeout,
        ca_pem: settings.amqp_ca_pem.clone(),
        ..BusConfig::new(settings.amqp_url.clone(), settings.namespace.clone())
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    if let Some((cert, _)) = &tls {
        tasks.spawn(cert.clone().watch(RELOAD_INTERVAL, "https", shutdown_rx.clone()));
    }
    let tls = tls.map(|(_, config)| config);
    if roles.worker {
        let mut config = workers::WorkerConfig::new(bus.clone(), settings.database_url.clone());
        config.jobs = settings.jobs.clone();
        config.webhooks.timeout = settings.webhook_timeout;
        config.webhooks.attempts = settings.webhook_attempts;
        workers::spawn(config, store.clone(), shutdown_rx.clone(), &mut tasks);
    }
    let mut gateway_addr = None;
    if roles.gateway {
        let listener = TcpListener::bind(settings.gateway_listen)
            .await
            .with_context(|| format!("cannot listen on {} (gateway)", settings.gateway_listen))?;
        gateway_addr = Some(listener.local_addr()?);
        let mut config = api::gateway::GatewayConfig::new(bus.clone());
        config.heartbeat_resolution = settings.heartbeat_resolution;
        let gw = api::gateway::start(config, store.clone(), shutdown_rx.clone(), &mut tasks);
        let router = api::gateway_router(gw, store.clone());
        tasks.spawn(serve(listener, tls.clone(), router, settings.client_read_timeout, shutdown_rx.clone(), "gateway"));
    }
    if roles.worker && !roles.api && !roles.gateway {
        // A worker alone still serves /healthz, /readyz and /metrics.
        let listener = TcpListener::bind(settings.worker_listen)
            .await
            .with_context(|| format!("cannot listen on {} (worker health)", settings.worker_listen))?;
        // Health and metrics only, for the local probes and Prometheus: plain HTTP.
        let health = api::health::api(store.clone(), None);
        tasks.spawn(serve(listener, None, health, settings.client_read_timeout, shutdown_rx.clone(), "worker"));
    }
    let mut api_addr = None;
    if roles.api {
        let listener = TcpListener::bind(settings.api_listen)
            .await
            .with_context(|| format!("cannot listen on {} (api)", settings.api_listen))?;
        api_addr = Some(listener.local_addr()?);
        let events = api::events::Hub::default();
        events.spawn_feed(bus.clone(), shutdown_rx.clone(), &mut tasks);
        let state = api::rest::ApiState {
            store: store.clone(),
            commands: Arc::new(bus::rpc::CommandClient::new(bus.clone())),
            artifacts: Arc::new(settings.artifacts.clone()),
            command_wait: settings.command_wait,
            request_timeout: settings.request_timeout,
            events,
        };
        let router = api::api_router(state, settings.trusted.clone());
        tasks.spawn(serve(listener, tls.clone(), router, settings.client_read_timeout, shutdown_rx.clone(), "api"));
    }
    let https = tls.is_some();
    Ok(Running { api_addr, gateway_addr, admin_token, agent_token, https, shutdown, tasks })
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` turns true; a client
/// gets `client_read_timeout` to send each request's head, and as long for its body.
async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    client_read_timeout: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
    role: &'static str,
) {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(role, %addr, https = tls.is_some(), "listening");
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    match tls {
        Some(config) => match TlsListener::new(listener, config, HANDSHAKE_TIMEOUT) {
            Ok(listener) => teletraan::tls::serve(listener, router, client_read_timeout, stop).await,
            Err(e) => tracing::error!(role, error = %e, "server failed"),
        },
        None => teletraan::http::serve(listener, router, client_read_timeout, stop).await,
    }
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(|u| redact(u.trim())).collect::<Vec<_>>().join(",");
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact("amqp://guest:guest@h:5672/%2f"), "amqp://guest:***@h:5672/%2f");
        assert_eq!(super::redact("postgres://localhost/x"), "postgres://localhost/x");
        assert_eq!(
            super::redact("amqp://u:p1@a:5672/%2f, amqp://u:p2@b:5673/%2f"),
            "amqp://u:***@a:5672/%2f,amqp://u:***@b:5673/%2f"
        );
    }
}
