//! `teletraan up` on a three-node RabbitMQ cluster (`ops/cluster/start.sh`), its broker URL
//! listing the three nodes: the node every role is connected to stops in the middle of a
//! rollout, the roles move to the other nodes, the rollout completes, and nothing is
//! dead-lettered.

mod support;

use std::time::Duration;

use serde_json::json;
use support::Server;
use support::cluster::Cluster;
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::Fleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_completes_when_the_broker_node_in_use_stops() {
    let cluster = Cluster::start();
    let log = cluster.dir.with_extension("server.log");
    let server = Server::start_logging(&[("TELETRAAN_AMQP_URL", cluster.urls.as_str())], &log).await;
    let api = &server.api;
    api.stage("web", "prod", "g", json!({"maxParallel": 3})).await;
    let fleet = Fleet::start(support::fleet_config(
        &server,
        "c",
        18,
        "g",
        Duration::from_millis(300),
        Duration::from_millis(400),
    ))
    .expect("a fleet");
    let b1 =
        api.publish("web", "https://artifacts.example.com/web-1.tgz", "1111111abc", Some(UNDOWNLOADED_SHA256)).await;
    let d1 = api.deploy("web", "prod", &b1).await;
    api.wait_state(d1.id.as_str(), "SUCCEEDING").await;

    // The second deploy rolls three hosts at a time; after the first few, the first node (every
    // role connects to it first) stops.
    let b2 =
        api.publish("web", "https://artifacts.example.com/web-2.tgz", "2222222abc", Some(UNDOWNLOADED_SHA256)).await;
    let d2 = api.deploy("web", "prod", &b2).await;
    support::wait_for("the first hosts of the second deploy", || async {
        api.deploy_by_id(d2.id.as_str()).await.success_total >= 3
    })
    .await;
    cluster.ctl(0, &["stop_app"]);
    let done = api.wait_state(d2.id.as_str(), "SUCCEEDING").await;
    assert_eq!((done.success_total, done.total), (18, 18), "{done:?}");

    // Nothing went to a dead-letter queue, as the nodes left see it.
    cluster.assert_no_dead_letters(1);

    fleet.stop().await;
    server.stop().await;
    drop(cluster);
}
