//! `teletraan`: the operator binary.
//!
//! `teletraan up [--demo]` runs every role in one process; `teletraan api|gateway|worker` run
//! one role each, to scale them apart; `teletraan migrate` applies the database migrations.

mod config;
mod demo;
mod serve;

use teletraan::sample;

use clap::{Parser, Subcommand};

use crate::config::ServerArgs;
use crate::serve::Roles;

#[derive(Parser)]
#[command(name = "teletraan", version, about = "A deploy system: API, agent gateway and workers.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the API, the gateway and the workers in one process.
    Up {
        /// Also start three local agents and roll out a sample build.
        #[arg(long)]
        demo: bool,
    },
    /// Run the REST API only.
    Api,
    /// Run the agent gateway only.
    Gateway,
    /// Run the workers only.
    Worker,
    /// Create the database if needed, apply migrations, and exit.
    Migrate,
    /// Run a fleet of simulated agents against a gateway and check the rollout caps.
    Sim(Box<teletraan::sim::cli::SimArgs>),
    /// Benchmark pieces (load generator, bare endpoint, rollout, reports…); see ops/bench/.
    Bench(Box<teletraan::bench::cli::BenchArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = match &cli.command {
        Cmd::Up { demo: true } => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("teletraan: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teletraan: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.server.resolve()?;
    let roles = match cli.command {
        Cmd::Migrate => {
            store::Store::ensure_database(&settings.database_url).await?;
            let options = store::StoreOptions { max_connections: 1, ..settings.store_options() };
            let store = store::Store::connect_with(&settings.database_url, &options)?;
            let applied = store.migrate().await?;
            println!("teletraan: database ready ({} migration(s) applied)", applied.len());
            return Ok(());
        }
        Cmd::Up { demo } => {
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
        Cmd::Api => Roles { api: true, gateway: false, worker: false },
        Cmd::Gateway => Roles { api: false, gateway: true, worker: false },
        Cmd::Worker => Roles { api: false, gateway: false, worker: true },
        Cmd::Sim(args) => return teletraan::sim::cli::run(*args).await,
        Cmd::Bench(args) => {
            let globals = teletraan::bench::cli::Globals {
                database_url: cli.server.database_url.clone(),
                amqp_url: settings.amqp_url.clone(),
                namespace: cli.server.namespace.clone(),
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
