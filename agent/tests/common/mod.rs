//! A small fake gateway for the loop tests: it walks one deploy through Teletraan's stage
//! sequence from the agent's reports, serves artifacts (with their `.sha256`, unless told
//! otherwise), and records every ping. It can also
//! stall an artifact (no answer until released) and hold the answer to a ping that reports a
//! given stage and status, so a test can kill the agent at that point.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schema::ping::{PingReport, PingRequest};
use schema::{AgentStatus, DeployStage};
use serde_json::{Value, json};

pub const ENV_ID: &str = "EnvIdWeb000000000000aa";

const SEQUENCE: [DeployStage; 8] = [
    DeployStage::PreDownload,
    DeployStage::Downloading,
    DeployStage::PostDownload,
    DeployStage::Staging,
    DeployStage::PreRestart,
    DeployStage::Restarting,
    DeployStage::PostRestart,
    DeployStage::ServingBuild,
];

/// One deploy the fake gateway walks.
#[derive(Debug, Clone)]
pub struct Target {
    pub env_id: String,
    pub env_name: String,
    pub deploy_id: String,
    pub build: Value,
    pub script_variables: Value,
}

/// What the fake gateway answers.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// Always NOOP.
    #[default]
    Noop,
    /// Walk this deploy of env `web` ([`ENV_ID`]).
    Deploy { deploy_id: String, build: Value, script_variables: Value },
    /// Walk these deploys, one goal at a time, the first unfinished one first.
    Many(Vec<Target>),
    /// DELETE (without env name) while the agent still reports the env.
    Delete,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub mode: Mode,
    pub pings: Vec<PingRequest>,
    pub artifacts: HashMap<String, Vec<u8>>,
    /// Artifacts answered only once released.
    pub stalled: HashSet<String>,
    /// Every artifact request, by name.
    pub requested: Vec<String>,
    /// A ping whose env report is this stage and status is answered only once released.
    pub hold: Option<(DeployStage, AgentStatus)>,
    /// Pings held so far.
    pub held: usize,
}

pub struct Shared {
    pub state: Mutex<FakeState>,
    wake: tokio::sync::Notify,
}

impl Shared {
    /// Waits until `still` no longer holds (checked each time the test changes something).
    async fn wait_while(&self, still: impl Fn(&FakeState) -> bool) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !still(&self.state.lock().unwrap()) {
                return;
            }
            woken.await;
        }
    }
}

#[derive(Clone)]
pub struct Fake {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
}

impl Fake {
    pub async fn start() -> Fake {
        let shared = Arc::new(Shared { state: Mutex::new(FakeState::default()), wake: tokio::sync::Notify::new() });
        let app = axum::Router::new()
            .route("/v1/system/ping", post(ping))
            .route("/artifacts/{name}", get(artifact))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { shared, addr }
    }

    fn change(&self, f: impl FnOnce(&mut FakeState)) {
        f(&mut self.shared.state.lock().unwrap());
        self.shared.wake.notify_waiters();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.change(|s| s.mode = mode);
    }

    /// Serves `name`, and its digest at `<name>.sha256` (as `sha256sum` writes it), as CI
    /// publishes artifacts; a `.sha256` name is served as given.
    pub fn serve(&self, name: &str, bytes: Vec<u8>) {
        if !name.ends_with(".sha256") {
            let digest = agent::download::sha256_hex(&bytes);
            self.serve_only(&format!("{name}.sha256"), format!("{digest}  {name}\n").into_bytes());
        }
        self.serve_only(name, bytes);
    }

    /// Serves `name` alone (no sidecar).
    pub fn serve_only(&self, name: &str, bytes: Vec<u8>) {
        self.change(|s| {
            s.artifacts.insert(name.to_string(), bytes);
        });
    }

    /// Requests for `name` get no answer until [`Fake::unstall`].
    pub fn stall(&self, name: &str) {
        self.change(|s| {
            s.stalled.insert(name.to_string());
        });
    }

    pub fn unstall(&self, name: &str) {
        self.change(|s| {
            s.stalled.remove(name);
        });
    }

    /// Artifact names requested so far.
    pub fn requested(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().requested.clone()
    }

    /// Pings reporting `stage` with `status` get no answer until [`Fake::release`].
    pub fn hold(&self, stage: DeployStage, status: AgentStatus) {
        self.change(|s| s.hold = Some((stage, status)));
    }

    pub fn release(&self) {
        self.change(|s| s.hold = None);
    }

    /// How many pings were held.
    pub fn held(&self) -> usize {
        self.shared.state.lock().unwrap().held
    }

    pub fn pings(&self) -> Vec<PingRequest> {
        self.shared.state.lock().unwrap().pings.clone()
    }

    /// The env's report in every ping, as `STAGE STATUS` (`-` when the ping had none).
    pub fn report_trail(&self) -> Vec<String> {
        self.pings()
            .iter()
            .map(|p| match env_report(p) {
                Some(r) => format!(
                    "{} {}",
                    r.deploy_stage.map(|s| s.as_str()).unwrap_or("null"),
                    r.agent_status.map(|s| s.as_str()).unwrap_or("null")
                ),
                None => "-".to_string(),
            })
            .collect()
    }
}

pub fn env_report(p: &PingRequest) -> Option<&PingReport> {
    report_of(p, ENV_ID)
}

pub fn report_of<'a>(p: &'a PingRequest, env_id: &str) -> Option<&'a PingReport> {
    p.reports.as_ref()?.iter().find(|r| r.env_id.as_deref() == Some(env_id))
}

/// The next stage for a host that sent `report` for `deploy_id`; `None` when done or failed.
fn next_stage(report: Option<&PingReport>, deploy_id: &str) -> Option<DeployStage> {
    match report {
        Some(r) if r.deploy_id.as_deref() == Some(deploy_id) => {
            let stage = r.deploy_stage.unwrap_or(DeployStage::Unknown);
            match r.agent_status {
                Some(schema::AgentStatus::Succeeded) => {
                    SEQUENCE.iter().position(|x| *x == stage).and_then(|i| SEQUENCE.get(i + 1)).copied()
                }
                Some(st) if st.is_fatal() => None,
                _ => Some(stage),
            }
        }
        _ => Some(DeployStage::PreDownload),
    }
}

fn held_by(s: &FakeState, report: Option<&PingReport>) -> bool {
    match (s.hold, report) {
        (Some((stage, status)), Some(r)) => r.deploy_stage == Some(stage) && r.agent_status == Some(status),
        _ => false,
    }
}

async fn ping(State(shared): State<Arc<Shared>>, Json(req): Json<PingRequest>) -> Json<Value> {
    let report = env_report(&req).cloned();
    let held = {
        let mut s = shared.state.lock().unwrap();
        s.pings.push(req);
        let held = held_by(&s, report.as_ref());
        s.held += usize::from(held);
        held
    };
    if held {
        shared.wait_while(|s| held_by(s, report.as_ref())).await;
    }
    let s = shared.state.lock().unwrap();
    let noop = json!({"opCode": "NOOP", "deployGoal": null});
    match s.mode.clone() {
        Mode::Noop => Json(noop),
        Mode::Delete => match report {
            Some(_) => {
                Json(json!({"opCode": "DELETE", "deployGoal": goal("gone", DeployStage::ServingBuild, None, None)}))
            }
            None => Json(noop),
        },
        Mode::Deploy { deploy_id, build, script_variables } => {
            let t = Target { env_id: ENV_ID.into(), env_name: "web".into(), deploy_id, build, script_variables };
            Json(walk(&req_reports(&s), &[t]))
        }
        Mode::Many(targets) => Json(walk(&req_reports(&s), &targets)),
    }
}

fn req_reports(s: &FakeState) -> PingRequest {
    s.pings.last().cloned().unwrap_or_default()
}

fn walk(req: &PingRequest, targets: &[Target]) -> Value {
    for t in targets {
        let Some(stage) = next_stage(report_of(req, &t.env_id), &t.deploy_id) else { continue };
        let b = (stage == DeployStage::Downloading).then(|| t.build.clone());
        let v = (stage == DeployStage::PreDownload).then(|| t.script_variables.clone());
        let mut g = goal(&t.deploy_id, stage, b, v);
        g["envId"] = json!(t.env_id);
        g["envName"] = json!(t.env_name);
        g["stageName"] = json!("prod");
        return json!({"opCode": "DEPLOY", "deployGoal": g});
    }
    json!({"opCode": "NOOP", "deployGoal": null})
}

fn goal(deploy_id: &str, stage: DeployStage, build: Option<Value>, vars: Option<Value>) -> Value {
    let mut g = json!({
        "deployId": deploy_id, "deployType": "REGULAR", "envId": ENV_ID, "envName": null, "stageName": null,
        "stageType": "DEFAULT", "deployStage": stage.as_str(), "deployAlias": null, "firstDeploy": true,
        "isDocker": false, "agentConfigs": {}
    });
    if let Some(b) = build {
        g["build"] = b;
    }
    if let Some(v) = vars {
        g["scriptVariables"] = v;
    }
    g
}

async fn artifact(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    shared.state.lock().unwrap().requested.push(name.clone());
    shared.wait_while(|s| s.stalled.contains(&name)).await;
    match shared.state.lock().unwrap().artifacts.get(&name) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub fn build_json(id: &str, url: &str, sha256: Option<&str>) -> Value {
    json!({
        "id": id, "name": "web", "artifactUrl": url, "type": "GitHub", "repo": "org/web", "branch": "main",
        "commit": "abcdef0123456789", "commitShort": "abcdef0", "commitInfo": null, "commitDate": 1795826082513i64,
        "publishInfo": null, "publisher": "ci", "publishDate": 1795826082513i64, "artifactSha256": sha256
    })
}

const HOOKS: [&str; 6] =
    ["PRE_DOWNLOAD", "POST_DOWNLOAD", "PRE_RESTART", "RESTARTING", "POST_RESTART", "SERVING_BUILD"];

/// The files of a build whose every hook appends `<STEP> build=$BUILD_ID from=<tag>` to
/// `$RECORD` and dumps its environment to `$RECORD.<STEP>.env`. `extra` hooks replace the
/// default body; `files` are added as they are. Each entry: path, content, mode.
pub fn build_files(tag: &str, extra: &[(&str, &str)], files: &[(&str, &str)]) -> Vec<(String, String, u32)> {
    let mut out = Vec::new();
    for stage in HOOKS {
        let body = extra.iter().find(|(s, _)| *s == stage).map(|(_, b)| b.to_string()).unwrap_or_else(|| {
            format!(
                "echo \"$DEPLOY_STEP build=$BUILD_ID from={tag}\" >> \"$RECORD\"\nenv | sort > \"$RECORD.$DEPLOY_STEP.env\""
            )
        });
        out.push((format!("teletraan/{stage}"), format!("#!/bin/sh\n{body}\n"), 0o755));
    }
    out.push(("VERSION".into(), tag.into(), 0o644));
    for (path, text) in files {
        out.push((path.to_string(), text.to_string(), 0o644));
    }
    out
}

/// A tar.gz of [`build_files`] without extra files.
pub fn build_archive(tag: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    build_tar_gz(&build_files(tag, extra, &[]))
}

/// A zip (deflate) of these files.
pub fn build_zip(files: &[(String, String, u32)]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, text, mode) in files {
        w.start_file(path.as_str(), SimpleFileOptions::default().unix_permissions(*mode)).unwrap();
        w.write_all(text.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A tar.gz of these files.
pub fn build_tar_gz(files: &[(String, String, u32)]) -> Vec<u8> {
    let mut data = Vec::new();
    {
        let mut b = tar::Builder::new(&mut data);
        for (path, text, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(*mode);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        b.finish().unwrap();
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap()
}
