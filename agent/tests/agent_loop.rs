//! The agent loop against a fake gateway: a full deploy over HTTP, a second deploy (the old
//! build's hooks run before the switch), DELETE, checksum mismatch, truncated downloads, and an
//! artifact without any checksum (refused unless the development flag allows it).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agent::config::Config;
use agent::download::sha256_hex;
use agent::runner::Agent;
use agent::testutil::{TempDir, listing};
use common::{Fake, Mode, build_archive, build_json};
use serde_json::json;

const B1: &str = "BuildOne00000000000000_abcdef0";
const B2: &str = "BuildTwo00000000000000_abcdef0";

fn config(dir: &std::path::Path, server: &str) -> Config {
    let mut c = Config::with_defaults(dir.join("agent"), server, "host-1");
    c.ping_retry_delays = vec![Duration::from_millis(10)];
    c.retry_delay = Duration::ZERO;
    c.groups = vec!["web".into()];
    c
}

fn deploy(fake: &Fake, deploy_id: &str, build_id: &str, file: &str, sha: Option<&str>, record: &std::path::Path) {
    let url = format!("{}/artifacts/{file}", fake.url());
    fake.set_mode(Mode::Deploy {
        deploy_id: deploy_id.into(),
        build: build_json(build_id, &url, sha),
        script_variables: json!({"RECORD": record.to_string_lossy(), "PORT": "8080"}),
    });
}

fn env_file(path: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_deploy_then_redeploy_then_delete() {
    let t = TempDir::new("loop");
    let fake = Fake::start().await;
    let record = t.path().join("record");
    let art1 = build_archive("one", &[]);
    fake.serve("one.tar.gz", art1.clone());
    fake.serve("one.tar.gz.sha256", format!("{}  one.tar.gz\n", sha256_hex(&art1)).into_bytes());
    deploy(&fake, "DeployOne", B1, "one.tar.gz", None, &record);

    let mut agent = Agent::open(config(t.path(), &fake.url())).unwrap();
    let layout = agent.layout().clone();
    let summary = agent.round().await.unwrap();
    assert_eq!(summary.steps, 8);

    // Reports: none at first, then each stage SUCCEEDED, right after it ran.
    let trail = fake.report_trail();
    let expected = [
        "-",
        "PRE_DOWNLOAD SUCCEEDED",
        "DOWNLOADING SUCCEEDED",
        "POST_DOWNLOAD SUCCEEDED",
        "STAGING SUCCEEDED",
        "PRE_RESTART SUCCEEDED",
        "RESTARTING SUCCEEDED",
        "POST_RESTART SUCCEEDED",
        "SERVING_BUILD SUCCEEDED",
    ];
    assert_eq!(trail, expected);
    let first = &fake.pings()[0];
    assert_eq!(first.host_id.as_deref(), Some("host-1"));
    assert_eq!(first.groups.as_deref(), Some(&["web".to_string()][..]));
    let last = fake.pings().last().cloned().unwrap();
    let report = common::env_report(&last).unwrap();
    assert_eq!(report.deploy_id.as_deref(), Some("DeployOne"));
    assert_eq!((report.error_code, report.fail_count), (Some(0), Some(0)));

    // A fresh host has no live build at PRE/POST_DOWNLOAD: those hooks do not run.
    let hooks_run = std::fs::read_to_string(&record).unwrap();
    let expected = [
        format!("PRE_RESTART build={B1} from=one"),
        format!("RESTARTING build={B1} from=one"),
        format!("POST_RESTART build={B1} from=one"),
        format!("SERVING_BUILD build={B1} from=one"),
    ];
    assert_eq!(hooks_run.lines().collect::<Vec<_>>(), expected);
    assert_eq!(layout.live_build_id("web").as_deref(), Some(B1));
    assert_eq!(std::fs::read_link(layout.target("web")).unwrap(), layout.build_dir(B1));
    assert_eq!(
        std::fs::read_to_string(layout.script_config("web")).unwrap(),
        format!("PORT=8080\nRECORD={}\n", record.display())
    );

    // The hook environment is Teletraan's.
    let env = env_file(&t.path().join("record.PRE_RESTART.env"));
    let want = [
        ("BUILDS_DIR", layout.builds_dir().display().to_string()),
        ("BUILD_BRANCH", "main".into()),
        ("BUILD_COMMIT", "abcdef0123456789".into()),
        ("BUILD_ID", B1.into()),
        ("BUILD_NAME", "web".into()),
        ("BUILD_REPO", "org/web".into()),
        ("BUILD_URL", format!("{}/artifacts/one.tar.gz", fake.url())),
        ("COMPUTE_ENV_TYPE", "PRODUCTION".into()),
        ("DEPLOY_ID", "DeployOne".into()),
        ("DEPLOY_STEP", "PRE_RESTART".into()),
        ("DEPLOY_TYPE", "REGULAR".into()),
        ("ENV_NAME", "web".into()),
        ("FIRST_DEPLOY", "True".into()),
        ("OPCODE", "DEPLOY".into()),
        ("PORT", "8080".into()),
        ("STAGE_NAME", "prod".into()),
        ("TARGET", layout.target("web").display().to_string()),
    ];
    for (k, v) in &want {
        assert_eq!(env.get(*k), Some(v), "{k} in the hook environment");
    }
    assert!(!env.contains_key("IS_DOCKER"));
    assert!(env.contains_key("PATH"), "the agent's own environment is kept");
    assert!(!env.keys().any(|k| k.starts_with("TELETRAAN_AGENT_")));

    // A second deploy: PRE_DOWNLOAD and POST_DOWNLOAD run the OLD build's hooks; at
    // PRE_DOWNLOAD the BUILD_* variables still describe the old build.
    std::fs::remove_file(&record).unwrap();
    let art2 = build_archive("two", &[]);
    fake.serve("two.tar.gz", art2.clone());
    deploy(&fake, "DeployTwo", B2, "two.tar.gz", Some(&sha256_hex(&art2)), &record);
    agent.round().await.unwrap();
    let hooks_run = std::fs::read_to_string(&record).unwrap();
    let expected = [
        format!("PRE_DOWNLOAD build={B1} from=one"),
        format!("POST_DOWNLOAD build={B2} from=one"),
        format!("PRE_RESTART build={B2} from=two"),
        format!("RESTARTING build={B2} from=two"),
        format!("POST_RESTART build={B2} from=two"),
        format!("SERVING_BUILD build={B2} from=two"),
    ];
    assert_eq!(hooks_run.lines().collect::<Vec<_>>(), expected);
    assert_eq!(layout.live_build_id("web").as_deref(), Some(B2));
    assert_eq!(agent.envs()["web"].previous_build_id.as_deref(), Some(B1));
    let saved = agent::status::load(&layout.status_file());
    assert_eq!(saved.envs, *agent.envs(), "the status file holds what the agent knows");

    // DELETE without env name: found by env id, forgotten, and no longer reported.
    fake.set_mode(Mode::Delete);
    let before = fake.pings().len();
    agent.round().await.unwrap();
    assert!(agent.envs().is_empty());
    assert!(agent::status::load(&layout.status_file()).envs.is_empty());
    assert!(!layout.script_config("web").exists());
    let pings = fake.pings();
    assert_eq!(pings.len(), before + 2, "the DELETE ping, then one without the env");
    assert!(common::env_report(&pings[before]).is_some());
    assert!(pings.last().unwrap().reports.as_ref().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_fails_the_download_and_nothing_is_staged() {
    let t = TempDir::new("loop-sha");
    let fake = Fake::start().await;
    let record = t.path().join("record");
    let art = build_archive("one", &[]);
    fake.serve("one.tar.gz", art.clone());
    let wrong = sha256_hex(b"something else");
    fake.serve("one.tar.gz.sha256", format!("{wrong}\n").into_bytes());
    deploy(&fake, "DeployOne", B1, "one.tar.gz", None, &record);

    let mut agent = Agent::open(config(t.path(), &fake.url())).unwrap();
    let layout = agent.layout().clone();
    agent.round().await.unwrap();
    assert_eq!(fake.report_trail().last().map(String::as_str), Some("DOWNLOADING AGENT_FAILED"));
    let last = fake.pings().last().cloned().unwrap();
    let msg = common::env_report(&last).unwrap().error_message.clone().unwrap();
    assert!(msg.contains(&wrong) && msg.contains(&sha256_hex(&art)), "both digests named: {msg}");
    assert!(!layout.build_dir(B1).exists());
    assert!(layout.live_build("web").is_none());
    assert!(!layout.target("web").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_download_is_an_error_and_leaves_no_partial_build() {
    let t = TempDir::new("loop-trunc");
    let fake = Fake::start().await;
    // A raw server that promises 100000 bytes and closes after 100.
    let raw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let raw_addr = raw.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in raw.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            if req.contains(".sha256") {
                let digest = format!("{}\n", sha256_hex(b"whatever: the body never arrives"));
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", digest.len());
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(digest.as_bytes());
            } else {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(&[0x1f; 100]);
            }
        }
    });
    let record = t.path().join("record");
    let url = format!("http://{raw_addr}/a.tar.gz");
    fake.set_mode(Mode::Deploy {
        deploy_id: "DeployOne".into(),
        build: build_json(B1, &url, None),
        script_variables: json!({"RECORD": record.to_string_lossy()}),
    });
    let mut c = config(t.path(), &fake.url());
    c.max_retries = 2;
    let mut agent = Agent::open(c).unwrap();
    let layout = agent.layout().clone();
    agent.round().await.unwrap();
    assert_eq!(fake.report_trail().last().map(String::as_str), Some("DOWNLOADING TOO_MANY_RETRY"));
    let last = fake.pings().last().cloned().unwrap();
    let r = common::env_report(&last).unwrap();
    assert_eq!(r.fail_count, Some(2));
    assert!(r.error_message.as_deref().unwrap_or("").contains(&url), "{:?}", r.error_message);
    let builds = listing(&layout.builds_dir());
    assert!(builds.is_empty(), "no archive, part file or build dir: {builds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_environments_deploy_one_after_the_other_with_their_own_files() {
    let t = TempDir::new("loop-two");
    let fake = Fake::start().await;
    let record = t.path().join("record");
    fake.serve("one.tar.gz", build_archive("one", &[]));
    fake.serve("two.tar.gz", build_archive("two", &[]));
    let target = |env_id: &str, env: &str, build: &str, file: &str| common::Target {
        env_id: env_id.into(),
        env_name: env.into(),
        deploy_id: format!("Deploy{env}"),
        build: build_json(build, &format!("{}/artifacts/{file}", fake.url()), None),
        script_variables: json!({"RECORD": record.to_string_lossy(), "WHO": env}),
    };
    let api_id = "EnvIdApi000000000000aa";
    fake.set_mode(Mode::Many(vec![
        target(common::ENV_ID, "web", B1, "one.tar.gz"),
        target(api_id, "api", B2, "two.tar.gz"),
    ]));

    let mut agent = Agent::open(config(t.path(), &fake.url())).unwrap();
    let layout = agent.layout().clone();
    assert_eq!(agent.round().await.unwrap().steps, 16);

    let hooks_run = std::fs::read_to_string(&record).unwrap();
    let lines: Vec<&str> = hooks_run.lines().collect();
    assert_eq!(lines.len(), 8);
    assert!(lines[..4].iter().all(|l| l.ends_with("from=one")) && lines[4..].iter().all(|l| l.ends_with("from=two")));
    assert_eq!(layout.live_build_id("web").as_deref(), Some(B1));
    assert_eq!(layout.live_build_id("api").as_deref(), Some(B2));
    assert!(std::fs::read_to_string(layout.script_config("api")).unwrap().contains("WHO=api"));
    assert!(std::fs::read_to_string(layout.script_config("web")).unwrap().contains("WHO=web"));
    assert!(layout.log("web").exists() && layout.log("api").exists());
    let last = fake.pings().last().cloned().unwrap();
    for id in [common::ENV_ID, api_id] {
        let r = common::report_of(&last, id).unwrap();
        assert_eq!(r.deploy_stage, Some(schema::DeployStage::ServingBuild), "{id}");
        assert_eq!(r.agent_status, Some(schema::AgentStatus::Succeeded), "{id}");
    }
    assert_eq!(agent.envs().keys().collect::<Vec<_>>(), ["api", "web"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_without_any_checksum_fails_the_download_unless_the_development_flag_is_set() {
    let t = TempDir::new("loop-unverified");
    let fake = Fake::start().await;
    let record = t.path().join("record");
    fake.serve_only("one.tar.gz", build_archive("one", &[]));
    deploy(&fake, "DeployOne", B1, "one.tar.gz", None, &record);

    let mut agent = Agent::open(config(&t.path().join("strict"), &fake.url())).unwrap();
    let layout = agent.layout().clone();
    agent.round().await.unwrap();
    assert_eq!(fake.report_trail().last().map(String::as_str), Some("DOWNLOADING AGENT_FAILED"));
    let last = fake.pings().last().cloned().unwrap();
    let msg = common::env_report(&last).unwrap().error_message.clone().unwrap();
    assert!(msg.contains("cannot be verified") && msg.contains("one.tar.gz.sha256"), "{msg}");
    assert!(!fake.requested().contains(&"one.tar.gz".to_string()), "nothing was downloaded");
    assert!(layout.live_build("web").is_none());

    let mut c = config(&t.path().join("dev"), &fake.url());
    c.allow_unverified_artifacts = true;
    let mut agent = Agent::open(c).unwrap();
    agent.round().await.unwrap();
    assert_eq!(fake.report_trail().last().map(String::as_str), Some("SERVING_BUILD SUCCEEDED"));
    assert_eq!(agent.layout().live_build_id("web").as_deref(), Some(B1));
}
