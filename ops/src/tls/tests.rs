//! The HTTPS listener against real TLS clients, with certificates made here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::watch;

use super::{ReloadingCert, TlsFiles, TlsListener, serve};

/// A private certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "teletraan test CA");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { issuer: Issuer::new(params, key), pem }
    }

    /// A certificate for localhost and 127.0.0.1 and its key, PEM.
    fn leaf(&self) -> (String, String) {
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }
}

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("teletraan-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) -> TlsFiles {
    let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    files
}

/// Serves a router answering `/` with the peer's address over TLS; returns the address.
async fn start(cert: &Arc<ReloadingCert>, stop: watch::Receiver<bool>) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, cert.server_config().unwrap(), Duration::from_secs(2)).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let router = Router::new()
        .route("/", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }));
    let mut stop = stop;
    tokio::spawn(serve(listener, router, crate::http::CLIENT_READ_TIMEOUT, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    addr
}

/// The certificate the server at `addr` presents to a client trusting `ca_pem`.
async fn served_cert(addr: SocketAddr, ca_pem: &str) -> Result<CertificateDer<'static>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn https_answers_with_the_certificate_of_the_files_and_knows_the_peer() {
    let dir = temp_dir("serve");
    let ca = Ca::new();
    let pair = ca.leaf();
    let cert = ReloadingCert::load(write_pair(&dir, &pair)).unwrap();
    let (stop, rx) = watch::channel(false);
    let addr = start(&cert, rx).await;

    assert_eq!(served_cert(addr, &ca.pem).await.unwrap(), der_of(&pair.0));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let body = client.get(format!("https://localhost:{}/", addr.port())).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "127.0.0.1", "the handler sees the peer's address");

    // A client that does not trust the CA is refused; plain HTTP gets no answer.
    let other = Ca::new();
    assert!(served_cert(addr, &other.pem).await.is_err());
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{}/", addr.port())).send().await;
    assert!(plain.is_err(), "plain HTTP is not served: {plain:?}");
    // ...and neither blocks the next client.
    assert_eq!(served_cert(addr, &ca.pem).await.unwrap(), der_of(&pair.0));
    let _ = stop.send(true);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_others() {
    let dir = temp_dir("silent");
    let ca = Ca::new();
    let pair = ca.leaf();
    let cert = ReloadingCert::load(write_pair(&dir, &pair)).unwrap();
    let (stop, rx) = watch::channel(false);
    let addr = start(&cert, rx).await;
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(1), served_cert(addr, &ca.pem)).await;
    assert_eq!(served.expect("answered while another client says nothing").unwrap(), der_of(&pair.0));
    let _ = stop.send(true);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn replaced_files_switch_the_certificate_without_a_restart_and_bad_ones_are_ignored() {
    let dir = temp_dir("reload");
    let ca = Ca::new();
    let first = ca.leaf();
    let files = write_pair(&dir, &first);
    let cert = ReloadingCert::load(files.clone()).unwrap();
    let (stop, rx) = watch::channel(false);
    let addr = start(&cert, rx.clone()).await;
    tokio::spawn(cert.clone().watch(Duration::from_millis(50), "test", rx));
    assert_eq!(served_cert(addr, &ca.pem).await.unwrap(), der_of(&first.0));

    let second = ca.leaf();
    // The key first, as a careless operator would: the half-replaced pair does not load, the
    // first certificate stays, and the pair is picked up once the certificate follows.
    std::fs::write(&files.key, &second.1).unwrap();
    std::fs::write(&files.cert, &second.0).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served_cert(addr, &ca.pem).await.unwrap() != der_of(&second.0) {
        assert!(tokio::time::Instant::now() < deadline, "the new certificate is never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    std::fs::write(&files.cert, "not a certificate").unwrap();
    let err = cert.reload_if_changed().unwrap_err();
    assert!(err.to_string().contains("tls_cert"), "{err}");
    assert_eq!(served_cert(addr, &ca.pem).await.unwrap(), der_of(&second.0), "a bad file keeps the old one");
    let _ = stop.send(true);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_files_are_refused_with_the_setting_and_the_reason() {
    let dir = temp_dir("bad");
    let ca = Ca::new();
    let (cert, key) = ca.leaf();
    let (_, other_key) = ca.leaf();
    let check = |cert_text: Option<&str>, key_text: Option<&str>, expected: &[&str]| {
        let files = TlsFiles { cert: dir.join("c.pem"), key: dir.join("k.pem") };
        let _ = std::fs::remove_file(&files.cert);
        let _ = std::fs::remove_file(&files.key);
        if let Some(t) = cert_text {
            std::fs::write(&files.cert, t).unwrap();
        }
        if let Some(t) = key_text {
            std::fs::write(&files.key, t).unwrap();
        }
        let err = ReloadingCert::load(files).unwrap_err().to_string();
        for part in expected {
            assert!(err.contains(part), "{part:?} in {err}");
        }
    };
    check(None, Some(&key), &["tls_cert", "c.pem", "No such file"]);
    check(Some("hello"), Some(&key), &["tls_cert", "no PEM certificate"]);
    check(Some(&cert), Some(&cert), &["tls_key", "k.pem"]);
    check(Some(&cert), Some(&other_key), &["tls_cert", "tls_key"]);
    assert!(ReloadingCert::load(TlsFiles { cert: dir.join("c.pem"), key: dir.join("k.pem") }).is_err());
    std::fs::write(dir.join("k.pem"), &key).unwrap();
    assert!(ReloadingCert::load(TlsFiles { cert: dir.join("c.pem"), key: dir.join("k.pem") }).is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}
