//! The list of environments and the form that creates a stage.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use schema::model::Deploy;
use schema::{AccessRole, DeployId};
use serde::Deserialize;

use super::layout::{self, Flash};
use super::session::{self, Https, Posted};
use super::{Board, BoardError, BoardResult, Viewer, forward};
use crate::error::ApiError;

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// `GET /?q=`: every stage with its current build, deploy state and progress; `q` keeps the
/// stages whose `env/stage` contains every word of it.
pub async fn index(
    State(board): State<Board>,
    viewer: Viewer,
    flash: Option<Extension<Flash>>,
    Query(q): Query<SearchQuery>,
) -> BoardResult<Response> {
    let store = &board.api.store;
    let query = q.q.unwrap_or_default();
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let stages: Vec<_> = store
        .stages(None)
        .await?
        .into_iter()
        .filter(|e| {
            let key = format!("{}/{} {}", e.env_name, e.stage_name, e.build_name).to_lowercase();
            words.iter().all(|w| key.contains(w.as_str()))
        })
        .collect();
    let ids: Vec<DeployId> = stages.iter().filter_map(|e| e.deploy_id.clone()).collect();
    let deploys: HashMap<DeployId, Deploy> =
        store.deploys_with_ids(&ids).await?.into_iter().map(|d| (d.id.clone(), d)).collect();
    let body = html! {
        h1 { "Environments" }
        form.searchbar method="get" action="/" role="search" {
            div {
                label for="q" { "Find a stage" }
                input #q type="search" name="q" value=(query) data-filter="stages" placeholder="env, stage or build name";
            }
            button type="submit" { "Search" }
            @if access_somewhere(&viewer) { a.button href="/envs/new" { "New stage" } }
        }
        @if stages.is_empty() {
            p { @if words.is_empty() { "No stage exists yet." } @else { "No stage matches." } }
        } @else {
            div.scroll {
                table #stages {
                    caption.hint { (stages.len()) " stages" }
                    thead { tr { th scope="col" { "Stage" } th scope="col" { "Build" } th scope="col" { "Deploy" }
                        th scope="col" { "Progress" } th scope="col" { "Last change" } } }
                    tbody {
                        @for e in &stages {
                            @let d = e.deploy_id.as_ref().and_then(|id| deploys.get(id));
                            tr {
                                td { a href=(format!("/envs/{}/{}", e.env_name, e.stage_name)) { (e.env_name) "/" (e.stage_name) }
                                    @if e.env_state != schema::EnvState::Normal { " " (layout::badge(e.env_state.as_str())) }
                                    @if e.state != schema::EnvironState::Normal { " " (layout::badge(e.state.as_str())) } }
                                td { (e.build_name) @if let Some(d) = d { br; code { (d.build_id) } } }
                                td { @match d { Some(d) => (layout::badge(d.state.as_str())), None => "—" } }
                                td { @if let Some(d) = d { (progress(d)) } }
                                td { (layout::time(d.map(|d| d.last_update_date))) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Environments", &viewer, flash.as_ref().map(|f| &f.0), body).into_response())
}

fn progress(d: &Deploy) -> Markup {
    html! {
        progress max=(d.total.max(1)) value=(d.success_total) aria-label="hosts done" {}
        span.hint { (d.success_total) "/" (d.total) @if d.fail_total > 0 { ", " (d.fail_total) " failed" } }
    }
}

/// Whether the viewer may create stages anywhere (OPERATOR somewhere).
fn access_somewhere(viewer: &Viewer) -> bool {
    schema::rules::access::allows_somewhere(&viewer.principal.grants, AccessRole::Operator)
}

/// The fields of the new-stage form: (form name, JSON name, label, hint).
const FIELDS: [(&str, &str, &str, &str); 6] = [
    ("env_name", "envName", "Environment", "letters, digits, - and _"),
    ("stage_name", "stageName", "Stage", "e.g. beta, canary, prod"),
    ("build_name", "buildName", "Build name", "the name CI publishes builds under; defaults to the environment's"),
    ("description", "description", "Description", ""),
    ("max_parallel", "maxParallel", "Hosts at once", "how many hosts deploy at the same time"),
    ("success_threshold", "successThreshold", "Success threshold", "in hundredths of a percent: 10000 is 100%"),
];

/// `GET /envs/new`.
pub async fn new_page(viewer: Viewer, flash: Option<Extension<Flash>>) -> Response {
    new_form(&viewer, flash.map(|f| f.0), &HashMap::new(), None, StatusCode::OK)
}

fn new_form(
    viewer: &Viewer,
    flash: Option<Flash>,
    values: &HashMap<String, String>,
    error: Option<&ApiError>,
    status: StatusCode,
) -> Response {
    let (field, message) = match error {
        Some(e) => match field_of(&e.message).filter(|f| FIELDS.iter().any(|(_, json, _, _)| json == f)) {
            Some(f) => (Some(f), e.message.as_str()),
            None => (None, e.message.as_str()),
        },
        None => (None, ""),
    };
    let general = error.is_some() && field.is_none();
    let body = html! {
        h1 { "New stage" }
        @if general { p.error role="alert" { (message) } }
        form method="post" action="/envs/new" novalidate {
            (layout::csrf(viewer))
            @for (name, json, label, hint) in FIELDS {
                @let bad = field == Some(json);
                label for=(name) { (label) }
                input id=(name) type="text" name=(name) value=(values.get(name).map(String::as_str).unwrap_or_default())
                    aria-invalid=(if bad { "true" } else { "false" })
                    aria-describedby=(if bad { format!("{name}-error {name}-hint") } else { format!("{name}-hint") });
                @if bad { p.field-error id=(format!("{name}-error")) role="alert" { (message) } }
                @if !hint.is_empty() { p.hint id=(format!("{name}-hint")) { (hint) } }
            }
            button.primary type="submit" { "Create" }
        }
    };
    (status, layout::page("New stage", viewer, flash.as_ref(), body)).into_response()
}

/// The JSON field an API message is about (`maxParallel: must be …`).
pub fn field_of(message: &str) -> Option<&str> {
    let (field, _) = message.split_once(':')?;
    (!field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        .then(|| field.trim_start_matches('.'))
}

/// `POST /envs/new`: creates the stage through the API; a refusal shows the form again with
/// the API's message next to the field at fault.
pub async fn create(
    State(board): State<Board>,
    viewer: Viewer,
    https: Option<Extension<Https>>,
    Posted(values): Posted<HashMap<String, String>>,
) -> BoardResult<Response> {
    let mut body = serde_json::Map::new();
    for (name, json, _, _) in FIELDS {
        if let Some(v) = values.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            body.insert(json.to_string(), serde_json::Value::String(v.to_string()));
        }
    }
    if let (false, Some(env)) = (body.contains_key("buildName"), body.get("envName").cloned()) {
        body.insert("buildName".into(), env);
    }
    match forward::call(&board.rest, &viewer.creds, Method::POST, "/v1/envs", Some(body.into())).await {
        Ok(_) => {
            let (env, stage) = (values.get("env_name").map(|v| v.trim()), values.get("stage_name").map(|v| v.trim()));
            let to = format!(
                "/envs/{}/{}",
                forward::encode(env.unwrap_or_default()),
                forward::encode(stage.unwrap_or_default())
            );
            Ok(session::redirect_with(&to, Flash::ok("Stage created."), https.is_some()))
        }
        Err(e) if e.status == StatusCode::FORBIDDEN => Err(BoardError(e)),
        Err(e) => {
            let status = e.status;
            Ok(new_form(&viewer, None, &values, Some(&e), status))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_name_their_field() {
        assert_eq!(super::field_of("maxParallel: must be at least 1"), Some("maxParallel"));
        assert_eq!(super::field_of("envName: invalid name \"a b\": letters"), Some("envName"));
        assert_eq!(super::field_of("the stage web/prod already exists"), None);
        assert_eq!(super::field_of("Stage web/prod exists: no"), None);
    }
}
