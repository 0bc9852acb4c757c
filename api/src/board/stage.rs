//! The stage page: the current deploy, the hosts by state, the grid, and the actions.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use schema::model::{Build, Deploy, Environ};
use schema::{DeployAction, DeployState, EnvName, EnvState, StageName};
use serde::Deserialize;

use super::grid::{self, PageQuery};
use super::layout::{self, Flash};
use super::session::{self, Https, Posted};
use super::{Board, BoardError, BoardResult, Viewer, forward};
use crate::error::ApiError;
use crate::rest::stage_key;

/// Builds offered in the deploy form.
const RECENT_BUILDS: i64 = 15;
/// Deploys offered as rollback targets.
const RECENT_DEPLOYS: i64 = 20;

/// `GET /envs/{env}/{stage}?page=`.
pub async fn page(
    State(board): State<Board>,
    viewer: Viewer,
    flash: Option<Extension<Flash>>,
    Path((env, stage)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let store = &board.api.store;
    let e = store.stage(&env, &stage).await?;
    let current = match &e.deploy_id {
        Some(id) => Some(store.deploy(id).await?),
        None => None,
    };
    let build = match &current {
        Some(d) => Some(store.build(&d.build_id).await?),
        None => None,
    };
    let (page, shown, total) = grid::load_page(store, &e.id, q.number()).await?;
    let counts = grid::counts_of_tallies(&store.agent_tallies(&e.id).await?, e.deploy_id.as_ref());
    let operate = viewer.may_operate(&env);
    let actions = if operate { Some(actions(&board, &viewer, &e, current.as_ref()).await?) } else { None };
    let (en, sn) = (env.as_str(), stage.as_str());
    let body = html! {
        (heading(&e))
        div.cards {
            section.card #deploy aria-live="polite" { (deploy_card(e.env_state == EnvState::Paused, current.as_ref(), build.as_ref())) }
            section.card {
                h2 { "Hosts" }
                div #summary aria-live="polite" { (grid::summary(&counts)) }
            }
        }
        @match actions {
            Some(a) => { (a) }
            None => p.hint #read-only { "You may read this stage. Deploying, pausing and rolling back need the OPERATOR role on " (en) "." },
        }
        section #hosts data-live=(format!("/envs/{en}/{sn}/live")) aria-labelledby="hosts-title" {
            h2 #hosts-title { "Host grid " span #live-status .live role="status" { "" } }
            div #grid .grid data-src=(format!("/envs/{en}/{sn}/grid?page={page}")) {
                (grid::cells(en, sn, &shown, e.deploy_id.as_ref()))
            }
            (grid::pager(en, sn, page, total))
        }
    };
    let title = format!("{en}/{sn}");
    Ok(layout::page(&title, &viewer, flash.as_ref().map(|f| &f.0), body).into_response())
}

/// The page's title, badges and links.
fn heading(e: &Environ) -> Markup {
    let (en, sn) = (e.env_name.as_str(), e.stage_name.as_str());
    html! {
        h1 { a href=(format!("/?q={en}")) { (en) } " / " (sn) " "
            @if e.env_state != EnvState::Normal { (layout::badge(e.env_state.as_str())) " " }
            @if e.state != schema::EnvironState::Normal { (layout::badge(e.state.as_str())) }
        }
        p.hint { "Deploys builds named " strong { (e.build_name) } " · at most "
            (if e.max_parallel_pct > 0 { format!("{}%", e.max_parallel_pct) } else { e.max_parallel.to_string() })
            " hosts at once · success at " (e.success_threshold / 100) "." (e.success_threshold % 100 / 10) "%" }
        nav aria-label="Stage" .pager {
            a href=(format!("/envs/{en}/{sn}")) { "Hosts" }
            a href=(format!("/envs/{en}/{sn}/deploys")) { "Deploys" }
            a href=(format!("/history?env={en}&stage={sn}")) { "History" }
            a href=(format!("/envs/{en}/{sn}/config")) { "Configuration" }
            a href=(format!("/envs/{en}/access")) { "Access" }
        }
    }
}

/// The current deploy: build, state, progress. Redrawn by the live stream.
/// The current deploy's card: its state, progress and facts (`paused`: the stage is paused).
pub fn deploy_card(paused: bool, d: Option<&Deploy>, b: Option<&Build>) -> Markup {
    html! {
        h2 { "Current deploy" }
        @match d {
            None => p { "Nothing deployed yet." },
            Some(d) => {
                p { (layout::badge(d.state.as_str())) " " (layout::badge(d.deploy_type.as_str()))
                    @if paused { " " (layout::badge("PAUSED")) } }
                label for="progress" { (d.success_total) " of " (d.total) " hosts done"
                    @if d.fail_total > 0 { ", " (d.fail_total) " failed" } }
                progress #progress max=(d.total.max(1)) value=(d.success_total) { (d.success_total) "/" (d.total) }
                dl.facts {
                    dt { "Build" } dd { @match b {
                        Some(b) => a href=(format!("/builds?name={}", b.name)) { (d.build_id) },
                        None => (d.build_id),
                    } }
                    @if let Some(b) = b {
                        dt { "Commit" } dd { code { (b.commit_short) } " on " (b.branch) }
                    }
                    dt { "By" } dd { (d.operator) }
                    dt { "Started" } dd { (layout::time(Some(d.start_date))) }
                    dt { "Last change" } dd { (layout::time(Some(d.last_update_date))) }
                    dt { "Acceptance" } dd { (d.acceptance_status) }
                    @if let Some(desc) = &d.description { dt { "Note" } dd { (desc) } }
                    dt { "Deploy" } dd { a href=(format!("/deploys/{}", d.id)) { (d.id) } }
                }
            }
        }
    }
}

/// The action forms of an operator.
async fn actions(board: &Board, viewer: &Viewer, e: &Environ, current: Option<&Deploy>) -> BoardResult<Markup> {
    let store = &board.api.store;
    let (en, sn) = (e.env_name.as_str(), e.stage_name.as_str());
    let builds = store
        .search_builds(&store::BuildSearch {
            name: Some(e.build_name.clone()),
            page_index: 1,
            page_size: RECENT_BUILDS,
            ..Default::default()
        })
        .await?;
    let builds = store.with_effective_tags(builds).await?;
    let earlier: Vec<Deploy> = store
        .deploys_of_stage(&e.id, RECENT_DEPLOYS)
        .await?
        .into_iter()
        .filter(|d| current.is_none_or(|c| c.id != d.id && c.build_id != d.build_id))
        .filter(|d| matches!(d.state, DeployState::Succeeded | DeployState::Succeeding))
        .collect();
    let siblings: Vec<Environ> =
        store.stages(Some(&e.env_name)).await?.into_iter().filter(|s| s.id != e.id && s.deploy_id.is_some()).collect();
    let deploy_effect = format!(
        "Deploy this build to {en}/{sn}? Its hosts switch to it, a few at a time within the stage's cap; \
         the current deploy is replaced."
    );
    let action_url = format!("/envs/{en}/{sn}/action");
    Ok(html! {
        section.actions aria-labelledby="actions-title" {
            h2 #actions-title { "Actions" }
            details {
                summary { "Deploy a build" }
                form method="post" action=(format!("/envs/{en}/{sn}/deploy")) data-confirm=(deploy_effect) {
                    (layout::csrf(viewer))
                    input type="hidden" name="confirmed" value="";
                    label for="build_id" { "Build" }
                    select #build_id name="build_id" required {
                        @for b in &builds {
                            @let bad = b.tag.as_ref().is_some_and(|t| t.value == schema::TagValue::BadBuild);
                            option value=(b.build.id) disabled[bad] {
                                (b.build.id) " · " (b.build.commit_short) " · " (b.build.branch) " · "
                                (schema::time::format_utc(b.build.publish_date))
                                @if let Some(t) = &b.tag { " · " (t.value) }
                            }
                        }
                    }
                    @if builds.is_empty() { p.hint { "No build named " (e.build_name) " is published yet." } }
                    label for="description" { "Note (optional)" }
                    input #description type="text" name="description" maxlength="2048";
                    button.primary type="submit" { "Deploy" }
                }
            }
            @if current.is_some() {
                details {
                    summary { "Roll back" }
                    form method="post" action=(action_url) data-confirm=(effect(DeployAction::Rollback, en, sn)) {
                        (layout::csrf(viewer))
                        input type="hidden" name="confirmed" value="";
                        input type="hidden" name="action" value="ROLLBACK";
                        label for="to_deploy_id" { "To the deploy" }
                        select #to_deploy_id name="to_deploy_id" {
                            option value="" { "the last good deploy" }
                            @for d in &earlier {
                                option value=(d.id) { (d.build_id) " · " (d.operator) " · " (schema::time::format_utc(d.start_date)) }
                            }
                        }
                        label { input type="checkbox" name="mark_bad" value="true"; " Mark the current build bad (no stage deploys it again)" }
                        button.danger type="submit" { "Roll back" }
                    }
                }
                form method="post" action=(action_url) data-confirm=(effect(DeployAction::Restart, en, sn)) {
                    (layout::csrf(viewer))
                    input type="hidden" name="confirmed" value="";
                    input type="hidden" name="action" value="RESTART";
                    button type="submit" { "Restart" }
                }
                @let (verb, act) = if e.env_state == EnvState::Paused { ("Resume", DeployAction::Resume) } else { ("Pause", DeployAction::Pause) };
                form method="post" action=(action_url) data-confirm=(effect(act, en, sn)) {
                    (layout::csrf(viewer))
                    input type="hidden" name="confirmed" value="";
                    input type="hidden" name="action" value=(act.as_str());
                    button type="submit" { (verb) }
                }
            }
            @if !siblings.is_empty() {
                details {
                    summary { "Promote from another stage" }
                    form method="post" action=(action_url) data-confirm=(effect(DeployAction::Promote, en, sn)) {
                        (layout::csrf(viewer))
                        input type="hidden" name="confirmed" value="";
                        input type="hidden" name="action" value="PROMOTE";
                        label for="from_deploy_id" { "The current deploy of" }
                        select #from_deploy_id name="from_deploy_id" required {
                            @for s in &siblings {
                                option value=(s.deploy_id.as_ref().map(|d| d.as_str()).unwrap_or_default()) { (s.stage_name) }
                            }
                        }
                        button.primary type="submit" { "Promote" }
                    }
                }
            }
        }
    })
}

/// What an action does, as its confirmation says it.
fn effect(action: DeployAction, env: &str, stage: &str) -> String {
    match action {
        DeployAction::Rollback => format!(
            "Roll {env}/{stage} back? Its hosts return to the chosen deploy's build, a few at a time; \
             with the box ticked, the current build is marked bad."
        ),
        DeployAction::Restart => {
            format!("Restart {env}/{stage}? Every host runs the current build's deploy again, a few at a time.")
        }
        DeployAction::Pause => format!("Pause {env}/{stage}? No host starts a new step until it is resumed."),
        DeployAction::Resume => format!("Resume {env}/{stage}? Hosts take their next steps again."),
        DeployAction::Promote => format!(
            "Promote to {env}/{stage}? It deploys the chosen stage's current build here, a few hosts at a time."
        ),
    }
}

/// The confirmation page of a form posted without the script's confirmation: states the
/// effect and posts the same fields again.
pub fn confirm_page(viewer: &Viewer, question: &str, action: &str, fields: &[(&str, String)], back: &str) -> Response {
    let body = html! {
        h1 { "Please confirm" }
        p { (question) }
        form method="post" action=(action) {
            (layout::csrf(viewer))
            input type="hidden" name="confirmed" value="1";
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button.primary type="submit" { "Confirm" }
            a.button href=(back) { "Cancel" }
        }
    };
    layout::page("Confirm", viewer, None, body).into_response()
}

#[derive(Deserialize)]
pub struct DeployForm {
    confirmed: Option<String>,
    build_id: Option<String>,
    description: Option<String>,
}

/// `POST /envs/{env}/{stage}/deploy`.
pub async fn deploy(
    State(board): State<Board>,
    viewer: Viewer,
    https: Option<Extension<Https>>,
    Path((env, stage)): Path<(String, String)>,
    Posted(f): Posted<DeployForm>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let back = stage_url(&env, &stage);
    let build = f.build_id.unwrap_or_default();
    let description = f.description.unwrap_or_default();
    if f.confirmed.as_deref() != Some("1") {
        let question = format!("Deploy build {build} to {env}/{stage}? Its hosts switch to it within the stage's cap.");
        let fields = [("build_id", build), ("description", description)];
        return Ok(confirm_page(&viewer, &question, &format!("{back}/deploy"), &fields, &back));
    }
    let path = format!(
        "/v1/envs/{env}/{stage}/deploys?buildId={}&description={}",
        forward::encode(&build),
        forward::encode(&description)
    );
    let outcome = forward::call(&board.rest, &viewer.creds, Method::POST, &path, None).await;
    Ok(after(outcome, &back, &format!("Deploying build {build} to {env}/{stage}."), https.is_some()))
}

#[derive(Deserialize)]
pub struct ActionForm {
    confirmed: Option<String>,
    action: Option<String>,
    from_deploy_id: Option<String>,
    to_deploy_id: Option<String>,
    mark_bad: Option<String>,
}

/// `POST /envs/{env}/{stage}/action`: promote, restart, roll back, pause, resume.
pub async fn action(
    State(board): State<Board>,
    viewer: Viewer,
    https: Option<Extension<Https>>,
    Path((env, stage)): Path<(String, String)>,
    Posted(f): Posted<ActionForm>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let back = stage_url(&env, &stage);
    let action: DeployAction = f
        .action
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e: schema::UnknownValue| BoardError(ApiError::bad_request(e.to_string())))?;
    let mark_bad = f.mark_bad.as_deref() == Some("true");
    let (from, to) = (f.from_deploy_id.unwrap_or_default(), f.to_deploy_id.unwrap_or_default());
    if f.confirmed.as_deref() != Some("1") {
        let fields = [
            ("action", action.as_str().to_string()),
            ("from_deploy_id", from),
            ("to_deploy_id", to),
            ("mark_bad", if mark_bad { "true".into() } else { String::new() }),
        ];
        let question = effect(action, env.as_str(), stage.as_str());
        return Ok(confirm_page(&viewer, &question, &format!("{back}/action"), &fields, &back));
    }
    let mut path = format!("/v1/envs/{env}/{stage}/deploys/current/actions?actionType={}", action.as_str());
    if !from.is_empty() {
        path.push_str(&format!("&fromDeployId={}", forward::encode(&from)));
    }
    if !to.is_empty() {
        path.push_str(&format!("&toDeployId={}", forward::encode(&to)));
    }
    if mark_bad {
        path.push_str("&markBad=true");
    }
    let outcome = forward::call(&board.rest, &viewer.creds, Method::POST, &path, None).await;
    let done = match action {
        DeployAction::Promote => format!("Promoting to {env}/{stage}."),
        DeployAction::Restart => format!("Restarting {env}/{stage}."),
        DeployAction::Rollback if mark_bad => format!("Rolling {env}/{stage} back; the build is marked bad."),
        DeployAction::Rollback => format!("Rolling {env}/{stage} back."),
        DeployAction::Pause => format!("{env}/{stage} is paused."),
        DeployAction::Resume => format!("{env}/{stage} is resumed."),
    };
    Ok(after(outcome, &back, &done, https.is_some()))
}

/// Back to `to` with what happened: `done`, a note when the workers have not answered yet, or
/// the API's refusal (a 403 page when the role is missing).
pub fn after(
    outcome: Result<(StatusCode, axum::body::Bytes), ApiError>,
    to: &str,
    done: &str,
    https: bool,
) -> Response {
    let flash = match outcome {
        Ok((StatusCode::ACCEPTED, _)) => {
            Flash::ok(format!("{done} The workers have not confirmed it yet; the page shows it when they do."))
        }
        Ok(_) => Flash::ok(done),
        // A refusal of the role is the answer itself, with the API's status.
        Err(e) if e.status == StatusCode::FORBIDDEN => return BoardError(e).into_response(),
        Err(e) => Flash::error(e.message),
    };
    session::redirect_with(to, flash, https)
}

/// The stage page's address.
pub fn stage_url(env: &EnvName, stage: &StageName) -> String {
    format!("/envs/{env}/{stage}")
}
