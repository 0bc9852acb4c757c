//! Periodic jobs across real `teletraan worker` processes on one database and broker: with
//! three workers every due time of every job runs once (attempt 1, on the job's grid, never
//! two runs at once); with two, killing (SIGKILL) the one in the middle of a long retention
//! run lets the other run that same due time again and finish the work.

mod support;

use std::process::Stdio;
use std::time::Duration;

use store::JobRun;
use store::testing::TestDatabase;
use support::{DEADLINE, binary};
use tokio::process::{Child, Command};

fn worker(db: &TestDatabase, bus: &bus::testing::TestBus, jobs: &str, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(binary("teletraan"));
    cmd.arg("worker")
        .env("TELETRAAN_DATABASE_URL", &db.url)
        .env("TELETRAAN_AMQP_URL", &bus.config.url)
        .env("TELETRAAN_NAMESPACE", &bus.config.namespace)
        .env("TELETRAAN_WORKER_LISTEN", "127.0.0.1:0")
        .env("TELETRAAN_JOBS", jobs)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start teletraan worker")
}

fn finished(runs: &[JobRun]) -> Vec<&JobRun> {
    let mut ok: Vec<&JobRun> = runs.iter().filter(|r| r.outcome.is_some()).collect();
    ok.sort_by_key(|r| r.due_at);
    ok
}

const EVERY_SECOND: &str = "deploy-state=1s,auto-promote=1s,host-janitor=1s,deploy-retention=1s,\
     build-retention=1s,record-retention=1s,webhook-resend=1s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_each_due_time_of_each_job_once() {
    let db = TestDatabase::new().await;
    let bus = bus::testing::TestBus::new();
    let mut workers: Vec<Child> = (0..3).map(|_| worker(&db, &bus, EVERY_SECOND, &[])).collect();
    let names = [
        "deploy-state",
        "auto-promote",
        "host-janitor",
        "deploy-retention",
        "build-retention",
        "record-retention",
        "webhook-resend",
    ];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut enough = true;
        for n in names {
            enough &= finished(&db.store.job_runs(n, 100).await.unwrap()).len() >= 5;
        }
        if enough {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not every job ran five times: {:#?}", db.store.jobs().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in &mut workers {
        let _ = w.kill().await;
    }
    let mut by_worker = std::collections::BTreeSet::new();
    for n in names {
        let runs = db.store.job_runs(n, 1000).await.unwrap();
        let done = finished(&runs);
        for r in &done {
            assert_eq!((r.outcome.as_deref(), r.attempt), (Some("ok"), 1), "{n}: {r:?}");
            by_worker.insert(r.worker.clone());
        }
        for w in done.windows(2) {
            let gap = w[1].due_at - w[0].due_at;
            assert!(
                gap >= 1000 && gap % 1000 == 0,
                "{n}: due times {} and {} are not one period apart",
                w[0].due_at,
                w[1].due_at
            );
            let end = w[0].finished_at.expect("finished");
            assert!(w[1].started_at >= end, "{n}: two runs at once: {:?} and {:?}", w[0], w[1]);
        }
        let status = db.store.jobs().await.unwrap().into_iter().find(|j| j.name == n).unwrap();
        assert_eq!(status.failures, 0, "{status:?}");
        assert!(status.runs >= done.len() as i64, "{status:?}");
    }
    assert!(by_worker.len() >= 2, "the work was shared, not held by one process: {by_worker:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_is_killed_is_finished_by_another() {
    let db = TestDatabase::new().await;
    let bus = bus::testing::TestBus::new();
    // A stage that keeps one deploy, with 6,000 old ones to delete.
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO environs (env_id, env_name, stage_name, build_name, last_operator, last_update,
                 max_deploy_num, max_deploy_day)
             VALUES ('stage-1', 'web', 'prod', 'web', 'test', now(), 1, 1);
             INSERT INTO builds (build_id, build_name, artifact_url, scm_repo, scm_branch, scm_commit, scm_commit_7,
                 commit_date, publisher, publish_date)
             VALUES ('b1_abcdef0', 'web', 'https://a/x.tgz', 'o/web', 'main', 'abcdef0', 'abcdef0', now(), 'ci', now());
             INSERT INTO deploys (deploy_id, env_id, build_id, deploy_type, state, start_date, operator, last_update,
                 acc_status)
             SELECT 'd' || i, 'stage-1', 'b1_abcdef0', 'REGULAR', 'ABORTED', now() - interval '3 days' + i * interval '1 s',
                 'test', now() - interval '3 days', 'TERMINATED'
             FROM generate_series(1, 6000) AS i;",
        )
        .await
        .unwrap();
    let count = || async { client.query_one("SELECT count(*) FROM deploys", &[]).await.unwrap().get::<_, i64>(0) };
    let settings = [("TELETRAAN_JOB_LEASE", "2s"), ("TELETRAAN_RETENTION_BATCH", "20")];
    let jobs = "deploy-retention=1s,deploy-state=off,auto-promote=off,host-janitor=off,build-retention=off,\
                record-retention=off,webhook-resend=off";
    let mut workers = vec![worker(&db, &bus, jobs, &settings), worker(&db, &bus, jobs, &settings)];

    // Wait until one of them is half-way through, then kill it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let victim = loop {
        let runs = db.store.job_runs("deploy-retention", 10).await.unwrap();
        let left = count().await;
        if let Some(r) = runs.iter().find(|r| r.outcome.is_none())
            && (500..5_500).contains(&left)
        {
            break r.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no retention run got under way ({left} deploys left)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pid: u32 = victim.worker.rsplit('-').nth(1).unwrap().parse().unwrap();
    let index = workers.iter().position(|w| w.id() == Some(pid)).expect("the run belongs to one of our workers");
    let mut dead = workers.remove(index);
    dead.kill().await.unwrap();
    let killed_at = count().await;
    assert!(killed_at > 1, "the run was not finished when its worker died ({killed_at} deploys left)");

    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let runs = db.store.job_runs("deploy-retention", 10).await.unwrap();
        if runs.iter().any(|r| r.due_at == victim.due_at && r.outcome.as_deref() == Some("ok")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other worker never finished the run: {runs:?}, {:?}, {} deploys left",
            db.store.jobs().await.unwrap(),
            count().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = db.store.job_runs("deploy-retention", 10).await.unwrap();
    let of_due: Vec<&JobRun> = runs.iter().filter(|r| r.due_at == victim.due_at).collect();
    assert_eq!(of_due.len(), 2, "{of_due:?}");
    let retry = of_due.iter().find(|r| r.attempt == 2).expect("a second attempt at the same due time");
    assert_ne!(retry.worker, victim.worker);
    assert_eq!(retry.outcome.as_deref(), Some("ok"));
    assert_eq!(count().await, 1, "the work was finished");
    for w in &mut workers {
        let _ = w.kill().await;
    }
}
