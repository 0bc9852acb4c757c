//! HTTPS for the API and gateway listeners: a certificate and key read from PEM files and
//! reloaded when the files change (or on SIGHUP) without a restart, and a listener that hands
//! axum only connections whose TLS handshake completed.
//!
//! Handshakes run in their own tasks, each bounded by a timeout, so a slow or silent client
//! never holds up the accepting of others. A certificate file replaced by something that does
//! not load (half written, a key that does not match) leaves the current certificate in
//! place: the error is logged and the next change is tried again.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Handshakes in progress at once per listener; past it, accepting waits (the kernel's backlog
/// holds the rest), so a flood of silent clients costs bounded memory.
const MAX_HANDSHAKES: usize = 1024;

/// What can go wrong with the certificate and key files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no usable PEM.
    #[error("{setting} {path}: {message}")]
    File {
        /// The setting that names the file (`tls_cert`, `tls_key`).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The key does not belong to the certificate, or rustls refuses them.
    #[error("tls_cert {cert} and tls_key {key}: {message}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The certificate (chain) and private key files of a listener, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files and checks that they belong together.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let file_error = |setting, path: &Path, message: String| TlsError::File { setting, path: path.into(), message };
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| file_error("tls_cert", &self.cert, pem_message(e)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error("tls_cert", &self.cert, pem_message(e)))?;
        if certs.is_empty() {
            return Err(file_error("tls_cert", &self.cert, "no PEM certificate in the file".into()));
        }
        let key =
            PrivateKeyDer::from_pem_file(&self.key).map_err(|e| file_error("tls_key", &self.key, pem_message(e)))?;
        let pair_error = |e: rustls::Error| TlsError::Pair {
            cert: self.cert.clone(),
            key: self.key.clone(),
            message: e.to_string(),
        };
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider.key_provider.load_private_key(key).map_err(pair_error)?;
        let certified = CertifiedKey::new(certs, signing);
        certified.keys_match().map_err(pair_error)?;
        Ok(certified)
    }

    /// When each file last changed (`None` when either cannot be read).
    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&self.cert)?, modified(&self.key)?))
    }
}

/// A PEM error in words (a missing file says so rather than "no items found").
fn pem_message(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind in the file".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// The certificate a listener presents, swapped for a new one when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the files last tried, loaded or not (a bad file is reported once,
    /// not at every check).
    tried: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl ReloadingCert {
    /// Loads the files; an error here stops the start.
    pub fn load(files: TlsFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let tried = files.stamp();
        let key = files.load()?;
        Ok(Arc::new(ReloadingCert { files, current: RwLock::new(Arc::new(key)), tried: Mutex::new(tried) }))
    }

    /// Loads the files again if they changed since the last attempt: `Ok(true)` when the new
    /// certificate is in use, `Ok(false)` when nothing changed, an error (the old certificate
    /// stays) when the new files do not load.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = self.files.stamp();
        {
            let mut tried = self.tried.lock().unwrap_or_else(|p| p.into_inner());
            if stamp.is_some() && *tried == stamp {
                return Ok(false);
            }
            *tried = stamp;
        }
        self.reload().map(|()| true)
    }

    /// Loads the files again now; on error the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = self.files.load()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// The rustls configuration of a listener presenting this certificate (HTTP/1.1 only, as
    /// the server speaks nothing else).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Checks the files every `every` and on SIGHUP until `shutdown` turns true, logging what
    /// happens (`role` names the listener).
    pub async fn watch(self: Arc<Self>, every: Duration, role: &'static str, mut shutdown: watch::Receiver<bool>) {
        let mut hangup = hangup();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let outcome = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tick.tick() => self.reload_if_changed(),
                Some(()) = hangup.recv() => self.reload().map(|()| true),
            };
            match outcome {
                Ok(true) => tracing::info!(role, cert = %self.files.cert.display(), "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(role, error = %e, "cannot reload the TLS certificate; keeping the current one")
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A stream of SIGHUPs (never yields where there are none or they cannot be caught).
fn hangup() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while signal.recv().await.is_some() {
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// A listener whose connections have completed their TLS handshake, for `axum::serve`.
///
/// A task accepts TCP connections and starts one handshake task per connection; finished
/// handshakes are queued for [`axum::serve::Listener::accept`]. Dropping the listener stops
/// the accepting task.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`; handshakes longer than `handshake_timeout` are
    /// dropped.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>, handshake_timeout: Duration) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), handshake_timeout, tx));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (socket, peer) = tokio::select! {
            _ = ready.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Errors of one connection (reset before accept) cost nothing; others (out
                    // of file descriptors) would spin, so they wait a little, as axum does.
                    if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        tracing::error!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = socket.set_nodelay(true);
            match tokio::time::timeout(handshake_timeout, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                // A client that does not trust us, or scans the port, is its own business.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves `router` on `listener` until `stop` resolves, as the plain listeners are served
/// ([`crate::http::serve`]: the peer address as `ConnectInfo<SocketAddr>`, the bounds on slow
/// clients).
pub async fn serve(
    listener: TlsListener,
    router: axum::Router,
    client_read_timeout: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    // The board marks its cookies Secure on requests that came this way.
    let router = router.layer(axum::Extension(api::board::Https));
    crate::http::serve(listener, router, client_read_timeout, stop).await
}

#[cfg(test)]
mod tests;
