//! An environment's access: who holds which role on it (people, directory groups) and its
//! script tokens. Read by anyone with a role; changed by the environment's administrators,
//! through the REST API.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use schema::rules::access::Target;
use schema::{AccessRole, EnvName};
use serde::Deserialize;
use serde_json::{Value, json};

use super::layout::{self, Flash};
use super::session::{Https, Posted};
use super::stage::{after, confirm_page};
use super::{Board, BoardError, BoardResult, Viewer, forward};
use crate::error::ApiError;

/// The kinds of holders: path segment, title, what a name is.
const KINDS: [(&str, &str, &str); 3] = [
    ("user_roles", "People", "a principal's name"),
    ("group_roles", "Directory groups", "a group the SSO proxy names"),
    ("token_roles", "Script tokens", "a name for the script (its token is shown once)"),
];

/// `GET /envs/{env}/access`.
pub async fn page(
    State(board): State<Board>,
    viewer: Viewer,
    flash: Option<Extension<Flash>>,
    Path(env): Path<String>,
) -> BoardResult<Response> {
    let env = EnvName::parse(env)?;
    render(&board, &viewer, &env, flash.map(|f| f.0), None).await
}

async fn render(
    board: &Board,
    viewer: &Viewer,
    env: &EnvName,
    flash: Option<Flash>,
    made: Option<Value>,
) -> BoardResult<Response> {
    let admin = viewer.principal.may(AccessRole::Admin, Target::Env(env));
    let mut tables = Vec::new();
    for (kind, title, what) in KINDS {
        let (_, body) =
            forward::call(&board.rest, &viewer.creds, Method::GET, &format!("/v1/envs/{env}/{kind}"), None).await?;
        let rows: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
        tables.push(table(viewer, env, kind, title, what, &rows, admin));
    }
    let body = html! {
        h1 { "Access to " (env) }
        p.hint { "Roles include those below them: READER < PUBLISHER < OPERATOR < ADMIN. Roles on the system count here too; "
            a href="/history" { "the history" } " shows who changed what." }
        @if let Some(m) = &made {
            section.flash.ok role="status" {
                p { "Script " strong { (m["name"].as_str().unwrap_or_default()) } " can act as " (m["role"].as_str().unwrap_or_default())
                    " with this token, shown only now:" }
                pre.output { (m["token"].as_str().unwrap_or_default()) }
            }
        }
        @if !admin { p.hint { "Changing access needs the ADMIN role on " (env) "." } }
        @for t in tables { (t) }
    };
    Ok(layout::page(&format!("Access to {env}"), viewer, flash.as_ref(), body).into_response())
}

fn table(viewer: &Viewer, env: &EnvName, kind: &str, title: &str, what: &str, rows: &[Value], admin: bool) -> Markup {
    let action = format!("/envs/{env}/access/{kind}");
    html! {
        section.card aria-labelledby=(format!("{kind}-title")) {
            h2 id=(format!("{kind}-title")) { (title) }
            @if rows.is_empty() { p { "None." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Role" }
                        th scope="col" { @if kind == "token_roles" { "Expires" } @else { "Granted by" } }
                        @if admin { th scope="col" { "" } } } }
                    tbody { @for r in rows {
                        @let name = r["name"].as_str().unwrap_or_default();
                        tr {
                            td { (name) }
                            td { (r["role"].as_str().unwrap_or_default()) }
                            td { @if kind == "token_roles" { (layout::time(r["expireDate"].as_i64())) } @else { (r["grantedBy"].as_str().unwrap_or_default()) } }
                            @if admin { td.actions {
                                form method="post" action=(action) data-confirm=(format!("Remove {name}'s role on {env}?")) {
                                    (layout::csrf(viewer))
                                    input type="hidden" name="confirmed" value="";
                                    input type="hidden" name="remove" value=(name);
                                    button.danger type="submit" { "Remove" }
                                }
                            } }
                        }
                    } }
                } }
            }
            @if admin {
                form.searchbar method="post" action=(action) {
                    (layout::csrf(viewer))
                    input type="hidden" name="confirmed" value="1";
                    div { label for=(format!("{kind}-name")) { "Name" } input id=(format!("{kind}-name")) type="text" name="name" required; }
                    div { label for=(format!("{kind}-role")) { "Role" } select id=(format!("{kind}-role")) name="role" {
                        @for r in AccessRole::ALL { option selected[*r == AccessRole::Reader] { (r) } }
                    } }
                    button type="submit" { "Grant" }
                }
                p.hint { "Name: " (what) "." }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct AccessForm {
    confirmed: Option<String>,
    name: Option<String>,
    role: Option<String>,
    remove: Option<String>,
}

/// `POST /envs/{env}/access/{kind}`: grants a role (`name`, `role`) or removes one (`remove`).
pub async fn save(
    State(board): State<Board>,
    viewer: Viewer,
    https: Option<Extension<Https>>,
    Path((env, kind)): Path<(String, String)>,
    Posted(f): Posted<AccessForm>,
) -> BoardResult<Response> {
    let env = EnvName::parse(env)?;
    let Some((kind, title, _)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
        return Err(BoardError(ApiError::not_found(format!("no access list {kind:?}"))));
    };
    let back = format!("/envs/{env}/access");
    if let Some(name) = f.remove.filter(|n| !n.is_empty()) {
        if f.confirmed.as_deref() != Some("1") {
            let question = format!("Remove {name}'s role on {env}?");
            return Ok(confirm_page(&viewer, &question, &format!("{back}/{kind}"), &[("remove", name)], &back));
        }
        let path = format!("/v1/envs/{env}/{kind}/{}", forward::encode(&name));
        let outcome = forward::call(&board.rest, &viewer.creds, Method::DELETE, &path, None).await;
        return Ok(after(outcome, &back, &format!("{name} no longer holds a role on {env}."), https.is_some()));
    }
    let body = json!({ "name": f.name.unwrap_or_default().trim(), "role": f.role.unwrap_or_default() });
    let outcome =
        forward::call(&board.rest, &viewer.creds, Method::POST, &format!("/v1/envs/{env}/{kind}"), Some(body)).await;
    match outcome {
        // A script's token is shown once, on this answer only.
        Ok((_, made)) if *kind == "token_roles" => {
            let made: Value = serde_json::from_slice(&made).unwrap_or(Value::Null);
            let mut response = render(&board, &viewer, &env, None, Some(made)).await?;
            *response.status_mut() = StatusCode::CREATED;
            Ok(response)
        }
        outcome => Ok(after(outcome, &back, &format!("{title}: role granted."), https.is_some())),
    }
}
