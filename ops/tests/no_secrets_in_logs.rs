//! No secret in any log, with the real binaries: `teletraan up` at `RUST_LOG=debug` (once with
//! text logs, once with JSON logs), two real agents at `RUST_LOG=debug` (one with the static
//! agent token, one enrolling with an ENROLL token for a credential of its own), a stage with a
//! secret script variable and signed webhooks whose headers and URL carry secrets, builds
//! published with a CI token, two deploys rolled out. Then every log the processes wrote (the
//! server's standard error and output, the agents' standard error, the hooks' logs on the
//! hosts) is read: none may hold any secret, and each must hold what shows it was written at
//! debug level during the rollout, so the check cannot pass on empty logs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::RawQuery;
use axum::http::HeaderMap;
use axum::routing::post;
use schema::model::{Build, Deploy};
use serde_json::{Value, json};
use support::{ADMIN, AGENT, Api, Server, binary, serve_artifacts, wait_for};
use teletraan::sample;
use tokio::process::{Child, Command};

const ENV: &str = "sec";
/// The secret script variable's value.
const SCRIPT_SECRET: &str = "db-pass-7f3a91c2e5";
/// The stage's webhook signing secret.
const WEBHOOK_SECRET: &str = "hook-hmac-key-5be2c0d9a1";
/// A bearer token in a webhook's headers.
const HEADER_SECRET: &str = "hook-bearer-9d41e7b3";
/// A token in a webhook's URL.
const URL_SECRET: &str = "hook-url-token-62ac04f1";
/// A token nobody issued, sent by mistake (a mistyped token is often a real one).
const WRONG_TOKEN: &str = "mistyped-token-0c3b8e55aa";

/// A RESTARTING hook that says it ran and records the digest of the secret it was given (never
/// the secret), so the test knows the secret reached the host.
fn hooks(version: &str) -> Vec<(&'static str, String)> {
    let restart = format!(
        "#!/bin/sh\necho \"restarting {version}\"\necho \"a line on stderr\" >&2\n\
         printf %s \"$DB_PASSWORD\" | sha256sum | cut -d' ' -f1 > \"$TARGET/secret.sha256\"\n"
    );
    vec![("RESTARTING", restart)]
}

/// What a webhook receiver got: each request's query, `Authorization` header and whether it
/// was signed.
type Hooks = Arc<Mutex<Vec<(String, String, bool)>>>;

async fn webhook_receiver() -> (String, Hooks) {
    let got: Hooks = Arc::default();
    let log = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |RawQuery(query): RawQuery, headers: HeaderMap| async move {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let signed = header("x-teletraan-signature").starts_with("sha256=");
            log.lock().unwrap().push((query.unwrap_or_default(), header("authorization"), signed));
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// A real agent at debug level, its standard error in `log`; with `enroll`, it has only that
/// enrollment token, else the static agent token.
fn start_agent(gateway: &str, host: &str, dir: &Path, enroll: Option<&str>, log: &Path) -> Child {
    let mut agent = Command::new(binary("teletraan-agent"));
    agent
        .arg("run")
        .args(["--server", gateway, "--host-id", host, "--host-name", host, "--groups", ENV])
        .args(["--ping-interval", "1", "--retry-delay", "1", "--max-retries", "2"])
        .arg("--dir")
        .arg(dir)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(std::fs::File::create(log.with_extension("stdout")).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .kill_on_drop(true);
    match enroll {
        Some(token) => agent.env_remove("TELETRAAN_AGENT_TOKEN").env("TELETRAAN_AGENT_ENROLL_TOKEN", token),
        None => agent.env("TELETRAAN_AGENT_TOKEN", AGENT),
    };
    agent.spawn().expect("start teletraan-agent")
}

/// A request with another principal's token; the answer must be `status`.
async fn call_as(
    api: &Api,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let mut req =
        api.http.request(method, format!("{}{path}", api.base)).header("Authorization", format!("token {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("API reachable");
    assert_eq!(resp.status().as_u16(), status, "{path}");
    resp.json().await.unwrap_or(Value::Null)
}

async fn wait_rolled_out(api: &Api, deploy: &Deploy, hosts: &[&str]) {
    wait_for(&format!("the rollout of {}", deploy.id), || async {
        let agents = api.agents(ENV, "prod").await;
        let d = api.deploy_by_id(deploy.id.as_str()).await;
        let all = agents.len() == hosts.len()
            && agents.iter().all(|a| a.deploy_id == deploy.id && a.deploy_stage.as_str() == "SERVING_BUILD");
        all && d.state.as_str() == "SUCCEEDING"
    })
    .await;
}

/// Every file of the hosts' hook logs (`<dir>/logs/`).
fn hook_logs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        if let Ok(entries) = std::fs::read_dir(dir.join("logs")) {
            out.extend(entries.flatten().map(|e| e.path()));
        }
    }
    out
}

/// `text` without its terminal colour codes (the text format colours levels and field names),
/// so that nothing hides between two codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then a final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the rollout with logs in `format` (`text` or `json`) and checks every log.
async fn rollout_and_check_logs(format: &str) {
    let tmp = std::env::temp_dir().join(format!("teletraan-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp).unwrap();
    let server_log = tmp.join("server.log");
    let settings = [("RUST_LOG", "debug"), ("TELETRAAN_LOG_FORMAT", format), ("TELETRAAN_WEBHOOK_ATTEMPTS", "2")];
    let server = Server::start_logging(&settings, &server_log).await;
    let api = &server.api;
    let (receiver, hooks_got) = webhook_receiver().await;

    api.stage(ENV, "prod", ENV, json!({"maxParallel": 1})).await;
    api.call(reqwest::Method::PUT, &format!("/v1/envs/{ENV}/prod/script_configs"), Some(json!({"PLAIN": "visible"})))
        .await;
    api.call(
        reqwest::Method::PUT,
        &format!("/v1/envs/{ENV}/prod/script_secrets"),
        Some(json!({"DB_PASSWORD": SCRIPT_SECRET})),
    )
    .await;
    let hook = |phase: &str| {
        json!({"url": format!("{receiver}/hook?phase={phase}&token={URL_SECRET}"),
               "headers": format!("Authorization:Bearer {HEADER_SECRET};X-Stage:$TELETRAAN_STAGE_NAME"),
               "body": "{\"deploy\":\"$TELETRAAN_DEPLOY_ID\"}"})
    };
    // A hook whose receiver is down: its failed attempts are logged with their errors.
    let unreachable = json!({"url": format!("http://127.0.0.1:1/hook?token={URL_SECRET}"),
                             "headers": format!("Authorization:Bearer {HEADER_SECRET}")});
    api.call(
        reqwest::Method::PUT,
        &format!("/v1/envs/{ENV}/prod/web_hooks"),
        Some(json!({"preDeployHooks": [hook("pre"), unreachable], "postDeployHooks": [hook("post")],
                    "secret": WEBHOOK_SECRET})),
    )
    .await;
    // A CI token publishes the builds; an enrollment token is all the second host has.
    let ci = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/envs/{ENV}/token_roles"),
            Some(json!({"name": "ci", "role": "PUBLISHER"})),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .expect("the CI token")
        .to_string();
    api.call(reqwest::Method::POST, "/v1/principals", Some(json!({"name": "fleet", "kind": "AGENT"}))).await;
    let enroll = api
        .call(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(json!({"principal": "fleet", "kind": "ENROLL", "groups": [ENV]})),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .expect("the enrollment token")
        .to_string();
    // Tokens sent by mistake, to the API and to the gateway.
    call_as(api, WRONG_TOKEN, reqwest::Method::GET, "/v1/envs", None, 401).await;
    let ping = api
        .http
        .post(format!("{}/v1/system/ping", server.gateway))
        .header("Authorization", format!("token {WRONG_TOKEN}"))
        .json(&json!({"hostId": "sec-x", "hostName": "sec-x", "hostIp": "127.0.0.1", "groups": [ENV]}))
        .send()
        .await
        .unwrap();
    assert!(ping.status().is_client_error(), "{}", ping.status());

    let (a_bytes, b_bytes) = (sample::artifact("A", &hooks("A")).unwrap(), sample::artifact("B", &hooks("B")).unwrap());
    let (a_sha, b_sha) = (sample::sha256_hex(&a_bytes), sample::sha256_hex(&b_bytes));
    let artifacts = serve_artifacts(vec![("a.tar.gz", a_bytes), ("b.tar.gz", b_bytes)]).await;
    let publish = |file: &str, commit: &str, sha: &str| {
        json!({"name": ENV, "artifactUrl": format!("{artifacts}/{file}"), "artifactSha256": sha,
               "repo": "org/sec", "branch": "main", "commit": commit})
    };
    let build = |v: Value| serde_json::from_value::<Build>(v).expect("a build");
    let a = build(
        call_as(api, &ci, reqwest::Method::POST, "/v1/builds", Some(publish("a.tar.gz", "aaaaaaa111", &a_sha)), 201)
            .await,
    );
    let b = build(
        call_as(api, &ci, reqwest::Method::POST, "/v1/builds", Some(publish("b.tar.gz", "bbbbbbb222", &b_sha)), 201)
            .await,
    );

    let hosts = ["sec-1", "sec-2"];
    let dirs: Vec<PathBuf> = hosts.iter().map(|h| tmp.join(h)).collect();
    let agent_logs: Vec<PathBuf> = hosts.iter().map(|h| tmp.join(format!("{h}.log"))).collect();
    let mut agents = vec![
        start_agent(&server.gateway, hosts[0], &dirs[0], None, &agent_logs[0]),
        start_agent(&server.gateway, hosts[1], &dirs[1], Some(&enroll), &agent_logs[1]),
    ];
    let deploy_a = api.deploy(ENV, "prod", &a).await;
    wait_rolled_out(api, &deploy_a, &hosts).await;
    let deploy_b = api.deploy(ENV, "prod", &b).await;
    wait_rolled_out(api, &deploy_b, &hosts).await;
    // Each deploy's pre hook, and its post hook once it succeeded; the unreachable hook given up.
    wait_for("the webhooks", || async { hooks_got.lock().unwrap().len() >= 4 }).await;
    wait_for("the unreachable hook to be given up", || async {
        let failed = api
            .call(reqwest::Method::GET, &format!("/v1/envs/{ENV}/prod/web_hooks/deliveries?status=FAILED"), None)
            .await
            .json::<Vec<Value>>()
            .await
            .unwrap();
        failed.len() == 2
    })
    .await;

    // The secrets were in play: the hosts got the script secret, the receiver the header and
    // URL secrets with a signature, the second host a credential of its own.
    for dir in &dirs {
        let digest = std::fs::read_to_string(dir.join(format!("targets/{ENV}/secret.sha256"))).unwrap();
        assert_eq!(digest.trim(), sample::sha256_hex(SCRIPT_SECRET.as_bytes()), "the hook got the secret");
    }
    for (query, authorization, signed) in hooks_got.lock().unwrap().iter() {
        assert!(query.contains(URL_SECRET) && authorization == &format!("Bearer {HEADER_SECRET}") && *signed);
    }
    let credential = std::fs::read_to_string(dirs[1].join("credential")).expect("the credential").trim().to_string();
    assert!(credential.starts_with("thc1~"), "{credential}");
    let signing_key: Vec<u8> =
        server.db.client().await.query_one("SELECT secret FROM signing_keys", &[]).await.unwrap().get(0);

    for agent in &mut agents {
        agent.kill().await.unwrap();
    }
    server.stop().await;

    let signature = credential.rsplit('~').next().unwrap_or_default().to_string();
    let secrets: Vec<(&str, String)> = vec![
        ("the admin token", ADMIN.to_string()),
        ("the agent token", AGENT.to_string()),
        ("the CI token", ci),
        ("the enrollment token", enroll),
        ("the host's credential", credential.clone()),
        ("the credential's signature", signature),
        ("the signing key (hex)", hex(&signing_key)),
        ("the signing key (bytes)", format!("{signing_key:?}").trim_matches(['[', ']']).to_string()),
        ("the secret script variable", SCRIPT_SECRET.to_string()),
        ("the webhook secret", WEBHOOK_SECRET.to_string()),
        ("the webhook's header secret", HEADER_SECRET.to_string()),
        ("the webhook's URL secret", URL_SECRET.to_string()),
        ("a token sent by mistake", WRONG_TOKEN.to_string()),
    ];
    // Every log, and what shows it is the log of this rollout at debug level.
    let debug_line = if format == "json" { r#""level":"DEBUG""# } else { " DEBUG " };
    let mut logs: Vec<(PathBuf, Vec<&str>)> = vec![
        (server_log.clone(), vec![debug_line, "command applied", "webhook attempt", "cannot connect"]),
        (server_log.with_extension("stdout"), vec!["teletraan: api http://"]),
        (agent_logs[0].clone(), vec![" DEBUG "]),
        (agent_logs[1].clone(), vec![" DEBUG ", "enrolled; credential saved"]),
        (agent_logs[0].with_extension("stdout"), vec![]),
        (agent_logs[1].with_extension("stdout"), vec![]),
    ];
    let hook_logs = hook_logs(&dirs);
    assert_eq!(hook_logs.len(), 2, "a hook log per host: {hook_logs:?}");
    logs.extend(hook_logs.into_iter().map(|p| (p, vec!["restarting B", "a line on stderr"])));
    for (path, expected) in &logs {
        let text = strip_ansi(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        for e in expected {
            assert!(text.contains(e), "{} lacks {e:?}: is it the log of this rollout?", path.display());
        }
        for (what, secret) in &secrets {
            assert!(secret.len() >= 8, "{what} is too short to look for");
            assert!(!text.contains(secret.as_str()), "{what} is in {}", path.display());
        }
    }
    let server_lines = std::fs::read_to_string(&server_log).unwrap().lines().count();
    assert!(server_lines > 100, "the server logged {server_lines} lines at debug level");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_in_any_text_log_of_a_rollout_at_debug_level() {
    rollout_and_check_logs("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_in_any_json_log_of_a_rollout_at_debug_level() {
    rollout_and_check_logs("json").await;
}
