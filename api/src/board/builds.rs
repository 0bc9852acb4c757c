//! Builds: the names, a name's builds by branch with their effective tags, marking a build
//! bad or good.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use maud::html;
use schema::{BuildId, BuildName, TagValue};
use serde::Deserialize;
use store::BuildSearch;

use super::layout::{self, Flash};
use super::session::{Https, Posted};
use super::stage::{after, confirm_page};
use super::{Board, BoardError, BoardResult, Viewer, forward};
use crate::error::ApiError;

/// Builds on a page.
const PAGE_SIZE: i64 = 50;

#[derive(Deserialize)]
pub struct BuildQuery {
    name: Option<String>,
    branch: Option<String>,
}

/// `GET /builds?name=&branch=`: the build names, or a name's builds.
pub async fn list(
    State(board): State<Board>,
    viewer: Viewer,
    flash: Option<Extension<Flash>>,
    Query(q): Query<BuildQuery>,
) -> BoardResult<Response> {
    let store = &board.api.store;
    let name = q.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(BuildName::parse).transpose()?;
    let branch = q.branch.as_deref().map(str::trim).filter(|b| !b.is_empty() && b.len() <= 256).map(str::to_string);
    let body = match &name {
        None => {
            let names = store.build_names(None, 1, 1000).await?;
            html! {
                h1 { "Builds" }
                @if names.is_empty() { p { "No build is published yet." } }
                ul { @for n in &names { li { a href=(format!("/builds?name={}", forward::encode(n))) { (n) } } } }
            }
        }
        Some(name) => {
            let branches = store.build_branches(name).await?;
            let builds = store
                .search_builds(&BuildSearch {
                    name: Some(name.clone()),
                    branch: branch.clone(),
                    page_index: 1,
                    page_size: PAGE_SIZE,
                    ..Default::default()
                })
                .await?;
            let builds = store.with_effective_tags(builds).await?;
            let publisher = viewer.may_publish();
            html! {
                h1 { "Builds named " (name) }
                form.searchbar method="get" action="/builds" {
                    input type="hidden" name="name" value=(name);
                    div { label for="branch" { "Branch" } select #branch name="branch" {
                        option value="" { "every branch" }
                        @for b in &branches { option selected[branch.as_deref() == Some(b.as_str())] { (b) } }
                    } }
                    button type="submit" { "Show" }
                }
                div.scroll { table {
                    thead { tr { th scope="col" { "Published" } th scope="col" { "Build" } th scope="col" { "Commit" }
                        th scope="col" { "Branch" } th scope="col" { "Tag" } @if publisher { th scope="col" { "Mark" } } } }
                    tbody { @for b in &builds { tr {
                        td { (layout::time(Some(b.build.publish_date))) }
                        td { code { (b.build.id) } }
                        td { code { (b.build.commit_short) } }
                        td { (b.build.branch) }
                        td { @match &b.tag { Some(t) => (layout::badge(t.value.as_str())), None => "—" } }
                        @if publisher { td.actions {
                            @for (value, label) in [(TagValue::BadBuild, "Bad"), (TagValue::GoodBuild, "Good")] {
                                form method="post" action=(format!("/builds/{}/verdict", b.build.id))
                                    data-confirm=(verdict_effect(value, &b.build.id)) {
                                    (layout::csrf(&viewer))
                                    input type="hidden" name="confirmed" value="";
                                    input type="hidden" name="value" value=(value.as_str());
                                    button.danger[value == TagValue::BadBuild] type="submit" { (label) }
                                }
                            }
                        } }
                    } } }
                } }
            }
        }
    };
    Ok(layout::page("Builds", &viewer, flash.as_ref().map(|f| &f.0), body).into_response())
}

fn verdict_effect(value: TagValue, id: &BuildId) -> String {
    match value {
        TagValue::BadBuild => format!("Mark build {id} bad? No stage deploys it again until it is marked good."),
        _ => format!("Mark build {id} good? Stages may deploy it again."),
    }
}

#[derive(Deserialize)]
pub struct VerdictForm {
    confirmed: Option<String>,
    value: Option<String>,
}

/// `POST /builds/{id}/verdict`: tags the build BAD_BUILD or GOOD_BUILD through the API.
pub async fn verdict(
    State(board): State<Board>,
    viewer: Viewer,
    https: Option<Extension<Https>>,
    Path(id): Path<String>,
    Posted(f): Posted<VerdictForm>,
) -> BoardResult<Response> {
    let id = BuildId::parse(id)?;
    let value = match f.value.as_deref() {
        Some("BAD_BUILD") => TagValue::BadBuild,
        Some("GOOD_BUILD") => TagValue::GoodBuild,
        _ => return Err(BoardError(ApiError::bad_request("value must be BAD_BUILD or GOOD_BUILD"))),
    };
    let build = board.api.store.build(&id).await?;
    let back = format!("/builds?name={}", forward::encode(build.name.as_str()));
    if f.confirmed.as_deref() != Some("1") {
        let fields = [("value", value.as_str().to_string())];
        return Ok(confirm_page(
            &viewer,
            &verdict_effect(value, &id),
            &format!("/builds/{id}/verdict"),
            &fields,
            &back,
        ));
    }
    let body = serde_json::json!({ "value": value.as_str(), "targetType": "BUILD", "targetId": id.as_str(),
        "comments": format!("marked on the board by {}", viewer.principal.name) });
    let outcome = forward::call(&board.rest, &viewer.creds, Method::POST, "/v1/tags", Some(body)).await;
    Ok(after(outcome, &back, &format!("Build {id} is marked {value}."), https.is_some()))
}
