//! The jobs table on a real Postgres: one claim per due time however many workers ask at
//! once, leases that expire when a worker dies (and the next attempt at the same due time),
//! due times that skip what was missed, and jobs that keep dying moved on.

use std::time::Duration;

use store::testing::TestDatabase;

const HOUR: Duration = Duration::from_secs(3600);
const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_due_job_is_claimed_once_however_many_workers_ask() {
    let db = TestDatabase::new().await;
    db.store.register_job("sweep", HOUR).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let store = db.store.clone();
        tasks.spawn(async move { store.claim_job(&["sweep"], &format!("w{w}"), LEASE).await.unwrap() });
    }
    let mut claims = Vec::new();
    while let Some(c) = tasks.join_next().await {
        claims.extend(c.unwrap());
    }
    assert_eq!(claims.len(), 1, "{claims:?}");
    let claim = &claims[0];
    assert_eq!(claim.attempt, 1);
    let runs = db.store.job_runs("sweep", 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].outcome.as_deref(), runs[0].finished_at), (None, None), "running");
}

#[tokio::test]
async fn finishing_moves_the_job_to_its_next_due_time() {
    let db = TestDatabase::new().await;
    db.store.register_job("sweep", HOUR).await.unwrap();
    let claim = db.store.claim_job(&["sweep"], "w1", LEASE).await.unwrap().unwrap();
    assert!(db.store.renew_job(&claim, "w1", LEASE).await.unwrap());
    assert!(!db.store.renew_job(&claim, "w2", LEASE).await.unwrap(), "only the holder renews");
    assert!(db.store.finish_job(&claim, "w1", HOUR, "did 3 things", None).await.unwrap());
    assert!(db.store.claim_job(&["sweep"], "w2", LEASE).await.unwrap().is_none(), "not due again yet");

    let status = db.store.jobs().await.unwrap();
    assert_eq!(status.len(), 1);
    let s = &status[0];
    assert_eq!(s.due_at, claim.due_at + 3_600_000, "one period after the due time it ran for");
    assert_eq!((s.runs, s.failures, s.leased_by.as_deref()), (1, 0, None));
    assert!(s.last_success.is_some());
    let run = &db.store.job_runs("sweep", 10).await.unwrap()[0];
    assert_eq!((run.outcome.as_deref(), run.detail.as_deref()), (Some("ok"), Some("did 3 things")));

    // A failure is counted, keeps the last success, and still moves on.
    db.store.register_job("other", Duration::from_millis(200)).await.unwrap();
    let c = db.store.claim_job(&["other"], "w1", LEASE).await.unwrap().unwrap();
    assert!(db.store.finish_job(&c, "w1", Duration::from_millis(200), "", Some("database on fire")).await.unwrap());
    let other = db.store.jobs().await.unwrap().into_iter().find(|j| j.name == "other").unwrap();
    assert_eq!((other.runs, other.failures, other.last_error.as_deref()), (1, 1, Some("database on fire")));
    assert_eq!(other.last_success, None);
}

#[tokio::test]
async fn missed_due_times_are_skipped_not_run_in_a_burst() {
    let db = TestDatabase::new().await;
    let period = Duration::from_millis(100);
    db.store.register_job("fast", period).await.unwrap();
    let claim = db.store.claim_job(&["fast"], "w1", LEASE).await.unwrap().unwrap();
    // The run takes more than three periods.
    tokio::time::sleep(Duration::from_millis(450)).await;
    db.store.finish_job(&claim, "w1", period, "", None).await.unwrap();
    let (next, now) = db.store.next_job_time(&["fast"]).await.unwrap();
    let next = next.unwrap();
    assert!(next > now && next <= now + 100, "the next due time is the first one after now: {next} vs {now}");
    assert_eq!((next - claim.due_at) % 100, 0, "due times stay on the job's grid");
}

#[tokio::test]
async fn a_dead_workers_job_is_claimed_again_for_the_same_due_time() {
    let db = TestDatabase::new().await;
    db.store.register_job("sweep", HOUR).await.unwrap();
    let short = Duration::from_secs(1);
    let first = db.store.claim_job(&["sweep"], "dead", short).await.unwrap().unwrap();
    assert!(db.store.claim_job(&["sweep"], "alive", short).await.unwrap().is_none(), "leased");
    // The holder dies (renews nothing); once its lease has expired another worker claims it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let second = loop {
        if let Some(c) = db.store.claim_job(&["sweep"], "alive", LEASE).await.unwrap() {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((second.due_at, second.attempt), (first.due_at, 2), "the same due time, a new attempt");
    assert!(!db.store.renew_job(&first, "dead", short).await.unwrap(), "the dead worker lost its claim");
    assert!(!db.store.finish_job(&first, "dead", HOUR, "", None).await.unwrap());
    assert!(db.store.finish_job(&second, "alive", HOUR, "", None).await.unwrap());
    let runs = db.store.job_runs("sweep", 10).await.unwrap();
    let attempts: Vec<(i32, &str, Option<&str>)> =
        runs.iter().map(|r| (r.attempt, r.worker.as_str(), r.outcome.as_deref())).collect();
    assert_eq!(attempts, [(2, "alive", Some("ok")), (1, "dead", Some("ok"))], "both attempts are recorded");
    assert_eq!(db.store.jobs().await.unwrap()[0].runs, 1, "one run of that due time counts");
}

#[tokio::test]
async fn a_job_that_keeps_killing_its_worker_moves_on() {
    let db = TestDatabase::new().await;
    db.store.register_job("poison", HOUR).await.unwrap();
    let lease = Duration::from_millis(300);
    let mut due = None;
    for attempt in 1..=store::JOB_ATTEMPTS {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let claim = loop {
            if let Some(c) = db.store.claim_job(&["poison"], "w", lease).await.unwrap() {
                break c;
            }
            assert!(tokio::time::Instant::now() < deadline, "attempt {attempt} never came");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(claim.attempt, attempt);
        due = Some(claim.due_at);
    }
    // The last attempt's lease expires too: nobody may claim it a fourth time, and the job moves
    // on to its next due time as a failure.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(db.store.claim_job(&["poison"], "w", lease).await.unwrap().is_none());
        if db.store.skip_dying_jobs().await.unwrap() == ["poison"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never skipped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = &db.store.jobs().await.unwrap()[0];
    assert_eq!(job.due_at, due.unwrap() + 3_600_000);
    assert_eq!((job.failures, job.leased_by.as_deref()), (1, None));
    assert!(job.last_error.as_deref().unwrap().contains("died"), "{job:?}");
}
