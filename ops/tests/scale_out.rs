//! The scale-out at once: a rollout of 1,000 simulated hosts through two gateways behind
//! HAProxy, three workers (the one in `teletraan up` and two `teletraan worker` processes) and a
//! three-node RabbitMQ cluster. In the middle of the rollout one broker node stops and one
//! worker is killed (SIGKILL). The rollout completes; from the hosts' own recorded timeline,
//! never more than the cap out of service and every host admitted exactly once; nothing is
//! dead-lettered.

mod support;

use std::time::Duration;

use serde_json::json;
use support::Server;
use support::cluster::Cluster;
use support::pool::{Haproxy, check_rollout};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::Fleet;

const HOSTS: usize = 1000;
/// `maxParallelPct` 10 of 1,000 hosts.
const CAP: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_of_1000_hosts_completes_within_the_cap_when_a_broker_node_and_a_worker_are_lost() {
    let cluster = Cluster::start();
    let log = cluster.dir.with_extension("scale-out.log");
    let server = Server::start_logging(&[("TELETRAAN_AMQP_URL", cluster.urls.as_str())], &log).await;
    let second_gateway = server.start_gateway().await;
    let worker_two = server.start_worker().await;
    let _worker_three = server.start_worker().await;
    let lb = Haproxy::start(&[&server.gateway, &second_gateway.url]).await;
    let api = &server.api;
    api.stage("web", "prod", "g", json!({"maxParallelPct": 10})).await;
    let mut config =
        support::fleet_config(&server, "s", HOSTS, "g", Duration::from_millis(1000), Duration::from_millis(300));
    config.gateway = lb.url.clone();
    let fleet = Fleet::start(config).expect("a fleet");

    let b1 =
        api.publish("web", "https://artifacts.example.com/web-1.tgz", "1111111abc", Some(UNDOWNLOADED_SHA256)).await;
    let d1 = api.deploy("web", "prod", &b1).await;
    api.wait_state(d1.id.as_str(), "SUCCEEDING").await;

    let b2 =
        api.publish("web", "https://artifacts.example.com/web-2.tgz", "2222222abc", Some(UNDOWNLOADED_SHA256)).await;
    let started = std::time::Instant::now();
    let d2 = api.deploy("web", "prod", &b2).await;
    support::wait_for("the second rollout to be a fifth done", || async {
        api.deploy_by_id(d2.id.as_str()).await.success_total >= (HOSTS / 5) as i32
    })
    .await;
    // The node every role connects to first stops, and a worker dies.
    let faults_at = started.elapsed();
    cluster.ctl(0, &["stop_app"]);
    worker_two.kill().await;
    // Completion is the point, not its pace: on a loaded machine (the rest of the suite runs
    // beside it) the rollout may take minutes.
    let done = api.wait_state_within(d2.id.as_str(), "SUCCEEDING", Duration::from_secs(360)).await;
    let report = fleet.rollout(d2.id.as_str()).expect("the fleet saw the deploy");
    eprintln!(
        "scale-out: second rollout of {HOSTS} hosts SUCCEEDING after {:.1} s (faults at {:.1} s); at most {} out of service at once (cap {CAP})",
        started.elapsed().as_secs_f64(),
        faults_at.as_secs_f64(),
        report.max_out
    );
    assert_eq!((done.success_total, done.total), (HOSTS as i32, HOSTS as i32), "{done:?}");

    // From the hosts' side: all of them, once each, within the cap, none taken for new.
    check_rollout(&fleet, d2.id.as_str(), HOSTS, CAP);
    assert_eq!(fleet.timeline_dropped(), 0);

    // Nothing went to a dead-letter queue, as the nodes left see it.
    cluster.assert_no_dead_letters(1);

    fleet.stop().await;
    drop(lb);
    server.stop().await;
    drop(cluster);
}
