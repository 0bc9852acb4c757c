//! The benchmarks of `ops/bench/*.sh` (`teletraan bench …`): a ping load generator and the
//! bare endpoint it is compared with, a rollout and a deploy-latency run of simulated hosts
//! on a real server, the workers' report throughput, the host janitor's queries, and the
//! broker calibration.
//!
//! Benchmarks measure; they assert nothing about time (tests do not run them). Each prints a
//! human summary and, last, one `result: key=value …` line that the scripts read. They work
//! on the fleet that `ops/bench/sql/seed.sql` writes ([`seeded`]) or on simulated hosts
//! ([`crate::sim`]), on a database and broker namespace of their own that the scripts create
//! and remove.
#![warn(missing_docs)]

pub mod amqp;
pub mod bare;
pub mod board;
pub mod cli;
pub mod http1;
pub mod janitor;
pub mod latency;
pub mod load;
pub mod reports;
pub mod restapi;
pub mod rollout;
pub mod seeded;

use std::time::Duration;

/// Parses a number of seconds above 0 (fractions allowed).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?} is not a number of seconds between 0 and 86400")),
    }
}

/// CPU time (user + system, every thread) a process has used, in seconds, from
/// `/proc/<pid>/stat`; `None` when it cannot be read. Linux counts it in ticks of 1/100 s.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space separated.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU time the whole machine has spent busy (every process, all cores: user, nice, system,
/// irq, softirq, steal), in seconds, from `/proc/stat`; `None` when it cannot be read.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = cpu.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|i| v.get(*i).copied().unwrap_or(0.0)).sum::<f64>();
    Some(busy / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu() {
        let spin: u64 = (0..2_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(cpu_seconds(std::process::id()).is_some());
        assert_eq!(cpu_seconds(u32::MAX), None);
        assert!(machine_busy_seconds().is_some_and(|s| s > 0.0));
    }

    #[test]
    fn seconds_are_checked() {
        assert_eq!(parse_secs("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("x").is_err());
    }
}
