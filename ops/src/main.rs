//! `teletraan`: the operator binary.
//!
//! `teletraan up [--demo]` runs every role in one process; `teletraan api|gateway|worker` run
//! one role each, to scale them apart; `teletraan migrate` applies the database migrations.
//! The client commands (`teletraan login`, `deploy`, `status --watch`…) are the `cli` crate's:
//! they take the client's flags, the server commands the server's.

mod config;
mod demo;
mod serve;

use teletraan::sample;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::ServerArgs;
use crate::serve::Roles;

#[derive(Parser)]
#[command(
    name = "teletraan",
    version,
    about = "A deploy system: the server's roles (API, agent gateway, workers) and the command line that drives it.",
    subcommand_help_heading = "Commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the API, the gateway and the workers in one process.
    Up {
        /// Also start three local agents and roll out a sample build.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run the REST API only.
    Api(ServerArgs),
    /// Run the agent gateway only.
    Gateway(ServerArgs),
    /// Run the workers only.
    Worker(ServerArgs),
    /// Create the database if needed, apply migrations, and exit.
    Migrate(ServerArgs),
    /// Run a fleet of simulated agents against a gateway and check the rollout caps.
    Sim(Box<teletraan::sim::cli::SimArgs>),
    /// Benchmark pieces (load generator, bare endpoint, rollout, reports…); see ops/bench/.
    Bench {
        #[command(flatten)]
        args: Box<teletraan::bench::cli::BenchArgs>,
        #[command(flatten)]
        server: ServerArgs,
    },
    #[command(flatten)]
    Client(cli::Command),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("teletraan: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The client's commands print for people and scripts, not logs.
    let cli = match cli.command {
        Cmd::Client(command) => return runtime.block_on(cli::run(command, Cli::command)),
        _ => cli,
    };
    let default_level = match &cli.command {
        Cmd::Up { demo: true, .. } => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let json = server_args(&cli.command).and_then(|s| s.log_format.as_deref()) == Some("json");
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        logs.json().with_current_span(true).with_span_list(true).init();
    } else {
        logs.init();
    }
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teletraan: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The server settings of a server command.
fn server_args(cmd: &Cmd) -> Option<&ServerArgs> {
    match cmd {
        Cmd::Up { server, .. }
        | Cmd::Api(server)
        | Cmd::Gateway(server)
        | Cmd::Worker(server)
        | Cmd::Migrate(server)
        | Cmd::Bench { server, .. } => Some(server),
        Cmd::Sim(_) | Cmd::Client(_) => None,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let server = server_args(&cli.command).cloned().unwrap_or_default();
    let settings = server.resolve()?;
    let roles = match cli.command {
        Cmd::Migrate(_) => {
            store::Store::ensure_database(&settings.database_url).await?;
            let options = store::StoreOptions { max_connections: 1, ..settings.store_options() };
            let store = store::Store::connect_with(&settings.database_url, &options)?;
            let applied = store.migrate().await?;
            println!("teletraan: database ready ({} migration(s) applied)", applied.len());
            return Ok(());
        }
        Cmd::Up { demo, .. } => {
            let mut settings = settings;
            if demo && settings.tls.is_some() {
                anyhow::bail!(
                    "the demo runs over plain HTTP on this machine: unset tls_cert and tls_key (TELETRAAN_TLS_CERT, \
                     TELETRAAN_TLS_KEY) for --demo"
                );
            }
            // The demo's artifacts are served before the API starts, so its policy can take them.
            let artifacts = if demo {
                let artifacts = demo::Artifacts::serve().await?;
                artifacts.allow_in(&mut settings.artifacts)?;
                Some(artifacts)
            } else {
                None
            };
            let running = serve::start(&settings, Roles { api: true, gateway: true, worker: true }, true).await?;
            announce(&running, &settings);
            if let Some(artifacts) = artifacts {
                let demo = demo::start(&running, artifacts).await?;
                teletraan::interrupted().await;
                demo.stop().await;
            } else {
                teletraan::interrupted().await;
            }
            println!("teletraan: stopping");
            running.stop().await;
            return Ok(());
        }
        Cmd::Api(_) => Roles { api: true, gateway: false, worker: false },
        Cmd::Gateway(_) => Roles { api: false, gateway: true, worker: false },
        Cmd::Worker(_) => Roles { api: false, gateway: false, worker: true },
        Cmd::Client(_) => unreachable!("the client's commands run in main"),
        Cmd::Sim(args) => return teletraan::sim::cli::run(*args).await,
        Cmd::Bench { args, .. } => {
            let globals = teletraan::bench::cli::Globals {
                database_url: server.database_url.clone(),
                amqp_url: settings.amqp_url.clone(),
                namespace: server.namespace.clone(),
                admin_token: settings.admin_token.clone(),
                agent_token: settings.agent_token.clone(),
            };
            return teletraan::bench::cli::run(*args, globals).await;
        }
    };
    let running = serve::start(&settings, roles, false).await?;
    announce(&running, &settings);
    teletraan::interrupted().await;
    running.stop().await;
    Ok(())
}

/// Prints where the roles listen, one line each (tests and scripts read these lines), and the
/// tokens this process generated (never ones it was given).
fn announce(r: &serve::Running, settings: &config::Settings) {
    let scheme = if r.https { "https" } else { "http" };
    if let Some(a) = r.api_addr {
        println!("teletraan: api {scheme}://{a}");
    }
    if let Some(a) = r.gateway_addr {
        println!("teletraan: gateway {scheme}://{a}");
    }
    if let (Some(t), None) = (&r.admin_token, &settings.admin_token) {
        println!("teletraan: admin token {t}");
    }
    if let (Some(t), None) = (&r.agent_token, &settings.agent_token) {
        println!("teletraan: agent token {t}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent_and_keeps_server_and_client_flags_apart() {
        Cli::command().debug_assert();
        let help = |args: &[&str]| {
            let mut cmd = Cli::command();
            // Global flags reach subcommands when the command is built.
            cmd.build();
            let mut path = vec![];
            let mut sub = &mut cmd;
            for a in args {
                path.push(*a);
                sub = sub.find_subcommand_mut(a).unwrap_or_else(|| panic!("no command {path:?}"));
            }
            sub.render_long_help().to_string()
        };
        for client in [&["deploy"][..], &["env", "list"], &["status"], &["build", "publish"]] {
            let text = help(client);
            assert!(text.contains("--url") && text.contains("--output"), "{client:?}: {text}");
            assert!(!text.contains("--database-url") && !text.contains("--amqp-url"), "{client:?}: {text}");
        }
        for server in [&["up"][..], &["api"], &["worker"], &["migrate"]] {
            let text = help(server);
            assert!(text.contains("--database-url"), "{server:?}: {text}");
            assert!(!text.contains("--output") && !text.contains("TELETRAAN_URL"), "{server:?}: {text}");
        }
    }
}
