//! `teletraan bench rollout`: a rollout to thousands of simulated hosts ([`crate::sim`], in
//! this process) on a real server, timed from the agents' side.
//!
//! The stage gets a first deploy (new hosts: not capped), then, once the server counts it
//! SUCCEEDING, a second one: the figure is the time from the `POST …/deploys` to the moment
//! the last host took its SERVING_BUILD goal, and the most hosts the agents saw out of
//! service at once (the cap check).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use super::board;
use super::parse_secs;
use super::restapi::Admin;
use crate::sim::{Fleet, RolloutReport, SimConfig, numbered_hosts};

/// How the benchmarks reach a running server (`teletraan up`).
#[derive(Debug, Clone, Args)]
pub struct ServerFlags {
    /// Base URL of the REST API, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub api: String,
    /// Base URL of the gateway, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    pub gateway: String,
    /// Admin token (the global `--admin-token` / `TELETRAAN_ADMIN_TOKEN`).
    #[arg(skip)]
    pub admin_token: String,
    /// Agent token (the global `--agent-token` / `TELETRAAN_AGENT_TOKEN`).
    #[arg(skip)]
    pub agent_token: String,
    /// Seconds between idle pings of the simulated agents.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    pub ping_interval: Duration,
    /// Each idle pause is the interval times a factor in [1 - jitter, 1 + jitter].
    #[arg(long, default_value_t = 0.1, value_parser = parse_jitter)]
    pub jitter: f64,
    /// Let pings wait up to SECS seconds for their goal to change (long-poll).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=60))]
    pub long_poll: Option<u64>,
}

fn parse_jitter(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

impl ServerFlags {
    /// A fleet of `hosts` simulated hosts named `<prefix>-N` in `group`, instant hooks.
    pub fn fleet(&self, prefix: &str, hosts: usize, group: &str, timeline: usize) -> anyhow::Result<Fleet> {
        let config = SimConfig {
            gateway: self.gateway.trim_end_matches('/').to_string(),
            token: self.agent_token.clone(),
            hosts: numbered_hosts(prefix, hosts, &[group.to_string()], &[]),
            ping_interval: self.ping_interval,
            jitter: self.jitter,
            timeline_capacity: timeline,
            // A long-polling host holds its connection while it waits: every host needs one,
            // or the held pings starve the others of connection slots.
            max_connections: if self.long_poll.is_some() { hosts.max(1) } else { hosts.clamp(1, 1024) },
            long_poll: self.long_poll.map(Duration::from_secs),
            // A held ping must not time out before the gateway answers it.
            request_timeout: Duration::from_secs(self.long_poll.unwrap_or(0) + 30),
            ..SimConfig::default()
        };
        Fleet::start(config).context("cannot start the simulated fleet")
    }
}

/// Flags of `teletraan bench rollout`.
#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    /// The server.
    pub server: ServerFlags,
    /// Simulated hosts.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub hosts: u32,
    /// maxParallelPct of the stage.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_parallel_pct: u32,
    /// Environment name of the stage (must not exist yet).
    #[arg(long, default_value = "bench-rollout")]
    pub env: String,
    /// Also measure the deploy board: the stage page's time to first byte and size before
    /// and during the second deploy, and the events of its live streams.
    #[arg(long)]
    pub board: bool,
    /// Longest wait for each phase, in seconds.
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_secs)]
    pub deadline: Duration,
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Waits until `hosts` hosts are done with `deploy`, printing progress every second.
async fn wait_done(
    fleet: &Fleet,
    deploy: &str,
    hosts: u32,
    since: Duration,
    deadline: Duration,
) -> anyhow::Result<RolloutReport> {
    let end = tokio::time::Instant::now() + deadline;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_print = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let r = fleet.rollout(deploy);
        let done = r.as_ref().map(|r| r.hosts_done).unwrap_or(0);
        if done >= hosts {
            return r.context("no rollout seen");
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = tokio::time::Instant::now();
            let (out, max) = r.as_ref().map(|r| (r.out_now, r.max_out)).unwrap_or((0, 0));
            let c = fleet.counters();
            println!(
                "  [+{:>5.1} s] {done}/{hosts} done, {out} out of service (most {max}), {} pings, {} errors",
                (fleet.elapsed() - since).as_secs_f64(),
                c.pings,
                c.errors
            );
        }
        if tokio::time::Instant::now() >= end {
            bail!("deploy {deploy}: only {done} of {hosts} hosts done after {}", secs(deadline));
        }
    }
}

/// Runs the benchmark and prints its figures (the last line is `result: key=value …`).
pub async fn run(args: RolloutArgs) -> anyhow::Result<()> {
    let admin = Admin::new(&args.server.api, &args.server.admin_token)?;
    let (env, group) = (args.env.as_str(), format!("{}-hosts", args.env));
    let n = args.hosts;
    let cap = (u64::from(n) * u64::from(args.max_parallel_pct) / 100).max(1);
    let mode = match args.server.long_poll {
        Some(s) => format!("long-poll {s} s"),
        None => "plain polling".into(),
    };
    println!(
        "rollout: {n} simulated hosts, ping every {} (±{:.0}%), {mode}, maxParallelPct {} (cap {cap}), instant hooks",
        secs(args.server.ping_interval),
        args.server.jitter * 100.0,
        args.max_parallel_pct
    );
    let fleet = args.server.fleet("roll", n as usize, &group, 0)?;
    admin.stage(env, "prod", &group, json!({"maxParallelPct": args.max_parallel_pct})).await?;
    let b1 = admin.publish(env, 1).await?;
    let b2 = admin.publish(env, 2).await?;

    let t0 = fleet.elapsed();
    let d1 = admin.deploy(env, "prod", &b1).await?;
    println!("rollout: first deploy {d1} (new hosts, not capped)");
    let r1 = wait_done(&fleet, &d1, n, t0, args.deadline).await?;
    let first = r1.last_done.unwrap_or_default().saturating_sub(t0);
    admin.wait_succeeding(&d1, args.deadline).await?;
    println!("rollout: first deploy on every host after {}; the server counts it SUCCEEDING", secs(first));

    let board = if args.board { Some(BoardWatch::start(&args.server, env).await?) } else { None };
    let pings_before = fleet.counters().pings;
    let t0 = fleet.elapsed();
    let d2 = admin.deploy(env, "prod", &b2).await?;
    let posted = fleet.elapsed() - t0;
    println!("rollout: second deploy {d2} (POST answered after {:.0} ms)", posted.as_secs_f64() * 1000.0);
    let r2 = wait_done(&fleet, &d2, n, t0, args.deadline).await?;
    let took = r2.last_done.unwrap_or_default().saturating_sub(t0);
    if let Some(board) = board {
        board.finish(took).await;
    }
    let first_start = r2.first_start.unwrap_or_default().saturating_sub(t0);
    let c = fleet.counters();
    let rate = (c.pings - pings_before) as f64 / took.as_secs_f64().max(1e-3);
    fleet.stop().await;
    let passed = u64::from(r2.max_out) <= cap;
    println!(
        "rollout: second deploy on all {n} hosts {} after the POST (first host out after {:.0} ms); at most {} out of service at once (cap {cap}: {}); {} taken out, {} as first deploys",
        secs(took),
        first_start.as_secs_f64() * 1000.0,
        r2.max_out,
        if passed { "held" } else { "EXCEEDED" },
        r2.hosts_taken_out,
        r2.hosts_taken_out_as_first
    );
    println!(
        "rollout: {:.0} pings/s during the rollout, {} errors in the run, ping p50 {:.1} ms p99 {:.1} ms",
        rate,
        c.errors,
        c.ping_p50.unwrap_or_default().as_secs_f64() * 1000.0,
        c.ping_p99.unwrap_or_default().as_secs_f64() * 1000.0
    );
    println!(
        "result: label=rollout hosts={n} long_poll={} first_deploy_s={:.2} rollout_s={:.2} max_out={} cap={cap} cap_held={passed} errors={}",
        args.server.long_poll.unwrap_or(0),
        first.as_secs_f64(),
        took.as_secs_f64(),
        r2.max_out,
        c.errors
    );
    if !passed {
        bail!("the cap was exceeded: {} hosts out of service at once, cap {cap}", r2.max_out);
    }
    Ok(())
}

/// The board's side of the benchmark: page fetches every second and two live streams.
struct BoardWatch {
    idle: Vec<board::PageSample>,
    sampler: tokio::task::JoinHandle<Vec<board::PageSample>>,
    stop: tokio::sync::watch::Sender<bool>,
    streams: Vec<(&'static str, std::sync::Arc<board::StreamCount>, tokio::task::JoinHandle<()>)>,
}

impl BoardWatch {
    async fn start(server: &ServerFlags, env: &str) -> anyhow::Result<BoardWatch> {
        let http = reqwest::Client::builder().build()?;
        let (api, token) = (server.api.trim_end_matches('/').to_string(), server.admin_token.clone());
        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(board::fetch_page(&http, &api, &token, env, "prod").await?);
        }
        println!("board: stage page before the rollout: {}", board::describe(&idle));
        let (board_live, board_task) = board::count_stream(
            http.clone(),
            format!("{api}/envs/{env}/prod/live"),
            Some(format!("tt_token={token}")),
            None,
        );
        let (events, events_task) = board::count_stream(
            http.clone(),
            format!("{api}/v1/events?env={env}&stage=prod"),
            None,
            Some(format!("token {token}")),
        );
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let env = env.to_string();
        let sampler = tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                if let Ok(s) = board::fetch_page(&http, &api, &token, &env, "prod").await {
                    samples.push(s);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stopped.changed() => return samples,
                }
            }
        });
        Ok(BoardWatch {
            idle,
            sampler,
            stop,
            streams: vec![("board live stream", board_live, board_task), ("GET /v1/events", events, events_task)],
        })
    }

    async fn finish(self, took: Duration) {
        let _ = self.stop.send(true);
        let during = self.sampler.await.unwrap_or_default();
        println!("board: stage page during the rollout: {}", board::describe(&during));
        let secs = took.as_secs_f64().max(1e-3);
        let mut result = String::new();
        for (name, count, task) in self.streams {
            task.abort();
            let events = count.events.load(std::sync::atomic::Ordering::Relaxed);
            let bytes = count.bytes.load(std::sync::atomic::Ordering::Relaxed);
            println!(
                "board: {name}: {events} events, {} KiB in {:.1} s: {:.1} events/s, {:.1} KiB/s",
                bytes / 1024,
                secs,
                events as f64 / secs,
                bytes as f64 / 1024.0 / secs
            );
            result.push_str(&format!(
                " {}_events_per_s={:.1}",
                name.split(' ').next().unwrap_or("x"),
                events as f64 / secs
            ));
        }
        let p50 = |v: &[board::PageSample]| {
            let mut f: Vec<f64> = v.iter().map(|s| s.first_byte.as_secs_f64() * 1000.0).collect();
            f.sort_by(f64::total_cmp);
            f.get(f.len() / 2).copied().unwrap_or(0.0)
        };
        println!(
            "result: label=board idle_ttfb_ms={:.0} rollout_ttfb_ms={:.0} page_kib={}{result}",
            p50(&self.idle),
            p50(&during),
            self.idle.iter().map(|s| s.bytes).max().unwrap_or(0) / 1024
        );
    }
}
