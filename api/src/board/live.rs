//! The live stream of a stage page (`GET /envs/{env}/{stage}/live`): server-sent events made
//! for the page from the API's event hub. Cells are classified here, with the same rule as the
//! page (`grid::cell_of`), so the script only swaps classes and fragments:
//!
//! * `cells`: `[[hostId, class, label], …]` for hosts whose record changed;
//! * `fragment`: `{"id", "html"}`, a part of the page drawn again (the deploy, the summary);
//! * `resync`: what the page shows may be stale (the stream just opened, a gap, a new
//!   deploy): reload the grid.
//!
//! The summary is counted in Postgres (a grouped count, a few rows however many hosts) at
//! most once a second while records change, never when nothing does.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use schema::bus::LiveEvent;
use schema::model::{Build, Deploy};
use schema::{DeployId, EnvId, EnvState};
use serde_json::json;
use tokio::time::Instant;

use super::grid;
use super::stage::deploy_card;
use super::{Board, BoardResult, Viewer};
use crate::events::{Filter, Subscription, Update};
use crate::rest::stage_key;

/// Least time between two summaries of one stream.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// Comment lines that keep idle connections open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /envs/{env}/{stage}/live`.
pub async fn stream(
    State(board): State<Board>,
    _viewer: Viewer,
    Path((env, stage)): Path<(String, String)>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let e = board.api.store.stage(&env, &stage).await?;
    let subscription = board.api.events.subscribe(Filter::stage(env, stage));
    let live = Live {
        board,
        env_id: e.id,
        current: e.deploy_id,
        build: None,
        subscription,
        pending: Vec::new(),
        summary_due: None,
        seq: 0,
    };
    // What changed between the page's rendering and this subscription is not replayed (nor
    // is anything after a reconnection): the page reloads its grid, and gets the deploy and
    // the summary as they are now.
    let mut live = live;
    live.pending.push(Out::Resync);
    if let Some(id) = live.current.clone()
        && let Ok(deploy) = live.board.api.store.deploy(&id).await
    {
        live.deploy_card(&deploy, e.env_state == EnvState::Paused).await;
    }
    live.summary_due = Some(Instant::now());
    Ok(Sse::new(events(live)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// What one stream knows between events.
struct Live {
    board: Board,
    env_id: EnvId,
    /// The stage's current deploy as last seen (cells are classified against it).
    current: Option<DeployId>,
    /// The build of the current deploy, kept to draw the deploy card.
    build: Option<Build>,
    subscription: Subscription,
    /// Events made and not yet sent.
    pending: Vec<Out>,
    /// When the summary is to be counted again (`None`: nothing changed).
    summary_due: Option<Instant>,
    seq: u64,
}

enum Out {
    Cells(serde_json::Value),
    Fragment(&'static str, String),
    Resync,
}

fn events(live: Live) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(live, |mut live| async move {
        loop {
            if !live.pending.is_empty() {
                let out = live.pending.remove(0);
                live.seq += 1;
                let event = match out {
                    Out::Cells(v) => Event::default().event("cells").data(v.to_string()),
                    Out::Fragment(id, html) => {
                        Event::default().event("fragment").data(json!({"id": id, "html": html}).to_string())
                    }
                    Out::Resync => Event::default().event("resync").data("{}"),
                };
                return Some((Ok(event.id(live.seq.to_string())), live));
            }
            let due = live.summary_due;
            tokio::select! {
                update = live.subscription.next() => match update {
                    None => return None,
                    Some(update) => live.take(&update).await,
                },
                _ = sleep_until(due) => {
                    live.summary_due = None;
                    live.summarize().await;
                }
            }
        }
    })
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Live {
    /// Turns an update of the hub into events for the page.
    async fn take(&mut self, update: &Update) {
        match update {
            Update::Resync { .. } => {
                self.pending.push(Out::Resync);
                self.touch();
            }
            Update::Live(live) => match &live.event {
                LiveEvent::AgentsV1(a) => {
                    if a.agents.iter().any(|v| v.removed) {
                        self.pending.push(Out::Resync);
                    } else {
                        let cells: Vec<_> = a
                            .agents
                            .iter()
                            .map(|v| {
                                let (kind, label) = grid::cell_of(
                                    &v.host_name,
                                    v.state,
                                    v.status,
                                    v.deploy_stage,
                                    &v.deploy_id,
                                    self.current.as_ref(),
                                );
                                json!([v.host_id, grid::class(kind), label])
                            })
                            .collect();
                        self.pending.push(Out::Cells(cells.into()));
                    }
                    self.touch();
                }
                LiveEvent::DeployV1(d) => {
                    if self.current.as_ref() != Some(&d.deploy.id) {
                        // Every cell's kind depends on the current deploy.
                        self.current = Some(d.deploy.id.clone());
                        self.pending.push(Out::Resync);
                    }
                    self.deploy_card(&d.deploy, d.paused).await;
                    self.touch();
                }
            },
        }
    }

    /// Draws the deploy card again, from the event alone (the build is read when it changes).
    async fn deploy_card(&mut self, deploy: &Deploy, paused: bool) {
        if self.build.as_ref().is_none_or(|b| b.id != deploy.build_id) {
            self.build = self.board.api.store.build(&deploy.build_id).await.ok();
        }
        let html = deploy_card(paused, Some(deploy), self.build.as_ref()).into_string();
        self.pending.push(Out::Fragment("deploy", html));
    }

    /// Asks for a summary within [`SUMMARY_EVERY`].
    fn touch(&mut self) {
        if self.summary_due.is_none() {
            self.summary_due = Some(Instant::now() + SUMMARY_EVERY);
        }
    }

    async fn summarize(&mut self) {
        match self.board.api.store.agent_tallies(&self.env_id).await {
            Ok(tallies) => {
                let counts = grid::counts_of_tallies(&tallies, self.current.as_ref());
                self.pending.push(Out::Fragment("summary", grid::summary(&counts).into_string()));
            }
            // The next change asks again.
            Err(e) => tracing::debug!(error = %e, "board summary failed"),
        }
    }
}
