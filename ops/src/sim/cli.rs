//! `teletraan sim`: run a fleet against a gateway, print a summary every few seconds, and at
//! the end a rollout timeline per deploy and the cap check.
//!
//! Exit status: 0 after a normal run; 2 for a bad flag (as clap does); 1 when `--cap` is given
//! and some deploy had more hosts out of service at once.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use clap::error::ErrorKind;
use schema::DeployStage;

use super::{Fleet, RolloutReport, SimConfig, WORK_STAGES, numbered_hosts};

/// Flags of `teletraan sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Base URL of the gateway, e.g. http://127.0.0.1:8081.
    #[arg(long, env = "TELETRAAN_AGENT_SERVER", value_parser = parse_url)]
    pub gateway: String,
    /// Agent token (sent as `Authorization: token <T>`).
    #[arg(long, env = "TELETRAAN_AGENT_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub token: String,
    /// Number of simulated hosts.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub hosts: u32,
    /// Hosts are named PREFIX-01, PREFIX-02, …
    #[arg(long, default_value = "sim", value_parser = parse_prefix)]
    pub host_prefix: String,
    /// Comma list of host groups every host reports.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// A tag and its values, dealt round-robin over the hosts (repeatable): zone=a,b,c.
    #[arg(long = "tag", value_name = "KEY=V1,V2,…", value_parser = parse_tag)]
    pub tags: Vec<(String, Vec<String>)>,
    /// Seconds between idle pings (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub ping_interval: Duration,
    /// Long-poll: idle pings ask the gateway to hold them up to this many seconds until the
    /// host's goal changes.
    #[arg(long = "long-poll", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=60))]
    pub long_poll: Option<u64>,
    /// Each idle pause is the interval times a factor in [1 - jitter, 1 + jitter].
    #[arg(long, default_value_t = 0.1, value_parser = parse_fraction)]
    pub jitter: f64,
    /// How long a stage takes, in milliseconds (repeatable): RESTARTING=500.
    #[arg(long = "stage-duration", value_name = "STAGE=MS", value_parser = parse_stage_duration)]
    pub stage_durations: Vec<(DeployStage, Duration)>,
    /// Chance that one attempt of a stage fails (repeatable): P for every install stage, or STAGE=P.
    #[arg(long = "fail-probability", value_name = "P|STAGE=P", value_parser = parse_probability)]
    pub fail_probabilities: Vec<(Option<DeployStage>, f64)>,
    /// A host that fails a stage on every attempt (repeatable): sim-03=RESTARTING.
    #[arg(long = "fail", value_name = "HOST=STAGE", value_parser = parse_host_stage)]
    pub fail: Vec<(String, DeployStage)>,
    /// Failed attempts reported as SCRIPT_FAILED before TOO_MANY_RETRY.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Seed of every random draw (jitter, failures).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this many seconds (default: at Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// The most hosts a deploy may take out of service at once; exceeding it exits 1.
    #[arg(long)]
    pub cap: Option<u32>,
    /// Seconds between summary lines.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub report_every: Duration,
    /// Most pings in flight at once (and HTTP connections held); default 512, or one per host
    /// with --long-poll (a held ping keeps its connection).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,
    /// Events kept in memory (0: counters and the rollout accounting only).
    #[arg(long, default_value_t = 100_000)]
    pub timeline: usize,
}

fn parse_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if !(s.starts_with("http://") || s.starts_with("https://")) || s.len() <= "https://".len() {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    }
    Ok(s.to_string())
}

fn parse_token(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the token must be non-empty, without spaces".into());
    }
    Ok(s.to_string())
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("{s:?}: use letters, digits, '-', '_' and '.'"));
    }
    Ok(s.to_string())
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 * 365.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?} is not a number of seconds above 0")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

fn parse_stage(s: &str) -> Result<DeployStage, String> {
    s.trim().to_ascii_uppercase().parse::<DeployStage>().map_err(|e| e.to_string())
}

fn split<'a>(s: &'a str, what: &str) -> Result<(&'a str, &'a str), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => Ok((a.trim(), b.trim())),
        _ => Err(format!("{s:?} is not {what}")),
    }
}

fn parse_tag(s: &str) -> Result<(String, Vec<String>), String> {
    let (key, values) = split(s, "KEY=V1,V2,…")?;
    let values: Vec<String> = values.split(',').map(str::trim).filter(|v| !v.is_empty()).map(String::from).collect();
    if values.is_empty() {
        return Err(format!("{s:?} names no value"));
    }
    Ok((key.to_string(), values))
}

fn parse_stage_duration(s: &str) -> Result<(DeployStage, Duration), String> {
    let (stage, ms) = split(s, "STAGE=MS")?;
    let ms: u64 = ms.parse().map_err(|_| format!("{ms:?} is not a number of milliseconds"))?;
    Ok((parse_stage(stage)?, Duration::from_millis(ms)))
}

fn parse_probability(s: &str) -> Result<(Option<DeployStage>, f64), String> {
    match s.split_once('=') {
        None => Ok((None, parse_fraction(s)?)),
        Some(_) => {
            let (stage, p) = split(s, "STAGE=P")?;
            Ok((Some(parse_stage(stage)?), parse_fraction(p)?))
        }
    }
}

fn parse_host_stage(s: &str) -> Result<(String, DeployStage), String> {
    let (host, stage) = split(s, "HOST=STAGE")?;
    Ok((host.to_string(), parse_stage(stage)?))
}

impl SimArgs {
    /// The fleet these flags describe.
    pub fn config(&self) -> Result<SimConfig, String> {
        let mut c = SimConfig {
            gateway: self.gateway.clone(),
            token: self.token.clone(),
            hosts: numbered_hosts(&self.host_prefix, self.hosts as usize, &self.groups, &self.tags),
            ping_interval: self.ping_interval,
            long_poll: self.long_poll.map(Duration::from_secs),
            jitter: self.jitter,
            seed: self.seed,
            timeline_capacity: self.timeline,
            max_connections: match (self.max_connections, self.long_poll) {
                (Some(n), _) => n as usize,
                (None, Some(_)) => self.hosts as usize,
                (None, None) => 512,
            },
            ..SimConfig::default()
        };
        for (stage, d) in &self.stage_durations {
            c.stage_durations.set(*stage, *d);
        }
        for (stage, p) in &self.fail_probabilities {
            match stage {
                Some(s) => c.failures.probability.set(*s, *p),
                None => WORK_STAGES.iter().for_each(|s| c.failures.probability.set(*s, *p)),
            }
        }
        c.failures.hosts = self.fail.clone();
        c.failures.retries = self.retries;
        if let Some(w) = c.long_poll {
            c.request_timeout = c.request_timeout.max(w + Duration::from_secs(10));
        }
        c.validate()?;
        Ok(c)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1}ms", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "-".into())
}

/// The periodic line: where the hosts are, deploys seen, ping rate and errors.
pub fn summary_line(fleet: &Fleet, pings_per_sec: f64) -> String {
    let counts = fleet.stage_counts();
    let c = fleet.counters();
    let mut stages: Vec<String> = counts.by_stage.iter().map(|(s, n)| format!("{s} {n}")).collect();
    if counts.idle > 0 {
        stages.insert(0, format!("idle {}", counts.idle));
    }
    if counts.failed > 0 {
        stages.push(format!("failed {}", counts.failed));
    }
    format!(
        "[{:>7}] {} hosts: {} | deploys {} | {:.1} pings/s | errors {} | ping p50 {} p99 {}",
        secs(fleet.elapsed()),
        fleet.len(),
        stages.join(", "),
        fleet.rollouts().len(),
        pings_per_sec,
        c.errors,
        ms(c.ping_p50),
        ms(c.ping_p99),
    )
}

/// The timeline of one deploy, one or more lines.
pub fn rollout_lines(r: &RolloutReport) -> Vec<String> {
    let at = |d: Option<Duration>| d.map(|d| format!("+{}", secs(d))).unwrap_or_else(|| "-".into());
    let mut lines = vec![format!(
        "deploy {}: {} host(s) started ({} taken out of service), {} done, {} left unfinished; first start {}, last done {}; at most {} out of service at once",
        r.deploy_id,
        r.hosts_started,
        r.hosts_taken_out,
        r.hosts_done,
        r.hosts_abandoned,
        at(r.first_start),
        at(r.last_done),
        r.max_out
    )];
    if r.hosts_taken_out_as_first > 0 {
        lines.push(format!(
            "  {} of the hosts taken out of service were sent as first deploys (firstDeploy: true): the server let them skip the cap",
            r.hosts_taken_out_as_first
        ));
    }
    for (key, values) in &r.tag_order {
        let per_value: Vec<String> = values
            .iter()
            .map(|v| {
                let t = r.tags.iter().find(|t| &t.key == key && &t.value == v);
                let (max, first, last) = t.map(|t| (t.max_out, t.first_start, t.last_done)).unwrap_or_default();
                format!("{v} (at most {max} out, {} → {})", at(first), at(last))
            })
            .collect();
        lines.push(format!("  {key}: {}", per_value.join(" then ")));
    }
    lines
}

/// The cap check over every deploy: its text and whether it passed (always, without a cap).
pub fn cap_check(reports: &[RolloutReport], cap: Option<u32>) -> (String, bool) {
    let worst = reports.iter().max_by_key(|r| r.max_out);
    let most = worst.map(|r| r.max_out).unwrap_or(0);
    match (cap, worst) {
        (_, None) => ("no deploy seen".into(), true),
        (None, Some(_)) => (format!("at most {most} host(s) out of service at once (no --cap to compare with)"), true),
        (Some(cap), Some(w)) if most > cap => {
            (format!("FAILED: deploy {} had {most} hosts out of service at once (cap {cap})", w.deploy_id), false)
        }
        (Some(cap), Some(_)) => (format!("passed: at most {most} host(s) out of service at once (cap {cap})"), true),
    }
}

/// Runs `teletraan sim`. A flag that makes no sense with the others ends the process with
/// status 2, like clap's own errors.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let config = match args.config() {
        Ok(c) => c,
        Err(m) => clap::Error::raw(ErrorKind::ValueValidation, format!("{m}\n")).exit(),
    };
    println!(
        "sim: {} host(s) pinging {} every {} (±{:.0}%), seed {}",
        config.hosts.len(),
        config.gateway,
        secs(config.ping_interval),
        config.jitter * 100.0,
        config.seed
    );
    let fleet = Fleet::start(config)?;
    let end = args.duration.map(|d| tokio::time::Instant::now() + d);
    let until_end = async {
        match end {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_end);
    let stop = crate::interrupted();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(args.report_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let (mut last_pings, mut last_at) = (0u64, fleet.elapsed());
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (pings, now) = (fleet.counters().pings, fleet.elapsed());
                let rate = (pings - last_pings) as f64 / (now - last_at).as_secs_f64().max(1e-3);
                println!("{}", summary_line(&fleet, rate));
                (last_pings, last_at) = (pings, now);
            }
            _ = &mut until_end => break,
            _ = &mut stop => break,
        }
    }
    fleet.stop().await;
    let c = fleet.counters();
    let elapsed = fleet.elapsed();
    println!(
        "sim: stopped after {}: {} pings ({:.1}/s), {} goals, {} steps ({} failed), {} errors; ping p50 {} p99 {}",
        secs(elapsed),
        c.pings,
        c.pings as f64 / elapsed.as_secs_f64().max(1e-3),
        c.goals,
        c.steps,
        c.failed_steps,
        c.errors,
        ms(c.ping_p50),
        ms(c.ping_p99)
    );
    if let Some(e) = &c.last_error {
        println!("sim: last ping error: {e}");
    }
    let reports = fleet.rollouts();
    for r in &reports {
        for line in rollout_lines(r) {
            println!("sim: {line}");
        }
    }
    let (text, passed) = cap_check(&reports, args.cap);
    println!("sim: cap check: {text}");
    if !passed {
        bail!("cap check failed: {text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        let base = ["sim", "--gateway", "http://127.0.0.1:8081/", "--token", "agent-token"];
        Cli::try_parse_from(base.iter().chain(args)).map(|c| c.sim)
    }

    #[test]
    fn flags_make_the_config() {
        let flags = "--hosts 4 --groups web,api --tag zone=a,b --ping-interval 0.5 --stage-duration restarting=250 \
            --fail-probability 0.01 --fail-probability SERVING_BUILD=0.5 --fail sim-02=RESTARTING --seed 9";
        let a = parse(&flags.split_whitespace().collect::<Vec<_>>()).unwrap();
        let c = a.config().unwrap();
        assert_eq!(c.gateway, "http://127.0.0.1:8081");
        assert_eq!(c.hosts.len(), 4);
        assert_eq!(c.hosts[1].groups, ["web", "api"]);
        assert_eq!(c.hosts.iter().map(|h| h.tags["zone"].as_str()).collect::<Vec<_>>(), ["a", "b", "a", "b"]);
        assert_eq!(c.ping_interval, Duration::from_millis(500));
        assert_eq!(c.stage_durations.get(DeployStage::Restarting), Duration::from_millis(250));
        assert_eq!(c.failures.probability.get(DeployStage::PreDownload), 0.01);
        assert_eq!(c.failures.probability.get(DeployStage::ServingBuild), 0.5);
        assert_eq!(c.failures.probability.get(DeployStage::Stopping), 0.0);
        assert_eq!(c.failures.hosts, [("sim-02".to_string(), DeployStage::Restarting)]);
        assert_eq!(c.seed, 9);
    }

    #[test]
    fn long_poll_holds_one_connection_per_host_unless_told() {
        let connections =
            |args: &str| parse(&args.split_whitespace().collect::<Vec<_>>()).unwrap().config().unwrap().max_connections;
        assert_eq!(connections("--hosts 2000"), 512);
        assert_eq!(connections("--hosts 2000 --long-poll 20"), 2000);
        assert_eq!(connections("--hosts 2000 --long-poll 20 --max-connections 3000"), 3000);
        let too_few = parse(&["--hosts", "2000", "--long-poll", "20", "--max-connections", "100"]).unwrap();
        assert!(too_few.config().unwrap_err().contains("below the 2000 hosts"));
    }

    #[test]
    fn bad_flags_are_named() {
        let kind = |args: &[&str]| parse(args).err().map(|e| e.kind());
        assert_eq!(kind(&["--hosts", "0"]), Some(ErrorKind::ValueValidation));
        assert_eq!(kind(&["--hosts", "2", "--stage-duration", "WARMING=5"]), Some(ErrorKind::ValueValidation));
        assert_eq!(kind(&["--hosts", "2", "--jitter", "2"]), Some(ErrorKind::ValueValidation));
        assert_eq!(kind(&["--hosts", "2", "--tag", "zone="]), Some(ErrorKind::ValueValidation));
        assert_eq!(kind(&["--hosts", "2", "--ping-interval", "0"]), Some(ErrorKind::ValueValidation));
        assert_eq!(kind(&["--hosts", "2", "--frobnicate"]), Some(ErrorKind::UnknownArgument));
        let unknown_host = parse(&["--hosts", "2", "--fail", "other-1=RESTARTING"]).unwrap().config();
        assert!(unknown_host.unwrap_err().contains("other-1"));
    }

    #[test]
    fn the_cap_check_compares_the_worst_deploy() {
        let report = |id: &str, max_out| RolloutReport {
            deploy_id: id.into(),
            first_start: Some(Duration::from_secs(1)),
            last_done: None,
            hosts_started: 3,
            hosts_taken_out: 3,
            hosts_taken_out_as_first: 0,
            hosts_done: 0,
            hosts_abandoned: 0,
            out_now: 0,
            max_out,
            tags: Vec::new(),
            tag_order: Vec::new(),
        };
        let reports = [report("d1", 1), report("d2", 3)];
        assert!(cap_check(&reports, Some(3)).1);
        let (text, ok) = cap_check(&reports, Some(2));
        assert!(!ok && text.contains("d2"), "{text}");
        assert!(cap_check(&reports, None).1);
        assert!(cap_check(&[], Some(1)).1);
        assert!(rollout_lines(&reports[1])[0].contains("at most 3 out of service"));
    }
}
