//! Deploys: a stage's history with filters, one deploy with the steps of its hosts, two
//! deploys side by side; and the audit history of a stage or of the whole system.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use schema::model::{Build, Deploy};
use schema::{AgentState, AgentStatus, DeployId, DeployState, DeployType, EnvName, HostName, StageName};
use serde::Deserialize;
use store::{DeploySearch, HistoryQuery};

use super::layout::{self, Flash};
use super::{Board, BoardError, BoardResult, Viewer, forward};
use crate::error::ApiError;
use crate::rest::stage_key;

/// Rows on a page of deploys or history.
const PAGE_SIZE: i64 = 50;
/// Hosts on a page of a deploy's timeline.
const HOSTS_PER_PAGE: i64 = 100;

#[derive(Deserialize, Default)]
pub struct HistoryFilter {
    state: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    operator: Option<String>,
    build: Option<String>,
    page: Option<String>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn page_number(v: &Option<String>) -> i64 {
    given(v).and_then(|p| p.parse().ok()).filter(|p| (1..=100_000).contains(p)).unwrap_or(1)
}

/// `GET /envs/{env}/{stage}/deploys?state=&type=&operator=&build=&page=`.
pub async fn history(
    State(board): State<Board>,
    viewer: Viewer,
    flash: Option<Extension<Flash>>,
    Path((env, stage)): Path<(String, String)>,
    Query(f): Query<HistoryFilter>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let e = board.api.store.stage(&env, &stage).await?;
    let bad = |e: schema::UnknownValue| BoardError(ApiError::bad_request(e.to_string()));
    let state = given(&f.state).map(|s| s.parse::<DeployState>()).transpose().map_err(bad)?;
    let kind = given(&f.kind).map(|s| s.parse::<DeployType>()).transpose().map_err(bad)?;
    let page = page_number(&f.page);
    let search = DeploySearch {
        env_ids: vec![e.id.to_string()],
        operators: given(&f.operator).map(|o| vec![o.to_string()]).unwrap_or_default(),
        deploy_types: kind.map(|k| vec![k.to_string()]).unwrap_or_default(),
        deploy_states: state.map(|s| vec![s.to_string()]).unwrap_or_default(),
        build_id: given(&f.build).map(str::to_string),
        page_index: page,
        page_size: PAGE_SIZE,
        ..Default::default()
    };
    let found = board.api.store.search_deploys(&search).await?;
    let base = format!("/envs/{env}/{stage}/deploys");
    let keep = format!(
        "state={}&type={}&operator={}&build={}",
        forward::encode(given(&f.state).unwrap_or_default()),
        forward::encode(given(&f.kind).unwrap_or_default()),
        forward::encode(given(&f.operator).unwrap_or_default()),
        forward::encode(given(&f.build).unwrap_or_default())
    );
    let body = html! {
        h1 { "Deploys of " a href=(format!("/envs/{env}/{stage}")) { (env) "/" (stage) } }
        form.searchbar method="get" action=(base) {
            div { label for="state" { "State" } select #state name="state" {
                option value="" { "any" }
                @for s in DeployState::ALL { option selected[state == Some(*s)] { (s) } }
            } }
            div { label for="type" { "Type" } select #type name="type" {
                option value="" { "any" }
                @for k in DeployType::ALL { option selected[kind == Some(*k)] { (k) } }
            } }
            div { label for="operator" { "Operator" } input #operator type="text" name="operator" value=(given(&f.operator).unwrap_or_default()); }
            div { label for="build" { "Build id" } input #build type="text" name="build" value=(given(&f.build).unwrap_or_default()); }
            button type="submit" { "Filter" }
        }
        form.searchbar method="get" action="/deploys/compare" {
            div { label for="a" { "Compare deploy" } input #a type="text" name="a" required; }
            div { label for="b" { "with deploy" } input #b type="text" name="b" required; }
            button type="submit" { "Compare" }
        }
        (deploy_table(&found.deploys))
        nav.pager aria-label="Pages of deploys" {
            @if page > 1 { a href=(format!("{base}?{keep}&page={}", page - 1)) { "← Newer" } }
            span { (found.total) " deploys" }
            @if found.truncated { a href=(format!("{base}?{keep}&page={}", page + 1)) { "Older →" } }
        }
    };
    Ok(layout::page("Deploys", &viewer, flash.as_ref().map(|f| &f.0), body).into_response())
}

fn deploy_table(deploys: &[Deploy]) -> Markup {
    html! {
        @if deploys.is_empty() { p { "No deploy matches." } } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Started" } th scope="col" { "Build" } th scope="col" { "Type" }
                    th scope="col" { "State" } th scope="col" { "Hosts" } th scope="col" { "By" } th scope="col" { "Deploy" } } }
                tbody { @for d in deploys { tr {
                    td { (layout::time(Some(d.start_date))) }
                    td { code { (d.build_id) } }
                    td { (d.deploy_type) }
                    td { (layout::badge(d.state.as_str())) }
                    td { (d.success_total) "/" (d.total) @if d.fail_total > 0 { " (" (d.fail_total) " failed)" } }
                    td { (d.operator) }
                    td { a href=(format!("/deploys/{}", d.id)) { (d.id) } }
                } } }
            } }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct StepsPage {
    /// The last host name of the previous page.
    after: Option<String>,
}

/// `GET /deploys/{id}`: the deploy, its build, and the timeline of its hosts' steps, a page of
/// hosts at a time by name.
pub async fn page(
    State(board): State<Board>,
    viewer: Viewer,
    flash: Option<Extension<Flash>>,
    Path(id): Path<String>,
    Query(q): Query<StepsPage>,
) -> BoardResult<Response> {
    let store = &board.api.store;
    let d = store.deploy(&DeployId::parse(id)?).await?;
    let e = store.stage_by_id(&d.env_id).await?;
    let build = store.build(&d.build_id).await?;
    let after = given(&q.after).map(|a| HostName::parse(a.to_string())).transpose()?;
    let steps = store.deploy_steps(&d.id, after.as_ref(), HOSTS_PER_PAGE).await?;
    let host_url =
        |name: &HostName| format!("/envs/{}/{}/hosts/{}", e.env_name, e.stage_name, forward::encode(name.as_str()));
    let body = html! {
        h1 { "Deploy " (d.id) }
        p { a href=(format!("/envs/{}/{}", e.env_name, e.stage_name)) { (e.env_name) "/" (e.stage_name) } " · "
            (layout::badge(d.state.as_str())) " " (layout::badge(d.deploy_type.as_str())) }
        (facts(&d, &build))
        h2 #timeline { "Timeline of host steps" }
        p.hint { (steps.total_hosts) " hosts took part. Each change of a host's step, status or state on this deploy, "
            "in order, with its time (UTC); failures in red." }
        @if steps.hosts.is_empty() { p { "No host has started this deploy." } } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Host" } th scope="col" { "Changes" } } }
                tbody { @for h in &steps.hosts { tr {
                    th scope="row" { a href=(host_url(&h.host_name)) { (h.host_name) } }
                    td { ol.steps { @for c in &h.steps {
                        li.failed[is_failure(c.status)] {
                            (layout::clock(c.date)) " " (c.deploy_stage) " " (c.status)
                            @if c.state != AgentState::Normal { " " (c.state) }
                            @if c.operator != "system" { " by " (c.operator) }
                        }
                    } } }
                } } }
            } }
        }
        nav.pager aria-label="Pages of hosts" {
            @if after.is_some() { a href=(format!("/deploys/{}#timeline", d.id)) { "← First hosts" } }
            @if let Some(next) = &steps.next {
                a href=(format!("/deploys/{}?after={}#timeline", d.id, forward::encode(next.as_str()))) { "Next hosts →" }
            }
        }
    };
    Ok(layout::page("Deploy", &viewer, flash.as_ref().map(|f| &f.0), body).into_response())
}

/// Statuses shown as failures in timelines.
pub fn is_failure(status: AgentStatus) -> bool {
    !matches!(status, AgentStatus::Succeeded | AgentStatus::Unknown | AgentStatus::AbortedByService)
}

fn facts(d: &Deploy, b: &Build) -> Markup {
    html! {
        dl.facts {
            dt { "Build" } dd { code { (b.id) } " (" (b.name) ")" }
            dt { "Commit" } dd { code { (b.commit) } " on " (b.branch) " of " (b.repo) }
            dt { "Committed" } dd { (layout::time(Some(b.commit_date))) }
            dt { "By" } dd { (d.operator) }
            dt { "Started" } dd { (layout::time(Some(d.start_date))) }
            dt { "Succeeded" } dd { (layout::time(d.success_date)) }
            dt { "Last change" } dd { (layout::time(Some(d.last_update_date))) }
            dt { "Hosts" } dd { (d.success_total) " of " (d.total) " done, " (d.fail_total) " failed" }
            dt { "Acceptance" } dd { (d.acceptance_status) }
            @if let Some(from) = &d.from_deploy_id { dt { "Promoted from" } dd { a href=(format!("/deploys/{from}")) { (from) } } }
            @if let Some(alias) = &d.alias { dt { "Rolled back to" } dd { a href=(format!("/deploys/{alias}")) { (alias) } } }
            @if let Some(desc) = &d.description { dt { "Note" } dd { (desc) } }
        }
    }
}

#[derive(Deserialize)]
pub struct CompareQuery {
    a: Option<String>,
    b: Option<String>,
}

/// `GET /deploys/compare?a=&b=`: two deploys side by side.
pub async fn compare(
    State(board): State<Board>,
    viewer: Viewer,
    Query(q): Query<CompareQuery>,
) -> BoardResult<Response> {
    let store = &board.api.store;
    let mut both = Vec::new();
    for id in [given(&q.a), given(&q.b)] {
        let Some(id) = id else { return Err(BoardError(ApiError::bad_request("give two deploy ids, a and b"))) };
        let d = store.deploy(&DeployId::parse(id)?).await?;
        let b = store.build(&d.build_id).await?;
        both.push((d, b));
    }
    let body = html! {
        h1 { "Two deploys" }
        div.cards { @for (d, b) in &both {
            section.card { h2 { a href=(format!("/deploys/{}", d.id)) { (d.id) } } (facts(d, b)) }
        } }
        @if both[0].1.commit == both[1].1.commit { p { "Both deploy the same commit." } }
        @else if both[0].1.repo == both[1].1.repo {
            p { "Commits " code { (both[0].1.commit_short) } " and " code { (both[1].1.commit_short) } " of " (both[0].1.repo) "." }
        }
    };
    Ok(layout::page("Compare deploys", &viewer, None, body).into_response())
}

#[derive(Deserialize)]
pub struct AuditQuery {
    env: Option<String>,
    stage: Option<String>,
    operator: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    page: Option<String>,
}

/// `GET /history?env=&stage=&operator=&type=&page=`: the audit history, newest first.
pub async fn audit(State(board): State<Board>, viewer: Viewer, Query(q): Query<AuditQuery>) -> BoardResult<Response> {
    let store = &board.api.store;
    let page = page_number(&q.page);
    let env = given(&q.env).map(EnvName::parse).transpose()?;
    let stage = given(&q.stage).map(StageName::parse).transpose()?;
    let short = |v: Option<&str>| match v {
        Some(v) if v.len() > 256 => Err(BoardError(ApiError::bad_request("filters are at most 256 bytes"))),
        v => Ok(v.map(str::to_string)),
    };
    let entries = match (&env, &stage) {
        (Some(env), Some(stage)) => store.stage_history(env, stage, page, PAGE_SIZE).await?,
        _ => {
            store
                .history(&HistoryQuery {
                    env_name: env.as_ref().map(|e| e.to_string()),
                    operator: short(given(&q.operator))?,
                    kind: short(given(&q.kind))?,
                    page_index: page,
                    page_size: PAGE_SIZE,
                })
                .await?
        }
    };
    let title = match (&env, &stage) {
        (Some(e), Some(s)) => format!("History of {e}/{s}"),
        (Some(e), None) => format!("History of {e}"),
        _ => "History".to_string(),
    };
    let body = html! {
        h1 { (title) }
        form.searchbar method="get" action="/history" {
            div { label for="env" { "Environment" } input #env type="text" name="env" value=(given(&q.env).unwrap_or_default()); }
            div { label for="stage" { "Stage" } input #stage type="text" name="stage" value=(given(&q.stage).unwrap_or_default()); }
            div { label for="operator" { "Who" } input #operator type="text" name="operator" value=(given(&q.operator).unwrap_or_default()); }
            div { label for="type" { "Kind" } input #type type="text" name="type" value=(given(&q.kind).unwrap_or_default()); }
            button type="submit" { "Filter" }
        }
        @if entries.is_empty() { p { "Nothing recorded." } } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Where" } th scope="col" { "Change" } } }
                tbody { @for h in &entries { tr {
                    td { (layout::time(Some(h.created_time))) }
                    td { (h.operator) }
                    td { (h.kind) " " (h.action) }
                    td { @if let (Some(e), Some(s)) = (&h.env_name, &h.stage_name) { a href=(format!("/envs/{e}/{s}")) { (e) "/" (s) } }
                         @else if let Some(e) = &h.env_name { (e) } }
                    td { @if let Some(c) = &h.config_change { details { summary { "details" } pre.output { (serde_json::to_string_pretty(c).unwrap_or_default()) } } } }
                } } }
            } }
            nav.pager aria-label="Pages of history" {
                @if page > 1 { a href=(format!("/history?env={}&stage={}&page={}", forward::encode(given(&q.env).unwrap_or_default()), forward::encode(given(&q.stage).unwrap_or_default()), page - 1)) { "← Newer" } }
                @if entries.len() as i64 == PAGE_SIZE { a href=(format!("/history?env={}&stage={}&page={}", forward::encode(given(&q.env).unwrap_or_default()), forward::encode(given(&q.stage).unwrap_or_default()), page + 1)) { "Older →" } }
            }
        }
    };
    Ok(layout::page(&title, &viewer, None, body).into_response())
}
