//! More role processes beside a [`Server`], and HAProxy in front of gateways: for the tests of
//! a pool of gateways (and workers) serving one fleet.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use schema::DeployStage;
use teletraan::sim::{EventKind, Fleet};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{ADMIN, AGENT, DEADLINE, Server, binary, wait_for};

/// A role process (`teletraan gateway` or `teletraan worker`) on a server's database and
/// namespace; killed when dropped.
pub struct Role {
    /// The process.
    pub child: Child,
    /// Where a gateway listens (for a worker, which does not say, the address it was given, or
    /// empty).
    pub url: String,
}

impl Role {
    /// Kills it with SIGKILL, as a crash would.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the role");
    }
}

impl Server {
    /// Starts `teletraan gateway` on this server's database, namespace and tokens, and waits
    /// until it is ready.
    pub async fn start_gateway(&self) -> Role {
        let role = self.start_role("gateway", "TELETRAAN_GATEWAY_LISTEN", Some("teletraan: gateway ")).await;
        let ready = format!("{}/readyz", role.url);
        wait_for("the second gateway to be ready", || async {
            self.api.http.get(&ready).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        role
    }

    /// Starts `teletraan worker` on this server's database and namespace.
    pub async fn start_worker(&self) -> Role {
        self.start_role("worker", "TELETRAAN_WORKER_LISTEN", None).await
    }

    /// Starts `teletraan worker` on this server's database and namespace with its health and
    /// metrics listener on `listen` (`host:port`: a worker does not say where it listens), and
    /// waits until its `/readyz` answers 200.
    pub async fn start_worker_on(&self, listen: &str) -> Role {
        let mut role = self.start_role_on("worker", "TELETRAAN_WORKER_LISTEN", listen, None).await;
        role.url = format!("http://{listen}");
        let ready = format!("{}/readyz", role.url);
        wait_for("the worker to be ready", || async {
            self.api.http.get(&ready).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        role
    }

    async fn start_role(&self, role: &str, listen: &str, announce: Option<&str>) -> Role {
        self.start_role_on(role, listen, "127.0.0.1:0", announce).await
    }

    async fn start_role_on(&self, role: &str, listen: &str, address: &str, announce: Option<&str>) -> Role {
        let mut child = Command::new(binary("teletraan"))
            .arg(role)
            .env("TELETRAAN_DATABASE_URL", &self.db.url)
            .env("TELETRAAN_AMQP_URL", &self.amqp_url)
            .env("TELETRAAN_NAMESPACE", &self._bus.config.namespace)
            .env(listen, address)
            .env("TELETRAAN_ADMIN_TOKEN", ADMIN)
            .env("TELETRAAN_AGENT_TOKEN", AGENT)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start teletraan {role}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let Some(announce) = announce else {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Role { child, url: String::new() };
        };
        let url = loop {
            let line = tokio::time::timeout(DEADLINE, lines.next_line())
                .await
                .expect("the role announces itself")
                .expect("role output")
                .unwrap_or_else(|| panic!("teletraan {role} exited before announcing itself"));
            if let Some(url) = line.strip_prefix(announce) {
                break url.to_string();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Role { child, url }
    }
}

/// HAProxy (the Debian package, `ops/test.sh` installs it) balancing HTTP requests round-robin
/// over gateways, sending only to those whose `/readyz` answers 200; stopped when dropped.
pub struct Haproxy {
    _child: Child,
    config: PathBuf,
    /// Where agents connect, `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Haproxy {
    /// Starts it in front of `gateways` (`http://host:port` each) and waits until it forwards.
    pub async fn start(gateways: &[&str]) -> Haproxy {
        // A free port for its listener (HAProxy cannot tell which port it was given).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let servers: String = gateways
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let addr = g.trim_start_matches("http://");
                format!("    server g{i} {addr} check inter 500ms fall 2 rise 1\n")
            })
            .collect();
        let text = format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 90s\n    timeout server 90s\n\
             frontend pings\n    bind 127.0.0.1:{port}\n    default_backend gateways\n\
             backend gateways\n    balance roundrobin\n    option httpchk GET /readyz\n    retry-on conn-failure\n    retries 2\n    option redispatch\n{servers}"
        );
        let config =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("haproxy-{}-{port}.cfg", std::process::id()));
        std::fs::write(&config, text).expect("write the HAProxy configuration");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy (apt-get install haproxy, or run ops/test.sh)");
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/readyz");
        let http = reqwest::Client::new();
        wait_for("HAProxy to forward", || async { http.get(&ready).send().await.is_ok_and(|r| r.status() == 200) })
            .await;
        Haproxy { _child: child, config, url }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Checks a finished deploy from the hosts' side: every host took it exactly once (one
/// PRE_DOWNLOAD goal each), none as a first deploy, never more than the cap out of service.
pub fn check_rollout(fleet: &Fleet, deploy: &str, hosts: usize, cap: u32) {
    if let Err(e) = rollout_check(fleet, deploy, hosts, cap) {
        panic!("{e}");
    }
}

/// [`check_rollout`], answering what broke instead of failing; `Ok` holds the most hosts out
/// of service at once.
pub fn rollout_check(fleet: &Fleet, deploy: &str, hosts: usize, cap: u32) -> Result<u32, String> {
    let report = fleet.rollout(deploy).ok_or("the fleet never saw the deploy")?;
    if report.hosts_done as usize != hosts || report.hosts_taken_out as usize != hosts {
        return Err(format!("not every host took it once: {report:?}"));
    }
    if report.hosts_taken_out_as_first != 0 {
        return Err(format!("a serving host was taken for a new one: {report:?}"));
    }
    if report.max_out > cap {
        return Err(format!("{} out of service at once, cap {cap}", report.max_out));
    }
    if fleet.timeline_dropped() > 0 {
        return Err(format!("the timeline dropped {} events", fleet.timeline_dropped()));
    }
    let mut admissions: BTreeMap<String, usize> = BTreeMap::new();
    for e in fleet.timeline() {
        if &*e.deploy == deploy && e.kind == EventKind::Goal && e.stage == DeployStage::PreDownload {
            *admissions.entry(e.host.to_string()).or_default() += 1;
        }
    }
    if admissions.len() != hosts {
        return Err(format!("{} hosts admitted of {hosts}", admissions.len()));
    }
    let twice: Vec<_> = admissions.iter().filter(|(_, n)| **n != 1).collect();
    if !twice.is_empty() {
        return Err(format!("hosts admitted more than once: {twice:?}"));
    }
    Ok(report.max_out)
}
