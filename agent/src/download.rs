//! Fetching an artifact: `http://`, `https://` and `file://`, streamed to a temp file next to
//! the destination and renamed into place only when complete and verified.
//!
//! Verification: when the build carries `artifactSha256`, or (over http(s)) `<url>.sha256`
//! answers 200, the SHA-256 of the bytes received must match; a mismatch names both digests.
//! A body shorter than its `Content-Length` is an error; an artifact larger than the configured
//! `archive_max_bytes` is refused. Nothing partial is ever renamed into place, and the temp file
//! is removed when the download fails or is dropped (the server changed the goal).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::error_chain;
use crate::error::{Error, Result};

/// An HTTP client for artifacts: no overall timeout (artifacts can be large), but a stalled
/// connection fails.
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .user_agent(crate::AGENT_VERSION)
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
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

/// Downloads `url` to `dest` (atomically), verifying the SHA-256 when one is known and
/// refusing more than `max_bytes`. Cancel-safe: dropping the future leaves no temp file.
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    max_bytes: u64,
) -> Result<()> {
    let expected = match expected_sha256.map(str::trim).filter(|s| !s.is_empty()) {
        Some(d) => Some(check_digest(d, "the build's artifactSha256")?),
        None => None,
    };
    let part = part_path(dest);
    let mut guard = PartGuard(&part, false);
    let result = async {
        let actual = if let Some(path) = url.strip_prefix("file://") {
            copy_file(url, Path::new(path), &part, max_bytes).await?
        } else if url.starts_with("http://") || url.starts_with("https://") {
            download_http(http, url, &part, max_bytes).await?
        } else {
            return Err(Error::UnsupportedUrl(url.to_string()));
        };
        let expected = match expected {
            Some(e) => Some(e),
            None if url.starts_with("http") => published_digest(http, url).await?,
            None => None,
        };
        match expected {
            Some(exp) if exp != actual => Err(Error::Checksum { url: url.to_string(), expected: exp, actual }),
            Some(_) => Ok(()),
            None => {
                tracing::info!(url, sha256 = %actual, "no published checksum; artifact not verified");
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

fn too_big(url: &str, max_bytes: u64) -> Error {
    Error::ArchiveLimit(format!("{url} is larger than {max_bytes} bytes (limit archive_max_bytes)"))
}

fn part_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.part"))
}

fn check_digest(text: &str, source: &str) -> Result<String> {
    let d = text.to_ascii_lowercase();
    if d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(d)
    } else {
        let shown: String = text.chars().take(80).collect();
        Err(Error::BadDigest(format!("{source} is not a hex SHA-256 digest: {shown:?}")))
    }
}

async fn create(part: &Path) -> Result<tokio::fs::File> {
    tokio::fs::File::create(part).await.map_err(|e| Error::io("cannot create", part, e))
}

async fn finish(mut file: tokio::fs::File, part: &Path) -> Result<()> {
    file.flush().await.map_err(|e| Error::io("cannot write", part, e))?;
    file.sync_all().await.map_err(|e| Error::io("cannot sync", part, e))
}

async fn download_http(http: &reqwest::Client, url: &str, part: &Path, max_bytes: u64) -> Result<String> {
    let failed = |message: String| Error::Download { url: url.to_string(), message };
    let mut resp = http.get(url).send().await.map_err(|e| failed(error_chain(&e)))?;
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
        let chunk = resp.chunk().await.map_err(|e| failed(format!("after {received} bytes: {}", error_chain(&e))))?;
        let Some(chunk) = chunk else { break };
        hasher.update(&chunk);
        received += chunk.len() as u64;
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

async fn copy_file(url: &str, src: &Path, part: &Path, max_bytes: u64) -> Result<String> {
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
        if copied > max_bytes {
            return Err(too_big(url, max_bytes));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await.map_err(|e| Error::io("cannot write", part, e))?;
    }
    finish(file, part).await?;
    Ok(hex(&hasher.finalize()))
}

/// `<url>.sha256`: a 200 answer must hold the digest (first word, as `sha256sum` writes it);
/// any other status means "not published".
async fn published_digest(http: &reqwest::Client, url: &str) -> Result<Option<String>> {
    let sum_url = format!("{url}.sha256");
    let resp = match http.get(&sum_url).send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(url = %sum_url, error = %error_chain(&e), "cannot fetch the published checksum");
            return Ok(None);
        }
    };
    if resp.status() != reqwest::StatusCode::OK {
        return Ok(None);
    }
    let text = resp.text().await.map_err(|e| Error::Download { url: sum_url.clone(), message: error_chain(&e) })?;
    let word = text.split_whitespace().next().unwrap_or("");
    check_digest(word, &sum_url).map(Some)
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
        let http = http_client().unwrap();
        let dest = dir.path().join("out.tar");
        fetch(&http, &url, &dest, Some(&sha256_hex(b"hello")), 5).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");

        let dest2 = dir.path().join("out2.tar");
        let wrong = sha256_hex(b"other");
        let err = fetch(&http, &url, &dest2, Some(&wrong), MAX).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&wrong) && msg.contains(&sha256_hex(b"hello")), "{msg}");
        assert!(err.is_permanent());
        assert!(!dest2.exists());
        assert!(!part_path(&dest2).exists(), "no partial file is left");

        let dest3 = dir.path().join("out3.tar");
        let err = fetch(&http, &url, &dest3, None, 4).await.unwrap_err();
        assert!(matches!(err, Error::ArchiveLimit(_)) && err.to_string().contains("archive_max_bytes"), "{err}");
        assert!(!dest3.exists() && !part_path(&dest3).exists());
    }

    #[tokio::test]
    async fn unsupported_scheme_and_bad_digest_are_refused() {
        let dir = TempDir::new("dl");
        let http = http_client().unwrap();
        let err = fetch(&http, "s3://bucket/key", &dir.path().join("x"), None, MAX).await.unwrap_err();
        assert!(matches!(err, Error::UnsupportedUrl(_)), "{err}");
        let err = fetch(&http, "file:///etc/hostname", &dir.path().join("x"), Some("abc"), MAX).await.unwrap_err();
        assert!(matches!(err, Error::BadDigest(_)), "{err}");
    }
}
