//! Enrollment against a fake gateway: a host with an enrollment token enrolls before its first
//! ping and pings with its credential (not the static token); a refused enrollment fails
//! `once` at once and writes nothing; a retired credential is moved aside and replaced; an
//! existing credential file is used as it is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::config::Config;
use agent::error::Error;
use agent::runner::Agent;
use agent::testutil::TempDir;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

/// What the fake gateway does and saw.
#[derive(Default)]
struct Gw {
    /// Status of enrollment answers (0: 201 with a new credential).
    enroll_status: u16,
    /// Generation of the last credential issued; older ones are retired.
    generation: u32,
    /// `Authorization` of every enrollment and ping, in order.
    seen: Vec<String>,
}

type Shared = Arc<Mutex<Gw>>;

fn auth(headers: &HeaderMap) -> String {
    headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn enroll(State(gw): State<Shared>, headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
    let mut gw = gw.lock().unwrap();
    gw.seen.push(format!("enroll {}", auth(&headers)));
    if gw.enroll_status != 0 {
        let status = StatusCode::from_u16(gw.enroll_status).unwrap();
        return (status, axum::Json(json!({"code": "unauthorized", "message": "not a live enrollment token"})));
    }
    gw.generation += 1;
    let credential = format!("thc1~{}~host-1~host-1~web~00", gw.generation);
    (
        StatusCode::CREATED,
        axum::Json(json!({"hostId": "host-1", "generation": gw.generation, "credential": credential})),
    )
}

async fn ping(State(gw): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let mut gw = gw.lock().unwrap();
    let token = auth(&headers);
    gw.seen.push(format!("ping {token}"));
    let current = format!("token thc1~{}~", gw.generation);
    if token.starts_with("token thc1~") && !token.starts_with(&current) {
        let refusal = schema::rules::identity::Refusal::Retired;
        return (StatusCode::FORBIDDEN, json!({"code": refusal.code(), "message": refusal.to_string()}).to_string());
    }
    (StatusCode::OK, String::new())
}

async fn start(gw: Shared) -> String {
    let app =
        Router::new().route("/v1/system/enroll", post(enroll)).route("/v1/system/ping", post(ping)).with_state(gw);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn config(dir: &std::path::Path, server: &str) -> Config {
    let mut c = Config::with_defaults(dir.join("agent"), server, "host-1");
    c.ping_retry_delays = vec![Duration::from_millis(10)];
    c.groups = vec!["web".into()];
    c.token = Some("static".into());
    c.enroll_token = Some("enroll-secret".into());
    c
}

fn seen(gw: &Shared) -> Vec<String> {
    std::mem::take(&mut gw.lock().unwrap().seen)
}

#[tokio::test]
async fn a_host_enrolls_pings_with_its_credential_and_replaces_a_retired_one() {
    let t = TempDir::new("enroll");
    let gw = Shared::default();
    let c = config(t.path(), &start(gw.clone()).await);
    let file = c.credential_file.clone();

    let mut agent = Agent::open(c.clone()).unwrap();
    assert!(agent.needs_enrollment());
    agent.once().await.unwrap();
    assert_eq!(seen(&gw), ["enroll token enroll-secret", "ping token thc1~1~host-1~host-1~web~00"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "thc1~1~host-1~host-1~web~00\n");

    // Restarted: the file is used, nothing is enrolled.
    drop(agent);
    let mut agent = Agent::open(c.clone()).unwrap();
    assert!(agent.has_credential() && !agent.needs_enrollment());
    agent.once().await.unwrap();
    assert_eq!(seen(&gw), ["ping token thc1~1~host-1~host-1~web~00"]);

    // Retired by a newer enrollment elsewhere: moved aside, enrolled again, pinged again.
    gw.lock().unwrap().generation = 2;
    agent.once().await.unwrap();
    assert_eq!(
        seen(&gw),
        [
            "ping token thc1~1~host-1~host-1~web~00",
            "enroll token enroll-secret",
            "ping token thc1~3~host-1~host-1~web~00"
        ]
    );
    let retired = std::fs::read_to_string(file.with_file_name("credential.retired")).unwrap();
    assert_eq!(retired, "thc1~1~host-1~host-1~web~00\n");
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("thc1~3~"));
}

#[tokio::test]
async fn a_refused_enrollment_fails_once_at_once_and_writes_nothing() {
    let t = TempDir::new("enroll-refused");
    let gw = Shared::default();
    gw.lock().unwrap().enroll_status = 401;
    let c = config(t.path(), &start(gw.clone()).await);
    let mut agent = Agent::open(c.clone()).unwrap();
    let err = agent.once().await.unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("not a live enrollment token"), "{err}");
    assert!(!err.to_string().contains("enroll-secret"), "{err}");
    assert_eq!(seen(&gw), ["enroll token enroll-secret"], "no ping without a credential");
    assert!(!c.credential_file.exists());
}

#[tokio::test]
async fn without_an_enroll_token_a_retired_credential_is_kept_and_reported() {
    let t = TempDir::new("no-enroll");
    let gw = Shared::default();
    gw.lock().unwrap().generation = 2;
    let mut c = config(t.path(), &start(gw.clone()).await);
    c.enroll_token = None;
    std::fs::create_dir_all(c.credential_file.parent().unwrap()).unwrap();
    std::fs::write(&c.credential_file, "thc1~1~host-1~host-1~web~00\n").unwrap();
    let mut agent = Agent::open(c.clone()).unwrap();
    let err = agent.once().await.unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 403, .. }), "{err}");
    assert_eq!(seen(&gw), ["ping token thc1~1~host-1~host-1~web~00"], "not retried within the ping");
    assert!(c.credential_file.exists(), "kept: there is no way to replace it");
}
