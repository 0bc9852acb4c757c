//! `teletraan bench load`: the ping load generator.
//!
//! N connections, each cycling through its own slice of the seeded hosts
//! ([`Seeded`](super::seeded::Seeded)) and sending each host's ping, for a fixed duration
//! after a warm-up, as fast as the server answers or at a target total rate. At a target
//! rate each connection sends on a fixed schedule, and a request that could not leave on
//! time because the previous answer was late is timed from its scheduled time (no
//! coordinated omission); timer lateness of an idle connection is not charged to the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::sync::watch;

use super::http1::{self, Conn};
use super::seeded::Seeded;
use super::{cpu_seconds, machine_busy_seconds, parse_secs};
use crate::sim::LatencyHistogram;

/// The HTTP client of each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Client {
    /// A minimal keep-alive HTTP/1.1 client (a few µs of CPU per request).
    Raw,
    /// reqwest (hyper), one client and so one pooled connection per connection task.
    Reqwest,
}

/// Flags of `teletraan bench load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8081 (pings go to /v1/system/ping).
    #[arg(long, value_parser = parse_http_url)]
    pub url: String,
    /// Agent token, sent as `Authorization: token <T>` (none: no header).
    #[arg(long, env = "TELETRAAN_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seeded hosts to ping (ops/bench/sql/seed.sql with the same numbers).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub hosts: u32,
    /// Seeded stages.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub stages: u32,
    /// Connections (each one request in flight).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Seconds measured (after the warm-up).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub duration: Duration,
    /// Seconds of load before measuring (0 for none).
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs_or_zero)]
    pub warmup: Duration,
    /// Target total rate in pings/s (default: as fast as the server answers).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Send exactly one ping per host, then stop (no warm-up, no duration).
    #[arg(long)]
    pub once: bool,
    /// HTTP client.
    #[arg(long, value_enum, default_value_t = Client::Raw)]
    pub client: Client,
    /// Process id of the server, to report its CPU time per ping (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Name printed at the start of the result line.
    #[arg(long, default_value = "load")]
    pub label: String,
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    match s.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.contains('/') => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not a plain http://HOST:PORT URL")),
    }
}

fn parse_secs_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" { Ok(Duration::ZERO) } else { parse_secs(s) }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (1.0..=10_000_000.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a rate between 1 and 10000000 pings/s")),
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    noop: AtomicU64,
    errors: AtomicU64,
    latency: LatencyHistogram,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// When the run measures and when it stops.
#[derive(Clone, Copy)]
struct Window {
    /// The load starts.
    begin: Instant,
    /// Measuring starts (after the warm-up).
    from: Instant,
    /// The load and the measure end.
    until: Instant,
}

/// A window already over (only if the run ends before it starts).
static NEVER: LazyLock<Window> = LazyLock::new(|| {
    let now = Instant::now();
    Window { begin: now, from: now, until: now }
});

/// How connections learn the window: they all wait at `ready`, then the window is set.
#[derive(Clone)]
struct Start {
    ready: Arc<tokio::sync::Barrier>,
    window: watch::Receiver<Option<Window>>,
}

struct Target {
    addr: SocketAddr,
    host: String,
    url: String,
    headers: String,
    auth: Option<String>,
}

enum Http {
    Raw(Conn),
    Reqwest(reqwest::Client),
}

impl Http {
    async fn post(&mut self, t: &Target, body: &str) -> Result<(u16, bool), String> {
        const NEEDLE: &[u8] = b"\"NOOP\"";
        match self {
            Http::Raw(c) => match c.post(&t.host, "/v1/system/ping", &t.headers, body.as_bytes(), NEEDLE).await {
                Ok(a) => Ok((a.status, a.matched)),
                Err(e) => {
                    // A broken connection is replaced; the error is still counted.
                    if let Ok(fresh) = Conn::connect(t.addr).await {
                        *c = fresh;
                    }
                    Err(e.to_string())
                }
            },
            Http::Reqwest(client) => {
                let mut req = client
                    .post(&t.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
                if let Some(a) = &t.auth {
                    req = req.header(reqwest::header::AUTHORIZATION, a);
                }
                let resp = req.send().await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
                Ok((status, http1::find(&bytes, NEEDLE).is_some()))
            }
        }
    }
}

/// One connection's loop over hosts `lo..hi`.
async fn connection(
    args: Arc<LoadArgs>,
    target: Arc<Target>,
    tally: Arc<Tally>,
    lo: u32,
    hi: u32,
    start: Start,
    c: u32,
) {
    let seeded = Seeded { hosts: args.hosts, stages: args.stages };
    let http = match args.client {
        Client::Raw => Conn::connect(target.addr)
            .await
            .map(Http::Raw)
            .map_err(|e| format!("cannot connect to {}: {e}", target.addr)),
        Client::Reqwest => reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()
            .map(Http::Reqwest)
            .map_err(|e| format!("cannot build the HTTP client: {e}")),
    };
    // The clock starts once every connection is ready (or failed), so a slow start makes no
    // backlog.
    start.ready.wait().await;
    let mut http = match http {
        Ok(h) => h,
        Err(e) => return tally.error(e),
    };
    let Ok(w) = start.window.clone().wait_for(Option::is_some).await.map(|w| w.unwrap_or(*NEVER)) else { return };
    // At a target rate: this connection's share, staggered against the other connections.
    let period = args.rate.map(|r| Duration::from_secs_f64(f64::from(args.connections) / r));
    let mut next = period.map(|p| w.begin + p.mul_f64(f64::from(c) / f64::from(args.connections)));
    let mut last_done = Instant::now();
    let mut body = String::with_capacity(1024);
    let mut i = lo;
    loop {
        if let (Some(at), Some(p)) = (next.as_mut(), period) {
            let scheduled = *at;
            *at += p;
            tokio::time::sleep_until(scheduled.into()).await;
            // Busy past the scheduled time: the wait is the server's doing. Idle: only the
            // timer was late.
            let start = if last_done > scheduled { scheduled } else { Instant::now() };
            if !send(&mut http, &target, &seeded, i, &mut body, &tally, start, w, &mut last_done).await {
                break;
            }
        } else if !send(&mut http, &target, &seeded, i, &mut body, &tally, Instant::now(), w, &mut last_done).await {
            break;
        }
        i += 1;
        if i >= hi {
            if args.once {
                break;
            }
            i = lo;
        }
    }
}

/// One ping; `false` once the run is over.
#[allow(clippy::too_many_arguments)]
async fn send(
    http: &mut Http,
    target: &Target,
    seeded: &Seeded,
    host: u32,
    body: &mut String,
    tally: &Tally,
    start: Instant,
    w: Window,
    last_done: &mut Instant,
) -> bool {
    if start >= w.until {
        return false;
    }
    seeded.ping_body(host, body);
    let result = http.post(target, body).await;
    let done = Instant::now();
    *last_done = done;
    if done < w.from || done > w.until {
        return true;
    }
    match result {
        Ok((200, noop)) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            tally.noop.fetch_add(u64::from(noop), Ordering::Relaxed);
            tally.latency.record(done - start);
        }
        Ok((status, _)) => tally.error(format!("HTTP {status}")),
        Err(e) => tally.error(e),
    }
    true
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadResult {
    /// Answered pings per second (HTTP 200) over the measured window.
    pub pings_per_sec: f64,
    /// Latency percentiles in milliseconds (p50, p99, p99.9).
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Failed pings (transport errors and statuses other than 200).
    pub errors: u64,
    /// Share of answers that were NOOP.
    pub noop_share: f64,
    /// Server CPU per answered ping, in µs, when its pid was given.
    pub server_cpu_us: Option<f64>,
    /// This generator's CPU per answered ping, in µs.
    pub client_cpu_us: Option<f64>,
    /// The whole machine's busy CPU per answered ping, in µs (server, generator and whatever
    /// the pings cause elsewhere: workers, Postgres, RabbitMQ — and any other load).
    pub machine_cpu_us: Option<f64>,
}

/// Runs the load and prints the result (a human line and a `result:` line of key=value).
pub async fn run(args: LoadArgs) -> anyhow::Result<LoadResult> {
    let authority = args.url.trim_start_matches("http://").to_string();
    let addr = tokio::net::lookup_host(&authority)
        .await
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let headers = args.token.as_ref().map(|t| format!("authorization: token {t}\r\n")).unwrap_or_default();
    let target = Arc::new(Target {
        addr,
        host: authority,
        url: format!("{}/v1/system/ping", args.url),
        headers,
        auth: args.token.as_ref().map(|t| format!("token {t}")),
    });
    let connections = args.connections.min(args.hosts);
    let rate = args.rate.map(|r| format!("{r:.0}/s")).unwrap_or_else(|| "max".into());
    println!(
        "{}: {} connections, {} hosts over {} stages, rate {rate}, {} client, {}",
        args.label,
        connections,
        args.hosts,
        args.stages,
        format!("{:?}", args.client).to_lowercase(),
        if args.once {
            "one ping per host".to_string()
        } else {
            format!("{:.0} s after {:.0} s of warm-up", args.duration.as_secs_f64(), args.warmup.as_secs_f64())
        }
    );
    let args = Arc::new(LoadArgs { connections, ..args });
    let tally = Arc::new(Tally::default());
    let (window, window_rx) = watch::channel(None);
    let start = Start { ready: Arc::new(tokio::sync::Barrier::new(connections as usize + 1)), window: window_rx };
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let lo = (u64::from(args.hosts) * u64::from(c) / u64::from(connections)) as u32;
        let hi = (u64::from(args.hosts) * u64::from(c + 1) / u64::from(connections)) as u32;
        tasks.spawn(connection(args.clone(), target.clone(), tally.clone(), lo, hi, start.clone(), c));
    }
    // Every connection reaches the barrier, even one that failed to start.
    start.ready.wait().await;
    let now = Instant::now();
    let (warmup, duration) =
        if args.once { (Duration::ZERO, Duration::from_secs(86_400)) } else { (args.warmup, args.duration) };
    let w = Window { begin: now, from: now + warmup, until: now + warmup + duration };
    let _ = window.send(Some(w));
    let cpu_before = (args.server_pid.and_then(cpu_seconds), cpu_seconds(std::process::id()), machine_busy_seconds());
    let measuring = Arc::new(AtomicBool::new(false));
    // CPU is read when the window opens and closes, not at spawn.
    let cpu_at_start = {
        let (pid, measuring) = (args.server_pid, measuring.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(w.from.into()).await;
            measuring.store(true, Ordering::Release);
            (pid.and_then(cpu_seconds), cpu_seconds(std::process::id()), machine_busy_seconds())
        })
    };
    while tasks.join_next().await.is_some() {}
    let ended = Instant::now().min(w.until);
    let cpu_after = (args.server_pid.and_then(cpu_seconds), cpu_seconds(std::process::id()), machine_busy_seconds());
    let cpu_start = if measuring.load(Ordering::Acquire) {
        cpu_at_start.await.unwrap_or(cpu_before)
    } else {
        cpu_at_start.abort();
        cpu_before
    };
    let elapsed = ended.saturating_duration_since(w.from).as_secs_f64().max(1e-6);
    let ok = tally.ok.load(Ordering::Relaxed);
    let ms = |q: f64| tally.latency.quantile(q).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    let per_ping = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if ok > 0 => Some((b - a) / ok as f64 * 1e6),
        _ => None,
    };
    let result = LoadResult {
        pings_per_sec: ok as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        errors: tally.errors.load(Ordering::Relaxed),
        noop_share: if ok > 0 { tally.noop.load(Ordering::Relaxed) as f64 / ok as f64 } else { 0.0 },
        server_cpu_us: per_ping(cpu_start.0, cpu_after.0),
        client_cpu_us: per_ping(cpu_start.1, cpu_after.1),
        machine_cpu_us: per_ping(cpu_start.2, cpu_after.2),
    };
    let cpu = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    println!(
        "{}: {:.0} pings/s | p50 {:.2} ms | p99 {:.2} ms | p99.9 {:.2} ms | {} answered, {} errors | {:.1}% NOOP | cpu per ping: server {} µs, generator {} µs, machine {} µs",
        args.label,
        result.pings_per_sec,
        result.p50_ms,
        result.p99_ms,
        result.p999_ms,
        ok,
        result.errors,
        result.noop_share * 100.0,
        cpu(result.server_cpu_us),
        cpu(result.client_cpu_us),
        cpu(result.machine_cpu_us),
    );
    if let Some(e) = tally.last_error.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        println!("{}: last error: {e}", args.label);
    }
    println!(
        "result: label={} pings_per_s={:.0} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} answered={ok} errors={} noop_pct={:.1} server_cpu_us={} client_cpu_us={} machine_cpu_us={}",
        args.label,
        result.pings_per_sec,
        result.p50_ms,
        result.p99_ms,
        result.p999_ms,
        result.errors,
        result.noop_share * 100.0,
        cpu(result.server_cpu_us),
        cpu(result.client_cpu_us),
        cpu(result.machine_cpu_us),
    );
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_rates_are_checked() {
        assert_eq!(parse_http_url("http://127.0.0.1:8081/").unwrap(), "http://127.0.0.1:8081");
        assert!(parse_http_url("https://x:1").is_err());
        assert!(parse_http_url("http://x:1/v1/system/ping").is_err());
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_rate("20000").unwrap(), 20_000.0);
        assert_eq!(parse_secs_or_zero("0").unwrap(), Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_ping_per_host_reaches_a_server_that_answers_noop() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, super::super::bare::router()).await });
        for client in [Client::Raw, Client::Reqwest] {
            let args = LoadArgs {
                url: url.clone(),
                token: Some("t0ken-for-test".into()),
                hosts: 50,
                stages: 5,
                connections: 4,
                duration: Duration::from_secs(1),
                warmup: Duration::ZERO,
                rate: None,
                once: true,
                client,
                server_pid: None,
                label: "test".into(),
            };
            let r = run(args).await.unwrap();
            assert_eq!(r.errors, 0, "{client:?}");
            assert_eq!(r.noop_share, 1.0, "{client:?}");
        }
    }
}
