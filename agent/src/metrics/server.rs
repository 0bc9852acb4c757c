//! The metrics page: a deliberately tiny HTTP/1.1 responder on a tokio `TcpListener`, so the
//! agent links no web framework for one read-only page.
//!
//! `GET /metrics` (and `HEAD`) answers the registry in Prometheus' text format; another path
//! is 404, another method 405, a request line that is not `METHOD TARGET HTTP/1.x` is 400 and a
//! request head larger than [`Limits::max_head_bytes`] is 431. Every answer closes the
//! connection (`Connection: close`). Each connection has [`Limits::timeout`] in all to send its
//! request and take the answer, or it is dropped; past [`Limits::max_connections`] at once, a
//! new connection is closed as soon as it is accepted. Nothing a client sends can panic the
//! agent or stop the page.
//!
//! An address that cannot be bound (in use, not local, a privileged port) is logged as an
//! error and the agent goes on without metrics, rather than refusing to start: the agent is how
//! deploys reach the host, including the deploy that fixes its configuration, and a missing
//! scrape target shows in Prometheus (`up == 0`) anyway. A malformed address never gets here:
//! it is a configuration error (exit code 2).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// What one client may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a connection has, from accept to the end of the answer.
    pub timeout: Duration,
    /// Largest request head (request line and headers) read.
    pub max_head_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { timeout: Duration::from_secs(5), max_head_bytes: 8 * 1024, max_connections: 16 }
    }
}

/// Bytes read and thrown away after an answer, so the close does not reset the connection
/// (and lose the answer) while the client is still sending.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// Binds `addr` and serves the page in a task. When the address cannot be bound, logs an error
/// and answers `None`: the agent runs on without metrics.
pub async fn start(addr: SocketAddr, registry: Registry) -> Option<JoinHandle<()>> {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for metrics; the agent runs on without them");
            return None;
        }
    };
    let shown = listener.local_addr().unwrap_or(addr);
    if !shown.ip().is_loopback() {
        tracing::warn!(addr = %shown, "the metrics page is unauthenticated and listens beyond loopback");
    }
    tracing::info!(addr = %shown, "serving metrics on http://{shown}/metrics");
    Some(tokio::spawn(serve(listener, registry, Limits::default())))
}

/// Accepts connections forever and answers each in a task of its own.
pub async fn serve(listener: TcpListener, registry: Registry, limits: Limits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, mostly: wait for some to be released.
                tracing::warn!(error = %e, "metrics: cannot accept a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections; closing this one");
            drop(stream);
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(limits.timeout, answer(stream, &registry, limits.max_head_bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics: connection failed"),
                Err(_) => tracing::debug!(%peer, "metrics: client too slow; dropped"),
            }
        });
    }
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// The page; without its body for HEAD.
    Metrics { body: bool },
    /// An error status.
    Refuse(Status),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    Internal,
}

impl Status {
    const fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::Internal => "500 Internal Server Error",
        }
    }
}

/// The reply to a complete request head (the bytes up to the empty line).
fn reply_to(head: &[u8]) -> Reply {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Reply::Refuse(Status::BadRequest);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Reply::Refuse(Status::BadRequest);
    };
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !token(method) || !printable(target) || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Reply::Refuse(Status::BadRequest);
    }
    let body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => return Reply::Refuse(Status::MethodNotAllowed),
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" { Reply::Metrics { body } } else { Reply::Refuse(Status::NotFound) }
}

/// The whole answer: status line, headers and body.
fn render(reply: Reply, registry: &Registry) -> Vec<u8> {
    let (status, content_type, body, send_body) = match reply {
        Reply::Metrics { body } => {
            let encoder = TextEncoder::new();
            let mut page = Vec::new();
            match encoder.encode(&registry.gather(), &mut page) {
                Ok(()) => ("200 OK", encoder.format_type().to_string(), page, body),
                Err(e) => {
                    tracing::error!(error = %e, "metrics: cannot encode the page");
                    let s = Status::Internal;
                    (s.line(), "text/plain; charset=utf-8".into(), format!("{}\n", s.line()).into_bytes(), true)
                }
            }
        }
        Reply::Refuse(s) => {
            (s.line(), "text/plain; charset=utf-8".into(), format!("{}\n", s.line()).into_bytes(), true)
        }
    };
    let allow = if reply == Reply::Refuse(Status::MethodNotAllowed) { "Allow: GET, HEAD\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if send_body {
        out.extend_from_slice(&body);
    }
    out
}

/// A request head as read from the connection.
enum Head {
    /// Up to and including the empty line.
    Complete(Vec<u8>),
    /// No empty line within the limit.
    TooLarge,
    /// The client closed after sending part of a head.
    Truncated,
    /// The client closed without sending anything.
    Empty,
}

async fn read_head(stream: &mut TcpStream, max: usize) -> io::Result<Head> {
    let mut buf = vec![0u8; max];
    let mut filled = 0;
    loop {
        if filled == max {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(if filled == 0 { Head::Empty } else { Head::Truncated });
        }
        // The empty line may straddle two reads: look a few bytes back.
        let from = filled.saturating_sub(3);
        filled += n;
        if let Some(end) = head_end(&buf[from..filled]) {
            buf.truncate(from + end);
            return Ok(Head::Complete(buf));
        }
    }
}

/// Where the head ends in `bytes` (after `\r\n\r\n`, or `\n\n` from lax clients).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry, max_head: usize) -> io::Result<()> {
    let reply = match read_head(&mut stream, max_head).await? {
        Head::Complete(head) => reply_to(&head),
        Head::TooLarge => Reply::Refuse(Status::HeadTooLarge),
        Head::Truncated => Reply::Refuse(Status::BadRequest),
        Head::Empty => return Ok(()),
    };
    stream.write_all(&render(reply, registry)).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAIN_BYTES {
        match stream.read(&mut sink).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_read_strictly() {
        let page = Reply::Metrics { body: true };
        assert_eq!(reply_to(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), page);
        assert_eq!(reply_to(b"GET /metrics?x=1 HTTP/1.0\n\n"), page);
        assert_eq!(reply_to(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Reply::Metrics { body: false });
        assert_eq!(reply_to(b"POST /metrics HTTP/1.1\r\n\r\n"), Reply::Refuse(Status::MethodNotAllowed));
        assert_eq!(reply_to(b"GET /metricsx HTTP/1.1\r\n\r\n"), Reply::Refuse(Status::NotFound));
        assert_eq!(reply_to(b"GET / HTTP/1.1\r\n\r\n"), Reply::Refuse(Status::NotFound));
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"G(T /metrics HTTP/1.1\r\n\r\n",
            b"GET /m\x01 HTTP/1.1\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(reply_to(bad), Reply::Refuse(Status::BadRequest), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn answers_close_and_head_has_no_body() {
        let registry = Registry::new();
        let head = String::from_utf8(render(Reply::Metrics { body: false }, &registry)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("Connection: close\r\n\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4\r\n"), "{head}");
        let refused = String::from_utf8(render(Reply::Refuse(Status::MethodNotAllowed), &registry)).unwrap();
        assert!(refused.contains("Allow: GET, HEAD\r\n") && refused.ends_with("405 Method Not Allowed\n"), "{refused}");
    }
}
