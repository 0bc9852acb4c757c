//! Following a deploy to its end, fed by the stage's event stream: a progress bar on a
//! terminal, plain lines otherwise, and how it ended as the result (the exit status).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures_util::StreamExt;
use schema::bus::{AgentView, StageAgents, StageDeploy};
use schema::model::{Agent, Deploy};
use schema::rules::host_kind::HostKind;
use schema::{DeployId, DeployState, HostId};
use tokio::time::Instant;

use crate::args::OutputFormat;
use crate::client::{Client, seg};
use crate::error::CliError;
use crate::output::Out;
use crate::sse::Parser;

/// What to follow.
pub struct Follow<'a> {
    /// The environment.
    pub env: &'a str,
    /// The stage.
    pub stage: &'a str,
    /// The deploy (default: the stage's current one when following starts).
    pub deploy: Option<DeployId>,
    /// How long at most.
    pub timeout: Duration,
    /// Where progress goes.
    pub out: Out,
}

/// The hosts' counts of a deploy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Hosts done (the deploy's count).
    pub done: i32,
    /// Hosts of the stage.
    pub total: i32,
    /// Hosts out of service for it.
    pub deploying: usize,
    /// Hosts whose step failed (retrying or failed for good).
    pub failing: usize,
}

/// How a deploy ended, as far as a follower is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// SUCCEEDING or SUCCEEDED.
    Succeeded,
    /// FAILING, ABORTED, or replaced by another deploy.
    Failed(String),
}

/// Where a deploy stands: `None` while it runs.
pub fn end_of(target: &DeployId, current: &Deploy) -> Option<End> {
    if &current.id != target {
        return Some(End::Failed(format!("replaced by deploy {} ({})", current.id, current.deploy_type)));
    }
    match current.state {
        DeployState::Succeeding | DeployState::Succeeded => Some(End::Succeeded),
        DeployState::Failing => Some(End::Failed("FAILING: too many hosts failed, or no progress".into())),
        DeployState::Aborted => Some(End::Failed("ABORTED".into())),
        DeployState::Running => None,
    }
}

/// The hosts of a stage as the follower knows them.
#[derive(Default)]
struct Hosts(HashMap<HostId, AgentView>);

impl Hosts {
    fn counts(&self, deploy: &Deploy) -> Counts {
        let mut c = Counts { done: deploy.success_total, total: deploy.total, ..Counts::default() };
        for v in self.0.values() {
            let kind = HostKind::of(v.state, v.status, v.deploy_stage, &v.deploy_id, Some(&deploy.id));
            if kind.is_deploying() {
                c.deploying += 1;
            }
            if matches!(kind, HostKind::Retrying | HostKind::Failed) {
                c.failing += 1;
            }
        }
        c
    }
}

/// Follows the deploy until it ends or the time runs out; answers the deploy as it ended.
pub async fn follow(client: &Client, f: Follow<'_>) -> Result<Deploy, CliError> {
    let started = Instant::now();
    let deadline = started + f.timeout;
    let mut bar = Bar::new(f.out, f.env, f.stage);
    let mut target = f.deploy.clone();
    let mut last: Option<Deploy> = None;
    let mut outage = 0u32;
    loop {
        // Subscribe first, then read: nothing that happens in between is missed.
        let stream = match tokio::time::timeout_at(deadline, client.events(f.env, f.stage)).await {
            Err(_) => return Err(timed_out(&mut bar, last.as_ref(), started)),
            Ok(Err(e)) if e.exit == crate::exit::UNAVAILABLE && outage < 30 => {
                outage += 1;
                bar.note(&format!("event stream unavailable ({e}); trying again"));
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(s)) => s,
        };
        outage = 0;
        let (mut current, mut hosts) = snapshot(client, f.env, f.stage).await?;
        let Some(deploy) = current.clone() else {
            return Err(CliError::failed(format!("{}/{} has no deploy to follow", f.env, f.stage)));
        };
        let target_id = target.get_or_insert_with(|| deploy.id.clone()).clone();
        let mut bytes = stream.bytes_stream();
        let mut parser = Parser::default();
        loop {
            if let Some(d) = &current {
                let counts = hosts.counts(d);
                bar.draw(d, counts, started.elapsed(), false);
                last = Some(d.clone());
                if let Some(end) = end_of(&target_id, d) {
                    bar.finish(d, counts, started.elapsed(), &end);
                    return match end {
                        End::Succeeded => Ok(d.clone()),
                        End::Failed(why) => Err(CliError::failed(format!("deploy {target_id} failed: {why}"))),
                    };
                }
            }
            let chunk = tokio::select! {
                chunk = bytes.next() => chunk,
                _ = tokio::time::sleep_until(deadline) => return Err(timed_out(&mut bar, last.as_ref(), started)),
            };
            let Some(Ok(chunk)) = chunk else { break };
            for event in parser.feed(&chunk) {
                match event.name.as_str() {
                    "deploy" => {
                        if let Ok(d) = serde_json::from_str::<StageDeploy>(&event.data) {
                            current = Some(d.deploy);
                        }
                    }
                    "agents" => {
                        if let Ok(a) = serde_json::from_str::<StageAgents>(&event.data) {
                            for v in a.agents {
                                if v.removed {
                                    hosts.0.remove(&v.host_id);
                                } else {
                                    hosts.0.insert(v.host_id.clone(), v);
                                }
                            }
                        }
                    }
                    "resync" => (current, hosts) = snapshot(client, f.env, f.stage).await?,
                    _ => {}
                }
            }
        }
        // The stream ended (the server restarted, a proxy cut it): subscribe again and read
        // everything afresh.
        bar.note("event stream closed; reconnecting");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn timed_out(bar: &mut Bar, last: Option<&Deploy>, started: Instant) -> CliError {
    bar.clear();
    let state = last.map_or_else(|| "no deploy".to_string(), |d| format!("deploy {} still {}", d.id, d.state));
    CliError::timed_out(format!("timed out after {}: {state}", elapsed(started.elapsed())))
}

/// The stage's current deploy (none yet: `None`) and its hosts.
async fn snapshot(client: &Client, env: &str, stage: &str) -> Result<(Option<Deploy>, Hosts), CliError> {
    let base = format!("/v1/envs/{}/{}", seg(env), seg(stage));
    let deploy = match client.get::<Deploy>(&format!("{base}/deploys/current")).await {
        Ok(d) => Some(d),
        Err(e) if e.status == Some(404) => {
            // The stage exists (or this says it does not).
            client.get::<serde_json::Value>(&base).await?;
            None
        }
        Err(e) => return Err(e),
    };
    let agents: Vec<Agent> = client.get(&format!("{base}/agents")).await?;
    let hosts = Hosts(agents.iter().map(|a| (a.host_id.clone(), AgentView::from(a))).collect());
    Ok((deploy, hosts))
}

/// Prints progress: a bar redrawn in place on a terminal, a line per change otherwise.
struct Bar {
    out: Out,
    tty: bool,
    title: String,
    drawn: bool,
    last_line: Option<(String, Counts)>,
    last_at: Option<Instant>,
}

/// Least time between two lines (plain) or two redraws (terminal).
const PLAIN_EVERY: Duration = Duration::from_secs(1);
const TTY_EVERY: Duration = Duration::from_millis(100);
const WIDTH: usize = 30;

impl Bar {
    fn new(out: Out, env: &str, stage: &str) -> Bar {
        let silent = out.quiet || out.format == OutputFormat::Json;
        let tty = !silent && std::io::stdout().is_terminal();
        Bar { out, tty, title: format!("{env}/{stage}"), drawn: false, last_line: None, last_at: None }
    }

    fn silent(&self) -> bool {
        self.out.quiet || self.out.format == OutputFormat::Json
    }

    fn draw(&mut self, d: &Deploy, c: Counts, took: Duration, force: bool) {
        if self.silent() {
            return;
        }
        let state = d.state.to_string();
        let now = Instant::now();
        let every = if self.tty { TTY_EVERY } else { PLAIN_EVERY };
        let changed = self.last_line.as_ref() != Some(&(state.clone(), c));
        let due = self.last_at.is_none_or(|t| now.duration_since(t) >= every);
        if !force && (!changed || !due) {
            return;
        }
        self.last_line = Some((state.clone(), c));
        self.last_at = Some(now);
        let mut stdout = std::io::stdout().lock();
        if self.tty {
            let filled = if c.total > 0 { (c.done.max(0) as usize * WIDTH / c.total as usize).min(WIDTH) } else { 0 };
            let _ = write!(
                stdout,
                "\r\x1b[2K{} {:<10} [{}{}] {}/{} done · {} deploying · {} failing · {}",
                self.title,
                state,
                "█".repeat(filled),
                "░".repeat(WIDTH - filled),
                c.done,
                c.total,
                c.deploying,
                c.failing,
                elapsed(took)
            );
            self.drawn = true;
        } else {
            let _ = writeln!(
                stdout,
                "[{:>6}] {} {} {}: {}/{} done, {} deploying, {} failing",
                elapsed(took),
                self.title,
                d.id,
                state,
                c.done,
                c.total,
                c.deploying,
                c.failing
            );
        }
        let _ = stdout.flush();
    }

    fn finish(&mut self, d: &Deploy, c: Counts, took: Duration, end: &End) {
        self.draw(d, c, took, true);
        self.clear();
        if self.silent() {
            return;
        }
        let how = match end {
            End::Succeeded => "succeeded".to_string(),
            End::Failed(why) => format!("failed: {why}"),
        };
        println!(
            "deploy {} on {} {how} ({}): {}/{} hosts done, {} failing, in {}",
            d.id,
            self.title,
            d.state,
            c.done,
            c.total,
            c.failing,
            elapsed(took)
        );
    }

    /// Ends the bar's line, so what follows starts on its own.
    fn clear(&mut self) {
        if self.drawn {
            println!();
            self.drawn = false;
        }
    }

    fn note(&mut self, text: &str) {
        if !self.silent() {
            self.clear();
            eprintln!("teletraan: {text}");
        }
    }
}

/// `42s`, `3m05s`, `1h02m`.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(id: &str, state: DeployState) -> Deploy {
        serde_json::from_value(serde_json::json!({
            "id": id, "alias": null, "envId": "e1", "buildId": "b1", "type": "REGULAR", "state": state.as_str(),
            "startDate": 1, "operator": "ci", "lastUpdateDate": 2, "description": null, "successTotal": 3,
            "failTotal": 0, "total": 5, "successDate": null, "acceptanceStatus": "PENDING_DEPLOY", "fromDeployId": null
        }))
        .unwrap()
    }

    #[test]
    fn a_deploy_ends_when_it_succeeds_fails_or_is_replaced() {
        let d1 = DeployId::parse("d1").unwrap();
        assert_eq!(end_of(&d1, &deploy("d1", DeployState::Running)), None);
        assert_eq!(end_of(&d1, &deploy("d1", DeployState::Succeeding)), Some(End::Succeeded));
        assert_eq!(end_of(&d1, &deploy("d1", DeployState::Succeeded)), Some(End::Succeeded));
        assert!(matches!(end_of(&d1, &deploy("d1", DeployState::Failing)), Some(End::Failed(_))));
        assert!(matches!(end_of(&d1, &deploy("d1", DeployState::Aborted)), Some(End::Failed(_))));
        let Some(End::Failed(why)) = end_of(&d1, &deploy("d2", DeployState::Running)) else { panic!() };
        assert_eq!(why, "replaced by deploy d2 (REGULAR)");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(elapsed(Duration::from_secs(42)), "42s");
        assert_eq!(elapsed(Duration::from_secs(185)), "3m05s");
        assert_eq!(elapsed(Duration::from_secs(3720)), "1h02m");
    }
}
