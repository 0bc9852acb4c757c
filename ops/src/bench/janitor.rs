//! `teletraan bench janitor`: the host janitor's store calls, timed on a seeded fleet
//! (`ops/bench/janitor.sh` seeds it and makes some hosts silent). Three figures: a run with
//! nothing to do (the steady state, every 30 s), marking the silent hosts UNREACHABLE (their
//! stages re-evaluated and the freed slots given out), and forgetting them.

use std::time::{Duration, Instant};

use clap::Args;
use store::Store;
use workers::jobs::host_janitor::{JanitorConfig, sweep};

/// Flags of `teletraan bench janitor`.
#[derive(Debug, Clone, Args)]
pub struct JanitorArgs {
    /// Set from the global `--database-url`.
    #[arg(skip)]
    pub database_url: String,
    /// Records or hosts per statement, as the job uses.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch: i64,
    /// Silence after which hosts are UNREACHABLE (seconds).
    #[arg(long, default_value_t = 150)]
    pub min_stale: u64,
    /// Silence after which hosts are forgotten (seconds).
    #[arg(long, default_value_t = 600)]
    pub max_stale: u64,
}

/// One janitor pass as the job makes it; returns (records marked, hosts forgotten, time).
async fn janitor_run(store: &Store, a: &JanitorArgs) -> anyhow::Result<(u64, u64, Duration)> {
    let config = JanitorConfig {
        min_stale: Duration::from_secs(a.min_stale),
        max_stale: Duration::from_secs(a.max_stale),
        batch: a.batch,
    };
    let started = Instant::now();
    let s = sweep(store, &config, schema::time::now_ms(), || false).await?;
    Ok((s.unreachable, s.stopped.hosts + s.removed.hosts, started.elapsed()))
}

/// Runs the benchmark: first run (the silent hosts are marked and, being silent past the
/// second threshold too, forgotten), then a run with nothing left to do.
pub async fn run(a: JanitorArgs) -> anyhow::Result<()> {
    let store = Store::connect(&a.database_url, 4)?;
    let (marked, forgotten, first) = janitor_run(&store, &a).await?;
    println!("first run: {marked} records marked UNREACHABLE, {forgotten} hosts forgotten in {first:.2?}");
    let (m2, f2, idle) = janitor_run(&store, &a).await?;
    println!("next run: {m2} records marked, {f2} hosts forgotten in {idle:.2?} (nothing to do)");
    println!(
        "result: marked={marked} forgotten={forgotten} first_ms={} idle_ms={}",
        first.as_millis(),
        idle.as_millis()
    );
    Ok(())
}
