//! A TCP proxy between one role and one dependency (Postgres, a RabbitMQ node), which a test
//! can cut (open connections reset, new ones refused, as when the dependency's host goes
//! away) or partition (no byte goes either way and nothing is closed, as when packets are
//! dropped: the role only notices through its own timeouts and heartbeats), and then heal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Pass,
    /// Resets every connection and refuses new ones.
    Cut,
    /// Holds every byte and every new connection until healed.
    Partition,
}

/// A running proxy; stops (closing its connections) when dropped.
pub struct Proxy {
    /// Where the role connects.
    pub addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free local port towards `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let mode = Arc::new(watch::Sender::new(Mode::Pass));
        let accept = tokio::spawn(accept_loop(listener, target, mode.clone()));
        Proxy { addr, mode, accept }
    }

    /// Changes what it does, at once for open connections too.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` with its `host:port` replaced by the proxy's.
    pub fn url_for(&self, url: &str, target: SocketAddr) -> String {
        url.replace(&target.to_string(), &self.addr.to_string())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Open connections end with the mode's watchers.
        self.mode.send_replace(Mode::Cut);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: Arc<watch::Sender<Mode>>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut watch = mode.subscribe();
        tokio::spawn(async move {
            // A new connection waits out a partition, then goes on or is refused.
            let now = match watch.wait_for(|m| *m != Mode::Partition).await {
                Ok(m) => *m,
                Err(_) => Mode::Cut,
            };
            if now == Mode::Cut {
                return;
            }
            let Ok(upstream) = TcpStream::connect(target).await else { return };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            tokio::select! {
                _ = pump(cr, uw, watch.clone()) => {}
                _ = pump(ur, cw, watch.clone()) => {}
                _ = watch.wait_for(|m| *m == Mode::Cut) => {}
            }
            // Both halves of both sockets drop here: the connection is reset or closed.
        });
    }
}

/// Copies one direction until either side closes; holds the bytes while partitioned.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Nothing is read while partitioned, so the sender's buffers fill as on a dead link.
        if mode.wait_for(|m| *m != Mode::Partition).await.is_err() {
            return;
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.wait_for(|m| *m == Mode::Partition) => continue,
        };
        if mode.wait_for(|m| *m != Mode::Partition).await.is_err() || *mode.borrow() == Mode::Cut {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
