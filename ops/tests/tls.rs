//! End to end over TLS: `teletraan up` serves the API and the gateway over HTTPS with a
//! certificate made here, talks to Postgres with `sslmode=verify-full` and to RabbitMQ over
//! `amqps://` (both serving the test CA's certificate, ops/lib/services.sh); two real agents
//! with `--ca-file` ping the gateway and download their build over HTTPS and complete a
//! deploy. A client without the CA is refused, and a server whose database CA did not sign
//! Postgres' certificate refuses to start.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;
use support::{AGENT, Server, binary, wait_for};
use teletraan::sample;
use teletraan::tls::{HANDSHAKE_TIMEOUT, ReloadingCert, TlsFiles, TlsListener};
use tokio::process::{Child, Command};

const HOSTS: [&str; 2] = ["tls-1", "tls-2"];

/// A CA made for this test, its certificate and a server certificate for localhost and
/// 127.0.0.1 it signed, as files.
struct Pki {
    ca: PathBuf,
    files: TlsFiles,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "teletraan e2e CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(params, ca_key);
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            files: TlsFiles { cert: dir.join("server.pem"), key: dir.join("server.key") },
        };
        std::fs::write(&pki.ca, ca_pem).unwrap();
        std::fs::write(&pki.files.cert, cert.pem()).unwrap();
        std::fs::write(&pki.files.key, key.serialize_pem()).unwrap();
        pki
    }

    /// An HTTP client trusting this CA only (besides the system's roots).
    fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca).unwrap();
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()).build().unwrap()
    }
}

/// Serves `bytes` at `https://127.0.0.1:<port>/<name>` with the test certificate.
async fn serve_artifact_https(pki: &Pki, name: &'static str, bytes: Vec<u8>) -> String {
    let app = Router::new().route(&format!("/{name}"), get(move || async move { bytes }));
    let cert = ReloadingCert::load(pki.files.clone()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener::new(tcp, cert.server_config().unwrap(), HANDSHAKE_TIMEOUT).unwrap();
    tokio::spawn(teletraan::tls::serve(listener, app, teletraan::http::CLIENT_READ_TIMEOUT, std::future::pending()));
    format!("https://127.0.0.1:{}/{name}", addr.port())
}

/// An agent trusting `ca`, with the static agent token or (`Some`) only an enrollment token.
fn start_agent(gateway: &str, host: &str, dir: &Path, ca: &Path, enroll: Option<&str>) -> Child {
    let (variable, token) = match enroll {
        Some(t) => ("TELETRAAN_AGENT_ENROLL_TOKEN", t),
        None => ("TELETRAAN_AGENT_TOKEN", AGENT),
    };
    Command::new(binary("teletraan-agent"))
        .arg("run")
        .args(["--server", gateway, "--host-id", host, "--host-name", host, "--groups", "tls"])
        .args(["--ping-interval", "1", "--retry-delay", "1", "--max-retries", "2"])
        .arg("--ca-file")
        .arg(ca)
        .arg("--dir")
        .arg(dir)
        .env(variable, token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start teletraan-agent")
}

/// An error with its causes, where reqwest keeps the TLS reason.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_completes_with_tls_on_every_connection() {
    let tmp = std::env::temp_dir().join(format!("teletraan-tls-e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp).unwrap();
    let pki = Pki::new(&tmp);
    let (cert, key) = (pki.files.cert.display().to_string(), pki.files.key.display().to_string());
    let server =
        Server::start_tls(&[("TELETRAAN_TLS_CERT", cert.as_str()), ("TELETRAAN_TLS_KEY", key.as_str())], pki.client())
            .await;
    let api = &server.api;
    assert!(
        api.base.starts_with("https://") && server.gateway.starts_with("https://"),
        "{} {}",
        api.base,
        server.gateway
    );

    // Without the CA, no client gets an answer; plain HTTP neither.
    let e = reqwest::Client::new().get(format!("{}/healthz", api.base)).send().await.unwrap_err();
    assert!(chain(&e).contains("certificate"), "refused for its certificate: {}", chain(&e));
    let plain = api.base.replacen("https://", "http://", 1);
    assert!(reqwest::Client::new().get(format!("{plain}/healthz")).send().await.is_err(), "no plain HTTP");

    // RESTARTING is the one hook Teletraan requires.
    let bytes = sample::artifact("T", &[("RESTARTING", "#!/bin/sh\nexit 0\n".to_string())]).unwrap();
    let url = serve_artifact_https(&pki, "t.tar.gz", bytes.clone()).await;
    api.stage("tls", "prod", "tls", json!({})).await;
    let build = api.publish("tls", &url, "ccccccc333", Some(&sample::sha256_hex(&bytes))).await;
    let dirs: Vec<PathBuf> = HOSTS.iter().map(|h| tmp.join(h)).collect();
    // The first host pings with the static token, the second enrolls over TLS first.
    api.call(reqwest::Method::POST, "/v1/principals", Some(json!({"name": "fleet", "kind": "AGENT"}))).await;
    let body = json!({"principal": "fleet", "kind": "ENROLL", "groups": ["tls"]});
    let made: serde_json::Value = api.call(reqwest::Method::POST, "/v1/tokens", Some(body)).await.json().await.unwrap();
    let enroll = made["token"].as_str().expect("the enrollment token").to_string();
    let agents: Vec<Child> = HOSTS
        .iter()
        .zip(&dirs)
        .enumerate()
        .map(|(i, (h, d))| start_agent(&server.gateway, h, d, &pki.ca, (i == 1).then_some(enroll.as_str())))
        .collect();

    let deploy = api.deploy("tls", "prod", &build).await;
    wait_for("the rollout over TLS", || async {
        let agents = api.agents("tls", "prod").await;
        let d = api.deploy_by_id(deploy.id.as_str()).await;
        agents.len() == HOSTS.len()
            && agents.iter().all(|a| a.deploy_id == deploy.id && a.deploy_stage.as_str() == "SERVING_BUILD")
            && d.state.as_str() == "SUCCEEDING"
    })
    .await;
    for dir in &dirs {
        let link = std::fs::read_link(dir.join("targets/tls")).expect("the target symlink");
        assert!(link.ends_with(format!("builds/{}", build.id)), "{} -> {}", dir.display(), link.display());
    }
    assert!(dirs[1].join("credential").exists(), "the second host enrolled over TLS");
    drop(agents);
    server.stop().await;
    std::fs::remove_dir_all(tmp).unwrap();
}

#[tokio::test]
async fn the_server_refuses_to_start_when_the_database_ca_did_not_sign_postgres() {
    let db = store::testing::TestDatabase::new().await;
    let tmp = std::env::temp_dir().join(format!("teletraan-tls-refused-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp).unwrap();
    let wrong = tmp.join("unrelated-ca.pem");
    std::fs::write(&wrong, store::testing::UNRELATED_CA_PEM).unwrap();
    let out = Command::new(binary("teletraan"))
        .arg("up")
        .env("TELETRAAN_API_LISTEN", "127.0.0.1:0")
        .env("TELETRAAN_GATEWAY_LISTEN", "127.0.0.1:0")
        .env("TELETRAAN_DATABASE_URL", format!("{}?sslmode=verify-full&sslrootcert={}", db.url, wrong.display()))
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("it stops by itself").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "an error, not a panic: {stderr}");
    assert!(stderr.contains("cannot prepare the database"), "what failed is named: {stderr}");
    assert!(stderr.contains("certificate") && stderr.contains("UnknownIssuer"), "and why: {stderr}");
    std::fs::remove_dir_all(tmp).unwrap();
}

#[tokio::test]
async fn the_demo_refuses_tls_settings_before_touching_anything() {
    let tmp = std::env::temp_dir().join(format!("teletraan-tls-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp).unwrap();
    let pki = Pki::new(&tmp);
    let out = Command::new(binary("teletraan"))
        .args(["up", "--demo"])
        .env("TELETRAAN_TLS_CERT", &pki.files.cert)
        .env("TELETRAAN_TLS_KEY", &pki.files.key)
        // Nothing listens here: the refusal comes before any connection.
        .env("TELETRAAN_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("it stops by itself").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "an error, not a panic: {stderr}");
    assert!(stderr.contains("the demo runs over plain HTTP"), "{stderr}");
    std::fs::remove_dir_all(tmp).unwrap();
}
