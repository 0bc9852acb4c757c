//! Server configuration: flags, `TELETRAAN_*` environment variables and a TOML file, in that
//! order of precedence, over the defaults of DESIGN §7.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use api::auth::{Cidr, TrustedHeaders};
use clap::Args;
use schema::artifact::{AllowedLocation, ArtifactPolicy, ChecksumPolicy};
use serde::Deserialize;
use teletraan::tls::TlsFiles;
use workers::jobs::{JobsConfig, parse_duration};

/// Settings shared by every server role (flags and environment variables).
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// TOML file with the same keys (snake_case) as these flags.
    #[arg(long, env = "TELETRAAN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Postgres URL.
    #[arg(long, env = "TELETRAAN_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Log lines as `text` (default) or `json` (one object per line, with the span fields:
    /// request id, command id, deploy and host ids).
    #[arg(long, env = "TELETRAAN_LOG_FORMAT", global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// RabbitMQ URL.
    #[arg(long, env = "TELETRAAN_AMQP_URL", global = true)]
    pub amqp_url: Option<String>,
    /// Prefix of every exchange and queue.
    #[arg(long, env = "TELETRAAN_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// Address of the API and UI listener.
    #[arg(long, env = "TELETRAAN_API_LISTEN", global = true)]
    pub api_listen: Option<String>,
    /// Address of the gateway listener (agent pings).
    #[arg(long, env = "TELETRAAN_GATEWAY_LISTEN", global = true)]
    pub gateway_listen: Option<String>,
    /// Address of the health and metrics listener of `teletraan worker`.
    #[arg(long, env = "TELETRAAN_WORKER_LISTEN", global = true)]
    pub worker_listen: Option<String>,
    /// Token with every right, created or replaced at start (name `admin`).
    #[arg(long, env = "TELETRAAN_ADMIN_TOKEN", global = true, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Token that may only ping, created or replaced at start (name `agent`).
    #[arg(long, env = "TELETRAAN_AGENT_TOKEN", global = true, hide_env_values = true)]
    pub agent_token: Option<String>,
    /// Seconds a deploy request waits for the worker before answering 202.
    #[arg(long, env = "TELETRAAN_COMMAND_WAIT", global = true)]
    pub command_wait: Option<u64>,
    /// Comma list of locations artifact URLs must be under (`https://artifacts.example.com/web/`),
    /// compared by scheme, host, port and whole path segments (empty: any http or https URL).
    #[arg(long, env = "TELETRAAN_ARTIFACT_ALLOWED", global = true)]
    pub artifact_allowed: Option<String>,
    /// Deprecated name of `artifact_allowed`, parsed the same way (never as string prefixes).
    #[arg(long, env = "TELETRAAN_ARTIFACT_URL_PREFIXES", global = true, hide = true)]
    pub artifact_url_prefixes: Option<String>,
    /// Whether builds may name `file://` artifacts: `true` or `false` (default false).
    #[arg(long, env = "TELETRAAN_ARTIFACT_ALLOW_FILE", global = true)]
    pub artifact_allow_file: Option<String>,
    /// `required` (default): builds must carry `artifactSha256`; `sidecar`: they may omit it, and
    /// the agent then needs the published `<artifactUrl>.sha256`.
    #[arg(long, env = "TELETRAAN_ARTIFACT_CHECKSUM", global = true)]
    pub artifact_checksum: Option<String>,
    /// Postgres connections per process.
    #[arg(long, env = "TELETRAAN_DATABASE_POOL", global = true)]
    pub database_pool: Option<usize>,
    /// Seconds the opening of one Postgres connection may take.
    #[arg(long, env = "TELETRAAN_DATABASE_CONNECT_TIMEOUT", global = true)]
    pub database_connect_timeout: Option<u64>,
    /// Seconds a request waits for a free Postgres connection before it answers 503.
    #[arg(long, env = "TELETRAAN_DATABASE_POOL_TIMEOUT", global = true)]
    pub database_pool_timeout: Option<u64>,
    /// Seconds a statement may run before Postgres cancels it (0: no limit).
    #[arg(long, env = "TELETRAAN_STATEMENT_TIMEOUT", global = true)]
    pub statement_timeout: Option<u64>,
    /// Seconds RabbitMQ may take to answer: a connection opened, a publish confirmed.
    #[arg(long, env = "TELETRAAN_AMQP_TIMEOUT", global = true)]
    pub amqp_timeout: Option<u64>,
    /// Seconds an API request may take before it answers 503.
    #[arg(long, env = "TELETRAAN_REQUEST_TIMEOUT", global = true)]
    pub request_timeout: Option<u64>,
    /// Seconds a client of the API or gateway listener may take to send a request's head (its
    /// line and headers) or to stay idle between requests, before it is disconnected, and then
    /// to send the request's body, before the request is refused.
    #[arg(long, env = "TELETRAAN_CLIENT_READ_TIMEOUT", global = true)]
    pub client_read_timeout: Option<u64>,
    /// Periods of the workers' jobs, `name=30s,other=off` (see README: jobs).
    #[arg(long, env = "TELETRAAN_JOBS", global = true)]
    pub jobs: Option<String>,
    /// Lease of a running job (`30s`): a worker that dies holding a job delays it this long.
    #[arg(long, env = "TELETRAAN_JOB_LEASE", global = true)]
    pub job_lease: Option<String>,
    /// Seconds without a ping after which a host's records are UNREACHABLE.
    #[arg(long, env = "TELETRAAN_MIN_STALE_HOST_SECONDS", global = true)]
    pub min_stale_host_seconds: Option<u64>,
    /// Seconds without a ping after which a host is forgotten.
    #[arg(long, env = "TELETRAAN_MAX_STALE_HOST_SECONDS", global = true)]
    pub max_stale_host_seconds: Option<u64>,
    /// Builds kept per build name at least (older ones without deploys are deleted).
    #[arg(long, env = "TELETRAAN_MAX_BUILDS_PER_NAME", global = true)]
    pub max_builds_per_name: Option<i64>,
    /// Builds younger than this many days are kept whatever their number.
    #[arg(long, env = "TELETRAAN_MAX_BUILD_DAYS", global = true)]
    pub max_build_days: Option<i64>,
    /// Days finished commands are kept.
    #[arg(long, env = "TELETRAAN_COMMAND_RETENTION_DAYS", global = true)]
    pub command_retention_days: Option<i64>,
    /// Days the audit history is kept.
    #[arg(long, env = "TELETRAAN_HISTORY_RETENTION_DAYS", global = true)]
    pub history_retention_days: Option<i64>,
    /// Days the log of hosts' step changes (deploy timelines, host histories) is kept.
    #[arg(long, env = "TELETRAAN_STEP_RETENTION_DAYS", global = true)]
    pub step_retention_days: Option<i64>,
    /// A host's heartbeat is stored at most once per this many seconds (gateway).
    #[arg(long, env = "TELETRAAN_HEARTBEAT_SECONDS", global = true)]
    pub heartbeat_seconds: Option<u64>,
    /// Rows deleted per transaction by the retention jobs.
    #[arg(long, env = "TELETRAAN_RETENTION_BATCH", global = true)]
    pub retention_batch: Option<i64>,
    /// Seconds one webhook attempt may take (connect, send, answer).
    #[arg(long, env = "TELETRAAN_WEBHOOK_TIMEOUT", global = true)]
    pub webhook_timeout: Option<u64>,
    /// Attempts of a webhook delivery before it is FAILED.
    #[arg(long, env = "TELETRAAN_WEBHOOK_ATTEMPTS", global = true)]
    pub webhook_attempts: Option<u32>,
    /// Trusted-header mode: the header a company SSO proxy names the user in (off when unset).
    #[arg(long, env = "TELETRAAN_TRUSTED_USER_HEADER", global = true)]
    pub trusted_user_header: Option<String>,
    /// Trusted-header mode: the header with the user's directory groups (comma separated).
    #[arg(long, env = "TELETRAAN_TRUSTED_GROUPS_HEADER", global = true)]
    pub trusted_groups_header: Option<String>,
    /// Trusted-header mode: comma list of the proxy's addresses or blocks (`10.0.0.0/8`).
    #[arg(long, env = "TELETRAAN_TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<String>,
    /// PEM certificate (chain) of the API and gateway listeners; with `tls_key` set too, both
    /// speak only HTTPS (reloaded when the files change).
    #[arg(long, env = "TELETRAAN_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[arg(long, env = "TELETRAAN_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// PEM file of a private CA trusted (besides the system's roots) for an `amqps://` URL.
    #[arg(long, env = "TELETRAAN_AMQP_CA_FILE", global = true)]
    pub amqp_ca_file: Option<PathBuf>,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    amqp_url: Option<String>,
    namespace: Option<String>,
    api_listen: Option<String>,
    gateway_listen: Option<String>,
    worker_listen: Option<String>,
    admin_token: Option<String>,
    agent_token: Option<String>,
    command_wait: Option<u64>,
    artifact_allowed: Option<Vec<String>>,
    artifact_url_prefixes: Option<Vec<String>>,
    artifact_allow_file: Option<bool>,
    artifact_checksum: Option<String>,
    database_pool: Option<usize>,
    database_connect_timeout: Option<u64>,
    database_pool_timeout: Option<u64>,
    statement_timeout: Option<u64>,
    amqp_timeout: Option<u64>,
    request_timeout: Option<u64>,
    client_read_timeout: Option<u64>,
    jobs: Option<std::collections::BTreeMap<String, String>>,
    job_lease: Option<String>,
    min_stale_host_seconds: Option<u64>,
    max_stale_host_seconds: Option<u64>,
    max_builds_per_name: Option<i64>,
    max_build_days: Option<i64>,
    command_retention_days: Option<i64>,
    history_retention_days: Option<i64>,
    step_retention_days: Option<i64>,
    heartbeat_seconds: Option<u64>,
    retention_batch: Option<i64>,
    webhook_timeout: Option<u64>,
    webhook_attempts: Option<u32>,
    trusted_user_header: Option<String>,
    trusted_groups_header: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    amqp_ca_file: Option<PathBuf>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub amqp_url: String,
    pub namespace: String,
    pub api_listen: SocketAddr,
    pub gateway_listen: SocketAddr,
    pub worker_listen: SocketAddr,
    pub admin_token: Option<String>,
    pub agent_token: Option<String>,
    pub command_wait: Duration,
    pub artifacts: ArtifactPolicy,
    pub database_pool: usize,
    /// Longest the opening of one Postgres connection may take.
    pub database_connect_timeout: Duration,
    /// Longest a caller waits for a free Postgres connection.
    pub database_pool_timeout: Duration,
    /// Longest a statement may run (zero: no limit).
    pub statement_timeout: Duration,
    /// Longest RabbitMQ may take to answer one exchange.
    pub amqp_timeout: Duration,
    /// Longest an API request may take.
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's head (or stay idle between requests),
    /// and then its body.
    pub client_read_timeout: Duration,
    pub jobs: JobsConfig,
    pub heartbeat_resolution: Duration,
    pub webhook_timeout: Duration,
    pub webhook_attempts: u32,
    pub trusted: TrustedHeaders,
    /// The certificate and key of the API and gateway listeners (`None`: plain HTTP).
    pub tls: Option<TlsFiles>,
    /// The PEM certificates of `amqp_ca_file`, read and checked at start.
    pub amqp_ca_pem: Option<String>,
}

impl Settings {
    /// How this process's Postgres connections behave.
    pub fn store_options(&self) -> store::StoreOptions {
        store::StoreOptions {
            max_connections: self.database_pool,
            host_silence: self.jobs.janitor.min_stale,
            statement_timeout: self.statement_timeout,
            connect_timeout: self.database_connect_timeout,
            pool_timeout: self.database_pool_timeout,
        }
    }
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
fn parse_bool(text: &str) -> anyhow::Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => bail!("expected true or false"),
    }
}

/// The PEM text of `amqp_ca_file`, which must hold certificates and serve an `amqps://` URL.
fn read_ca(path: &std::path::Path, amqp_url: &str) -> anyhow::Result<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let name = "amqp_ca_file (TELETRAAN_AMQP_CA_FILE)";
    if !bus::node_urls(amqp_url).iter().all(|u| u.starts_with("amqps://")) {
        bail!("{name} is set but amqp_url is not an amqps:// URL: the CA would never be used");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes()).collect::<Result<Vec<_>, _>>();
    match certs {
        Ok(c) if !c.is_empty() => Ok(text),
        Ok(_) => bail!("{name}: no PEM certificate in {}", path.display()),
        Err(e) => bail!("{name}: {} is not valid PEM: {e:?}", path.display()),
    }
}

fn check_token(name: &str, t: Option<String>) -> anyhow::Result<Option<String>> {
    match t {
        Some(t) if t.trim().len() < 8 => bail!("{name} must be at least 8 characters"),
        Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => bail!("{name} must not contain spaces"),
        other => Ok(other),
    }
}

impl ServerArgs {
    /// Merges flags and environment over the file over the defaults, and validates.
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let addr = |name: &str, v: Option<String>, f: Option<String>, default: &str| -> anyhow::Result<SocketAddr> {
            let s = v.or(f).unwrap_or_else(|| default.to_string());
            s.parse().with_context(|| format!("{name}: {s:?} is not an address like 127.0.0.1:8080"))
        };
        let jobs = self.jobs_config(&file)?;
        let trusted = self.trusted(&file)?;
        let tls = match (self.tls_cert.clone().or(file.tls_cert.clone()), self.tls_key.clone().or(file.tls_key.clone()))
        {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!(
                "tls_cert (TELETRAAN_TLS_CERT) and tls_key (TELETRAAN_TLS_KEY) go together: set both for HTTPS, \
                 neither for plain HTTP"
            ),
        };
        let artifacts = self.artifacts(&file)?;
        let namespace = self.namespace.clone().or(file.namespace).unwrap_or_else(|| "teletraan".into());
        if namespace.is_empty() || !namespace.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            bail!("namespace {namespace:?} may only contain letters, digits, '-', '_' and '.'");
        }
        // Enough for every consumer slot of a worker (16 commands, 8 report batches), the relay
        // and the sweep, plus the API's requests.
        let pool = self.database_pool.or(file.database_pool).unwrap_or(32);
        if pool == 0 {
            bail!("database_pool must be at least 1");
        }
        let seconds = |name: &str, v: Option<u64>, default: u64, min: u64| -> anyhow::Result<Duration> {
            let v = v.unwrap_or(default);
            if !(min..=3600).contains(&v) {
                bail!("{name} must be between {min} and 3600 seconds");
            }
            Ok(Duration::from_secs(v))
        };
        let database_connect_timeout =
            seconds("database_connect_timeout", self.database_connect_timeout.or(file.database_connect_timeout), 5, 1)?;
        let database_pool_timeout =
            seconds("database_pool_timeout", self.database_pool_timeout.or(file.database_pool_timeout), 10, 1)?;
        let statement_timeout =
            seconds("statement_timeout", self.statement_timeout.or(file.statement_timeout), 120, 0)?;
        let amqp_timeout = seconds("amqp_timeout", self.amqp_timeout.or(file.amqp_timeout), 10, 1)?;
        let request_timeout = seconds("request_timeout", self.request_timeout.or(file.request_timeout), 60, 1)?;
        let client_read_timeout = seconds(
            "client_read_timeout",
            self.client_read_timeout.or(file.client_read_timeout),
            teletraan::http::CLIENT_READ_TIMEOUT.as_secs(),
            1,
        )?;
        let command_wait = Duration::from_secs(self.command_wait.or(file.command_wait).unwrap_or(10));
        // A deploy request may wait for the broker four times (connection, channel, publish,
        // confirm), then for a worker.
        let deploy_wait = command_wait.saturating_add(4 * amqp_timeout);
        if request_timeout <= deploy_wait {
            bail!(
                "request_timeout ({} s) must be longer than command_wait plus four times amqp_timeout ({} s), \
                 the longest a deploy request may wait for the broker and a worker",
                request_timeout.as_secs(),
                deploy_wait.as_secs()
            );
        }
        let heartbeat = self.heartbeat_seconds.or(file.heartbeat_seconds).unwrap_or(60);
        if heartbeat == 0 || heartbeat.saturating_mul(2) > jobs.janitor.min_stale.as_secs() {
            bail!(
                "heartbeat_seconds must be at least 1 and at most half of min_stale_host_seconds ({}), \
                 or live hosts would look silent",
                jobs.janitor.min_stale.as_secs()
            );
        }
        let webhook_timeout = self.webhook_timeout.or(file.webhook_timeout).unwrap_or(10);
        if !(1..=300).contains(&webhook_timeout) {
            bail!("webhook_timeout must be between 1 and 300 seconds");
        }
        let webhook_attempts = self.webhook_attempts.or(file.webhook_attempts).unwrap_or(5);
        if !(1..=20).contains(&webhook_attempts) {
            bail!("webhook_attempts must be between 1 and 20");
        }
        let amqp_url = self
            .amqp_url
            .clone()
            .or(file.amqp_url.clone())
            .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let amqp_ca_pem = match self.amqp_ca_file.clone().or(file.amqp_ca_file.clone()) {
            Some(path) => Some(read_ca(&path, &amqp_url)?),
            None => None,
        };
        Ok(Settings {
            database_url: self
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(|| "postgres://localhost:5432/teletraan".into()),
            amqp_url,
            amqp_ca_pem,
            namespace,
            api_listen: addr("api_listen", self.api_listen.clone(), file.api_listen, "127.0.0.1:8080")?,
            gateway_listen: addr("gateway_listen", self.gateway_listen.clone(), file.gateway_listen, "127.0.0.1:8081")?,
            worker_listen: addr("worker_listen", self.worker_listen.clone(), file.worker_listen, "127.0.0.1:8082")?,
            admin_token: check_token("admin_token", self.admin_token.clone().or(file.admin_token))?,
            agent_token: check_token("agent_token", self.agent_token.clone().or(file.agent_token))?,
            command_wait,
            artifacts,
            database_pool: pool,
            database_connect_timeout,
            database_pool_timeout,
            statement_timeout,
            amqp_timeout,
            request_timeout,
            client_read_timeout,
            jobs,
            heartbeat_resolution: Duration::from_secs(heartbeat),
            webhook_timeout: Duration::from_secs(webhook_timeout),
            webhook_attempts,
            trusted,
            tls,
        })
    }

    /// The artifact policy: `artifact_allowed` (or its deprecated name `artifact_url_prefixes`,
    /// not both), `artifact_allow_file`, `artifact_checksum`.
    fn artifacts(&self, file: &FileConfig) -> anyhow::Result<ArtifactPolicy> {
        let list = |flag: &Option<String>, from_file: &Option<Vec<String>>| -> Option<Vec<String>> {
            match flag {
                Some(text) => Some(text.split(',').map(str::to_string).collect()),
                None => from_file.clone(),
            }
        };
        let current = list(&self.artifact_allowed, &file.artifact_allowed);
        let deprecated = list(&self.artifact_url_prefixes, &file.artifact_url_prefixes);
        let (name, entries) = match (current, deprecated) {
            (Some(_), Some(_)) => bail!(
                "artifact_allowed (TELETRAAN_ARTIFACT_ALLOWED) and its deprecated name artifact_url_prefixes \
                 (TELETRAAN_ARTIFACT_URL_PREFIXES) are both set; keep artifact_allowed only"
            ),
            (Some(l), None) => ("artifact_allowed (TELETRAAN_ARTIFACT_ALLOWED)", l),
            (None, Some(l)) => {
                tracing::warn!(
                    "artifact_url_prefixes (TELETRAAN_ARTIFACT_URL_PREFIXES) is deprecated: use artifact_allowed \
                     (TELETRAAN_ARTIFACT_ALLOWED); its entries are read as locations, not string prefixes"
                );
                ("artifact_url_prefixes (TELETRAAN_ARTIFACT_URL_PREFIXES)", l)
            }
            (None, None) => ("artifact_allowed (TELETRAAN_ARTIFACT_ALLOWED)", Vec::new()),
        };
        let allowed = entries
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| AllowedLocation::parse(e).map_err(|err| anyhow::anyhow!("{name}: {err}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let allow_file = match (&self.artifact_allow_file, file.artifact_allow_file) {
            (Some(text), _) => parse_bool(text)
                .with_context(|| format!("artifact_allow_file (TELETRAAN_ARTIFACT_ALLOW_FILE): {text:?}"))?,
            (None, from_file) => from_file.unwrap_or(false),
        };
        let checksum = match self.artifact_checksum.as_ref().or(file.artifact_checksum.as_ref()) {
            Some(text) => text
                .parse::<ChecksumPolicy>()
                .map_err(|e| anyhow::anyhow!("artifact_checksum (TELETRAAN_ARTIFACT_CHECKSUM): {e}"))?,
            None => ChecksumPolicy::Required,
        };
        let policy = ArtifactPolicy { allowed, allow_file, checksum };
        policy.validate().map_err(|e| {
            anyhow::anyhow!("{name}: {e}; set artifact_allow_file (TELETRAAN_ARTIFACT_ALLOW_FILE) to true")
        })?;
        Ok(policy)
    }

    fn trusted(&self, file: &FileConfig) -> anyhow::Result<TrustedHeaders> {
        let user_header = self.trusted_user_header.clone().or(file.trusted_user_header.clone());
        let groups_header = self.trusted_groups_header.clone().or(file.trusted_groups_header.clone());
        let proxies: Vec<String> = match &self.trusted_proxies {
            Some(list) => list.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
            None => file.trusted_proxies.clone().unwrap_or_default(),
        };
        let proxies = proxies
            .iter()
            .map(|p| p.parse::<Cidr>().map_err(|e| anyhow::anyhow!("trusted_proxies: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (name, h) in [("trusted_user_header", &user_header), ("trusted_groups_header", &groups_header)] {
            if let Some(h) = h
                && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
            {
                bail!("{name}: {h:?} is not a header name");
            }
        }
        if user_header.is_some() && proxies.is_empty() {
            bail!("trusted_user_header needs trusted_proxies: the addresses the SSO proxy connects from");
        }
        if user_header.is_none() && (groups_header.is_some() || !proxies.is_empty()) {
            bail!("trusted_groups_header and trusted_proxies need trusted_user_header");
        }
        Ok(TrustedHeaders { user_header, groups_header, proxies })
    }

    fn jobs_config(&self, file: &FileConfig) -> anyhow::Result<JobsConfig> {
        let mut jobs = JobsConfig::default();
        if let Some(table) = &file.jobs {
            let spec: Vec<String> = table.iter().map(|(k, v)| format!("{k}={v}")).collect();
            jobs.set_periods(&spec.join(",")).map_err(|e| anyhow::anyhow!("jobs: {e}"))?;
        }
        if let Some(spec) = &self.jobs {
            jobs.set_periods(spec).map_err(|e| anyhow::anyhow!("jobs: {e}"))?;
        }
        if let Some(lease) = self.job_lease.as_ref().or(file.job_lease.as_ref()) {
            jobs.lease = parse_duration(lease).map_err(|e| anyhow::anyhow!("job_lease: {e}"))?;
            if jobs.lease < Duration::from_secs(1) {
                bail!("job_lease must be at least 1s");
            }
        }
        if let Some(s) = self.min_stale_host_seconds.or(file.min_stale_host_seconds) {
            jobs.janitor.min_stale = Duration::from_secs(s);
        }
        if let Some(s) = self.max_stale_host_seconds.or(file.max_stale_host_seconds) {
            jobs.janitor.max_stale = Duration::from_secs(s);
        }
        jobs.janitor.validate().map_err(|e| anyhow::anyhow!(e))?;
        let positive = |name: &str, v: Option<i64>| -> anyhow::Result<Option<i64>> {
            match v {
                Some(n) if n < 1 => bail!("{name} must be at least 1"),
                other => Ok(other),
            }
        };
        if let Some(n) = positive("max_builds_per_name", self.max_builds_per_name.or(file.max_builds_per_name))? {
            jobs.retention.builds_per_name = n;
        }
        if let Some(n) = positive("max_build_days", self.max_build_days.or(file.max_build_days))? {
            jobs.retention.build_days = n;
        }
        if let Some(n) =
            positive("command_retention_days", self.command_retention_days.or(file.command_retention_days))?
        {
            jobs.retention.command_days = n;
        }
        if let Some(n) =
            positive("history_retention_days", self.history_retention_days.or(file.history_retention_days))?
        {
            jobs.retention.history_days = n;
        }
        if let Some(n) = positive("step_retention_days", self.step_retention_days.or(file.step_retention_days))? {
            jobs.retention.step_days = n;
        }
        if let Some(n) = positive("retention_batch", self.retention_batch.or(file.retention_batch))? {
            jobs.retention.batch = n;
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let s = ServerArgs::default().resolve().unwrap();
        assert_eq!(s.api_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.gateway_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(s.namespace, "teletraan");
        assert_eq!(s.database_url, "postgres://localhost:5432/teletraan");
        assert_eq!(s.artifacts, ArtifactPolicy::default(), "the strict policy: sha256 required, no file://");
        assert_eq!(s.artifacts.checksum, ChecksumPolicy::Required);
        assert_eq!(s.tls, None, "plain HTTP unless a certificate is given");
    }

    #[test]
    fn the_client_read_timeout_defaults_to_30_seconds_and_is_bounded() {
        assert_eq!(ServerArgs::default().resolve().unwrap().client_read_timeout, Duration::from_secs(30));
        let s = ServerArgs { client_read_timeout: Some(2), ..Default::default() }.resolve().unwrap();
        assert_eq!(s.client_read_timeout, Duration::from_secs(2));
        for bad in [0, 3601] {
            let err = ServerArgs { client_read_timeout: Some(bad), ..Default::default() }.resolve().unwrap_err();
            assert!(err.to_string().contains("client_read_timeout"), "{err}");
        }
    }

    #[test]
    fn numbers_too_large_for_the_checks_are_errors_not_panics() {
        // Both overflowed in a check (found by config::fuzz): `heartbeat * 2` and
        // `command_wait + 4 * amqp_timeout`.
        let err = ServerArgs { heartbeat_seconds: Some(u64::MAX / 2 + 1), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("heartbeat_seconds"), "{err}");
        let err = ServerArgs { command_wait: Some(u64::MAX), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("command_wait"), "{err}");
    }

    #[test]
    fn the_amqp_ca_file_is_read_at_start_and_only_for_amqps() {
        let dir = std::env::temp_dir().join(format!("teletraan-config-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, store::testing::UNRELATED_CA_PEM).unwrap();
        let amqps = Some("amqps://guest:guest@127.0.0.1:5671/%2f".to_string());
        let s = ServerArgs { amqp_url: amqps.clone(), amqp_ca_file: Some(ca.clone()), ..Default::default() };
        assert_eq!(s.resolve().unwrap().amqp_ca_pem.as_deref(), Some(store::testing::UNRELATED_CA_PEM));
        let plain = ServerArgs { amqp_ca_file: Some(ca.clone()), ..Default::default() }.resolve().unwrap_err();
        assert!(plain.to_string().contains("not an amqps:// URL"), "{plain}");
        std::fs::write(&ca, "nothing").unwrap();
        let empty = ServerArgs { amqp_url: amqps.clone(), amqp_ca_file: Some(ca.clone()), ..Default::default() };
        let err = format!("{:#}", empty.resolve().unwrap_err());
        assert!(err.contains("TELETRAAN_AMQP_CA_FILE") && err.contains("no PEM certificate"), "{err}");
        let missing = ServerArgs { amqp_url: amqps, amqp_ca_file: Some(dir.join("nope.pem")), ..Default::default() };
        let err = format!("{:#}", missing.resolve().unwrap_err());
        assert!(err.contains("nope.pem"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_certificate_and_key_go_together() {
        let both = ServerArgs { tls_cert: Some("c.pem".into()), tls_key: Some("k.pem".into()), ..Default::default() };
        assert_eq!(both.resolve().unwrap().tls, Some(TlsFiles { cert: "c.pem".into(), key: "k.pem".into() }));
        for half in [
            ServerArgs { tls_cert: Some("c.pem".into()), ..Default::default() },
            ServerArgs { tls_key: Some("k.pem".into()), ..Default::default() },
        ] {
            let err = half.resolve().unwrap_err().to_string();
            assert!(err.contains("TELETRAAN_TLS_CERT") && err.contains("TELETRAAN_TLS_KEY"), "{err}");
        }
    }

    #[test]
    fn the_artifact_policy_is_read_strictly_and_bad_values_name_their_setting() {
        let args = ServerArgs {
            artifact_allowed: Some("https://artifacts.example.com/web/, file:///srv/a".into()),
            artifact_allow_file: Some("true".into()),
            artifact_checksum: Some("sidecar".into()),
            ..Default::default()
        };
        let p = args.resolve().unwrap().artifacts;
        let shown: Vec<String> = p.allowed.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["https://artifacts.example.com/web/", "file:///srv/a/"]);
        assert!(p.allow_file);
        assert_eq!(p.checksum, ChecksumPolicy::Sidecar);

        // The deprecated name is parsed the same strict way: a location, not a string prefix.
        let old = ServerArgs { artifact_url_prefixes: Some("https://artifacts/".into()), ..Default::default() };
        let p = old.resolve().unwrap().artifacts;
        assert!(p.check_url("https://artifacts/x.tgz").is_ok());
        assert!(p.check_url("https://artifacts.evil.org/x.tgz").is_err());

        let cases = [
            (
                ServerArgs { artifact_allowed: Some("artifacts.example.com".into()), ..Default::default() },
                "TELETRAAN_ARTIFACT_ALLOWED",
            ),
            (
                ServerArgs { artifact_url_prefixes: Some("ftp://x/".into()), ..Default::default() },
                "TELETRAAN_ARTIFACT_URL_PREFIXES",
            ),
            (
                ServerArgs {
                    artifact_allowed: Some("https://a/".into()),
                    artifact_url_prefixes: Some("https://b/".into()),
                    ..Default::default()
                },
                "TELETRAAN_ARTIFACT_URL_PREFIXES",
            ),
            (
                ServerArgs { artifact_allow_file: Some("maybe".into()), ..Default::default() },
                "TELETRAAN_ARTIFACT_ALLOW_FILE",
            ),
            (
                ServerArgs { artifact_checksum: Some("optional".into()), ..Default::default() },
                "TELETRAAN_ARTIFACT_CHECKSUM",
            ),
            (
                ServerArgs { artifact_allowed: Some("file:///srv/".into()), ..Default::default() },
                "TELETRAAN_ARTIFACT_ALLOW_FILE",
            ),
        ];
        for (args, setting) in cases {
            let err = format!("{:#}", args.resolve().unwrap_err());
            assert!(err.contains(setting), "{setting}: {err}");
        }
    }

    #[test]
    fn the_artifact_policy_comes_from_the_file_too() {
        let dir = std::env::temp_dir().join(format!("teletraan-config-art-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "artifact_allowed = [\"https://a.example.com/x/\"]\nartifact_allow_file = true\nartifact_checksum = \"sidecar\"\n",
        )
        .unwrap();
        let p = ServerArgs { config: Some(file.clone()), ..Default::default() }.resolve().unwrap().artifacts;
        assert_eq!((p.allowed.len(), p.allow_file, p.checksum), (1, true, ChecksumPolicy::Sidecar));
        let p =
            ServerArgs { config: Some(file.clone()), artifact_checksum: Some("required".into()), ..Default::default() }
                .resolve()
                .unwrap()
                .artifacts;
        assert_eq!(p.checksum, ChecksumPolicy::Required, "the environment beats the file");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn flags_beat_the_file_and_bad_values_are_named() {
        let dir = std::env::temp_dir().join(format!("teletraan-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "namespace = \"fromfile\"\napi_listen = \"127.0.0.1:9000\"\n").unwrap();
        let args = ServerArgs { config: Some(file.clone()), namespace: Some("flag".into()), ..Default::default() };
        let s = args.resolve().unwrap();
        assert_eq!((s.namespace.as_str(), s.api_listen.port()), ("flag", 9000));

        std::fs::write(&file, "nmespace = \"typo\"\n").unwrap();
        let err = ServerArgs { config: Some(file.clone()), ..Default::default() }.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("nmespace"), "{err:#}");

        let err = ServerArgs { api_listen: Some("nope".into()), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("api_listen"));
        let err = ServerArgs { admin_token: Some("short".into()), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("admin_token"));

        std::fs::write(&file, "webhook_timeout = 3\nwebhook_attempts = 7\n").unwrap();
        let s = ServerArgs { config: Some(file.clone()), webhook_attempts: Some(2), ..Default::default() }
            .resolve()
            .unwrap();
        assert_eq!((s.webhook_timeout, s.webhook_attempts), (Duration::from_secs(3), 2));
        let err = ServerArgs { webhook_attempts: Some(0), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("webhook_attempts"));

        std::fs::write(&file, "amqp_timeout = 3\nstatement_timeout = 0\n").unwrap();
        let s = ServerArgs { config: Some(file.clone()), database_pool_timeout: Some(2), ..Default::default() }
            .resolve()
            .unwrap();
        assert_eq!((s.amqp_timeout, s.statement_timeout), (Duration::from_secs(3), Duration::ZERO));
        assert_eq!(
            (s.database_pool_timeout, s.database_connect_timeout),
            (Duration::from_secs(2), Duration::from_secs(5))
        );
        let err = ServerArgs { amqp_timeout: Some(0), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("amqp_timeout"), "{err}");
        let err = ServerArgs { database_connect_timeout: Some(0), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("database_connect_timeout"), "{err}");
        let err = ServerArgs { request_timeout: Some(50), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("request_timeout"), "a deploy would not fit: {err}");
        let s = ServerArgs { request_timeout: Some(51), ..Default::default() }.resolve().unwrap();
        assert_eq!(s.request_timeout, Duration::from_secs(51));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
