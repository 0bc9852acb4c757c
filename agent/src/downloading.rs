//! DOWNLOADING: fetch the build's artifact, verify it, extract it to `builds/<buildId>/`, with
//! the step's retries, progress pings all along (fetch, extraction, the sleeps between
//! attempts), and a clean stop when the server changes the goal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use schema::AgentStatus;
use schema::model::Build;

use crate::download;
use crate::error::{Error, Result};
use crate::exec::{HookSettings, Outcome};
use crate::extract::{self, Limits};
use crate::layout::Layout;
use crate::ownership::Owner;
use crate::progress::{self, Progress, Ticker, Watched, watch};
use crate::status::StepResult;

/// What DOWNLOADING needs from the agent.
#[derive(Debug, Clone, Copy)]
pub struct Downloader<'a> {
    /// Where builds go.
    pub layout: &'a Layout,
    /// Fetches artifacts under the agent's artifact policy.
    pub fetcher: &'a download::Fetcher,
    /// Archive limits (the download is held to `max_bytes` too).
    pub limits: Limits,
    /// Whom extracted builds are given to (the hook user), if anyone.
    pub owner: Option<Owner>,
}

impl Downloader<'_> {
    /// Runs the step: up to `max_retries` attempts; a permanent error (unsupported or refused
    /// URL, no checksum, a checksum mismatch, refused entry, a limit) fails at once with
    /// AGENT_FAILED; the last transient
    /// error gives TOO_MANY_RETRY.
    pub async fn run<P: Progress>(
        &self,
        env: &str,
        build: &Build,
        settings: &HookSettings,
        ticker: &mut Ticker,
        progress: &mut P,
    ) -> Outcome {
        let mut delays = settings.retry_delays();
        let attempts = settings.max_retries.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let result = match self.attempt(env, build, ticker, progress).await {
                Watched::Done(r) => r,
                Watched::Aborted(next) => {
                    tracing::info!(env, build.id = %build.id, "goal changed by the server; download stopped");
                    return Outcome::Aborted(next);
                }
            };
            let fail_count = i32::try_from(attempt).unwrap_or(i32::MAX);
            match result {
                Ok(()) => return Outcome::Done(StepResult { fail_count: fail_count - 1, ..StepResult::succeeded() }),
                Err(e) if e.is_permanent() => {
                    tracing::error!(env, build.id = %build.id, error = %e, "download refused");
                    return Outcome::Done(StepResult::agent_failed(e.to_string()));
                }
                Err(e) => {
                    tracing::warn!(env, build.id = %build.id, attempt, error = %e, "download failed");
                    last = e.to_string();
                    if attempt < attempts {
                        let delay = delays.next().unwrap_or(settings.retry_delay);
                        if let Some(next) = progress::sleep(delay, ticker, progress).await {
                            return Outcome::Aborted(next);
                        }
                    }
                }
            }
        }
        Outcome::Done(StepResult {
            status: AgentStatus::TooManyRetry,
            error_code: 1,
            error_message: Some(last),
            fail_count: i32::try_from(attempts).unwrap_or(i32::MAX),
        })
    }

    /// One attempt: nothing when the build is already extracted; else fetch, then extract.
    async fn attempt<P: Progress>(
        &self,
        env: &str,
        build: &Build,
        ticker: &mut Ticker,
        progress: &mut P,
    ) -> Watched<Result<()>> {
        let id = build.id.to_string();
        if extract::is_extracted(self.layout, &id) {
            tracing::info!(build.id = %id, "build already extracted; skipping the download");
            return Watched::Done(Ok(()));
        }
        let archive = self.layout.archive(env, &id, &download::archive_extension(&build.artifact_url));
        let sha = build.artifact_sha256.as_deref();
        let fetch = self.fetcher.fetch(&build.artifact_url, &archive, sha, self.limits.max_bytes);
        match watch(fetch, ticker, progress).await {
            Watched::Done(Ok(())) => {}
            Watched::Done(Err(e)) => return Watched::Done(Err(e)),
            Watched::Aborted(next) => return Watched::Aborted(next),
        }
        // The extraction runs on a blocking thread: on a goal change it is told to stop and
        // awaited, so it never runs on behind the next goal.
        let cancel = Arc::new(AtomicBool::new(false));
        let mut task = tokio::task::spawn_blocking({
            let (layout, archive, id, limits, cancel, owner) =
                (self.layout.clone(), archive.clone(), id.clone(), self.limits, cancel.clone(), self.owner);
            move || extract::extract_build_for(&archive, &layout, &id, limits, &cancel, owner)
        });
        let result = match watch(&mut task, ticker, progress).await {
            Watched::Done(joined) => {
                joined.map_err(|e| Error::Archive(format!("extraction task failed: {e}"))).and_then(|r| r)
            }
            Watched::Aborted(next) => {
                cancel.store(true, Ordering::Relaxed);
                let _ = task.await;
                let _ = std::fs::remove_file(&archive);
                return Watched::Aborted(next);
            }
        };
        match &result {
            Ok(()) => tracing::info!(build.id = %id, archive = %archive.display(), "build downloaded and extracted"),
            // An archive that was not extracted is not kept: the next attempt downloads it again.
            Err(_) => {
                let _ = std::fs::remove_file(&archive);
            }
        }
        Watched::Done(result)
    }
}
