//! `teletraan bench …`: one sub-command per benchmark piece. Bad or missing flags end the
//! process with status 2 (clap's own errors); a benchmark that fails to run ends it with
//! status 1.
//!
//! The server settings come from the binary's global flags and their `TELETRAAN_*`
//! variables ([`Globals`]). Benchmarks that publish to the broker delete their namespace at
//! the end, so they only take one whose name starts with `bench`.

use clap::error::ErrorKind;
use clap::{Args, Subcommand};

use super::{amqp, bare, janitor, latency, load, reports, rollout};

/// Flags of `teletraan bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The benchmark piece to run.
    #[command(subcommand)]
    pub command: BenchCmd,
}

/// The sub-commands of `teletraan bench`.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCmd {
    /// Ping load generator: N connections over the seeded hosts, fixed duration, optional rate.
    Load(Box<load::LoadArgs>),
    /// Bare axum endpoint: parses and normalises the ping, answers a fixed NOOP.
    Bare(bare::BareArgs),
    /// Rollout of thousands of simulated hosts on a running server: time and cap check.
    Rollout(Box<rollout::RolloutArgs>),
    /// Time from POST …/deploys to the first host receiving its goal (simulated hosts).
    Latency(Box<latency::LatencyArgs>),
    /// Agent updates applied to Postgres per second by in-process report consumers.
    Reports(Box<reports::ReportsArgs>),
    /// The host janitor's store calls on a seeded database with silent hosts.
    Janitor(janitor::JanitorArgs),
    /// Calibration: persistent messages/s into a quorum queue with publisher confirms.
    Amqp(amqp::AmqpArgs),
    /// Deletes every exchange and queue of the (`bench…`) namespace given with `--namespace`.
    DropNamespace,
}

/// What `teletraan bench` takes from the binary's global flags: `--database-url`,
/// `--amqp-url`, `--namespace`, `--admin-token`, `--agent-token` (or `TELETRAAN_*`).
#[derive(Debug, Clone, Default)]
pub struct Globals {
    /// Postgres URL, when given.
    pub database_url: Option<String>,
    /// RabbitMQ URL (with its default).
    pub amqp_url: String,
    /// Namespace, when given.
    pub namespace: Option<String>,
    /// Admin token, when given.
    pub admin_token: Option<String>,
    /// Agent token, when given.
    pub agent_token: Option<String>,
}

/// A missing or unusable global flag: the message, and exit status 2 like clap's errors.
fn usage(message: String) -> ! {
    clap::Error::raw(ErrorKind::MissingRequiredArgument, format!("{message}\n")).exit()
}

fn need(value: Option<String>, flag: &str, var: &str, what: &str) -> String {
    value.unwrap_or_else(|| usage(format!("this benchmark needs {flag} (or {var}): {what}")))
}

/// The namespace, which must be given and start with `bench` (it is deleted afterwards).
fn bench_namespace(g: &Globals) -> String {
    let ns = need(g.namespace.clone(), "--namespace", "TELETRAAN_NAMESPACE", "a fresh namespace, deleted at the end");
    if !ns.starts_with("bench") {
        usage(format!("namespace {ns:?}: benchmarks delete their namespace, so its name must start with 'bench'"));
    }
    ns
}

/// Runs `teletraan bench …`.
pub async fn run(args: BenchArgs, g: Globals) -> anyhow::Result<()> {
    let tokens = |s: &mut rollout::ServerFlags| {
        s.admin_token =
            need(g.admin_token.clone(), "--admin-token", "TELETRAAN_ADMIN_TOKEN", "the server's admin token");
        s.agent_token =
            need(g.agent_token.clone(), "--agent-token", "TELETRAAN_AGENT_TOKEN", "the server's agent token");
    };
    match args.command {
        BenchCmd::Load(a) => load::run(*a).await.map(|_| ()),
        BenchCmd::Bare(a) => bare::run(a).await,
        BenchCmd::Rollout(mut a) => {
            tokens(&mut a.server);
            rollout::run(*a).await
        }
        BenchCmd::Latency(mut a) => {
            tokens(&mut a.server);
            latency::run(*a).await
        }
        BenchCmd::Reports(mut a) => {
            a.database_url =
                need(g.database_url.clone(), "--database-url", "TELETRAAN_DATABASE_URL", "a seeded database");
            a.amqp_url = g.amqp_url.clone();
            a.namespace = bench_namespace(&g);
            reports::run(*a).await
        }
        BenchCmd::Janitor(mut a) => {
            a.database_url =
                need(g.database_url.clone(), "--database-url", "TELETRAAN_DATABASE_URL", "a seeded database");
            janitor::run(a).await
        }
        BenchCmd::Amqp(mut a) => {
            a.amqp_url = g.amqp_url.clone();
            a.namespace = bench_namespace(&g);
            amqp::run(a).await
        }
        BenchCmd::DropNamespace => {
            let bus = bus::BusConfig::new(g.amqp_url.clone(), bench_namespace(&g));
            bus::delete_topology(&bus).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn kind(args: &str) -> Option<ErrorKind> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.split_whitespace())).err().map(|e| e.kind())
    }

    #[test]
    fn bad_flags_are_refused() {
        assert_eq!(kind("load --url http://127.0.0.1:1 --token t"), None);
        assert_eq!(kind("load --url https://x:1"), Some(ErrorKind::ValueValidation));
        assert_eq!(kind("load --url http://x:1 --rate 0"), Some(ErrorKind::ValueValidation));
        assert_eq!(kind("load --url http://x:1 --connections 0"), Some(ErrorKind::ValueValidation));
        assert_eq!(kind("load --url http://x:1 --client curl"), Some(ErrorKind::InvalidValue));
        assert_eq!(kind("bare --listen nowhere"), Some(ErrorKind::ValueValidation));
        let server = "--api http://a:1 --gateway http://g:2";
        assert_eq!(kind(&format!("rollout {server} --long-poll 30")), None);
        assert_eq!(kind(&format!("rollout {server} --long-poll 0")), Some(ErrorKind::ValueValidation));
        assert_eq!(kind(&format!("latency {server} --rounds 0")), Some(ErrorKind::ValueValidation));
        assert_eq!(kind("amqp --window 0"), Some(ErrorKind::ValueValidation));
        assert_eq!(kind("reports --workers 0"), Some(ErrorKind::ValueValidation));
        assert_eq!(kind("janitor --batch 0"), Some(ErrorKind::ValueValidation));
        assert_eq!(kind("frobnicate"), Some(ErrorKind::InvalidSubcommand));
    }
}
