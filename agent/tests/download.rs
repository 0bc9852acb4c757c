//! Fetching artifacts over HTTP under the agent's artifact policy, against local servers:
//! redirects inside the allow-list are followed and those leaving it refused (the target never
//! contacted), a build without a digest needs its published sidecar, and an artifact with no
//! checksum at all fails unless the development flag allows it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use agent::Error;
use agent::download::{FetchPolicy, Fetcher, sha256_hex};
use agent::testutil::TempDir;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use schema::artifact::AllowedLocation;

const MAX: u64 = 1 << 30;

/// What a path answers.
#[derive(Clone)]
enum Answer {
    Bytes(Vec<u8>),
    Redirect(String),
    Status(u16),
}

/// A local HTTP server answering from a table of paths (404 for the rest), counting requests.
#[derive(Clone)]
struct Server {
    base: String,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start() -> Server {
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (a, h) = (answers.clone(), hits.clone());
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let (answers, hits) = (a.clone(), h.clone());
            async move {
                let path = uri.path().to_string();
                hits.lock().unwrap().push(path.clone());
                let answer = answers.lock().unwrap().get(&path).cloned();
                match answer {
                    Some(Answer::Bytes(b)) => b.into_response(),
                    Some(Answer::Redirect(to)) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
                    Some(Answer::Status(s)) => StatusCode::from_u16(s).unwrap().into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { base, answers, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(&self, path: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(path.to_string(), answer);
    }

    /// Serves `bytes` at `path` and, when `sidecar`, their digest at `path.sha256`.
    fn artifact(&self, path: &str, bytes: &[u8], sidecar: bool) {
        self.answer(path, Answer::Bytes(bytes.to_vec()));
        if sidecar {
            self.answer(&format!("{path}.sha256"), Answer::Bytes(format!("{}  x\n", sha256_hex(bytes)).into_bytes()));
        }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

fn fetcher(allowed: &[String], allow_unverified: bool) -> Fetcher {
    let allowed = allowed.iter().map(|s| AllowedLocation::parse(s).unwrap()).collect();
    Fetcher::new(FetchPolicy { allowed, allow_unverified, ca_file: None }).unwrap()
}

fn nothing_left(dest: &Path) {
    assert!(!dest.exists(), "{} exists", dest.display());
    let dir = dest.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_within_the_allow_list_is_followed() {
    let t = TempDir::new("dl-redirect-ok");
    let (store, cdn) = (Server::start().await, Server::start().await);
    let bytes = b"the artifact".to_vec();
    store.answer("/web/a.tgz", Answer::Redirect(store.url("/web/blobs/a.tgz")));
    store.artifact("/web/blobs/a.tgz", &bytes, false);
    store.answer("/web/b.tgz", Answer::Redirect(cdn.url("/cache/b.tgz")));
    cdn.artifact("/cache/b.tgz", &bytes, false);
    let f = fetcher(&[store.url("/web/"), cdn.url("/cache/")], false);

    let dest = t.path().join("a.tgz");
    f.fetch(&store.url("/web/a.tgz"), &dest, Some(&sha256_hex(&bytes)), MAX).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    // To another allowed host too.
    let dest = t.path().join("b.tgz");
    f.fetch(&store.url("/web/b.tgz"), &dest, Some(&sha256_hex(&bytes)), MAX).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(cdn.hits(), ["/cache/b.tgz"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_leaving_the_allow_list_is_refused_and_never_followed() {
    let t = TempDir::new("dl-redirect-off");
    let dir = t.path().join("builds");
    std::fs::create_dir_all(&dir).unwrap();
    let (store, evil) = (Server::start().await, Server::start().await);
    let bytes = b"the artifact".to_vec();
    evil.artifact("/web/a.tgz", &bytes, true);
    let f = fetcher(&[store.url("/web/")], false);
    let sha = sha256_hex(&bytes);

    // Another host (same path), another directory of the same host, a segment look-alike.
    store.artifact("/other/a.tgz", &bytes, true);
    store.artifact("/webby/a.tgz", &bytes, true);
    let targets = [evil.url("/web/a.tgz"), store.url("/other/a.tgz"), store.url("/webby/a.tgz")];
    for (i, target) in targets.iter().enumerate() {
        let from = format!("/web/{i}.tgz");
        store.answer(&from, Answer::Redirect(target.clone()));
        let dest = dir.join("a.tgz");
        let err = f.fetch(&store.url(&from), &dest, Some(&sha), MAX).await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{target}: {err}");
        assert!(err.is_permanent(), "a refused redirect is not retried");
        let msg = err.to_string();
        assert!(msg.contains(target.as_str()) && msg.contains("not under an allowed artifact location"), "{msg}");
        nothing_left(&dest);
    }
    assert!(evil.hits().is_empty(), "the host off the list was never contacted: {:?}", evil.hits());
    assert_eq!(store.hits(), ["/web/0.tgz", "/web/1.tgz", "/web/2.tgz"], "no redirect was followed");

    // The sidecar's request obeys the same rule.
    store.answer("/web/s.tgz.sha256", Answer::Redirect(evil.url("/web/a.tgz.sha256")));
    store.artifact("/web/s.tgz", &bytes, false);
    let err = f.fetch(&store.url("/web/s.tgz"), &dir.join("s.tgz"), None, MAX).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(evil.hits().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_loops_end_and_without_a_list_other_hosts_are_followed() {
    let t = TempDir::new("dl-redirect-loop");
    let (a, b) = (Server::start().await, Server::start().await);
    let bytes = b"x".to_vec();
    a.answer("/loop", Answer::Redirect(a.url("/loop")));
    let err = fetcher(&[], false).fetch(&a.url("/loop"), &t.path().join("l"), Some(&sha256_hex(&bytes)), MAX).await;
    let err = err.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }) && err.to_string().contains("redirects"), "{err}");
    assert!(a.hits().len() <= 12, "bounded: {}", a.hits().len());

    a.answer("/moved.tgz", Answer::Redirect(b.url("/here.tgz")));
    b.artifact("/here.tgz", &bytes, false);
    let dest = t.path().join("m");
    fetcher(&[], false).fetch(&a.url("/moved.tgz"), &dest, Some(&sha256_hex(&bytes)), MAX).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_digest_the_published_sidecar_is_required() {
    let t = TempDir::new("dl-sidecar");
    let dir = t.path().join("builds");
    std::fs::create_dir_all(&dir).unwrap();
    let s = Server::start().await;
    let bytes = b"the artifact".to_vec();
    s.artifact("/with.tgz", &bytes, true);
    s.artifact("/without.tgz", &bytes, false);
    let f = fetcher(&[], false);

    // Published: used, and checked.
    let dest = dir.join("with.tgz");
    f.fetch(&s.url("/with.tgz"), &dest, None, MAX).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    std::fs::remove_file(&dest).unwrap();
    s.answer("/with.tgz.sha256", Answer::Bytes(format!("{}\n", sha256_hex(b"other")).into_bytes()));
    let err = f.fetch(&s.url("/with.tgz"), &dest, None, MAX).await.unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    nothing_left(&dest);

    // Missing: an error, before the artifact is even requested.
    let dest = dir.join("without.tgz");
    let err = f.fetch(&s.url("/without.tgz"), &dest, None, MAX).await.unwrap_err();
    assert!(matches!(err, Error::Unverified { .. }) && err.is_permanent(), "{err}");
    assert!(err.to_string().contains("/without.tgz.sha256"), "{err}");
    assert!(!s.hits().contains(&"/without.tgz".to_string()), "the artifact was not downloaded: {:?}", s.hits());
    nothing_left(&dest);

    // Unavailable (5xx): worth retrying, not a verdict.
    s.answer("/without.tgz.sha256", Answer::Status(503));
    let err = f.fetch(&s.url("/without.tgz"), &dest, None, MAX).await.unwrap_err();
    assert!(matches!(err, Error::Download { .. }) && !err.is_permanent(), "{err}");

    // A sidecar that is not a digest.
    s.answer("/without.tgz.sha256", Answer::Bytes(b"<html>not found</html>".to_vec()));
    let err = f.fetch(&s.url("/without.tgz"), &dest, None, MAX).await.unwrap_err();
    assert!(matches!(err, Error::BadDigest(_)), "{err}");
    // Nor a large page that starts with one.
    let long = format!("{}\n{}", sha256_hex(&bytes), "x".repeat(1 << 20));
    s.answer("/without.tgz.sha256", Answer::Bytes(long.into_bytes()));
    let err = f.fetch(&s.url("/without.tgz"), &dest, None, MAX).await.unwrap_err();
    assert!(matches!(err, Error::BadDigest(_)) && err.to_string().contains("larger than"), "{err}");
    nothing_left(&dest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_without_any_checksum_needs_the_development_flag() {
    let t = TempDir::new("dl-unverified");
    let s = Server::start().await;
    let bytes = b"the artifact".to_vec();
    s.artifact("/a.tgz", &bytes, false);
    let dest = t.path().join("a.tgz");
    let err = fetcher(&[], false).fetch(&s.url("/a.tgz"), &dest, None, MAX).await.unwrap_err();
    assert!(matches!(err, Error::Unverified { .. }), "{err}");
    assert!(!dest.exists());

    fetcher(&[], true).fetch(&s.url("/a.tgz"), &dest, None, MAX).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    // The flag never excuses a mismatch.
    let err = fetcher(&[], true).fetch(&s.url("/a.tgz"), &dest, Some(&sha256_hex(b"other")), MAX).await.unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
}
