//! One host of a stage: its record on every stage, its last error with the output's tail, and
//! the host actions (pause, resume, reset, stop).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use maud::html;
use schema::{AgentState, HostName};
use serde::Deserialize;

use super::grid::{self, Kind};
use super::layout::{self, Flash};
use super::session::{Https, Posted};
use super::stage::{after, confirm_page, stage_url};
use super::{Board, BoardError, BoardResult, Viewer, forward};
use crate::error::ApiError;
use crate::rest::stage_key;

/// Deploys listed in a host's history.
const HISTORY: i64 = 50;
/// Characters of an error's output shown (its end: where the failure is).
const TAIL: usize = 8000;

/// `GET /envs/{env}/{stage}/hosts/{host}` (the host's name).
pub async fn page(
    State(board): State<Board>,
    viewer: Viewer,
    flash: Option<Extension<Flash>>,
    Path((env, stage, host)): Path<(String, String, String)>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let name = HostName::parse(host)?;
    let store = &board.api.store;
    let e = store.stage(&env, &stage).await?;
    let records = store.agents_of_host(Some(&name), None).await?;
    let Some(record) = records.iter().find(|a| a.env_id == e.id) else {
        return Err(BoardError(ApiError::not_found(format!("host {name} has no record on {env}/{stage}"))));
    };
    let facts = store.hosts_named(&name).await?;
    let error = store.agent_error(&e.id, &name).await?;
    let deploys = store.host_deploys(&name, HISTORY).await?;
    let mut ids: Vec<_> =
        records.iter().map(|a| a.env_id.clone()).chain(deploys.iter().map(|d| d.env_id.clone())).collect();
    ids.sort();
    ids.dedup();
    let names = store.stage_names(&ids).await?;
    let stage_of = |id: &schema::EnvId| {
        names
            .iter()
            .find(|(i, _, _)| i == id)
            .map_or_else(|| "(deleted stage)".to_string(), |(_, e, s)| format!("{e}/{s}"))
    };
    let kind = Kind::of(record.state, record.status, record.deploy_stage, &record.deploy_id, e.deploy_id.as_ref());
    let back = stage_url(&env, &stage);
    let action_url = format!("{back}/hosts/{}/action", forward::encode(name.as_str()));
    let body = html! {
        h1 { (name) " on " a href=(back) { (env) "/" (stage) } }
        p { span class=(format!("swatch {}", grid::class(kind))) aria-hidden="true" {} " " (kind.label()) " · "
            (layout::badge(record.state.as_str())) " " (layout::badge(record.deploy_stage.as_str())) " "
            (layout::badge(record.status.as_str())) }
        dl.facts {
            dt { "Host id" } dd { code { (record.host_id) } }
            dt { "Deploy" } dd { a href=(format!("/deploys/{}", record.deploy_id)) { (record.deploy_id) } }
            dt { "Step since" } dd { (layout::time(Some(record.stage_start_date))) }
            dt { "Deploy started" } dd { (layout::time(Some(record.start_date))) }
            dt { "Last report" } dd { (layout::time(Some(record.last_update_date))) }
            dt { "Failures of this step" } dd { (record.fail_count) }
            dt { "Last error number" } dd { (record.last_errno) }
            dt { "Last change by" } dd { (record.last_operator) }
            @for h in &facts {
                dt { "Address" } dd { (h.ip.as_deref().unwrap_or("—")) }
                dt { "Group" } dd { (h.group_name.as_ref().map(|g| g.as_str()).unwrap_or("—")) }
                dt { "Agent version" } dd { (h.agent_version) }
                dt { "Last ping" } dd { (layout::time(h.last_ping_date)) }
            }
        }
        @if viewer.may_operate(&env) {
            section.actions aria-labelledby="host-actions" {
                h2 #host-actions { "Host actions" }
                @for (state, label, effect) in HOST_ACTIONS {
                    form method="post" action=(action_url) data-confirm=(format!("{effect} ({name} on {env}/{stage})")) {
                        (layout::csrf(&viewer))
                        input type="hidden" name="confirmed" value="";
                        input type="hidden" name="state" value=(state.as_str());
                        button.danger[state == AgentState::Stop] type="submit" { (label) }
                    }
                }
            }
        }
        h2 { "Last error" }
        @match &error {
            Some((_, text)) => {
                @let tail = tail(text);
                @if tail.len() < text.len() { p.hint { "The last " (TAIL) " characters of the output:" } }
                pre.output { (tail) }
            }
            None => p { "None reported." },
        }
        h2 { "Deploy history" }
        p.hint { "The deploys this host took part in on every stage, the latest first (the last " (HISTORY)
            "): where it ended and how many failed reports it made. Open a deploy for its timeline." }
        @if deploys.is_empty() { p { "None recorded." } } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Deploy" } th scope="col" { "Stage" } th scope="col" { "Build" }
                    th scope="col" { "From" } th scope="col" { "Last change" } th scope="col" { "Ended at" }
                    th scope="col" { "Failures" } } }
                tbody { @for h in &deploys { tr {
                    td { a href=(format!("/deploys/{}#timeline", h.deploy_id)) { (h.deploy_id) } }
                    td { (stage_of(&h.env_id)) }
                    td { @match &h.build_id { Some(b) => code { (b) }, None => "(deleted)" } }
                    td { (layout::time(Some(h.first_date))) }
                    td { (layout::time(Some(h.last_date))) }
                    td { (h.last_stage) " " (layout::badge(h.last_status.as_str()))
                        @if h.last_state != AgentState::Normal { " " (layout::badge(h.last_state.as_str())) } }
                    td.failed[h.failures > 0] { (h.failures) }
                } } }
            } }
        }
        h2 { "Every stage of this host" }
        div.scroll { table {
            thead { tr { th scope="col" { "Stage" } th scope="col" { "Step" } th scope="col" { "Status" } th scope="col" { "State" } th scope="col" { "Last report" } } }
            tbody { @for a in &records { tr {
                td { (stage_of(&a.env_id)) } td { (a.deploy_stage) } td { (a.status) } td { (a.state) }
                td { (layout::time(Some(a.last_update_date))) }
            } } }
        } }
    };
    Ok(layout::page(name.as_str(), &viewer, flash.as_ref().map(|f| &f.0), body).into_response())
}

/// The host actions: the state asked for, the button, what it does.
const HOST_ACTIONS: [(AgentState, &str, &str); 4] = [
    (AgentState::PausedByUser, "Pause", "Pause this host? It takes no new step until resumed"),
    (AgentState::Normal, "Resume", "Resume this host? It takes its next steps again"),
    (AgentState::Reset, "Reset", "Reset this host? It runs the current deploy again from the start"),
    (AgentState::Stop, "Stop", "Stop the service on this host? It stops serving until a new deploy"),
];

/// The end of an output, cut at a character boundary.
fn tail(text: &str) -> &str {
    if text.len() <= TAIL {
        return text;
    }
    let mut start = text.len() - TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[derive(Deserialize)]
pub struct HostForm {
    confirmed: Option<String>,
    state: Option<String>,
}

/// `POST /envs/{env}/{stage}/hosts/{host}/action`.
pub async fn action(
    State(board): State<Board>,
    viewer: Viewer,
    https: Option<Extension<Https>>,
    Path((env, stage, host)): Path<(String, String, String)>,
    Posted(f): Posted<HostForm>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let name = HostName::parse(host)?;
    let page = format!("{}/hosts/{}", stage_url(&env, &stage), forward::encode(name.as_str()));
    let state = f.state.unwrap_or_default();
    let Some((wanted, label, effect)) = HOST_ACTIONS.iter().find(|(s, _, _)| s.as_str() == state) else {
        return Err(BoardError(ApiError::bad_request("state must be PAUSED_BY_USER, NORMAL, RESET or STOP")));
    };
    if f.confirmed.as_deref() != Some("1") {
        let question = format!("{effect} ({name} on {env}/{stage})");
        return Ok(confirm_page(&viewer, &question, &format!("{page}/action"), &[("state", state.clone())], &page));
    }
    let e = board.api.store.stage(&env, &stage).await?;
    let records = board.api.store.agents_of_host(Some(&name), None).await?;
    let Some(record) = records.iter().find(|a| a.env_id == e.id) else {
        return Err(BoardError(ApiError::not_found(format!("host {name} has no record on {env}/{stage}"))));
    };
    let path = format!("/v1/envs/{env}/{stage}/agents/{}", forward::encode(record.host_id.as_str()));
    let body = serde_json::json!({ "state": wanted.as_str() });
    let outcome = forward::call(&board.rest, &viewer.creds, Method::PUT, &path, Some(body)).await;
    Ok(after(outcome, &page, &format!("{label}: asked of {name}."), https.is_some()))
}
