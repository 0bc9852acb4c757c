//! A pool of gateways: `teletraan up` and a second `teletraan gateway` on the same database and
//! broker, HAProxy (the Debian package) balancing the pings of one simulated fleet over both,
//! request by request, so a host's pings keep moving between gateways. Each deploy reaches every
//! host once, within the cap, no serving host is taken for a new one, both gateways answer;
//! and when one gateway dies mid-rollout, HAProxy sends everything to the other and the rollout
//! completes.

mod support;

use std::time::Duration;

use serde_json::json;
use support::Server;
use support::pool::{Haproxy, check_rollout};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::Fleet;

const HOSTS: usize = 40;
const CAP: u32 = 4;

/// Pings a gateway answered, over every outcome (from its `/metrics`).
async fn pings_answered(http: &reqwest::Client, gateway: &str) -> f64 {
    let text = http.get(format!("{gateway}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("teletraan_gateway_pings_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_behind_haproxy_serve_one_fleet_and_a_host_moving_between_them_is_admitted_once() {
    let server = Server::start().await;
    let second = server.start_gateway().await;
    let lb = Haproxy::start(&[&server.gateway, &second.url]).await;
    let api = &server.api;
    api.stage("web", "prod", "g", json!({"maxParallel": CAP})).await;
    let mut config =
        support::fleet_config(&server, "p", HOSTS, "g", Duration::from_millis(300), Duration::from_millis(300));
    config.gateway = lb.url.clone();
    let fleet = Fleet::start(config).expect("a fleet");

    let publish = |n: u32| async move {
        let url = format!("https://artifacts.example.com/web-{n}.tgz");
        api.publish("web", &url, &format!("{n}{n}{n}{n}{n}{n}{n}abc"), Some(UNDOWNLOADED_SHA256)).await
    };
    // First deploys (every host new), then a rollout of serving hosts within the cap.
    let d1 = api.deploy("web", "prod", &publish(1).await).await;
    api.wait_state(d1.id.as_str(), "SUCCEEDING").await;
    let d2 = api.deploy("web", "prod", &publish(2).await).await;
    api.wait_state(d2.id.as_str(), "SUCCEEDING").await;
    check_rollout(&fleet, d2.id.as_str(), HOSTS, CAP);

    // Both gateways answered a good share of the pings.
    let (one, two) = (pings_answered(&api.http, &server.gateway).await, pings_answered(&api.http, &second.url).await);
    assert!(one > 100.0 && two > 100.0, "pings answered: {one} and {two}");
    assert!(one / two > 0.5 && one / two < 2.0, "round robin shares the pings: {one} and {two}");

    // The second gateway dies in the middle of the next rollout: HAProxy stops sending to it
    // and the first serves the whole fleet.
    let d3 = api.deploy("web", "prod", &publish(3).await).await;
    support::wait_for("the third rollout to be under way", || async {
        api.deploy_by_id(d3.id.as_str()).await.success_total >= CAP as i32
    })
    .await;
    second.kill().await;
    api.wait_state(d3.id.as_str(), "SUCCEEDING").await;
    check_rollout(&fleet, d3.id.as_str(), HOSTS, CAP);
    assert_eq!(fleet.timeline_dropped(), 0, "the whole timeline was kept");

    fleet.stop().await;
    drop(lb);
    server.stop().await;
}
