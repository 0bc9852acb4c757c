//! Fetching an artifact: `http://`, `https://` and `file://`, streamed to a temp file next to
//! the destination and renamed into place only when complete and verified.
//!
//! Where from: the URL must be http(s) with a host or `file://` with an absolute path, without
//! a user name or password; with an allow-list (`artifact_allowed`), it must be under one of
//! its locations (see `schema::artifact`). Redirects are followed only to http(s) URLs under the
//! allow-list; without one, never from https down to http; at most 10 of them.
//!
//! Verification: the expected SHA-256 is the build's `artifactSha256`, else the published
//! `<url>.sha256` (fetched first, so a missing one fails before any large download). Without
//! either the download fails, unless `allow_unverified_artifacts` (local development only) lets
//! it through with a warning. The SHA-256 of the bytes received must match; a mismatch names
//! both digests. A body shorter than its `Content-Length` is an error; an artifact larger than
//! the configured `archive_max_bytes` is refused. Nothing partial is ever renamed into place,
//! and the temp file is removed when the download fails or is dropped (the server changed the
//! goal).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use schema::artifact::{AllowedLocation, Url, check_redirect, is_allowed, parse_artifact_url, parse_sha256};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ca::CaFile;
use crate::client::error_chain;
use crate::error::{Error, Result};

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;
/// Largest `.sha256` sidecar read (a digest and a file name).
const MAX_SIDECAR_BYTES: usize = 4096;

/// Where artifacts may come from and whether an unverified one may be used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Locations artifact URLs and redirects must be under; empty: any http(s) or file URL.
    pub allowed: Vec<AllowedLocation>,
    /// Use an artifact that has neither `artifactSha256` nor a published sidecar (with a
    /// warning) instead of failing: for local development only.
    pub allow_unverified: bool,
    /// A private CA trusted for https downloads besides the system's roots.
    pub ca_file: Option<CaFile>,
}

/// Fetches artifacts under a [`FetchPolicy`]: an HTTP client whose redirects obey the
/// allow-list, and the checks above.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    policy: Arc<FetchPolicy>,
    /// Counts artifact bytes as they arrive (the agent's `download_bytes_total`).
    received: Option<IntCounter>,
}

impl Fetcher {
    /// A fetcher for `policy`: no overall timeout (artifacts can be large), but a stalled
    /// connection fails.
    pub fn new(policy: FetchPolicy) -> Result<Fetcher> {
        let allowed = policy.allowed.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match check_redirect(&allowed, attempt.previous().last(), attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        });
        let http = CaFile::trust(policy.ca_file.as_ref(), reqwest::Client::builder())?
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .redirect(redirects)
            .user_agent(crate::AGENT_VERSION)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Fetcher { http, policy: Arc::new(policy), received: None })
    }

    /// The same fetcher, adding every artifact byte it receives to `counter`.
    pub fn counting_bytes(self, counter: IntCounter) -> Fetcher {
        Fetcher { received: Some(counter), ..self }
    }

    /// The policy this fetcher applies.
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Downloads `url` to `dest` (atomically), verified against `expected_sha256` or the
    /// published sidecar, refusing more than `max_bytes`. Cancel-safe: dropping the future
    /// leaves no temp file.
    pub async fn fetch(&self, url: &str, dest: &Path, expected_sha256: Option<&str>, max_bytes: u64) -> Result<()> {
        let expected = match expected_sha256.map(str::trim).filter(|s| !s.is_empty()) {
            Some(d) => Some(check_digest(d, "the build's artifactSha256")?),
            None => None,
        };
        let parsed = self.check_url(url)?;
        let part = part_path(dest);
        let mut guard = PartGuard(&part, false);
        let result = async {
            let expected = match expected {
                Some(e) => Some(e),
                None => self.published_digest(url, &parsed).await?,
            };
            let actual = if parsed.scheme() == "file" {
                let path = parsed.to_file_path().map_err(|()| Error::UnsupportedUrl(url.to_string()))?;
                copy_file(url, &path, &part, max_bytes, self.received.as_ref()).await?
            } else {
                self.download_http(url, parsed, &part, max_bytes).await?
            };
            match expected {
                Some(exp) if exp != actual => Err(Error::Checksum { url: url.to_string(), expected: exp, actual }),
                Some(_) => Ok(()),
                None => {
                    tracing::warn!(url, sha256 = %actual, "allow_unverified_artifacts: artifact used UNVERIFIED");
                    Ok(())
                }
            }
        }
        .await;
        result?;
        tokio::fs::rename(&part, dest).await.map_err(|e| Error::io("cannot rename download to", dest, e))?;
        guard.1 = true;
        Ok(())
    }

    /// The URL, parsed, when the policy lets it be fetched.
    fn check_url(&self, url: &str) -> Result<Url> {
        let lower = url.trim_start().to_ascii_lowercase();
        if !["http://", "https://", "file://"].iter().any(|s| lower.starts_with(s)) {
            return Err(Error::UnsupportedUrl(url.to_string()));
        }
        let refused = |reason: String| Error::Refused { url: url.to_string(), reason };
        let parsed = parse_artifact_url(url).map_err(|e| refused(e.to_string()))?;
        if !is_allowed(&self.policy.allowed, &parsed) {
            let list: Vec<String> = self.policy.allowed.iter().map(ToString::to_string).collect();
            return Err(refused(format!("not under an allowed artifact location ({})", list.join(", "))));
        }
        Ok(parsed)
    }

    /// The digest published next to the artifact (`<url>.sha256`: its first word, as
    /// `sha256sum` writes it). `None` only when it is not published and the policy allows
    /// unverified artifacts; otherwise its absence is an error.
    async fn published_digest(&self, url: &str, parsed: &Url) -> Result<Option<String>> {
        let sidecar = format!("{url}.sha256");
        let text = if parsed.scheme() == "file" {
            let path = parsed.to_file_path().map_err(|()| Error::UnsupportedUrl(url.to_string()))?;
            let mut path = path.into_os_string();
            path.push(".sha256");
            let path = PathBuf::from(path);
            match tokio::fs::File::open(&path).await {
                Ok(file) => {
                    let mut bytes = Vec::new();
                    let limit = u64::try_from(MAX_SIDECAR_BYTES + 1).unwrap_or(u64::MAX);
                    file.take(limit)
                        .read_to_end(&mut bytes)
                        .await
                        .map_err(|e| Error::io("cannot read the checksum file", &path, e))?;
                    Some(bytes)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("cannot read the checksum file", &path, e)),
            }
        } else {
            self.sidecar_http(&sidecar).await?
        };
        match text {
            Some(bytes) if bytes.len() > MAX_SIDECAR_BYTES => {
                Err(Error::BadDigest(format!("{sidecar} is larger than {MAX_SIDECAR_BYTES} bytes")))
            }
            Some(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let word = text.split_whitespace().next().unwrap_or("");
                check_digest(word, &sidecar).map(Some)
            }
            None if self.policy.allow_unverified => Ok(None),
            None => Err(Error::Unverified {
                url: url.to_string(),
                reason: format!(
                    "the build has no artifactSha256 and {sidecar} is not published \
                     (allow_unverified_artifacts is for local development only)"
                ),
            }),
        }
    }

    /// `<url>.sha256` over HTTP: its bytes on 200, `None` on 404 or 410; any other answer is
    /// an error worth retrying.
    async fn sidecar_http(&self, sidecar: &str) -> Result<Option<Vec<u8>>> {
        let mut resp = self.http.get(sidecar).send().await.map_err(|e| request_error(sidecar, &e))?;
        match resp.status() {
            reqwest::StatusCode::OK => {}
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE => return Ok(None),
            status => {
                return Err(Error::Download { url: sidecar.to_string(), message: format!("HTTP {status}") });
            }
        }
        let mut bytes = Vec::new();
        while let Some(chunk) =
            resp.chunk().await.map_err(|e| Error::Download { url: sidecar.to_string(), message: error_chain(&e) })?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_SIDECAR_BYTES {
                return Err(Error::BadDigest(format!("{sidecar} is larger than {MAX_SIDECAR_BYTES} bytes")));
            }
        }
        Ok(Some(bytes))
    }

    async fn download_http(&self, url: &str, parsed: Url, part: &Path, max_bytes: u64) -> Result<String> {
        let failed = |message: String| Error::Download { url: url.to_string(), message };
        let mut resp = self.http.get(parsed).send().await.map_err(|e| request_error(url, &e))?;
        if !resp.status().is_success() {
            return Err(failed(format!("HTTP {}", resp.status())));
        }
        let expected_len = resp.content_length();
        if expected_len.is_some_and(|len| len > max_bytes) {
            return Err(too_big(url, max_bytes));
        }
        let mut file = create(part).await?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        loop {
            let chunk =
                resp.chunk().await.map_err(|e| failed(format!("after {received} bytes: {}", error_chain(&e))))?;
            let Some(chunk) = chunk else { break };
            hasher.update(&chunk);
            received += chunk.len() as u64;
            if let Some(c) = &self.received {
                c.inc_by(chunk.len() as u64);
            }
            if received > max_bytes {
                return Err(too_big(url, max_bytes));
            }
            file.write_all(&chunk).await.map_err(|e| Error::io("cannot write", part, e))?;
        }
        if let Some(len) = expected_len.filter(|len| *len != received) {
            return Err(failed(format!("truncated: received {received} of {len} bytes")));
        }
        finish(file, part).await?;
        Ok(hex(&hasher.finalize()))
    }
}

/// A failed request: a refused redirect is permanent; anything else is worth retrying.
fn request_error(url: &str, e: &reqwest::Error) -> Error {
    if e.is_redirect() {
        Error::Refused { url: url.to_string(), reason: error_chain(e) }
    } else {
        Error::Download { url: url.to_string(), message: error_chain(e) }
    }
}

/// The archive extension Teletraan's agent derives from a URL (`tar.gz`, `tar.bz2`, else the
/// last `.ext`), restricted to safe file name characters; `tar.gz` when there is none.
pub fn archive_extension(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let name = path.rsplit('/').next().unwrap_or("");
    let ext = if name.ends_with(".tar.gz") {
        "tar.gz"
    } else if name.ends_with(".tar.bz2") {
        "tar.bz2"
    } else {
        match name.rsplit_once('.') {
            Some((_, e)) if !e.is_empty() => e,
            _ => "tar.gz",
        }
    };
    if ext.len() <= 16 && ext.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        ext.to_string()
    } else {
        "tar.gz".to_string()
    }
}

/// Removes the temp file unless the download completed (covers errors and a dropped future).
struct PartGuard<'a>(&'a Path, bool);

impl Drop for PartGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_file(self.0);
        }
    }
}

fn too_big(url: &str, max_bytes: u64) -> Error {
    Error::ArchiveLimit(format!("{url} is larger than {max_bytes} bytes (limit archive_max_bytes)"))
}

fn part_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.part"))
}

fn check_digest(text: &str, source: &str) -> Result<String> {
    parse_sha256(text).ok_or_else(|| {
        let shown: String = text.chars().take(80).collect();
        Error::BadDigest(format!("{source} is not a hex SHA-256 digest: {shown:?}"))
    })
}

async fn create(part: &Path) -> Result<tokio::fs::File> {
    tokio::fs::File::create(part).await.map_err(|e| Error::io("cannot create", part, e))
}

async fn finish(mut file: tokio::fs::File, part: &Path) -> Result<()> {
    file.flush().await.map_err(|e| Error::io("cannot write", part, e))?;
    file.sync_all().await.map_err(|e| Error::io("cannot sync", part, e))
}

async fn copy_file(url: &str, src: &Path, part: &Path, max_bytes: u64, counter: Option<&IntCounter>) -> Result<String> {
    if !src.is_absolute() {
        return Err(Error::UnsupportedUrl(url.to_string()));
    }
    let mut input = tokio::fs::File::open(src).await.map_err(|e| Error::io("cannot open artifact", src, e))?;
    let mut file = create(part).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied: u64 = 0;
    loop {
        let n = input.read(&mut buf).await.map_err(|e| Error::io("cannot read artifact", src, e))?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if let Some(c) = counter {
            c.inc_by(n as u64);
        }
        if copied > max_bytes {
            return Err(too_big(url, max_bytes));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await.map_err(|e| Error::io("cannot write", part, e))?;
    }
    finish(file, part).await?;
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    const MAX: u64 = 1 << 30;

    fn fetcher() -> Fetcher {
        Fetcher::new(FetchPolicy::default()).unwrap()
    }

    #[test]
    fn extension_follows_teletraan() {
        assert_eq!(archive_extension("https://h/a/web.tar.gz?x=1"), "tar.gz");
        assert_eq!(archive_extension("file:///a/web.tgz"), "tgz");
        assert_eq!(archive_extension("http://h/web.tar"), "tar");
        assert_eq!(archive_extension("http://h/web"), "tar.gz");
        assert_eq!(archive_extension("http://h/web.x y"), "tar.gz");
    }

    #[tokio::test]
    async fn file_url_is_copied_and_verified() {
        let dir = TempDir::new("dl");
        let src = dir.path().join("a.tar");
        std::fs::write(&src, b"hello").unwrap();
        let url = format!("file://{}", src.display());
        let f = fetcher();
        let dest = dir.path().join("out.tar");
        f.fetch(&url, &dest, Some(&sha256_hex(b"hello")), 5).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");

        let dest2 = dir.path().join("out2.tar");
        let wrong = sha256_hex(b"other");
        let err = f.fetch(&url, &dest2, Some(&wrong), MAX).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&wrong) && msg.contains(&sha256_hex(b"hello")), "{msg}");
        assert!(err.is_permanent());
        assert!(!dest2.exists());
        assert!(!part_path(&dest2).exists(), "no partial file is left");

        let dest3 = dir.path().join("out3.tar");
        let err = f.fetch(&url, &dest3, Some(&sha256_hex(b"hello")), 4).await.unwrap_err();
        assert!(matches!(err, Error::ArchiveLimit(_)) && err.to_string().contains("archive_max_bytes"), "{err}");
        assert!(!dest3.exists() && !part_path(&dest3).exists());
    }

    #[tokio::test]
    async fn received_bytes_are_counted() {
        let dir = TempDir::new("dl-count");
        let src = dir.path().join("a.tar");
        std::fs::write(&src, b"hello").unwrap();
        let counter = IntCounter::new("test_received_bytes_total", "test").unwrap();
        let f = fetcher().counting_bytes(counter.clone());
        let url = format!("file://{}", src.display());
        f.fetch(&url, &dir.path().join("out.tar"), Some(&sha256_hex(b"hello")), MAX).await.unwrap();
        assert_eq!(counter.get(), 5);
        assert!(f.fetch(&url, &dir.path().join("out2.tar"), Some(&sha256_hex(b"other")), MAX).await.is_err());
        assert_eq!(counter.get(), 10, "a failed attempt's bytes were received too");
    }

    #[tokio::test]
    async fn a_file_artifact_needs_a_digest_or_its_sidecar_file() {
        let dir = TempDir::new("dl-side");
        let src = dir.path().join("a.tar");
        std::fs::write(&src, b"hello").unwrap();
        let url = format!("file://{}", src.display());
        let dest = dir.path().join("out.tar");
        let err = fetcher().fetch(&url, &dest, None, MAX).await.unwrap_err();
        assert!(matches!(err, Error::Unverified { .. }) && err.is_permanent(), "{err}");
        assert!(err.to_string().contains("a.tar.sha256"), "{err}");
        assert!(!dest.exists());

        let dev = Fetcher::new(FetchPolicy { allow_unverified: true, ..FetchPolicy::default() }).unwrap();
        dev.fetch(&url, &dest, None, MAX).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");

        std::fs::write(dir.path().join("a.tar.sha256"), format!("{}  a.tar\n", sha256_hex(b"hello"))).unwrap();
        let dest2 = dir.path().join("out2.tar");
        fetcher().fetch(&url, &dest2, None, MAX).await.unwrap();
        std::fs::write(dir.path().join("a.tar.sha256"), "not-a-digest\n").unwrap();
        let err = fetcher().fetch(&url, &dir.path().join("out3.tar"), None, MAX).await.unwrap_err();
        assert!(matches!(err, Error::BadDigest(_)), "{err}");
        let long = format!("{}  {}\n", sha256_hex(b"hello"), "a".repeat(MAX_SIDECAR_BYTES));
        std::fs::write(dir.path().join("a.tar.sha256"), long).unwrap();
        let err = fetcher().fetch(&url, &dir.path().join("out4.tar"), None, MAX).await.unwrap_err();
        assert!(matches!(err, Error::BadDigest(_)) && err.to_string().contains("larger than"), "{err}");
    }

    #[tokio::test]
    async fn unsupported_scheme_bad_digest_and_urls_off_the_list_are_refused() {
        let dir = TempDir::new("dl");
        let f = fetcher();
        let err = f.fetch("s3://bucket/key", &dir.path().join("x"), None, MAX).await.unwrap_err();
        assert!(matches!(err, Error::UnsupportedUrl(_)), "{err}");
        let err = f.fetch("file:///etc/hostname", &dir.path().join("x"), Some("abc"), MAX).await.unwrap_err();
        assert!(matches!(err, Error::BadDigest(_)), "{err}");
        let sha = sha256_hex(b"x");
        let err = f.fetch("https://u:p@a.example.com/x", &dir.path().join("x"), Some(&sha), MAX).await.unwrap_err();
        assert!(matches!(err, Error::Refused { .. }) && err.is_permanent(), "{err}");

        let allowed = AllowedLocation::parse_list("https://artifacts.example.com/web/").unwrap();
        let listed = Fetcher::new(FetchPolicy { allowed, allow_unverified: false, ca_file: None }).unwrap();
        for url in ["https://artifacts.example.com/webby/a.tgz", "file:///etc/hostname", "http://127.0.0.1:9/web/a"] {
            let err = listed.fetch(url, &dir.path().join("x"), Some(&sha), MAX).await.unwrap_err();
            assert!(matches!(err, Error::Refused { .. }), "{url}: {err}");
            assert!(err.to_string().contains("https://artifacts.example.com/web/"), "{err}");
        }
    }
}
