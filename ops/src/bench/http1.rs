//! A minimal HTTP/1.1 keep-alive client for the load generator: one request in flight per
//! connection, `Content-Length` bodies only (what axum answers). It costs the generator a
//! few microseconds per request, so on a small machine most of the CPU is left to the server
//! under test; `--client reqwest` uses the full client instead.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    request: Vec<u8>,
}

/// An answer: its status, and whether the body contains `needle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body contained the needle given to [`Conn::post`].
    pub matched: bool,
}

fn bad(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

/// Finds `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of `Content-Length` in a response head (names compared without case).
fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    })
}

/// The status code of a response head.
fn status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ").or_else(|| text.strip_prefix("HTTP/1.0 "))?.get(..3)?.parse().ok()
}

impl Conn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(8192), request: Vec::with_capacity(2048) })
    }

    /// POSTs `body` to `path` with the given extra header lines (each ending in `\r\n`) and
    /// reads the whole answer.
    pub async fn post(
        &mut self,
        host: &str,
        path: &str,
        headers: &str,
        body: &[u8],
        needle: &[u8],
    ) -> io::Result<Answer> {
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n",
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            self.fill().await?;
        };
        let head = &self.buf[..head_end];
        let status = status(head).ok_or_else(|| bad("no HTTP status line"))?;
        let length = content_length(head).ok_or_else(|| bad("answer without content-length"))?;
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        if self.buf.len() > head_end + length {
            return Err(bad("more bytes than one answer"));
        }
        Ok(Answer { status, matched: find(&self.buf[head_end..], needle).is_some() })
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_without_regard_to_case() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCONTENT-LENGTH: 37\r\n\r\n";
        assert_eq!(status(head), Some(200));
        assert_eq!(content_length(head), Some(37));
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(status(b"garbage"), None);
        assert_eq!(find(b"{\"opCode\":\"NOOP\"}", b"\"NOOP\""), Some(10));
    }

    #[tokio::test]
    async fn a_keep_alive_connection_carries_several_requests() {
        let app = axum::Router::new()
            .route("/p", axum::routing::post(|body: String| async move { format!("{{\"echo\":{}}}", body.len()) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut conn = Conn::connect(addr).await.unwrap();
        for n in [0usize, 5, 5000] {
            let body = vec![b'x'; n];
            let a = conn.post("x", "/p", "authorization: token t\r\n", &body, format!(":{n}}}").as_bytes()).await;
            assert_eq!(a.unwrap(), Answer { status: 200, matched: true });
        }
        let missing = conn.post("x", "/nope", "", b"", b"").await.unwrap();
        assert_eq!(missing.status, 404);
    }
}
