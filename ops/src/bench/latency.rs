//! `teletraan bench latency`: the time from `POST …/deploys` to the first host receiving its
//! goal (its PRE_DOWNLOAD), seen by simulated hosts on a real server.
//!
//! Round 0 is a first deploy (new hosts, started by the gateway itself); each later round
//! deploys a new build on hosts that serve the previous one, with `maxParallel: 1`, so exactly
//! one host is admitted by a worker and the figure is the whole path: API → command → worker
//! (admission) → outbox → relay → gateway → the host's next ping. With plain polling that last
//! step waits for the host's next idle ping; with long-poll it should not.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use super::restapi::Admin;
use super::rollout::ServerFlags;
use crate::sim::Fleet;

/// Flags of `teletraan bench latency`.
#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    /// The server.
    pub server: ServerFlags,
    /// Simulated hosts on the stage.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub hosts: u32,
    /// Deploys measured after the first one.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Environment name of the stage (must not exist yet).
    #[arg(long, default_value = "bench-latency")]
    pub env: String,
}

/// Waits until a host took the PRE_DOWNLOAD goal of `deploy`; when (fleet clock).
async fn first_goal(fleet: &Fleet, deploy: &str, deadline: Duration) -> anyhow::Result<Duration> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(at) = fleet.rollout(deploy).and_then(|r| r.first_start) {
            return Ok(at);
        }
        if tokio::time::Instant::now() >= end {
            bail!("no host received deploy {deploy} within {} s", deadline.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn all_done(fleet: &Fleet, deploy: &str, hosts: u32, deadline: Duration) -> anyhow::Result<()> {
    let ok = fleet.wait_until(|f| f.rollout(deploy).is_some_and(|r| r.hosts_done >= hosts), deadline).await;
    if !ok {
        bail!("deploy {deploy} did not reach every host within {} s", deadline.as_secs());
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints each round and a summary (`result: key=value …`).
pub async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(300);
    let admin = Admin::new(&args.server.api, &args.server.admin_token)?;
    let (env, group) = (args.env.as_str(), format!("{}-hosts", args.env));
    let mode = match args.server.long_poll {
        Some(s) => format!("long-poll {s} s"),
        None => "plain polling".into(),
    };
    println!(
        "latency: {} simulated hosts, ping every {:.1} s (±{:.0}%), {mode}, maxParallel 1, {} rounds",
        args.hosts,
        args.server.ping_interval.as_secs_f64(),
        args.server.jitter * 100.0,
        args.rounds
    );
    let fleet = args.server.fleet("lat", args.hosts as usize, &group, 1000)?;
    admin.stage(env, "prod", &group, json!({"maxParallel": 1})).await?;
    let mut builds = Vec::new();
    for n in 0..=args.rounds {
        builds.push(admin.publish(env, n).await?);
    }
    // Every host has pinged once, so the gateway knows them before the first deploy.
    let everyone = args.server.ping_interval.mul_f64(1.0 + args.server.jitter) + Duration::from_millis(500);
    tokio::time::sleep(everyone).await;

    let mut latencies = Vec::new();
    for (round, build) in builds.iter().enumerate() {
        let t0 = fleet.elapsed();
        let deploy = admin.deploy(env, "prod", build).await?;
        let posted = fleet.elapsed() - t0;
        let at = first_goal(&fleet, &deploy, deadline).await?;
        let latency = at.saturating_sub(t0);
        all_done(&fleet, &deploy, args.hosts, deadline).await?;
        admin.wait_succeeding(&deploy, deadline).await?;
        let what = if round == 0 { "first deploy (gateway starts new hosts)" } else { "admitted by a worker" };
        println!(
            "latency: round {round}: POST answered after {:.0} ms, first host got its goal after {:.0} ms ({what})",
            ms(posted),
            ms(latency)
        );
        if round > 0 {
            latencies.push(latency);
        }
    }
    fleet.stop().await;
    latencies.sort();
    let median = latencies.get(latencies.len() / 2).copied().context("no round measured")?;
    let (min, max) = (latencies[0], latencies[latencies.len() - 1]);
    println!(
        "latency: POST → first host's goal over {} rounds: min {:.0} ms, median {:.0} ms, max {:.0} ms ({mode}, interval {:.1} s)",
        latencies.len(),
        ms(min),
        ms(median),
        ms(max),
        args.server.ping_interval.as_secs_f64()
    );
    println!(
        "result: label=latency long_poll={} interval_s={:.1} rounds={} min_ms={:.0} median_ms={:.0} max_ms={:.0}",
        args.server.long_poll.unwrap_or(0),
        args.server.ping_interval.as_secs_f64(),
        latencies.len(),
        ms(min),
        ms(median),
        ms(max)
    );
    Ok(())
}
