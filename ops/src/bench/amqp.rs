//! `teletraan bench amqp`: the broker's side of the calibration — persistent messages of a
//! given size published with confirms into a quorum queue (the namespace's `reports` queue,
//! with no consumer), through the system's own [`Publisher`]. It publishes a window of
//! messages, waits for the broker to confirm all of them, and repeats.

use std::time::Instant;

use anyhow::Context;
use bus::{BusConfig, Outgoing, Publisher, WorkQueue};
use clap::Args;

/// Flags of `teletraan bench amqp`.
#[derive(Debug, Clone, Args)]
pub struct AmqpArgs {
    /// RabbitMQ URL: the global `--amqp-url`.
    #[arg(skip)]
    pub amqp_url: String,
    /// Namespace of the queues, deleted at the end: the global `--namespace`.
    #[arg(skip)]
    pub namespace: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub messages: u32,
    /// Bytes per message.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub size: u32,
    /// Messages published before waiting for their confirms (1: one at a time).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub window: u32,
}

/// Runs the calibration and prints messages/s (`result: key=value …` last).
pub async fn run(args: AmqpArgs) -> anyhow::Result<()> {
    let bus = BusConfig::new(args.amqp_url.clone(), args.namespace.clone());
    let publisher = Publisher::new(bus.clone());
    let exchange = bus.exchange(WorkQueue::Reports);
    let message = |n: u32| {
        let mut payload = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
        payload.resize(args.size.saturating_sub(2) as usize, b'x');
        payload.extend_from_slice(b"\"}");
        Outgoing { exchange: exchange.clone(), routing_key: "reports".into(), payload }
    };
    // Connect and declare the topology before the clock starts.
    publisher.publish(&[message(0)]).await.context("cannot publish to the broker")?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < args.messages {
        let n = args.window.min(args.messages - sent);
        let window: Vec<Outgoing> = (sent..sent + n).map(message).collect();
        publisher.publish(&window).await.context("publishing failed")?;
        sent += n;
    }
    let took = started.elapsed().as_secs_f64();
    if let Err(e) = bus::delete_topology(&bus).await {
        eprintln!("amqp: could not delete namespace {}: {e}", bus.namespace);
    }
    let rate = f64::from(sent) / took;
    println!(
        "amqp: {sent} persistent {}-byte messages into a quorum queue with confirms, {} per confirm wait: {rate:.0} messages/s ({took:.2} s)",
        args.size, args.window
    );
    println!("result: label=amqp size={} window={} messages={sent} msgs_per_s={rate:.0}", args.size, args.window);
    Ok(())
}
