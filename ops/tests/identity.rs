//! Per-host identity end to end, with the real binaries: a `teletraan-agent` given only an
//! enrollment token enrolls, keeps its credential in a 0600 file and deploys a build whose
//! hooks run as `nobody`, which can neither read that credential nor see the agent's
//! variables. When an admin revokes the credential, the agent enrolls again by itself and
//! deploys the next build.
//!
//! It needs root (to switch to `nobody`); run as another user it says so and checks nothing.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use schema::model::Deploy;
use serde_json::{Value, json};
use support::{AGENT, Api, Server, binary, serve_artifacts, wait_for};
use teletraan::sample;
use tokio::process::{Child, Command};

const HOST: &str = "idn-1";

/// A RESTARTING hook that records who it runs as, its environment, and whether it can read
/// the agent's credential, in files of its build dir.
fn probe_hooks(credential: &Path) -> Vec<(&'static str, String)> {
    let restart = format!(
        "#!/bin/sh\nout=\"$TARGET/probe\"\nid -u > \"$out.uid\"\nid -G > \"$out.groups\"\nenv > \"$out.env\"\n\
         if cat '{}' > /dev/null 2> \"$out.cat\"; then echo read > \"$out.result\"; else echo refused > \"$out.result\"; fi\n",
        credential.display()
    );
    vec![("RESTARTING", restart)]
}

/// The agent with only an enrollment token, hooks as `nobody`, its log in `log`.
fn start_agent(gateway: &str, dir: &Path, enroll_token: &str, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("the agent's log file");
    Command::new(binary("teletraan-agent"))
        .arg("run")
        .args(["--server", gateway, "--host-id", HOST, "--host-name", HOST, "--groups", "idn"])
        .args(["--ping-interval", "1", "--retry-delay", "1", "--max-retries", "2", "--hook-user", "nobody"])
        .arg("--dir")
        .arg(dir)
        .env_remove("TELETRAAN_AGENT_TOKEN")
        .env("TELETRAAN_AGENT_ENROLL_TOKEN", enroll_token)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start teletraan-agent")
}

/// Makes the agent principal `fleet` and an enrollment token for group `idn` that may
/// re-enroll a host; answers its secret.
async fn enroll_token(api: &Api) -> String {
    api.call(reqwest::Method::POST, "/v1/principals", Some(json!({"name": "fleet", "kind": "AGENT"}))).await;
    let body = json!({"principal": "fleet", "kind": "ENROLL", "groups": ["idn"], "reenroll": true});
    let made: Value = api.call(reqwest::Method::POST, "/v1/tokens", Some(body)).await.json().await.unwrap();
    made["token"].as_str().expect("the token's secret").to_string()
}

async fn wait_served(api: &Api, deploy: &Deploy) {
    wait_for(&format!("{HOST} to serve {}", deploy.id), || async {
        let agents = api.agents("idn", "prod").await;
        let d = api.deploy_by_id(deploy.id.as_str()).await;
        let served = agents.len() == 1
            && agents.iter().all(|a| a.deploy_id == deploy.id && a.deploy_stage.as_str() == "SERVING_BUILD");
        served && d.state.as_str() == "SUCCEEDING"
    })
    .await;
}

fn uid_of(user: &str) -> u32 {
    let out = std::process::Command::new("id").args(["-u", user]).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a uid")
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the probe hook recorded in the live build: it ran as `nobody` with no supplementary
/// group, could not read the credential, and saw none of the agent's variables or secrets.
fn check_probe(dir: &Path, secrets: &[&str]) {
    let target = dir.join("targets/idn");
    let nobody = uid_of("nobody");
    assert_eq!(read(target.join("probe.uid")).trim(), nobody.to_string(), "the hook ran as nobody");
    let gid = std::fs::metadata(target.join("probe.uid")).unwrap().gid();
    assert_eq!(read(target.join("probe.groups")).trim(), gid.to_string(), "only nobody's own group");
    assert_eq!(read(target.join("probe.result")).trim(), "refused", "the hook read the credential");
    let cat = read(target.join("probe.cat"));
    assert!(cat.contains("Permission denied"), "{cat}");
    let env = read(target.join("probe.env"));
    for line in env.lines() {
        assert!(!line.starts_with("TELETRAAN_AGENT_"), "an agent variable reached the hook: {line}");
    }
    for s in secrets {
        assert!(!env.contains(s), "a token or credential reached the hook's environment");
    }
    assert!(env.lines().any(|l| l == "USER=nobody"), "{env}");
    assert!(env.lines().any(|l| l == "DEPLOY_STEP=RESTARTING"), "{env}");
    let build = std::fs::read_link(&target).unwrap();
    assert_eq!(std::fs::metadata(&build).unwrap().uid(), nobody, "the build is given to the hook user");
}

fn credential_of(dir: &Path) -> String {
    let path = dir.join("credential");
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the credential is private");
    assert_eq!(meta.uid(), 0, "the credential belongs to the agent's user");
    read(path).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_deploys_with_hooks_as_nobody_and_re_enrolls_after_a_revocation() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: this test switches hooks to `nobody`, which needs root; run it as root");
        return;
    }
    let server = Server::start().await;
    let api = &server.api;
    let tmp = std::env::temp_dir().join(format!("teletraan-identity-{}", uuid::Uuid::new_v4().simple()));
    let dir = tmp.join(HOST);
    let agent_log = tmp.join("agent.log");
    std::fs::create_dir_all(&tmp).unwrap();
    let a_bytes = sample::artifact("A", &probe_hooks(&dir.join("credential"))).unwrap();
    let b_bytes = sample::artifact("B", &probe_hooks(&dir.join("credential"))).unwrap();
    let (a_sha, b_sha) = (sample::sha256_hex(&a_bytes), sample::sha256_hex(&b_bytes));
    let artifacts = serve_artifacts(vec![("a.tar.gz", a_bytes), ("b.tar.gz", b_bytes)]).await;
    api.stage("idn", "prod", "idn", json!({})).await;
    let a = api.publish("idn", &format!("{artifacts}/a.tar.gz"), "aaaaaaa111", Some(&a_sha)).await;
    let b = api.publish("idn", &format!("{artifacts}/b.tar.gz"), "bbbbbbb222", Some(&b_sha)).await;
    let token = enroll_token(api).await;

    // Only an enrollment token: the agent enrolls, then deploys.
    let mut agent = start_agent(&server.gateway, &dir, &token, &agent_log);
    let deploy_a = api.deploy("idn", "prod", &a).await;
    wait_served(api, &deploy_a).await;
    let first = credential_of(&dir);
    assert!(first.starts_with(&format!("thc1~1~{HOST}~{HOST}~idn~")), "{first}");
    check_probe(&dir, &[&token, &first, AGENT]);
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("env_status"), mode("agent.lock"), mode("logs")), (0o600, 0o600, 0o700));
    assert_eq!(mode("") & 0o011, 0o011, "the hook user passes through the base dir");
    let enrolled: Value =
        api.call(reqwest::Method::GET, &format!("/v1/host_credentials/{HOST}"), None).await.json().await.unwrap();
    assert_eq!(enrolled["generation"], 1, "{enrolled}");

    // Revoked by an admin: the agent moves the credential aside, enrolls again, keeps working.
    api.call(reqwest::Method::DELETE, &format!("/v1/host_credentials/{HOST}"), None).await;
    wait_for("the agent to enroll again", || async {
        std::fs::read_to_string(dir.join("credential")).is_ok_and(|c| c.starts_with(&format!("thc1~3~{HOST}~")))
    })
    .await;
    assert_eq!(read(dir.join("credential.retired")).trim(), first, "the revoked credential is kept aside");
    let second = credential_of(&dir);
    let deploy_b = api.deploy("idn", "prod", &b).await;
    wait_served(api, &deploy_b).await;
    assert_eq!(read(dir.join("targets/idn/VERSION")).trim(), "B");
    check_probe(&dir, &[&token, &first, &second, AGENT]);

    // Neither the token nor a credential is ever logged.
    agent.kill().await.unwrap();
    let log = read(agent_log);
    assert!(log.contains("enrolled; credential saved"), "{log}");
    for secret in [&token, &first, &second] {
        assert!(!log.contains(secret.as_str()), "a secret is in the agent's log");
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&tmp);
}
