//! `teletraan-agent`: the command line around the `agent` library.
//!
//! Exit codes: 0 success; 1 runtime failure (base directory locked by another agent, an
//! enrollment or a ping that failed in `once`, an unusable base directory or credential file,
//! a `set-status` that cannot be applied);
//! 2 bad configuration or usage.

use std::process::ExitCode;

use agent::admin::Change;
use agent::config::{Cli, Command, Config};
use agent::layout::Layout;
use agent::runner::Agent;
use agent::status;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match Config::load(cli.options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("teletraan-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Status { json } = command {
        return print_status(&config, json);
    }
    if let Command::SetStatus { env, step, restart } = &command {
        let change = match (step, restart) {
            (Some(stage), _) => Change::Step(*stage),
            (None, _) => Change::Restart,
        };
        return set_status(&config, env, change);
    }
    eprintln!("teletraan-agent {} effective configuration:\n{config}", env!("CARGO_PKG_VERSION"));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("teletraan-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(config, command))
}

async fn serve(config: Config, command: Command) -> ExitCode {
    let metrics_listen = config.metrics_listen;
    let mut agent = match Agent::open(config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("teletraan-agent: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(addr) = metrics_listen {
        // A port that cannot be bound is logged and the agent goes on (see `metrics::server`).
        let _ = agent::metrics::server::start(addr, agent.metrics().registry().clone()).await;
    }
    match command {
        Command::Once => match agent.once().await {
            Ok(summary) => {
                tracing::info!(steps = summary.steps, "round done");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("teletraan-agent: {e}");
                ExitCode::from(1)
            }
        },
        Command::Run | Command::Status { .. } | Command::SetStatus { .. } => {
            agent.run(shutdown_signal()).await;
            tracing::info!("shutting down");
            ExitCode::SUCCESS
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn print_status(config: &Config, json: bool) -> ExitCode {
    let layout = Layout::new(&config.dir);
    let loaded = status::load(&layout.status_file());
    for p in &loaded.problems {
        eprintln!("teletraan-agent: {p}");
    }
    if json {
        match serde_json::to_string_pretty(&loaded.envs) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("teletraan-agent: cannot encode the status: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print!("{}", status::render_table(&layout, &loaded.envs));
    }
    ExitCode::SUCCESS
}

fn set_status(config: &Config, env: &str, change: Change) -> ExitCode {
    let layout = Layout::new(&config.dir);
    match agent::admin::set_status(&layout, env, change) {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(agent::Error::Locked(lock)) => {
            eprintln!(
                "teletraan-agent: an agent is running on {} (it holds {}); stop it first \
                 (systemctl stop teletraan-agent), then run set-status again",
                layout.base().display(),
                lock.display()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("teletraan-agent: {e}");
            ExitCode::from(1)
        }
    }
}
