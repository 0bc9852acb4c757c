//! The command line against the real server (`teletraan up`) and simulated fleets, run as the
//! real binary the way a release engineer or a CI job runs it: publish → deploy --wait →
//! status → rollback --mark-bad → history; a failing deploy exits 1; `status --watch` draws a
//! bar in a pseudo-terminal and plain lines without one; bad flags, unknown stages and bad or
//! expired tokens get their exit status and one clear line.

mod support;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use schema::DeployStage;
use serde_json::Value;
use support::{ADMIN, Server, binary};
use teletraan::sample::UNDOWNLOADED_SHA256;
use teletraan::sim::Fleet;

/// The client's environment: a server, a token, a configuration file of its own.
struct Cli {
    url: String,
    token: Option<String>,
    config: PathBuf,
}

impl Cli {
    fn new(server: &Server, dir: &Path) -> Cli {
        Cli { url: server.api.base.clone(), token: Some(ADMIN.into()), config: dir.join("config.toml") }
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(binary("teletraan"));
        c.args(args).env("TELETRAAN_CLI_CONFIG", &self.config).env_remove("TELETRAAN_CONTEXT");
        c.env("TELETRAAN_URL", &self.url);
        match &self.token {
            Some(t) => c.env("TELETRAAN_TOKEN", t),
            None => c.env_remove("TELETRAAN_TOKEN"),
        };
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut c = tokio::process::Command::from(self.command(args));
        c.stdin(Stdio::null());
        tokio::time::timeout(Duration::from_secs(180), c.output()).await.expect("the command ends").expect("it runs")
    }

    /// Runs a command that must succeed; its standard output.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "teletraan {args:?}: {}\nstdout: {stdout}\nstderr: {stderr}", out.status);
        stdout.into_owned()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let text = self.ok(&all).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("teletraan {args:?} gave no JSON ({e}): {text}"))
    }

    /// Runs a command that must fail with `code`; its standard error.
    async fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "teletraan {args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        stderr
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fleet(server: &Server, prefix: &str, n: usize, group: &str, failing: Option<&str>) -> Fleet {
    let mut config =
        support::fleet_config(server, prefix, n, group, Duration::from_millis(300), Duration::from_millis(200));
    if let Some(host) = failing {
        config = config.fail_host(host, DeployStage::Restarting);
    }
    Fleet::start(config).expect("a fleet")
}

/// Waits until the stage's capacity holds `n` hosts that pinged.
async fn hosts_known(server: &Server, n: usize) {
    support::wait_for(&format!("{n} hosts to ping"), || async {
        let hosts: Value =
            server.api.call(reqwest::Method::GET, "/v1/envs/web/prod/hosts", None).await.json().await.unwrap();
        hosts.as_array().is_some_and(|h| h.len() == n)
    })
    .await;
}

async fn publish(cli: &Cli, commit: &str) -> String {
    let url = format!("https://artifacts.example.com/web-{commit}.tar.gz");
    let build = cli
        .json(&[
            "build",
            "publish",
            "--name",
            "web",
            "--artifact-url",
            &url,
            "--sha256",
            UNDOWNLOADED_SHA256,
            "--commit",
            commit,
            "--repo",
            "org/web",
            "--branch",
            "main",
        ])
        .await;
    build["id"].as_str().expect("a build id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_engineer_deploys_waits_and_rolls_back_from_the_command_line() {
    let server = Server::start().await;
    let dir = scratch("release");
    let cli = Cli::new(&server, &dir);
    let out =
        cli.ok(&["env", "create", "web", "prod", "--set", "maxParallel=4", "--set", "description=web servers"]).await;
    assert!(out.contains("Created web/prod."), "{out}");
    cli.ok(&["stage", "capacity", "add", "web", "prod", "--group", "g"]).await;
    assert_eq!(cli.json(&["stage", "capacity", "list", "web", "prod"]).await["groups"], serde_json::json!(["g"]));
    cli.ok(&["stage", "config", "set", "web", "prod", "script", "GREETING=hello", "LEVEL=3"]).await;
    cli.ok(&["stage", "config", "set", "web", "prod", "script", "LEVEL="]).await;
    assert_eq!(
        cli.json(&["stage", "config", "get", "web", "prod", "script"]).await,
        serde_json::json!({"GREETING": "hello"})
    );
    let fleet = fleet(&server, "h", 12, "g", None);
    hosts_known(&server, 12).await;

    // Deploy and wait: plain progress lines (the output is not a terminal), exit 0.
    let b1 = publish(&cli, "1111111abc").await;
    let out = cli.ok(&["deploy", "web", "prod", "--build", &b1, "--wait", "--timeout", "2m"]).await;
    assert!(out.lines().any(|l| l.contains("web/prod") && l.contains("done,") && l.contains("deploying")), "{out}");
    assert!(out.contains("succeeded") && out.contains("12/12 hosts done"), "{out}");
    assert!(!out.contains('\r') && !out.contains("\x1b["), "no terminal codes in plain output: {out:?}");
    let status = cli.json(&["status", "web", "prod"]).await;
    assert_eq!(status["deploy"]["state"], "SUCCEEDING", "{status}");
    assert_eq!(status["deploy"]["successTotal"], 12, "{status}");
    assert_eq!(status["deploy"]["buildId"], b1.as_str());

    // A second build, then a rollback that marks it bad, waited for too.
    let b2 = publish(&cli, "2222222abc").await;
    let d2 = cli.json(&["deploy", "web", "prod", "--build", &b2, "--wait"]).await;
    assert_eq!((d2["buildId"].as_str(), d2["state"].as_str()), (Some(b2.as_str()), Some("SUCCEEDING")), "{d2}");
    let out = cli.ok(&["rollback", "web", "prod", "--mark-bad", "--wait"]).await;
    assert!(out.contains("ROLLBACK") && out.contains("succeeded"), "{out}");
    assert_eq!(cli.json(&["build", "show", &b2]).await["tag"]["value"], "BAD_BUILD");
    let history = cli.json(&["history", "web", "prod"]).await;
    let kinds: Vec<&str> = history.as_array().unwrap().iter().map(|d| d["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds, ["ROLLBACK", "REGULAR", "REGULAR"], "{history}");
    assert_eq!(history[0]["buildId"], b1.as_str());
    let table = cli.ok(&["history", "web", "prod"]).await;
    assert!(table.starts_with("DEPLOY") && table.contains("ROLLBACK"), "{table}");
    let hosts = cli.ok(&["hosts", "web", "prod"]).await;
    assert_eq!(hosts.lines().filter(|l| l.starts_with("h-") && l.contains("done")).count(), 12, "{hosts}");

    // Promote from a canary stage (no hosts of its own), pause and resume.
    cli.ok(&["env", "create", "web", "canary"]).await;
    cli.ok(&["deploy", "web", "canary", "--build", &b1]).await;
    let out = cli.ok(&["promote", "web", "canary", "prod", "--wait"]).await;
    assert!(out.contains("succeeded"), "{out}");
    let status = cli.json(&["status", "web", "prod"]).await;
    assert!(status["deploy"]["fromDeployId"].is_string(), "promoted: {status}");
    cli.ok(&["pause", "web", "prod"]).await;
    assert_eq!(cli.json(&["env", "show", "web", "prod"]).await["envState"], "PAUSED");
    cli.ok(&["resume", "web", "prod"]).await;
    assert_eq!(cli.json(&["env", "show", "web", "prod"]).await["envState"], "NORMAL");
    cli.ok(&["stage", "config", "set", "web", "prod", "promotes", "queueSize=5", "predStage=canary"]).await;
    let promotes = cli.json(&["stage", "config", "get", "web", "prod", "promotes"]).await;
    assert_eq!(
        (promotes["queueSize"].as_i64(), promotes["predStage"].as_str()),
        (Some(5), Some("canary")),
        "{promotes}"
    );
    cli.ok(&["env", "update", "web", "prod", "--set", "maxParallel=6"]).await;
    assert_eq!(cli.json(&["env", "list", "web"]).await[1]["maxParallel"], 6);

    // Tokens: a new one works, a revoked one does not.
    let created = cli.json(&["token", "create", "--principal", "admin", "--description", "ci"]).await;
    let token = created["token"].as_str().expect("the secret").to_string();
    let as_new = Cli { token: Some(token.clone()), ..Cli::new(&server, &dir) };
    as_new.ok(&["env", "list"]).await;
    let listed = cli.ok(&["token", "list"]).await;
    assert!(listed.contains(created["id"].as_str().unwrap()) && !listed.contains(&token), "{listed}");
    cli.ok(&["token", "revoke", created["id"].as_str().unwrap()]).await;
    let error = as_new.fails(1, &["env", "list"]).await;
    assert!(error.contains("unauthorized") && error.contains("(HTTP 401)"), "{error}");

    fleet.stop().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a command with its standard output on a pseudo-terminal; what the terminal received.
fn run_in_pty(cli: &Cli, args: &[&str]) -> (Option<i32>, String) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors, owned below.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptors from openpty, owned once each.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = cli.command(args).stdin(Stdio::null()).stdout(Stdio::from(slave)).spawn().expect("spawn");
    // The parent's copy of the terminal's end went into the child: reads end when it exits.
    let mut reader = std::fs::File::from(master);
    let mut screen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => screen.extend_from_slice(&buf[..n]),
            // EIO: the terminal's other end closed.
            Err(_) => break,
        }
    }
    let status = child.wait().expect("wait");
    (status.code(), String::from_utf8_lossy(&screen).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deploy_exits_1_and_watch_draws_a_bar_in_a_terminal() {
    let server = Server::start().await;
    let dir = scratch("failing");
    let cli = Cli::new(&server, &dir);
    cli.ok(&["env", "create", "web", "prod", "--set", "maxParallel=3"]).await;
    cli.ok(&["stage", "capacity", "add", "web", "prod", "--group", "f"]).await;
    let fleet = fleet(&server, "f", 3, "f", Some("f-02"));
    hosts_known(&server, 3).await;

    // f-02 fails its restart on every try: the deploy turns FAILING and the wait says so.
    let b1 = publish(&cli, "1111111abc").await;
    let error = cli.fails(1, &["deploy", "web", "prod", "--build", &b1, "--wait", "--timeout", "2m", "--quiet"]).await;
    assert!(error.contains("failed") && error.contains("FAILING"), "{error}");

    // Healed, the host takes the next deploy; `status --watch` follows it in a terminal.
    assert!(fleet.heal("f-02"));
    let b2 = publish(&cli, "2222222abc").await;
    let started = cli.json(&["deploy", "web", "prod", "--build", &b2]).await;
    let deploy = started["id"].as_str().unwrap().to_string();
    let args = ["status", "web", "prod", "--watch", "--timeout", "2m"];
    let (code, screen) = tokio::task::spawn_blocking({
        let cli = Cli { url: cli.url.clone(), token: cli.token.clone(), config: cli.config.clone() };
        move || run_in_pty(&cli, &args)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("\r\x1b[2K") && screen.contains('█'), "a bar redrawn in place: {screen:?}");
    assert!(screen.contains(&format!("deploy {deploy} on web/prod succeeded")), "{screen:?}");
    assert!(screen.contains("3/3 hosts done"), "{screen:?}");

    fleet.stop().await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_unknown_stages_and_bad_tokens_get_their_exit_status_and_one_line() {
    let server = Server::start().await;
    let dir = scratch("errors");
    let cli = Cli::new(&server, &dir);
    cli.ok(&["env", "create", "web", "prod"]).await;

    // Usage errors: 2.
    let out = cli.run(&["deploy", "web"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("required"), "{out:?}");
    assert_eq!(cli.run(&["status", "web", "prod", "--watch", "--timeout", "5x"]).await.status.code(), Some(2));
    assert_eq!(cli.run(&["env", "update", "web", "prod", "--set", "novalue"]).await.status.code(), Some(2));
    assert_eq!(cli.run(&["env", "delete", "web", "prod"]).await.status.code(), Some(2), "--yes is needed");
    let unset = Cli { url: String::new(), token: None, ..Cli::new(&server, &dir) };
    let error = unset.fails(2, &["env", "list"]).await;
    assert!(error.contains("teletraan login"), "{error}");

    // Refusals: 1, with the API's code.
    let error = cli.fails(1, &["env", "show", "web", "nope"]).await;
    assert!(error.contains("not_found") && error.contains("(HTTP 404)"), "{error}");
    let error = cli.fails(1, &["status", "web", "prod", "--watch"]).await;
    assert!(error.contains("web/prod has no deploy to follow"), "{error}");
    let error = cli.fails(1, &["status", "web", "nope", "--watch"]).await;
    assert!(error.contains("not_found"), "{error}");
    let error = cli.fails(1, &["deploy", "web", "prod", "--build", "no_such_build"]).await;
    assert!(error.contains("not_found"), "{error}");
    let wrong = Cli { token: Some("not-a-token-of-ours".into()), ..Cli::new(&server, &dir) };
    let error = wrong.fails(1, &["env", "list"]).await;
    assert!(error.contains("unauthorized") && error.contains("teletraan login"), "{error}");

    // An expired token.
    let created = cli.json(&["token", "create", "--principal", "admin", "--expires-in-days", "1"]).await;
    let secret = created["token"].as_str().unwrap().to_string();
    let client = server.db.client().await;
    let hash = store::hash_token(&secret);
    let n = client
        .execute(
            "UPDATE tokens SET expires_at = now() - interval '1 minute' WHERE token_hash = $1",
            &[&hash.as_slice()],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "the token's row");
    let expired = Cli { token: Some(secret), ..Cli::new(&server, &dir) };
    let error = expired.fails(1, &["status", "web", "prod"]).await;
    assert!(error.contains("expired"), "{error}");

    // Nobody answers: 4, after the retries.
    let away = Cli { url: "http://127.0.0.1:9".into(), ..Cli::new(&server, &dir) };
    let error = away.fails(4, &["env", "list"]).await;
    assert!(error.contains("cannot reach"), "{error}");

    // Login: a bad token stores nothing; a good one is stored for its owner only and used.
    let fresh = Cli { url: String::new(), token: None, ..Cli::new(&server, &dir) };
    let mut bad = tokio::process::Command::from(fresh.command(&["login", &server.api.base, "--name", "local"]));
    let bad = bad.env("TELETRAAN_TOKEN", "wrong-token").output().await.unwrap();
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(!fresh.config.exists(), "nothing stored");
    let mut login = tokio::process::Command::from(fresh.command(&["login", &server.api.base, "--name", "local"]));
    let login = login.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut login = login;
    tokio::io::AsyncWriteExt::write_all(login.stdin.as_mut().unwrap(), format!("{ADMIN}\n").as_bytes()).await.unwrap();
    let login = login.wait_with_output().await.unwrap();
    assert!(login.status.success(), "{login:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&fresh.config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is its owner's only");
    }
    let stages = fresh.json(&["env", "list"]).await;
    assert_eq!(stages[0]["stageName"], "prod", "the stored context works: {stages}");
    let contexts = fresh.ok(&["context", "list"]).await;
    assert!(contexts.contains("local") && !contexts.contains(ADMIN), "no token shown: {contexts}");
    assert_eq!(fresh.run(&["context", "use", "nope"]).await.status.code(), Some(2));
    assert_eq!(fresh.run(&["status", "web", "prod", "--context", "nope"]).await.status.code(), Some(2));

    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn completions_and_man_pages_come_from_the_flags() {
    let dir = scratch("docs");
    let cli = Cli { url: String::new(), token: None, config: dir.join("config.toml") };
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef teletraan"), ("fish", "complete -c teletraan")] {
        let script = cli.ok(&["completions", shell]).await;
        assert!(
            script.contains(marker) && script.contains("rollback") && script.contains("mark-bad"),
            "{shell}: {script}"
        );
    }
    let page = cli.ok(&["man"]).await;
    assert!(page.starts_with(".ie") || page.contains(".TH teletraan"), "roff: {page}");
    assert!(page.contains("deploy"), "{page}");
    cli.ok(&["man", "--dir", dir.join("man").to_str().unwrap()]).await;
    let deploy = std::fs::read_to_string(dir.join("man").join("teletraan-deploy.1")).unwrap();
    assert!(deploy.contains("\\-\\-wait") && deploy.contains("\\-\\-timeout"), "{deploy}");
    assert_eq!(cli.run(&["completions", "powershell"]).await.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that answers each request with the next of `answers` (status, body), recording the
/// requests' heads.
async fn scripted_server(answers: Vec<(u16, &'static str)>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for (status, body) in answers {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).await.is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let length = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0usize);
            let mut body_in = vec![0u8; length];
            let _ = conn.read_exact(&mut body_in).await;
            log.lock().unwrap().push(text);
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    (url, seen)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn reads_and_commands_are_retried_with_one_key_and_other_writes_are_sent_once() {
    let dir = scratch("retry");
    let busy = r#"{"code":"unavailable","message":"try again"}"#;
    // A read: two 503s, then the answer.
    let (url, seen) = scripted_server(vec![(503, busy), (503, busy), (200, "[]")]).await;
    let cli = Cli { url, token: Some("t0k3n-for-tests".into()), config: dir.join("config.toml") };
    assert_eq!(cli.json(&["env", "list"]).await, serde_json::json!([]));
    assert_eq!(seen.lock().unwrap().len(), 3, "tried three times");

    // A command: the retry carries the first attempt's idempotency key.
    let paused = r#"{"id":"d1","alias":null,"envId":"e1","buildId":"b1","type":"REGULAR","state":"RUNNING","startDate":1,"operator":"ci","lastUpdateDate":1,"description":null,"successTotal":0,"failTotal":0,"total":0,"successDate":null,"acceptanceStatus":"PENDING_DEPLOY","fromDeployId":null}"#;
    let (url, seen) = scripted_server(vec![(502, busy), (200, paused)]).await;
    let cli = Cli { url, ..cli };
    cli.ok(&["pause", "web", "prod"]).await;
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    let keys: Vec<_> = heads.iter().map(|h| header(h, "idempotency-key").map(str::to_string)).collect();
    assert!(keys[0].is_some() && keys[0] == keys[1], "one key for both attempts: {heads:?}");

    // Another write: sent once, the failure said, status 4.
    let (url, seen) = scripted_server(vec![(503, busy), (200, "{}")]).await;
    let cli = Cli { url, ..cli };
    let error = cli.fails(4, &["env", "create", "web", "prod"]).await;
    assert!(error.contains("unavailable: try again (HTTP 503)"), "{error}");
    assert_eq!(seen.lock().unwrap().len(), 1, "never repeated blindly");
    let _ = std::fs::remove_dir_all(&dir);
}
