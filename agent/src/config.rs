//! Configuration: flags, `TELETRAAN_AGENT_*` environment variables and a TOML file, with the
//! precedence flag > environment > file > default. Every key has the same name in the three
//! places (`--ping-interval`, `TELETRAAN_AGENT_PING_INTERVAL`, `ping_interval`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use schema::DeployStage;
use schema::artifact::AllowedLocation;
use serde::Deserialize;

use crate::ca::CaFile;
use crate::error::{Error, Result};
use crate::extract::Limits;
use crate::user::HookUser;

/// Default gateway URL.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8081";
/// Default base directory.
pub const DEFAULT_DIR: &str = "/var/lib/teletraan-agent";
/// The credential file's default name, in the base directory.
pub const DEFAULT_CREDENTIAL_FILE: &str = "credential";

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "teletraan-agent", version, about = "The on-host deploy agent of the Teletraan-class deploy system.")]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration options.
    #[command(flatten)]
    pub options: Options,
}

/// Subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Ping, execute goals and sleep, forever (the default).
    Run,
    /// One round: ping and execute goals until the gateway answers NOOP, then exit.
    Once,
    /// Print what the host runs per environment, from the status file.
    Status {
        /// Print the status file's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mark a step of an environment as succeeded, or forget the environment so its deploy
    /// starts over (Teletraan's set-deploy-status). Refused while an agent runs on the directory.
    #[command(group(clap::ArgGroup::new("change").required(true).args(["step", "restart"])))]
    SetStatus {
        /// The environment's name.
        #[arg(long, value_name = "ENV")]
        env: String,
        /// Record this stage as SUCCEEDED, so the server moves on to the next one.
        #[arg(long, value_name = "STAGE", value_parser = parse_stage)]
        step: Option<DeployStage>,
        /// Forget the environment: the next ping starts its deploy over from PRE_DOWNLOAD.
        #[arg(long)]
        restart: bool,
    },
}

fn parse_stage(s: &str) -> std::result::Result<DeployStage, String> {
    s.trim().to_ascii_uppercase().parse::<DeployStage>().map_err(|e| e.to_string())
}

/// Options as given by flags or environment variables (clap applies flag > env); `None` when
/// neither set them, so the file and then the defaults apply.
#[derive(Debug, Clone, Default, Args)]
pub struct Options {
    /// TOML configuration file.
    #[arg(long, global = true, env = "TELETRAAN_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Gateway URL [default: http://127.0.0.1:8081].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// PEM file of a private CA to trust (besides the system's) for the gateway and artifact
    /// downloads over https [default: none].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Token sent as `Authorization: token <T>`.
    #[arg(long, global = true, env = "TELETRAAN_AGENT_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Enrollment token: without a credential file, the agent enrolls with it for a credential
    /// of its own (and again when that credential is revoked).
    #[arg(long, global = true, env = "TELETRAAN_AGENT_ENROLL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub enroll_token: Option<String>,
    /// The host's own credential, written at enrollment (mode 0600) [default: <dir>/credential].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_CREDENTIAL_FILE", value_name = "FILE")]
    pub credential_file: Option<PathBuf>,
    /// User the hooks run as, with its own uid, gid and a minimal environment
    /// [default: none, hooks run as the agent's user].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_HOOK_USER", value_name = "USER")]
    pub hook_user: Option<String>,
    /// Host id [default: the host name].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_HOST_ID", value_name = "ID")]
    pub host_id: Option<String>,
    /// Host name [default: the machine's host name].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_HOST_NAME", value_name = "NAME")]
    pub host_name: Option<String>,
    /// Host IP address [default: resolved from the host name].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_HOST_IP", value_name = "IP")]
    pub host_ip: Option<String>,
    /// Host groups, comma separated.
    #[arg(long, global = true, env = "TELETRAAN_AGENT_GROUPS", value_name = "G1,G2")]
    pub groups: Option<String>,
    /// Host tags, comma separated `key=value` pairs (sent as `ec2Tags`).
    #[arg(long, global = true, env = "TELETRAAN_AGENT_TAGS", value_name = "K=V,...")]
    pub tags: Option<String>,
    /// Base directory [default: /var/lib/teletraan-agent].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Seconds between idle pings (a random jitter of up to 10% is added) [default: 30].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_PING_INTERVAL", value_name = "SECS")]
    pub ping_interval: Option<u64>,
    /// Long-poll: idle pings ask the gateway to hold them up to this many seconds until there
    /// is work, so a rollout reaches this host at once (0: plain polling) [default: 0].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_LONG_POLL", value_name = "SECS")]
    pub long_poll: Option<u64>,
    /// Seconds a hook may run before it is killed [default: 1800].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_SCRIPT_TIMEOUT", value_name = "SECS")]
    pub script_timeout: Option<u64>,
    /// Attempts per step before TOO_MANY_RETRY [default: 3].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_MAX_RETRIES", value_name = "N")]
    pub max_retries: Option<u32>,
    /// Builds kept on disk per environment [default: 2].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_BUILDS_TO_KEEP", value_name = "N")]
    pub builds_to_keep: Option<usize>,
    /// Seconds a hook runs before the agent pings with status UNKNOWN (and again each time) [default: 60].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_MIN_RUNNING_TIME", value_name = "SECS")]
    pub min_running_time: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when a hook is stopped [default: 30].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_TERMINATION_TIMEOUT", value_name = "SECS")]
    pub termination_timeout: Option<u64>,
    /// Seconds before the first retry of a failed step, doubled each time up to 60 [default: 2].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_RETRY_DELAY", value_name = "SECS")]
    pub retry_delay: Option<u64>,
    /// Largest artifact download and largest expanded archive, in bytes [default: 21474836480, 20 GiB].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_ARCHIVE_MAX_BYTES", value_name = "BYTES")]
    pub archive_max_bytes: Option<u64>,
    /// Most entries (files, directories, links) in one archive [default: 1000000].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_ARCHIVE_MAX_ENTRIES", value_name = "N")]
    pub archive_max_entries: Option<u64>,
    /// Locations artifacts and their redirects must be under, comma separated
    /// (`https://artifacts.example.com/web/`) [default: none, any http(s) or file URL].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_ARTIFACT_ALLOWED", value_name = "URL,...")]
    pub artifact_allowed: Option<String>,
    /// Use artifacts that have neither `artifactSha256` nor a published `.sha256`, with a
    /// warning, instead of failing the download. For local development only [default: false].
    #[arg(
        long,
        global = true,
        env = "TELETRAAN_AGENT_ALLOW_UNVERIFIED_ARTIFACTS",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_unverified_artifacts: Option<bool>,
    /// Serve the agent's own Prometheus metrics at `http://ADDR/metrics`, an IP address and
    /// port such as 127.0.0.1:9102; unauthenticated, so keep it on loopback [default: none, no
    /// metrics].
    #[arg(long, global = true, env = "TELETRAAN_AGENT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// A list given either as a TOML array or as one comma separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ListValue {
    List(Vec<String>),
    Text(String),
}

/// Tags given either as a TOML table or as one `k=v,k2=v2` string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TagsValue {
    Table(BTreeMap<String, String>),
    Text(String),
}

/// The TOML file; unknown keys are refused so a typo does not go unnoticed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    ca_file: Option<PathBuf>,
    token: Option<String>,
    enroll_token: Option<String>,
    credential_file: Option<PathBuf>,
    hook_user: Option<String>,
    host_id: Option<String>,
    host_name: Option<String>,
    host_ip: Option<String>,
    groups: Option<ListValue>,
    tags: Option<TagsValue>,
    dir: Option<PathBuf>,
    ping_interval: Option<u64>,
    long_poll: Option<u64>,
    script_timeout: Option<u64>,
    max_retries: Option<u32>,
    builds_to_keep: Option<usize>,
    min_running_time: Option<u64>,
    termination_timeout: Option<u64>,
    retry_delay: Option<u64>,
    archive_max_bytes: Option<u64>,
    archive_max_entries: Option<u64>,
    artifact_allowed: Option<ListValue>,
    allow_unverified_artifacts: Option<bool>,
    metrics_listen: Option<String>,
}

/// The effective configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Gateway base URL, without a trailing slash.
    pub server: String,
    /// A private CA trusted for https besides the system's roots.
    pub ca_file: Option<CaFile>,
    /// Token for `Authorization: token <T>`; never printed.
    pub token: Option<String>,
    /// Enrollment token (`POST /v1/system/enroll`); never printed.
    pub enroll_token: Option<String>,
    /// Where the host's own credential is kept; when it exists it is sent instead of `token`.
    pub credential_file: PathBuf,
    /// The user hooks run as (`None`: the agent's own user).
    pub hook_user: Option<HookUser>,
    /// Host id sent as `hostId`.
    pub host_id: String,
    /// Host name sent as `hostName`.
    pub host_name: String,
    /// Address sent as `hostIp`.
    pub host_ip: Option<String>,
    /// Groups sent as `groups`.
    pub groups: Vec<String>,
    /// Tags sent as `ec2Tags` (a JSON object encoded as a string).
    pub tags: BTreeMap<String, String>,
    /// Base directory.
    pub dir: PathBuf,
    /// Idle time between rounds (before jitter).
    pub ping_interval: Duration,
    /// How long idle pings ask the gateway to hold them (zero: plain polling).
    pub long_poll: Duration,
    /// Delays between the attempts of one ping (Teletraan: 1 s then 2 s).
    pub ping_retry_delays: Vec<Duration>,
    /// Hook timeout per attempt.
    pub script_timeout: Duration,
    /// Attempts per step.
    pub max_retries: u32,
    /// Builds kept per environment.
    pub builds_to_keep: usize,
    /// Progress-ping period while a hook runs.
    pub min_running_time: Duration,
    /// Grace period between SIGTERM and SIGKILL.
    pub termination_timeout: Duration,
    /// First delay between attempts of a failed step.
    pub retry_delay: Duration,
    /// Archive limits (`archive_max_bytes` also bounds the download).
    pub limits: Limits,
    /// Locations artifact URLs and redirects must be under (empty: any http(s) or file URL).
    pub artifact_allowed: Vec<AllowedLocation>,
    /// Whether an artifact without any checksum is used (with a warning) instead of failing
    /// its download: for local development only.
    pub allow_unverified_artifacts: bool,
    /// Where the metrics page listens (`None`: no metrics).
    pub metrics_listen: Option<SocketAddr>,
}

impl Config {
    /// A configuration with every default, for `dir` and `server` (used by tests and as the base
    /// of [`Config::resolve`]).
    pub fn with_defaults(dir: impl Into<PathBuf>, server: impl Into<String>, host: &str) -> Config {
        let dir = dir.into();
        Config {
            server: server.into().trim_end_matches('/').to_string(),
            ca_file: None,
            token: None,
            enroll_token: None,
            credential_file: dir.join(DEFAULT_CREDENTIAL_FILE),
            hook_user: None,
            host_id: host.to_string(),
            host_name: host.to_string(),
            host_ip: None,
            groups: Vec::new(),
            tags: BTreeMap::new(),
            dir,
            ping_interval: Duration::from_secs(30),
            long_poll: Duration::ZERO,
            ping_retry_delays: vec![Duration::from_secs(1), Duration::from_secs(2)],
            script_timeout: Duration::from_secs(1800),
            max_retries: 3,
            builds_to_keep: 2,
            min_running_time: Duration::from_secs(60),
            termination_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(2),
            limits: Limits::default(),
            artifact_allowed: Vec::new(),
            allow_unverified_artifacts: false,
            metrics_listen: None,
        }
    }

    /// Loads the file named by `--config`/`TELETRAAN_AGENT_CONFIG` (if any) and merges it under
    /// the flags and environment variables.
    pub fn load(options: Options) -> Result<Config> {
        let file = match &options.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let config = Config::resolve(options, file, crate::layout::machine_hostname())?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        check_can_switch(config.hook_user.as_ref(), unsafe { libc::geteuid() })?;
        Ok(config)
    }

    fn resolve(o: Options, f: FileConfig, machine_host: Option<String>) -> Result<Config> {
        let server = o.server.or(f.server).unwrap_or_else(|| DEFAULT_SERVER.into());
        let server = server.trim().trim_end_matches('/').to_string();
        if !(server.starts_with("http://") || server.starts_with("https://")) || server.len() <= "https://".len() {
            return Err(Error::Config(format!("server {server:?} must be an http:// or https:// URL")));
        }
        let ca_file = o.ca_file.or(f.ca_file).map(|p| CaFile::read(&p)).transpose()?;
        let token = secret(o.token.or(f.token));
        let enroll_token = secret(o.enroll_token.or(f.enroll_token));
        let hook_user = o.hook_user.or(f.hook_user).map(|u| HookUser::lookup(&u)).transpose()?;
        let host_name = match o.host_name.or(f.host_name) {
            Some(n) => n.trim().to_string(),
            None => machine_host.ok_or_else(|| {
                Error::Config("cannot read the machine's host name; set TELETRAAN_AGENT_HOST_NAME".into())
            })?,
        };
        check_name("host name", &host_name, |s| schema::HostName::parse(s).map(|_| ()))?;
        let host_id = o.host_id.or(f.host_id).map(|s| s.trim().to_string()).unwrap_or_else(|| host_name.clone());
        check_name("host id", &host_id, |s| schema::HostId::parse(s).map(|_| ()))?;
        let host_ip = o.host_ip.or(f.host_ip).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let host_ip = host_ip.or_else(|| resolve_ip(&host_name));
        let groups = match o.groups.map(ListValue::Text).or(f.groups) {
            Some(ListValue::Text(t)) => split_list(&t),
            Some(ListValue::List(l)) => l.iter().map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect(),
            None => Vec::new(),
        };
        for g in &groups {
            check_name("group", g, |s| schema::GroupName::parse(s).map(|_| ()))?;
        }
        let tags = match o.tags.map(TagsValue::Text).or(f.tags) {
            Some(TagsValue::Text(t)) => parse_tags(&t)?,
            Some(TagsValue::Table(t)) => t,
            None => BTreeMap::new(),
        };
        let dir = o.dir.or(f.dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        if dir.as_os_str().is_empty() {
            return Err(Error::Config("dir must not be empty".into()));
        }
        let dir = std::path::absolute(&dir).map_err(|e| Error::Config(format!("dir {}: {e}", dir.display())))?;
        let credential_file = match o.credential_file.or(f.credential_file) {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(Error::Config("credential_file must not be empty".into()));
            }
            Some(p) => {
                std::path::absolute(&p).map_err(|e| Error::Config(format!("credential_file {}: {e}", p.display())))?
            }
            None => dir.join(DEFAULT_CREDENTIAL_FILE),
        };
        let mut c = Config::with_defaults(dir, server, &host_id);
        c.ca_file = ca_file;
        c.token = token;
        c.enroll_token = enroll_token;
        c.credential_file = credential_file;
        c.hook_user = hook_user;
        c.host_name = host_name;
        c.host_ip = host_ip;
        c.groups = groups;
        c.tags = tags;
        c.ping_interval = secs("ping_interval", o.ping_interval.or(f.ping_interval), c.ping_interval, 1)?;
        c.long_poll = secs("long_poll", o.long_poll.or(f.long_poll), c.long_poll, 0)?;
        if c.long_poll > Duration::from_secs(u64::from(schema::ping::MAX_WAIT_SECONDS)) {
            return Err(Error::Config(format!("long_poll must be at most {} seconds", schema::ping::MAX_WAIT_SECONDS)));
        }
        c.script_timeout = secs("script_timeout", o.script_timeout.or(f.script_timeout), c.script_timeout, 1)?;
        c.min_running_time =
            secs("min_running_time", o.min_running_time.or(f.min_running_time), c.min_running_time, 1)?;
        c.termination_timeout =
            secs("termination_timeout", o.termination_timeout.or(f.termination_timeout), c.termination_timeout, 0)?;
        c.retry_delay = secs("retry_delay", o.retry_delay.or(f.retry_delay), c.retry_delay, 0)?;
        c.max_retries = o.max_retries.or(f.max_retries).unwrap_or(c.max_retries);
        if c.max_retries == 0 {
            return Err(Error::Config("max_retries must be at least 1".into()));
        }
        c.builds_to_keep = o.builds_to_keep.or(f.builds_to_keep).unwrap_or(c.builds_to_keep);
        if c.builds_to_keep == 0 {
            return Err(Error::Config("builds_to_keep must be at least 1".into()));
        }
        c.limits.max_bytes = o.archive_max_bytes.or(f.archive_max_bytes).unwrap_or(c.limits.max_bytes);
        c.limits.max_entries = o.archive_max_entries.or(f.archive_max_entries).unwrap_or(c.limits.max_entries);
        if c.limits.max_bytes == 0 || c.limits.max_entries == 0 {
            return Err(Error::Config("archive_max_bytes and archive_max_entries must be at least 1".into()));
        }
        let allowed = match o.artifact_allowed.map(ListValue::Text).or(f.artifact_allowed) {
            Some(ListValue::Text(t)) => split_list(&t),
            Some(ListValue::List(l)) => l.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            None => Vec::new(),
        };
        c.artifact_allowed = allowed
            .iter()
            .map(|s| AllowedLocation::parse(s).map_err(|e| Error::Config(format!("artifact_allowed: {e}"))))
            .collect::<Result<_>>()?;
        c.allow_unverified_artifacts = o.allow_unverified_artifacts.or(f.allow_unverified_artifacts).unwrap_or(false);
        c.metrics_listen = o.metrics_listen.or(f.metrics_listen).as_deref().and_then(parse_listen).transpose()?;
        Ok(c)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The effective configuration, one `key = value` per line, without the token's value.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |t: &Option<String>| if t.is_some() { "(set, not shown)" } else { "(none)" };
        writeln!(f, "server = {}", self.server)?;
        if let Some(ca) = &self.ca_file {
            writeln!(f, "ca_file = {}", ca.path.display())?;
        }
        writeln!(f, "token = {}", shown(&self.token))?;
        writeln!(f, "enroll_token = {}", shown(&self.enroll_token))?;
        writeln!(f, "credential_file = {}", self.credential_file.display())?;
        let hook_user = self.hook_user.as_ref().map_or("(none: the agent's user)", HookUser::name);
        writeln!(f, "hook_user = {hook_user}")?;
        writeln!(f, "host_id = {}", self.host_id)?;
        writeln!(f, "host_name = {}", self.host_name)?;
        writeln!(f, "host_ip = {}", self.host_ip.as_deref().unwrap_or("(unknown)"))?;
        writeln!(f, "groups = {}", self.groups.join(","))?;
        let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(f, "tags = {}", tags.join(","))?;
        writeln!(f, "dir = {}", self.dir.display())?;
        writeln!(f, "ping_interval = {}", self.ping_interval.as_secs())?;
        writeln!(f, "long_poll = {}", self.long_poll.as_secs())?;
        writeln!(f, "script_timeout = {}", self.script_timeout.as_secs())?;
        writeln!(f, "max_retries = {}", self.max_retries)?;
        writeln!(f, "builds_to_keep = {}", self.builds_to_keep)?;
        writeln!(f, "min_running_time = {}", self.min_running_time.as_secs())?;
        writeln!(f, "termination_timeout = {}", self.termination_timeout.as_secs())?;
        writeln!(f, "retry_delay = {}", self.retry_delay.as_secs())?;
        writeln!(f, "archive_max_bytes = {}", self.limits.max_bytes)?;
        writeln!(f, "archive_max_entries = {}", self.limits.max_entries)?;
        let allowed: Vec<String> = self.artifact_allowed.iter().map(ToString::to_string).collect();
        writeln!(f, "artifact_allowed = {}", allowed.join(","))?;
        writeln!(f, "allow_unverified_artifacts = {}", self.allow_unverified_artifacts)?;
        match self.metrics_listen {
            Some(addr) => write!(f, "metrics_listen = {addr}"),
            None => write!(f, "metrics_listen = (off)"),
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))
}

/// A token as given: trimmed; empty means none.
fn secret(v: Option<String>) -> Option<String> {
    v.map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// Only root can start hooks as another user (and give builds to it).
fn check_can_switch(user: Option<&HookUser>, euid: u32) -> Result<()> {
    match user {
        Some(u) if euid != 0 && u.uid() != euid => Err(Error::Config(format!(
            "hook_user {:?} needs the agent to run as root (it runs as uid {euid})",
            u.name()
        ))),
        _ => Ok(()),
    }
}

fn check_name<E: fmt::Display>(what: &str, v: &str, parse: impl Fn(&str) -> Result<(), E>) -> Result<()> {
    parse(v).map_err(|e| Error::Config(format!("{what} {v:?}: {e}")))
}

fn secs(key: &str, v: Option<u64>, default: Duration, min: u64) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) if s < min => Err(Error::Config(format!("{key} must be at least {min} second(s), got {s}"))),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect()
}

fn parse_tags(s: &str) -> Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    for pair in split_list(s) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                tags.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(Error::Config(format!("tag {pair:?} is not key=value"))),
        }
    }
    Ok(tags)
}

/// `metrics_listen`: an IP address and a port other than 0; blank means off (`None`).
fn parse_listen(s: &str) -> Option<Result<SocketAddr>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let refused = |why: &str| Error::Config(format!("metrics_listen {s:?} {why}, such as 127.0.0.1:9102"));
    Some(match s.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => Err(refused("needs a port other than 0")),
        Ok(addr) => Ok(addr),
        Err(_) => Err(refused("must be an IP address and a port")),
    })
}

/// First non-loopback address the host name resolves to.
fn resolve_ip(host: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    let addrs = (host, 0).to_socket_addrs().ok()?;
    addrs.map(|a| a.ip()).find(|ip| !ip.is_loopback()).map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        let mut argv = vec!["teletraan-agent"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().options
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = Config::resolve(Options::default(), FileConfig::default(), Some("web-1".into())).unwrap();
        assert_eq!(c.server, DEFAULT_SERVER);
        assert_eq!(c.host_id, "web-1");
        assert_eq!(c.host_name, "web-1");
        assert_eq!(c.dir, PathBuf::from(DEFAULT_DIR));
        assert_eq!(c.ping_interval, Duration::from_secs(30));
        assert_eq!(c.script_timeout, Duration::from_secs(1800));
        assert_eq!((c.max_retries, c.builds_to_keep), (3, 2));
        assert_eq!((c.limits.max_bytes, c.limits.max_entries), (20 << 30, 1_000_000));
    }

    #[test]
    fn archive_limits_come_from_flags_and_file() {
        let f = file("archive_max_bytes = 1000\narchive_max_entries = 10");
        let c = Config::resolve(parse(&["--archive-max-entries", "20"]), f, Some("h".into())).unwrap();
        assert_eq!((c.limits.max_bytes, c.limits.max_entries), (1000, 20));
        assert!(c.to_string().contains("archive_max_bytes = 1000\narchive_max_entries = 20\n"), "{c}");
        let err = Config::resolve(parse(&["--archive-max-bytes", "0"]), file(""), Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("archive_max_bytes"), "{err}");
        assert!(Cli::try_parse_from(["teletraan-agent", "--archive-max-bytes", "20G"]).is_err());
    }

    #[test]
    fn the_ca_file_is_read_at_load_and_a_bad_one_is_a_configuration_error() {
        let c = Config::resolve(Options::default(), FileConfig::default(), Some("h".into())).unwrap();
        assert!(c.ca_file.is_none(), "only the system's roots unless a CA file is given");
        let f = file("ca_file = \"/nonexistent/from-file.pem\"");
        let err = Config::resolve(parse(&[]), f.clone(), Some("h".into())).unwrap_err();
        assert!(matches!(err, Error::Config(_)) && err.to_string().contains("ca_file /nonexistent/from-file.pem"));
        let err = Config::resolve(parse(&["--ca-file", "/nonexistent/flag.pem"]), f, Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("flag.pem"), "the flag beats the file: {err}");
    }

    #[test]
    fn the_artifact_policy_comes_from_flags_and_file_and_is_strict_by_default() {
        let c = Config::resolve(Options::default(), FileConfig::default(), Some("h".into())).unwrap();
        assert!(c.artifact_allowed.is_empty());
        assert!(!c.allow_unverified_artifacts, "unverified artifacts are refused unless asked for");

        let f = file("artifact_allowed = [\"https://a.example.com/web\"]\nallow_unverified_artifacts = true");
        let c = Config::resolve(parse(&[]), f, Some("h".into())).unwrap();
        assert_eq!(c.artifact_allowed, [AllowedLocation::parse("https://a.example.com/web/").unwrap()]);
        assert!(c.allow_unverified_artifacts);
        assert!(
            c.to_string().contains("artifact_allowed = https://a.example.com/web/\nallow_unverified_artifacts = true")
        );

        let flags = parse(&[
            "--artifact-allowed",
            "https://b.example.com/, file:///srv/a",
            "--allow-unverified-artifacts=false",
        ]);
        let c = Config::resolve(flags, file("allow_unverified_artifacts = true"), Some("h".into())).unwrap();
        assert_eq!(c.artifact_allowed.len(), 2);
        assert!(!c.allow_unverified_artifacts, "the flag beats the file");
        // A bare flag means true, and does not swallow the subcommand after it.
        let cli = Cli::try_parse_from(["teletraan-agent", "--allow-unverified-artifacts", "once"]).unwrap();
        assert_eq!((cli.options.allow_unverified_artifacts, cli.command), (Some(true), Some(Command::Once)));
        assert!(Cli::try_parse_from(["teletraan-agent", "--allow-unverified-artifacts=perhaps"]).is_err());

        let err =
            Config::resolve(parse(&["--artifact-allowed", "artifacts.example.com/web"]), file(""), Some("h".into()))
                .unwrap_err();
        assert!(err.to_string().contains("artifact_allowed"), "{err}");
    }

    #[test]
    fn metrics_listen_is_off_by_default_comes_from_flag_or_file_and_must_be_an_address() {
        let c = Config::resolve(Options::default(), FileConfig::default(), Some("h".into())).unwrap();
        assert_eq!(c.metrics_listen, None);
        assert!(c.to_string().ends_with("\nmetrics_listen = (off)"), "{c}");

        let c = Config::resolve(parse(&[]), file("metrics_listen = \"127.0.0.1:9102\""), Some("h".into())).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9102".parse().unwrap()));
        assert!(c.to_string().contains("\nmetrics_listen = 127.0.0.1:9102"), "{c}");
        let flags = parse(&["--metrics-listen", " [::1]:9200 "]);
        let c = Config::resolve(flags, file("metrics_listen = \"127.0.0.1:9102\""), Some("h".into())).unwrap();
        assert_eq!(c.metrics_listen, Some("[::1]:9200".parse().unwrap()), "the flag beats the file");
        let c = Config::resolve(
            parse(&["--metrics-listen", ""]),
            file("metrics_listen = \"127.0.0.1:9102\""),
            Some("h".into()),
        )
        .unwrap();
        assert_eq!(c.metrics_listen, None, "a blank value turns the page off");

        for bad in ["localhost:9102", "127.0.0.1", "9102", "127.0.0.1:99999", "127.0.0.1:0"] {
            let err = Config::resolve(parse(&["--metrics-listen", bad]), file(""), Some("h".into())).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
            assert!(err.to_string().contains(&format!("metrics_listen {bad:?}")), "{err}");
            assert!(err.to_string().contains("such as 127.0.0.1:9102"), "{err}");
        }
        let err = Config::resolve(parse(&[]), file("metrics_listen = \"nowhere\""), Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("must be an IP address and a port"), "{err}");
        let help = <Cli as clap::CommandFactory>::command().render_help().to_string();
        assert!(help.contains("--metrics-listen <ADDR>") && help.contains("TELETRAAN_AGENT_METRICS_LISTEN"), "{help}");
    }

    #[test]
    fn flag_beats_file_and_file_beats_default() {
        let f = file("server = \"http://file:1\"\nping_interval = 7\ngroups = [\"a\", \"b\"]\ntags = { az = \"x\" }");
        let c = Config::resolve(parse(&["--server", "http://flag:2/"]), f, Some("h".into())).unwrap();
        assert_eq!(c.server, "http://flag:2");
        assert_eq!(c.ping_interval, Duration::from_secs(7));
        assert_eq!(c.groups, ["a", "b"]);
        assert_eq!(c.tags["az"], "x");
    }

    #[test]
    fn comma_lists_and_tags_parse() {
        let c =
            Config::resolve(parse(&["--groups", "web, api,", "--tags", "az=1a,team=x"]), file(""), Some("h".into()))
                .unwrap();
        assert_eq!(c.groups, ["web", "api"]);
        assert_eq!(c.tags.len(), 2);
        let err = Config::resolve(parse(&["--tags", "novalue"]), file(""), Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("novalue"), "{err}");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        assert!(Cli::try_parse_from(["teletraan-agent", "--ping-interval", "soon"]).is_err());
        let err = toml::from_str::<FileConfig>("ping_intervall = 3").unwrap_err().to_string();
        assert!(err.contains("ping_intervall"), "{err}");
        let err = Config::resolve(parse(&["--host-id", ""]), file(""), Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("host id"), "{err}");
        let err = Config::resolve(parse(&["--ping-interval", "0"]), file(""), Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("ping_interval"), "{err}");
        let err = Config::resolve(parse(&["--server", "ftp://x"]), file(""), Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("ftp://x"), "{err}");
    }

    #[test]
    fn display_never_shows_the_token() {
        let c = Config::resolve(parse(&["--token", "s3cr3t"]), file(""), Some("h".into())).unwrap();
        assert_eq!(c.token.as_deref(), Some("s3cr3t"));
        let shown = format!("{c} {c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("token = (set, not shown)"));
    }

    #[test]
    fn identity_keys_come_from_flags_env_names_and_file() {
        let c = Config::resolve(Options::default(), file(""), Some("h".into())).unwrap();
        assert_eq!((c.enroll_token.as_deref(), c.hook_user.as_ref()), (None, None));
        assert_eq!(c.credential_file, PathBuf::from(DEFAULT_DIR).join("credential"));

        let f = file("enroll_token = \"from-file\"\ncredential_file = \"/etc/agent/cred\"\nhook_user = \"root\"");
        let c = Config::resolve(parse(&["--dir", "/srv/agent"]), f, Some("h".into())).unwrap();
        assert_eq!(c.enroll_token.as_deref(), Some("from-file"));
        assert_eq!(c.credential_file, PathBuf::from("/etc/agent/cred"), "an explicit file is kept");
        assert_eq!(c.hook_user.as_ref().map(|u| (u.name(), u.uid())), Some(("root", 0)));

        let flags = parse(&["--dir", "/srv/agent", "--enroll-token", " flag ", "--hook-user", "root"]);
        let c = Config::resolve(flags, file("enroll_token = \"from-file\""), Some("h".into())).unwrap();
        assert_eq!(c.enroll_token.as_deref(), Some("flag"), "the flag beats the file");
        assert_eq!(c.credential_file, PathBuf::from("/srv/agent/credential"), "the default follows dir");
        let blank = Config::resolve(parse(&["--enroll-token", " "]), file(""), Some("h".into())).unwrap();
        assert_eq!(blank.enroll_token, None, "a blank token is no token");
    }

    #[test]
    fn the_enroll_token_is_never_shown() {
        let c = Config::resolve(parse(&["--enroll-token", "enr0ll"]), file(""), Some("h".into())).unwrap();
        let shown = format!("{c} {c:?}");
        assert!(!shown.contains("enr0ll"), "{shown}");
        assert!(shown.contains("enroll_token = (set, not shown)"), "{shown}");
        assert!(shown.contains("hook_user = (none: the agent's user)"), "{shown}");
        let help = <Cli as clap::CommandFactory>::command().render_help().to_string();
        assert!(help.contains("TELETRAAN_AGENT_ENROLL_TOKEN") && help.contains("TELETRAAN_AGENT_HOOK_USER"), "{help}");
    }

    #[test]
    fn an_unknown_hook_user_is_a_clear_error() {
        let err = Config::resolve(parse(&["--hook-user", "no-such-user-x"]), file(""), Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("hook_user \"no-such-user-x\" does not exist"), "{err}");
        let err = Config::resolve(parse(&[]), file("hook_user = \"a b\""), Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("not a valid user name"), "{err}");
        assert!(Cli::try_parse_from(["teletraan-agent", "--credential-file", ""]).is_err());
        let err = Config::resolve(parse(&[]), file("credential_file = \"\""), Some("h".into())).unwrap_err();
        assert!(err.to_string().contains("credential_file"), "{err}");
    }

    #[test]
    fn only_root_switches_to_another_hook_user() {
        let root = HookUser::lookup("root").unwrap();
        assert!(check_can_switch(Some(&root), 0).is_ok());
        assert!(check_can_switch(None, 1000).is_ok());
        let err = check_can_switch(Some(&root), 1000).unwrap_err();
        assert!(err.to_string().contains("needs the agent to run as root"), "{err}");
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from(["teletraan-agent", "status", "--json", "--dir", "/x"]).unwrap();
        assert_eq!(cli.command, Some(Command::Status { json: true }));
        assert_eq!(cli.options.dir, Some(PathBuf::from("/x")));
        assert_eq!(Cli::try_parse_from(["teletraan-agent"]).unwrap().command, None);
        let cli =
            Cli::try_parse_from(["teletraan-agent", "set-status", "--env", "web", "--step", "restarting"]).unwrap();
        let want = Command::SetStatus { env: "web".into(), step: Some(DeployStage::Restarting), restart: false };
        assert_eq!(cli.command, Some(want));
        let cli = Cli::try_parse_from(["teletraan-agent", "set-status", "--env", "web", "--restart"]).unwrap();
        assert_eq!(cli.command, Some(Command::SetStatus { env: "web".into(), step: None, restart: true }));
        for bad in [
            &["set-status", "--env", "web"][..],
            &["set-status", "--env", "web", "--step", "DOWNLOADING", "--restart"],
            &["set-status", "--env", "web", "--step", "DANCING"],
            &["set-status", "--step", "STAGING"],
        ] {
            let argv = std::iter::once("teletraan-agent").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
