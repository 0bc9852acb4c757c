//! The agent's metrics page: a deploy against the fake gateway shows on it, and the responder
//! refuses what is not `GET /metrics`, drops slow clients, bounds its connections and keeps
//! serving through all of it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent::config::Config;
use agent::metrics::Metrics;
use agent::metrics::server::{self, Limits};
use agent::runner::Agent;
use agent::testutil::TempDir;
use common::{Fake, Mode, build_archive, build_json};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const B1: &str = "BuildOne00000000000000_abcdef0";
const STAGES: [&str; 8] = [
    "PRE_DOWNLOAD",
    "DOWNLOADING",
    "POST_DOWNLOAD",
    "STAGING",
    "PRE_RESTART",
    "RESTARTING",
    "POST_RESTART",
    "SERVING_BUILD",
];
const GET: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Sends `request` on a new connection and reads until the server closes (or resets) it.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server neither answered nor closed within 10 s");
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of `GET /metrics`, after checking the answer's head.
async fn page(addr: SocketAddr) -> String {
    let answer = exchange(addr, GET).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{head}");
    body.to_string()
}

/// The value of `name` with exactly `labels` (any order) on the page; a histogram by its `_count`.
fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    page.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, v) = line.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        let mut have: Vec<String> =
            rest.trim_end_matches('}').split(',').filter(|p| !p.is_empty()).map(String::from).collect();
        have.sort();
        ((n == name || n == format!("{name}_count")) && have == want).then(|| v.parse().ok()).flatten()
    })
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

async fn serve(limits: Limits) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Metrics::new().unwrap().registry().clone();
    (addr, tokio::spawn(server::serve(listener, registry, limits)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_shows_on_the_metrics_page() {
    let t = TempDir::new("metrics-deploy");
    let fake = Fake::start().await;
    let artifact = build_archive("one", &[]);
    fake.serve("one.tar.gz", artifact.clone());
    fake.set_mode(Mode::Deploy {
        deploy_id: "DeployOne".into(),
        build: build_json(B1, &format!("{}/artifacts/one.tar.gz", fake.url()), None),
        script_variables: json!({"RECORD": t.path().join("record").to_string_lossy()}),
    });
    let mut config = Config::with_defaults(t.path().join("agent"), fake.url(), "host-1");
    config.ping_retry_delays = vec![Duration::from_millis(10)];
    let mut agent = Agent::open(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(server::serve(listener, agent.metrics().registry().clone(), Limits::default()));

    // Before the first ping, the known series are there at zero.
    let before = page(addr).await;
    assert_eq!(value(&before, "teletraan_agent_pings_total", &[("outcome", "ok")]), Some(0.0));
    assert_eq!(value(&before, "teletraan_agent_pings_total", &[("outcome", "error")]), Some(0.0));
    assert_eq!(
        value(&before, "teletraan_agent_steps_total", &[("stage", "RESTARTING"), ("outcome", "succeeded")]),
        Some(0.0)
    );
    assert_eq!(value(&before, "teletraan_agent_environments", &[]), Some(0.0));
    assert_eq!(value(&before, "teletraan_agent_download_bytes_total", &[]), Some(0.0));

    let started = unix_now();
    let summary = agent.round().await.unwrap();
    assert_eq!(summary.steps, 8);
    let after = page(addr).await;
    let pings = fake.pings().len() as f64;
    assert_eq!(pings, 9.0, "one ping, then one after each of the 8 steps");
    assert_eq!(value(&after, "teletraan_agent_pings_total", &[("outcome", "ok")]), Some(pings));
    assert_eq!(value(&after, "teletraan_agent_pings_total", &[("outcome", "error")]), Some(0.0));
    assert_eq!(value(&after, "teletraan_agent_ping_duration_seconds", &[]), Some(pings));
    let last = value(&after, "teletraan_agent_last_ping_success_timestamp_seconds", &[]).unwrap();
    assert!(last >= started - 1.0 && last <= unix_now() + 1.0, "{last} vs {started}");
    for stage in STAGES {
        let steps = |outcome| value(&after, "teletraan_agent_steps_total", &[("stage", stage), ("outcome", outcome)]);
        assert_eq!(steps("succeeded"), Some(1.0), "{stage}");
        assert_eq!(steps("failed"), Some(0.0), "{stage}");
        assert_eq!(steps("aborted"), Some(0.0), "{stage}");
        assert_eq!(value(&after, "teletraan_agent_step_duration_seconds", &[("stage", stage)]), Some(1.0), "{stage}");
    }
    let bytes = value(&after, "teletraan_agent_download_bytes_total", &[]).unwrap();
    assert_eq!(bytes, artifact.len() as f64, "the artifact's bytes, not its .sha256");
    assert_eq!(value(&after, "teletraan_agent_environments", &[]), Some(1.0));
    assert_eq!(value(&after, "teletraan_agent_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("teletraan_agent_"), "only the agent's own series: {line}");
    }
    served.abort();
}

#[tokio::test]
async fn a_ping_that_fails_after_its_retries_counts_once_as_an_error() {
    let t = TempDir::new("metrics-down");
    // Port 9 on loopback: nothing listens there in the test environment.
    let mut config = Config::with_defaults(t.path().join("agent"), "http://127.0.0.1:9", "host-1");
    config.ping_retry_delays = vec![Duration::from_millis(1), Duration::from_millis(1)];
    let mut agent = Agent::open(config).unwrap();
    assert!(agent.round().await.is_err());
    let (addr, served) = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, tokio::spawn(server::serve(listener, agent.metrics().registry().clone(), Limits::default())))
    };
    let after = page(addr).await;
    assert_eq!(value(&after, "teletraan_agent_pings_total", &[("outcome", "error")]), Some(1.0));
    assert_eq!(value(&after, "teletraan_agent_pings_total", &[("outcome", "ok")]), Some(0.0));
    assert_eq!(value(&after, "teletraan_agent_last_ping_success_timestamp_seconds", &[]), Some(0.0));
    served.abort();
}

#[tokio::test]
async fn the_responder_answers_get_and_head_of_metrics_and_refuses_the_rest() {
    let (addr, served) = serve(Limits::default()).await;
    assert!(page(addr).await.contains("teletraan_agent_info{"));

    let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "no body: {head}");
    assert!(!head.contains("Content-Length: 0\r\n"), "{head}");

    let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").await;
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && post.contains("\r\nAllow: GET, HEAD\r\n"),
        "{post}"
    );
    assert!(post.contains("\r\nConnection: close\r\n"), "{post}");
    let other = exchange(addr, b"GET /metrics/../admin HTTP/1.1\r\n\r\n").await;
    assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
    let root = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(root.starts_with("HTTP/1.1 404 Not Found\r\n"), "{root}");
    for garbage in [&b"hello there\r\n\r\n"[..], b"GET /metrics HTTP/9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\n\n"] {
        let answer = exchange(addr, garbage).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{garbage:?}: {answer}");
    }

    // Half a request, then the client closes its side.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metr").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");

    // A head past 8 KiB: 431, or at worst a closed connection; never an answer to it.
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 9 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let answer = exchange(addr, &big).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431 "), "{answer}");

    assert!(page(addr).await.contains("teletraan_agent_pings_total"), "still serving");
    served.abort();
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_timeout_and_the_page_stays_up() {
    let limits = Limits { timeout: Duration::from_millis(300), ..Limits::default() };
    let (addr, served) = serve(limits).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the silent client is still connected after 10 s");
    let took = started.elapsed();
    assert!(out.is_empty(), "no answer to no request: {out:?}");
    assert!(took >= Duration::from_millis(250), "dropped before its time: {took:?}");

    // One slow byte at a time does not stretch the deadline either.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /metrics HTTP/1.1\r\n" {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed || rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    assert!(page(addr).await.contains("teletraan_agent_info{"));
    served.abort();
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    let limits = Limits { timeout: Duration::from_secs(30), max_connections: 1, ..Limits::default() };
    let (addr, served) = serve(limits).await;
    let holder = TcpStream::connect(addr).await.unwrap();
    // The holder was accepted first (the backlog is in order) and keeps the only slot.
    let started = Instant::now();
    let refused = exchange(addr, GET).await;
    assert!(refused.is_empty(), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed at once, not at the timeout");

    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = exchange(addr, GET).await;
        if answer.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.abort();
}

#[tokio::test]
async fn an_address_in_use_is_logged_and_the_agent_goes_on_without_metrics() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = Metrics::new().unwrap().registry().clone();
    assert!(server::start(taken.local_addr().unwrap(), registry.clone()).await.is_none());

    let free = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let running = server::start(free, registry).await.expect("a free address is served");
    running.abort();
}
