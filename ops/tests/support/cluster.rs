//! A local three-node RabbitMQ cluster (`ops/cluster/start.sh`) for a test: ports and data of
//! its own, stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The cluster of a test: stopped and removed when dropped, whatever happened.
pub struct Cluster {
    base_port: u16,
    /// Where its nodes keep their data.
    pub dir: PathBuf,
    /// Its three nodes' URLs, separated by commas.
    pub urls: String,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster").join(name)
}

impl Cluster {
    /// Starts the three nodes and waits until they form a cluster.
    pub fn start() -> Cluster {
        // Ports of its own (5701…5999, distribution ports 20000 higher), data of its own: the
        // first three free ones from a place that depends on the process.
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        let base_port = (0..99u16)
            .map(|i| 5701 + ((std::process::id() as u16 % 99 + i) % 99) * 3)
            .find(|b| (0..3).all(|i| free(b + i) && free(b + i + 20000)))
            .expect("three free ports for the cluster");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mq-cluster-{base_port}"));
        let out = Command::new("bash")
            .arg(script("start.sh"))
            .env("BASE_PORT", base_port.to_string())
            .env("DIR", &dir)
            .output()
            .expect("run ops/cluster/start.sh");
        let cluster = Cluster { base_port, dir, urls: String::from_utf8_lossy(&out.stdout).trim().to_string() };
        assert!(out.status.success(), "start.sh: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(cluster.urls.split(',').count(), 3, "three node URLs: {}", cluster.urls);
        cluster
    }

    /// The name of node `i` (0, 1 or 2).
    pub fn node(&self, i: u16) -> String {
        format!("tt-mq-{}@localhost", self.base_port + i)
    }

    /// Checks, as node `node` sees them, that the dead-letter queues exist and hold nothing.
    pub fn assert_no_dead_letters(&self, node: u16) {
        let queues = self.ctl(node, &["list_queues", "name", "messages", "--no-table-headers"]);
        let dead: Vec<&str> =
            queues.lines().filter(|l| l.split_whitespace().next().is_some_and(|n| n.ends_with(".dead"))).collect();
        assert!(!dead.is_empty(), "the dead-letter queues exist: {queues}");
        for line in dead {
            assert!(line.split_whitespace().nth(1) == Some("0"), "dead letters: {line}");
        }
    }

    /// Runs `rabbitmqctl` against node `node`, returning its output.
    pub fn ctl(&self, node: u16, args: &[&str]) -> String {
        let out = Command::new("rabbitmqctl").arg("-q").arg("-n").arg(self.node(node)).args(args).output().unwrap();
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("stop.sh"))
            .env("BASE_PORT", self.base_port.to_string())
            .env("DIR", &self.dir)
            .output();
    }
}
