//! `cli`: the `teletraan` commands for release engineers and CI (`teletraan deploy`, `status
//! --watch`, `rollback`…). They speak only the public REST API and its event stream, with a
//! token, so they work from any laptop or CI runner; this crate links neither the database nor
//! the broker (`ops/tests/architecture.rs` checks it).
//!
//! The exit status says how a command ended ([`exit`]): CI gates on it.

mod args;
mod client;
mod commands;
mod config;
mod error;
mod follow;
mod output;
mod sse;

use std::process::ExitCode;

pub use args::{ClientArgs, Command, OutputFormat};
pub use error::{CliError, exit};

/// Runs a client command. `app` builds the whole `teletraan` command (for completions and the
/// man page, which cover the server's commands too).
pub async fn run(command: Command, app: impl FnOnce() -> clap::Command) -> ExitCode {
    match commands::run(command, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("teletraan: {e}");
            }
            ExitCode::from(e.exit)
        }
    }
}
