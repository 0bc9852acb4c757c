//! The host grid of a stage: one cell per host, coloured by what the host is doing for the
//! current deploy; the summary by kind; the fragment the live page reloads after a gap.

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use schema::model::Agent;
use schema::{AgentState, AgentStatus, DeployId, DeployStage, EnvId, HostName};
use serde::Deserialize;
use store::AgentTally;

use super::{Board, BoardResult, Viewer, forward};
use crate::rest::stage_key;

/// Cells on one page of the grid.
pub const PAGE: usize = 1000;

/// The grid's word for a host's kind (the rule is `schema::rules::host_kind`).
pub use schema::rules::host_kind::HostKind as Kind;

/// The CSS class of a kind's cells.
pub fn class(kind: Kind) -> &'static str {
    match kind {
        Kind::Done => "c-done",
        Kind::Working => "c-working",
        Kind::Retrying => "c-retrying",
        Kind::Failed => "c-failed",
        Kind::Paused => "c-paused",
        Kind::Waiting => "c-waiting",
        Kind::Stopped => "c-stopped",
        Kind::Gone => "c-gone",
    }
}

/// A cell's class and its text (title and accessible name).
pub fn cell(a: &Agent, current: Option<&DeployId>) -> (Kind, String) {
    cell_of(&a.host_name, a.state, a.status, a.deploy_stage, &a.deploy_id, current)
}

/// A cell's class and text from a record's fields (the page's records and the live stream's
/// views alike).
pub fn cell_of(
    host: &HostName,
    state: AgentState,
    status: AgentStatus,
    step: DeployStage,
    deploy: &DeployId,
    current: Option<&DeployId>,
) -> (Kind, String) {
    let kind = Kind::of(state, status, step, deploy, current);
    (kind, format!("{host}: {} · {step} · {status}", kind.label()))
}

/// Hosts by kind, from the store's groups of alike records.
pub fn counts_of_tallies(tallies: &[AgentTally], current: Option<&DeployId>) -> [usize; 8] {
    tally(tallies.iter().map(|t| {
        (Kind::of(t.state, t.status, t.deploy_stage, &t.deploy_id, current), usize::try_from(t.count).unwrap_or(0))
    }))
}

fn tally(kinds: impl Iterator<Item = (Kind, usize)>) -> [usize; 8] {
    let mut counts = [0; 8];
    for (kind, n) in kinds {
        counts[Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)] += n;
    }
    counts
}

/// The legend with the count of each kind.
pub fn summary(counts: &[usize; 8]) -> Markup {
    let total: usize = counts.iter().sum();
    html! {
        ul.legend aria-label="Hosts by state" {
            li { strong { (total) " hosts" } }
            @for (kind, n) in Kind::ALL.into_iter().zip(counts) {
                li { span class=(format!("swatch {}", class(kind))) aria-hidden="true" {} (kind.label()) ": " strong { (n) } }
            }
        }
    }
}

/// The cells of one page of hosts (sorted by name).
pub fn cells(env: &str, stage: &str, agents: &[Agent], current: Option<&DeployId>) -> Markup {
    html! {
        @if agents.is_empty() { p.hint { "No host has reported for this stage yet." } }
        @for a in agents {
            @let (kind, label) = cell(a, current);
            // The title is the link's accessible name too (it has no text).
            a class=(format!("cell {}", class(kind))) data-h=(a.host_id) title=(label)
                href=(format!("/envs/{env}/{stage}/hosts/{}", forward::encode(a.host_name.as_str()))) {}
        }
    }
}

/// The pager under the grid (absent with one page).
pub fn pager(env: &str, stage: &str, page: usize, total: usize) -> Markup {
    let pages = total.div_ceil(PAGE).max(1);
    html! {
        @if pages > 1 {
            nav.pager aria-label="Pages of hosts" {
                @if page > 1 { a href=(format!("/envs/{env}/{stage}?page={}", page - 1)) { "← Previous" } }
                span { "Hosts " (((page - 1) * PAGE + 1)) "–" ((page * PAGE).min(total)) " of " (total) " (page " (page) " of " (pages) ")" }
                @if page < pages { a href=(format!("/envs/{env}/{stage}?page={}", page + 1)) { "Next →" } }
            }
        }
    }
}

/// The records of page `page` (from 1, clamped to the last page) by host name, and how many
/// records the stage has.
pub async fn load_page(store: &store::Store, env_id: &EnvId, page: usize) -> store::Result<(usize, Vec<Agent>, usize)> {
    let limit = PAGE as i64;
    let page = page.clamp(1, 100_000);
    let (agents, total) = store.agents_page(env_id, (page as i64 - 1) * limit, limit).await?;
    let total = usize::try_from(total).unwrap_or(0);
    let last = total.div_ceil(PAGE).max(1);
    if page > last {
        let (agents, _) = store.agents_page(env_id, (last as i64 - 1) * limit, limit).await?;
        return Ok((last, agents, total));
    }
    Ok((page, agents, total))
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<String>,
}

impl PageQuery {
    /// The page asked for (1 when absent or not a number).
    pub fn number(&self) -> usize {
        self.page.as_deref().and_then(|p| p.parse().ok()).unwrap_or(1)
    }
}

/// `GET /envs/{env}/{stage}/grid?page=`: the cells of a page, for the live page to reload.
pub async fn fragment(
    State(board): State<Board>,
    _viewer: Viewer,
    Path((env, stage)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let e = board.api.store.stage(&env, &stage).await?;
    let (_, shown, _) = load_page(&board.api.store, &e.id, q.number()).await?;
    Ok(Html(cells(env.as_str(), stage.as_str(), &shown, e.deploy_id.as_ref()).into_string()).into_response())
}
