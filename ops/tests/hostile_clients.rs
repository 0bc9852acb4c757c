//! Hostile clients against the real `teletraan up`, on the API listener and the gateway
//! listener alike (docs/fuzzing.md): oversized bodies (413), deeply nested JSON and invalid
//! UTF-8 (400), huge request heads (431 or closed), garbage instead of HTTP; clients that send
//! their headers a byte a second (slowloris), or nothing at all, which must be disconnected
//! within the client read timeout, and clients that send their body a byte a second, whose
//! request must be refused (400) within it too, while everybody else is served as usual. And
//! none of it costs the server more than a bounded amount of memory, at its peak and after: not
//! what holding the bodies, heads or connections would cost.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{ADMIN, AGENT, Memory, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's client read timeout in these tests (`TELETRAAN_CLIENT_READ_TIMEOUT`).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How much later than the timeout a client may be disconnected (a loaded test machine).
const SLACK: Duration = Duration::from_secs(6);

/// Times the hostile requests are sent to each listener: memory they left behind would add up.
const ROUNDS: usize = 3;

// Bounds on the server's memory growth over its baseline (resident size after an ordinary
// request and a small bad body on each listener), in KiB, as `/proc/<pid>/status` counts it:
// the peak during a phase (`VmHWM`, reset at the baseline) and the resident size after it
// (`VmRSS`).
//
// The hostile requests: a round sends 18,094,303 bytes over both listeners (two 3 MiB bodies
// and 1.7 MB of nesting per listener, a 1 MiB header, 500 headers), so the 3 rounds send
// 54,282,909 bytes, 51.8 MiB (the test prints it): what a server that kept every body and head
// it was sent would grow by. Measured (dev build, 2 CPUs, 10 runs, 3 of them of one round): a
// peak of +3.1 to +5.1 MiB (reading an over-limit body up to the 2 MB limit before its 413 is
// legitimate) and +1.0 to +3.7 MiB still resident after. The bounds are about three times the
// worst of each, and under a third of what keeping the bodies would cost (the test checks that
// against what it sent).
const HOSTILE_PEAK_KIB: u64 = 16 * 1024;
const HOSTILE_KEPT_KIB: u64 = 12 * 1024;
// The slow and idle clients: 270 connections held at once per listener, sending a few bytes
// each. Hyper lets a connection's read buffer grow to 417,792 bytes (8 KiB + 100 × 4 KiB)
// before it answers 431: a server that let each held connection grow its buffer that far would
// take 270 × 408 KiB = 107.6 MiB. Measured (7 runs): +5.1 to +6.0 MiB at the peak, at most
// 23 KiB per held connection, and as much resident after (the allocator keeps what was freed
// for reuse). The bound, for both, is four times that: 24 MiB, 91 KiB per held connection,
// under a quarter of the 107.6 MiB.
const SLOW_PEAK_KIB: u64 = 24 * 1024;
const SLOW_KEPT_KIB: u64 = 24 * 1024;

async fn start() -> Server {
    Server::start_with(&[("TELETRAAN_CLIENT_READ_TIMEOUT", "2")]).await
}

/// Readies the server for a memory baseline: one ordinary request and one small bad body on
/// each listener, so that what any first request allocates once (lazily built state, the
/// error path) is in the baseline and not counted as growth. Then resets the server's
/// high-water mark and answers its memory now.
async fn memory_baseline(server: &Server) -> Memory {
    let http = fresh_client();
    for l in listeners(server) {
        let ok = http.get(format!("{}/healthz", l.base)).send().await.expect("healthz");
        assert_eq!(ok.status(), 200, "{}", l.name);
        let bad = http
            .post(format!("{}{}", l.base, l.path))
            .header("Authorization", format!("token {}", l.token))
            .body("[[[")
            .send()
            .await
            .expect("a small bad body");
        assert_eq!(bad.status(), 400, "{}", l.name);
    }
    if !Memory::reset_peak(server.pid()) {
        eprintln!("memory: the kernel would not reset the peak; it counts from the server's start");
    }
    server.memory()
}

/// Checks what a hostile phase cost the server in memory (KiB): its peak during the phase
/// (`VmHWM`) over the baseline under `peak_bound`, and what it still holds after (`VmRSS`)
/// over the baseline under `after_bound`.
#[track_caller]
fn assert_memory_bounded(what: &str, server: &Server, before: Memory, peak_bound: u64, after_bound: u64) {
    let after = server.memory();
    let peak = after.peak_kib.saturating_sub(before.rss_kib);
    let kept = after.rss_kib.saturating_sub(before.rss_kib);
    eprintln!(
        "memory: {what}: resident {} KiB before; peak {} KiB (+{peak}), resident {} KiB after (+{kept})",
        before.rss_kib, after.peak_kib, after.rss_kib
    );
    assert!(
        peak < peak_bound,
        "{what}: the server's peak grew by {peak} KiB (bound {peak_bound} KiB): {before:?} then {after:?}"
    );
    assert!(
        kept < after_bound,
        "{what}: the server holds {kept} KiB more after (bound {after_bound} KiB): {before:?} then {after:?}"
    );
}

/// A client that opens a connection per request: the server closes idle ones after the
/// header timeout, and a pooled one could be taken just as it goes.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("a client")
}

fn addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap_or_else(|e| panic!("{base}: {e}"))
}

/// One listener and a request on it that takes a JSON body.
struct Listener {
    name: &'static str,
    base: String,
    path: &'static str,
    token: &'static str,
}

fn listeners(server: &Server) -> [Listener; 2] {
    [
        Listener { name: "api", base: server.api.base.clone(), path: "/v1/envs", token: ADMIN },
        Listener { name: "gateway", base: server.gateway.clone(), path: "/v1/system/ping", token: AGENT },
    ]
}

/// Sends `head` then `body` over a fresh connection and reads what comes back until the
/// server closes it (or 10 s pass). The server may stop reading early and close: a write that
/// fails is not an error, only what was answered counts.
async fn raw_exchange(addr: SocketAddr, head: &[u8], body: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.split();
    let read = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return answer,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    // One answer is all these exchanges expect.
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") && complete(&answer) {
                        return answer;
                    }
                }
            }
        }
    };
    let write = async {
        if writer.write_all(head).await.is_ok() {
            let _ = writer.write_all(body).await;
        }
        std::future::pending::<()>().await
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            answer = read => answer,
            () = write => unreachable!("the writer never ends"),
        }
    })
    .await
    .unwrap_or_default()
}

/// Whether `answer` holds a whole answer with a `Content-Length` body.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
        .and_then(Result::ok);
    length.is_some_and(|n| body.len() >= n)
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Asserts the JSON error shape of an answer read off the wire.
#[track_caller]
fn assert_error_shape(what: &str, answer: &[u8]) {
    let text = String::from_utf8_lossy(answer);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let shaped =
        v["code"].as_str().is_some_and(|c| !c.is_empty()) && v["message"].as_str().is_some_and(|m| !m.is_empty());
    assert!(shaped, "{what}: not the error shape: {}", &text[..text.len().min(600)]);
}

fn post_head(l: &Listener, length: Option<usize>) -> Vec<u8> {
    let length = match length {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_string(),
    };
    format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nAuthorization: token {}\r\nContent-Type: application/json\r\n{length}\r\n",
        l.path, l.token
    )
    .into_bytes()
}

fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_4xx_on_both_listeners() {
    let server = start().await;
    let http = fresh_client();
    let before = memory_baseline(&server).await;
    // Every byte the hostile clients below send (heads and bodies, both listeners).
    let mut sent = 0usize;
    for l in (0..ROUNDS).flat_map(|_| listeners(&server)) {
        let at = addr(&l.base);
        let name = l.name;

        // Past the 2 MB body limit: declared, and sent in chunks with no length at all.
        let huge = format!("{{\"hostId\": \"{}\"}}", "x".repeat(3 << 20)).into_bytes();
        let head = post_head(&l, Some(huge.len()));
        sent += head.len() + huge.len();
        let answer = raw_exchange(at, &head, &huge).await;
        assert_eq!(status_of(&answer), Some(413), "{name}: declared 3 MB");
        assert_error_shape(name, &answer);
        let (head, body) = (post_head(&l, None), chunked(&huge));
        sent += head.len() + body.len();
        let answer = raw_exchange(at, &head, &body).await;
        assert_eq!(status_of(&answer), Some(413), "{name}: 3 MB in chunks");
        assert_error_shape(name, &answer);

        // Nesting far past the parser's limit, closed and not, as the body and inside it.
        for body in [
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("{{\"hostId\": {}", "{\"a\":".repeat(100_000)),
            "[".repeat(1_000_000),
        ] {
            let head = post_head(&l, Some(body.len()));
            sent += head.len() + body.len();
            let answer = raw_exchange(at, &head, body.as_bytes()).await;
            assert_eq!(status_of(&answer), Some(400), "{name}: nesting");
            assert_error_shape(name, &answer);
        }

        // Not UTF-8, inside a string and as the whole body.
        for body in [&b"{\"hostId\": \"\xff\xfe\", \"envName\": \"\xc3\"}"[..], b"\xff\xff\xff\xff"] {
            let head = post_head(&l, Some(body.len()));
            sent += head.len() + body.len();
            let answer = raw_exchange(at, &head, body).await;
            assert_eq!(status_of(&answer), Some(400), "{name}: invalid UTF-8");
            assert_error_shape(name, &answer);
        }

        // Request heads past what the server reads: one huge header, or too many headers. The
        // answer is 431, or the connection is closed.
        let big = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "b".repeat(1 << 20));
        let many = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{}\r\n", "X-Many: m\r\n".repeat(500));
        for (what, head) in [("a 1 MB header", big), ("500 headers", many)] {
            sent += head.len();
            let answer = raw_exchange(at, head.as_bytes(), b"").await;
            let status = status_of(&answer);
            assert!(status == Some(431) || answer.is_empty(), "{name}: {what}: {:?}", String::from_utf8_lossy(&answer));
        }

        // Not HTTP at all.
        let garbage = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n";
        sent += garbage.len();
        let answer = raw_exchange(at, garbage, b"").await;
        assert!(status_of(&answer).is_none_or(|s| s == 400), "{name}: garbage: {:?}", String::from_utf8_lossy(&answer));

        // And the listener still answers.
        let ok = http.get(format!("{}/healthz", l.base)).send().await.expect("still serving");
        assert_eq!(ok.status(), 200, "{name}");
    }
    eprintln!("memory: the hostile requests sent {sent} bytes ({} KiB)", sent / 1024);
    assert!(HOSTILE_PEAK_KIB * 1024 * 3 < sent as u64, "the bound is not far below the {sent} bytes sent");
    assert_memory_bounded("hostile requests", &server, before, HOSTILE_PEAK_KIB, HOSTILE_KEPT_KIB);
    server.stop().await;
}

/// A client that sends `GET /healthz` with one header that never ends, a byte every
/// `every`; returns how long the server kept it connected, or `None` if it still was after
/// `patience`.
async fn slowloris(at: SocketAddr, every: Duration, patience: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(at).await.expect("connect");
    let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let mut sent = 0usize;
    let mut buf = [0u8; 1024];
    let until_closed = async {
        loop {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    // Closed (or answered and closed: anything but a served request).
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = tokio::time::sleep(every) => {
                    if stream.write_all(&[byte]).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
            }
        }
    };
    tokio::time::timeout(patience, until_closed).await.ok().map(|()| started.elapsed())
}

/// A client that sends a whole request head promising a 1,000-byte body, then the body a byte
/// every `every`; returns how long until the server answered (with the answer) or closed, or
/// `None` if neither happened within `patience`.
async fn slow_body(l: &Listener, every: Duration, patience: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr(&l.base)).await.expect("connect");
    stream.write_all(&post_head(l, Some(1_000))).await.expect("the head");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let until_answered = async {
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        answer.extend_from_slice(&buf[..n]);
                        if complete(&answer) {
                            return;
                        }
                    }
                },
                () = tokio::time::sleep(every) => {
                    if stream.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(patience, until_answered).await.ok()?;
    Some((started.elapsed(), answer))
}

/// A client that connects, maybe sends one whole request and reads its answer, then says
/// nothing; returns how long the server kept it, or `None` if it still was after `patience`.
async fn idle(at: SocketAddr, first_request: bool, patience: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(at).await.expect("connect");
    if first_request {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("a request");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !complete(&answer) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => panic!("the server closed a kept-alive connection at once"),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(status_of(&answer), Some(200), "{}", String::from_utf8_lossy(&answer));
    }
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let until_closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(patience, until_closed).await.ok().map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_while_everybody_else_is_served() {
    let server = start().await;
    let http = fresh_client();
    let before = memory_baseline(&server).await;
    let patience = CLIENT_TIMEOUT + SLACK;
    for l in listeners(&server) {
        let (at, name) = (addr(&l.base), l.name);
        let started = Instant::now();
        // Connections are opened in groups, with a pause between them: a burst past the
        // listener's backlog (128) would leave some waiting in the kernel, unaccepted, which
        // is not what is tested here.
        let mut slow = Vec::new();
        let mut silent = Vec::new();
        let mut dribbling = Vec::new();
        for i in 0..270 {
            match i {
                0..50 => slow.push(tokio::spawn(slowloris(at, Duration::from_secs(1), patience))),
                50..250 => silent.push(tokio::spawn(idle(at, i % 2 == 0, patience))),
                _ => {
                    let l = Listener { name: l.name, base: l.base.clone(), path: l.path, token: l.token };
                    dribbling.push(tokio::spawn(async move { slow_body(&l, Duration::from_secs(1), patience).await }));
                }
            }
            if i % 25 == 24 {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }

        // While all of them hang on, others are served at once.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for _ in 0..5 {
            let asked = Instant::now();
            let ok = http.get(format!("{}/healthz", l.base)).send().await.expect("served");
            assert_eq!(ok.status(), 200, "{name}");
            assert!(asked.elapsed() < Duration::from_secs(1), "{name}: a normal request took {:?}", asked.elapsed());
        }
        assert!(started.elapsed() < CLIENT_TIMEOUT + Duration::from_secs(1), "the clients were not all hanging yet");

        for (kind, clients) in [("slowloris", slow), ("idle", silent)] {
            for (i, client) in clients.into_iter().enumerate() {
                let held = client.await.expect("a client task");
                let held =
                    held.unwrap_or_else(|| panic!("{name}: {kind} client {i} was still connected after {patience:?}"));
                assert!(
                    held >= CLIENT_TIMEOUT - Duration::from_millis(500),
                    "{name}: a {kind} client closed early: {held:?}"
                );
            }
        }
        for client in dribbling {
            let held = client.await.expect("a client task");
            let (held, answer) =
                held.unwrap_or_else(|| panic!("{name}: a slow body was still being read after {patience:?}"));
            assert!(held >= CLIENT_TIMEOUT - Duration::from_millis(500), "{name}: a slow body refused early: {held:?}");
            // Refused with the error shape (or, if the answer raced the close, just closed).
            if !answer.is_empty() {
                assert_eq!(status_of(&answer), Some(400), "{name}: {}", String::from_utf8_lossy(&answer));
                assert_error_shape(name, &answer);
            }
        }
        let ok = http.get(format!("{}/healthz", l.base)).send().await.expect("still serving");
        assert_eq!(ok.status(), 200, "{name}");
    }
    assert_memory_bounded("slow and idle clients", &server, before, SLOW_PEAK_KIB, SLOW_KEPT_KIB);
    server.stop().await;
}
