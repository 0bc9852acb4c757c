//! What the deploy board costs during a rollout (`teletraan bench rollout --board`): the
//! stage page's time to first byte and size, fetched as a logged-in browser would, and the
//! events of the board's live stream and of `GET /v1/events` for the stage while the rollout
//! runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::task::JoinHandle;

/// One fetch of the stage page.
#[derive(Debug, Clone, Copy)]
pub struct PageSample {
    /// From the request to the answer's head.
    pub first_byte: Duration,
    /// From the request to the last byte.
    pub total: Duration,
    /// Bytes of HTML.
    pub bytes: usize,
}

/// Fetches `/envs/{env}/{stage}` with the admin's session cookie.
pub async fn fetch_page(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    env: &str,
    stage: &str,
) -> anyhow::Result<PageSample> {
    let start = Instant::now();
    let resp = http
        .get(format!("{api}/envs/{env}/{stage}"))
        .header("Cookie", format!("tt_token={token}"))
        .send()
        .await
        .context("the board is unreachable")?;
    let first_byte = start.elapsed();
    if !resp.status().is_success() {
        bail!("the stage page answered {}", resp.status());
    }
    let bytes = resp.bytes().await?.len();
    Ok(PageSample { first_byte, total: start.elapsed(), bytes })
}

/// Page samples summed up: median and worst.
pub fn describe(samples: &[PageSample]) -> String {
    if samples.is_empty() {
        return "no sample".into();
    }
    let mut first: Vec<Duration> = samples.iter().map(|s| s.first_byte).collect();
    let mut total: Vec<Duration> = samples.iter().map(|s| s.total).collect();
    first.sort();
    total.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{} fetches: first byte p50 {:.0} ms, max {:.0} ms; whole page p50 {:.0} ms, max {:.0} ms; {} KiB",
        samples.len(),
        ms(first[first.len() / 2]),
        ms(first[first.len() - 1]),
        ms(total[total.len() / 2]),
        ms(total[total.len() - 1]),
        samples.iter().map(|s| s.bytes).max().unwrap_or(0) / 1024
    )
}

/// Counts of one event stream.
#[derive(Default)]
pub struct StreamCount {
    /// Events (any kind).
    pub events: AtomicU64,
    /// Bytes received.
    pub bytes: AtomicU64,
}

/// Reads an event stream until aborted, counting its events and bytes.
pub fn count_stream(
    http: reqwest::Client,
    url: String,
    cookie: Option<String>,
    auth: Option<String>,
) -> (Arc<StreamCount>, JoinHandle<()>) {
    let count = Arc::new(StreamCount::default());
    let c = count.clone();
    let task = tokio::spawn(async move {
        let mut req = http.get(&url);
        if let Some(cookie) = cookie {
            req = req.header("Cookie", cookie);
        }
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let Ok(mut resp) = req.send().await else { return };
        // Lines may be split across chunks: the unfinished one waits for the next chunk.
        let mut line = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            c.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            for &b in chunk.iter() {
                if b == b'\n' {
                    if line.starts_with(b"event:") {
                        c.events.fetch_add(1, Ordering::Relaxed);
                    }
                    line.clear();
                } else if line.len() < 16 {
                    line.push(b);
                }
            }
        }
    });
    (count, task)
}
