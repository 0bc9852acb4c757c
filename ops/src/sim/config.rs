//! What a simulation runs: the gateway, the hosts, the cadence, how long each stage takes and
//! which stages fail.

use std::collections::BTreeMap;
use std::time::Duration;

use schema::DeployStage;

/// Number of deploy stages (`DeployStage::ALL`).
pub const STAGES: usize = DeployStage::ALL.len();

/// The stages whose work can fail by chance when a probability is given for "every stage":
/// the hooks and the built-in steps of an install, not SERVING_BUILD or the stop flow.
pub const WORK_STAGES: [DeployStage; 7] = [
    DeployStage::PreDownload,
    DeployStage::Downloading,
    DeployStage::PostDownload,
    DeployStage::Staging,
    DeployStage::PreRestart,
    DeployStage::Restarting,
    DeployStage::PostRestart,
];

/// One value per deploy stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageMap<T>([T; STAGES]);

impl<T: Copy> StageMap<T> {
    /// Every stage set to `value`.
    pub const fn filled(value: T) -> StageMap<T> {
        StageMap([value; STAGES])
    }

    /// The value of `stage`.
    pub fn get(&self, stage: DeployStage) -> T {
        self.0[stage as usize]
    }

    /// Sets the value of `stage`.
    pub fn set(&mut self, stage: DeployStage, value: T) {
        self.0[stage as usize] = value;
    }
}

impl<T: Copy + Default> Default for StageMap<T> {
    fn default() -> Self {
        StageMap::filled(T::default())
    }
}

/// One simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// `hostId` (unique in the fleet).
    pub id: String,
    /// `hostName`.
    pub name: String,
    /// Host groups (`groups`).
    pub groups: Vec<String>,
    /// Tags, sent as the JSON string `ec2Tags` (deploy constraints read them).
    pub tags: BTreeMap<String, String>,
}

impl HostSpec {
    /// A host whose id and name are `name`, in no group, without tags.
    pub fn new(name: impl Into<String>) -> HostSpec {
        let name = name.into();
        HostSpec { id: name.clone(), name, groups: Vec::new(), tags: BTreeMap::new() }
    }

    /// The same host in `groups`.
    pub fn groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> HostSpec {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// The same host with tag `key` = `value`.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> HostSpec {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// `n` hosts named `<prefix>-<number>` (numbers from 1, zero-padded to equal width), all in
/// `groups`; for each `(key, values)` of `tags`, the values are dealt round-robin over the hosts.
pub fn numbered_hosts(prefix: &str, n: usize, groups: &[String], tags: &[(String, Vec<String>)]) -> Vec<HostSpec> {
    let width = n.to_string().len().max(2);
    (0..n)
        .map(|i| {
            let mut h = HostSpec::new(format!("{prefix}-{:0width$}", i + 1)).groups(groups.iter().cloned());
            for (key, values) in tags {
                if !values.is_empty() {
                    h = h.tag(key.clone(), values[i % values.len()].clone());
                }
            }
            h
        })
        .collect()
}

/// Which steps fail.
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePlan {
    /// Failed attempts of one step reported as SCRIPT_FAILED before the next failure is
    /// reported as TOO_MANY_RETRY (fatal: the server pauses the host).
    pub retries: u32,
    /// Hosts (by id) that fail a stage on every attempt from the start, until healed.
    pub hosts: Vec<(String, DeployStage)>,
    /// Chance that one attempt of a stage fails, drawn from the host's seeded stream.
    pub probability: StageMap<f64>,
}

impl Default for FailurePlan {
    fn default() -> Self {
        // Teletraan's agent retries a step three times.
        FailurePlan { retries: 3, hosts: Vec::new(), probability: StageMap::filled(0.0) }
    }
}

/// Configuration of a [`Fleet`](super::Fleet). Start from `SimConfig::default()` and set
/// what matters, e.g. `SimConfig { gateway, token, hosts, ..SimConfig::default() }`.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Base URL of the gateway (`http://127.0.0.1:8081`); pings go to `<gateway>/v1/system/ping`.
    pub gateway: String,
    /// Agent token, sent as `Authorization: token <token>`.
    pub token: String,
    /// The hosts.
    pub hosts: Vec<HostSpec>,
    /// Pause between idle pings (the agent's ping interval).
    pub ping_interval: Duration,
    /// Each pause is the interval times a factor drawn from `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// How long each stage's work takes (zero: done at once).
    pub stage_durations: StageMap<Duration>,
    /// Which steps fail.
    pub failures: FailurePlan,
    /// Seed of every random draw (jitter, failures).
    pub seed: u64,
    /// Events kept in the timeline (the latest ones); 0 keeps only the counters and the
    /// rollout accounting, for big runs.
    pub timeline_capacity: usize,
    /// Timeout of one ping request.
    pub request_timeout: Duration,
    /// Most pings in flight at once, and so most HTTP connections held: a host whose turn
    /// comes waits for a free one. Bounds memory and file descriptors for big fleets; the
    /// round trip is measured from the moment the ping has its connection slot.
    pub max_connections: usize,
    /// Longest pause between attempts while pings fail (never shorter than the interval).
    pub max_backoff: Duration,
    /// `agentVersion` sent in every ping.
    pub agent_version: String,
    /// Long-poll: an idle host asks the gateway to hold its ping up to this long until its
    /// goal changes, and pings again at once when the answer comes (`None`: plain polling).
    pub long_poll: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            gateway: "http://127.0.0.1:8081".into(),
            token: String::new(),
            hosts: Vec::new(),
            ping_interval: Duration::from_secs(30),
            jitter: 0.1,
            stage_durations: StageMap::filled(Duration::ZERO),
            failures: FailurePlan::default(),
            seed: 1,
            timeline_capacity: 100_000,
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_backoff: Duration::from_secs(60),
            agent_version: concat!("teletraan-sim/", env!("CARGO_PKG_VERSION")).into(),
            long_poll: None,
        }
    }
}

impl SimConfig {
    /// The same configuration where `stage` takes `duration`.
    pub fn stage_duration(mut self, stage: DeployStage, duration: Duration) -> SimConfig {
        self.stage_durations.set(stage, duration);
        self
    }

    /// The same configuration where host `host` (its id) fails `stage` until healed.
    pub fn fail_host(mut self, host: impl Into<String>, stage: DeployStage) -> SimConfig {
        self.failures.hosts.push((host.into(), stage));
        self
    }

    /// The same configuration where each attempt of `stage` fails with probability `p`.
    pub fn fail_probability(mut self, stage: DeployStage, p: f64) -> SimConfig {
        self.failures.probability.set(stage, p);
        self
    }

    /// Checks what a run cannot work without.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.gateway.starts_with("http://") || self.gateway.starts_with("https://")) {
            return Err(format!("gateway {:?} must be an http:// or https:// URL", self.gateway));
        }
        if self.max_connections == 0 {
            return Err("at least one connection is needed".into());
        }
        if self.ping_interval.is_zero() {
            return Err("the ping interval must be above zero".into());
        }
        if let Some(w) = self.long_poll {
            if w.is_zero() || w > Duration::from_secs(u64::from(schema::ping::MAX_WAIT_SECONDS)) {
                return Err(format!("long-poll must be 1 to {} seconds", schema::ping::MAX_WAIT_SECONDS));
            }
            if self.request_timeout <= w {
                return Err("the request timeout must be longer than the long-poll".into());
            }
            // A held ping keeps its connection: with fewer connections than hosts, held pings
            // starve the others.
            if self.max_connections < self.hosts.len() {
                return Err(format!(
                    "with long-poll every host holds a connection: max connections {} is below the {} hosts",
                    self.max_connections,
                    self.hosts.len()
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!("jitter {} must be between 0 and 1", self.jitter));
        }
        if let Some(p) =
            DeployStage::ALL.iter().map(|s| self.failures.probability.get(*s)).find(|p| !(0.0..=1.0).contains(p))
        {
            return Err(format!("failure probability {p} must be between 0 and 1"));
        }
        let mut ids: Vec<&str> = self.hosts.iter().map(|h| h.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("host id {:?} appears twice", w[0]));
        }
        if let Some((h, _)) = self.failures.hosts.iter().find(|(h, _)| ids.binary_search(&h.as_str()).is_err()) {
            return Err(format!("the failure plan names host {h:?}, which is not in the fleet"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_maps_index_every_stage_by_its_position() {
        for (i, s) in DeployStage::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s}");
        }
        let mut m = StageMap::filled(0u8);
        m.set(DeployStage::Restarting, 7);
        assert_eq!(m.get(DeployStage::Restarting), 7);
        assert_eq!(m.get(DeployStage::PreRestart), 0);
    }

    #[test]
    fn numbered_hosts_deal_tag_values_round_robin() {
        let tags = [("zone".to_string(), vec!["a".to_string(), "b".into(), "c".into()])];
        let hosts = numbered_hosts("sim", 5, &["web".to_string()], &tags);
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["sim-01", "sim-02", "sim-03", "sim-04", "sim-05"]);
        let zones: Vec<&str> = hosts.iter().map(|h| h.tags["zone"].as_str()).collect();
        assert_eq!(zones, ["a", "b", "c", "a", "b"]);
        assert!(hosts.iter().all(|h| h.groups == ["web"] && h.id == h.name));
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = SimConfig { hosts: numbered_hosts("h", 2, &[], &[]), ..SimConfig::default() };
        assert_eq!(ok.validate(), Ok(()));
        let bad = SimConfig { gateway: "127.0.0.1:8081".into(), ..ok.clone() };
        assert!(bad.validate().unwrap_err().contains("http://"));
        let bad = ok.clone().fail_host("nope", DeployStage::Restarting);
        assert!(bad.validate().unwrap_err().contains("nope"));
        let bad = SimConfig { hosts: vec![HostSpec::new("x"), HostSpec::new("x")], ..ok.clone() };
        assert!(bad.validate().unwrap_err().contains("twice"));
        let held = SimConfig { long_poll: Some(Duration::from_secs(20)), ..ok.clone() };
        assert_eq!(held.validate(), Ok(()));
        let bad = SimConfig { max_connections: 1, ..held };
        assert!(bad.validate().unwrap_err().contains("below the 2 hosts"));
        let bad = ok.fail_probability(DeployStage::Restarting, 1.5);
        assert!(bad.validate().unwrap_err().contains("1.5"));
    }
}
