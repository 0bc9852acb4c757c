//! A TCP proxy that a test can cut and restore, to play a dependency's outage between a role
//! and Postgres or RabbitMQ: cut, it closes every connection it carries and closes new ones
//! as soon as they arrive (the server went away, a failover); silenced, it holds connections
//! open and forwards nothing (a network that swallows packets); restored, it forwards again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards both ways.
    Forward,
    /// Closes them.
    Cut,
    /// Holds them open and forwards nothing.
    Silent,
}

struct State {
    mode: Mode,
    /// Bumped whenever the mode changes: a connection opened under an older generation ends.
    generation: u64,
    connections: Vec<JoinHandle<()>>,
}

/// A proxy in front of one server.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a port of its own and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State { mode: Mode::Forward, generation: 0, connections: Vec::new() }));
        let (changed, _) = watch::channel(0);
        let acceptor = tokio::spawn(accept(listener, upstream, state.clone(), changed.clone()));
        Proxy { addr, state, changed, acceptor }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection it carries, and from now on every new one at once; returns when
    /// the connections are closed.
    pub async fn cut(&self) {
        self.switch(Mode::Cut).await;
    }

    /// Stops forwarding: the connections it carries and new ones stay open, and not a byte
    /// goes through.
    pub async fn silence(&self) {
        self.switch(Mode::Silent).await;
    }

    /// Forwards again (connections held while silent are closed).
    pub async fn restore(&self) {
        self.switch(Mode::Forward).await;
    }

    async fn switch(&self, mode: Mode) {
        let (generation, connections) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.mode = mode;
            state.generation += 1;
            // Silenced connections stay open: nothing to wait for.
            let ending = if mode == Mode::Silent { Vec::new() } else { std::mem::take(&mut state.connections) };
            (state.generation, ending)
        };
        self.changed.send_replace(generation);
        for connection in connections {
            let _ = connection.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for connection in &state.connections {
            connection.abort();
        }
    }
}

async fn accept(listener: TcpListener, upstream: String, state: Arc<Mutex<State>>, changed: watch::Sender<u64>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
        let generation = guard.generation;
        let ended = changed.subscribe();
        let connection = match guard.mode {
            // Dropped: closed as soon as it arrived.
            Mode::Cut => continue,
            Mode::Silent => tokio::spawn(hold(client, generation, ended)),
            Mode::Forward => tokio::spawn(forward(client, upstream.clone(), generation, state.clone(), ended)),
        };
        guard.connections.push(connection);
    }
}

/// Resolves when the proxy's mode changed after `generation`.
async fn until_changed(generation: u64, mut changed: watch::Receiver<u64>) {
    let _ = changed.wait_for(|g| *g != generation).await;
}

async fn forward(
    mut client: TcpStream,
    upstream: String,
    generation: u64,
    state: Arc<Mutex<State>>,
    changed: watch::Receiver<u64>,
) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => return,
        _ = until_changed(generation, changed.clone()) => {}
    }
    let (mode, now) = {
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        (state.mode, state.generation)
    };
    if mode == Mode::Silent {
        // Both sockets stay open, and nobody reads them.
        until_changed(now, changed).await;
    }
    // Both sockets close here.
}

async fn hold(client: TcpStream, generation: u64, changed: watch::Receiver<u64>) {
    until_changed(generation, changed).await;
    drop(client);
}

/// The `host:port` of a `scheme://[user[:password]@]host[:port]/…` URL (`default_port` when
/// it names none).
pub fn authority(url: &str, default_port: u16) -> String {
    let (start, end) = authority_span(url);
    let host_port = &url[start..end];
    if host_port.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    }
}

/// `url` with its `host:port` replaced by `addr` (credentials, path and query kept).
pub fn through(url: &str, addr: SocketAddr) -> String {
    let (start, end) = authority_span(url);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

/// Where the host and port start and end.
fn authority_span(url: &str) -> (usize, usize) {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or_else(|| panic!("{url:?} has no scheme"));
    let rest = &url[scheme_end..];
    let end = scheme_end + rest.find(['/', '?']).unwrap_or(rest.len());
    let start = url[scheme_end..end].rfind('@').map_or(scheme_end, |at| scheme_end + at + 1);
    (start, end)
}
