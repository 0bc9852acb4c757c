//! `agent`: the on-host deploy agent `teletraan-agent`.
//!
//! The agent pings the gateway (`POST /v1/system/ping`, Teletraan's protocol), runs the stage the
//! answer asks for (hook scripts of the build, download, safe extraction of tar, tar.gz and zip
//! within limits, template rendering and the atomic switch of the live symlink), pings with
//! progress during long work, persists its status atomically under its base directory and
//! reports the outcome in the next ping. Builds moved from Teletraan run unchanged: hook names,
//! their environment variables, templates and the status file follow Teletraan's agent. With
//! `metrics_listen` set, it serves its own Prometheus metrics on that local address
//! ([`metrics`]).
//!
//! What it must never do: link the database or the message broker. It depends on `schema` for
//! the wire types and nothing else of the workspace (never `store`, `workers`, `lapin`,
//! `tokio-postgres`), nor a web framework (its metrics page is a small responder of its own);
//! it talks to the outside world only through the gateway's HTTP endpoint, the artifact URLs it
//! is given and, when configured, its metrics page. It never writes outside its base directory, except the
//! credential file when it is configured elsewhere and what the hook scripts it runs choose to
//! do. It never logs a token or the host's credential, nor passes them to a hook.

#![warn(missing_docs)]

pub mod admin;
pub mod ca;
pub mod client;
pub mod config;
pub mod download;
pub mod downloading;
pub mod error;
pub mod exec;
pub mod extract;
pub mod hooks;
pub mod identity;
pub mod layout;
pub mod metrics;
pub mod ownership;
pub mod progress;
pub mod retention;
pub mod runner;
pub mod stage;
pub mod status;
pub mod template;
#[doc(hidden)]
pub mod testutil;
pub mod user;

pub use error::Error;

/// Version string sent as `agentVersion`.
pub const AGENT_VERSION: &str = concat!("teletraan-agent-rs/", env!("CARGO_PKG_VERSION"));
