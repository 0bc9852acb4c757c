//! A stage's configuration: one form per part (general settings, hosts and groups, the
//! pipeline, the deploy constraint, the schedule, script and agent variables, secrets). Each
//! part is read from the REST API and written back to it as the viewer, so a form shows what
//! the API holds and a refusal shows the API's message next to the field it names.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use schema::{
    AcceptanceType, DeployConstraintType, DeployPriority, EnvName, OverridePolicy, PromoteDisablePolicy,
    PromoteFailPolicy, PromoteType, StageName,
};
use serde_json::{Map, Value};

use super::envs::field_of;
use super::layout::{self, Flash};
use super::session::{self, Https, Posted};
use super::{Board, BoardError, BoardResult, Viewer, forward};
use crate::error::ApiError;
use crate::rest::stage_key;

/// How a field is typed in.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    /// An integer (sent as a number when it reads as one, else as the text, for the API to
    /// refuse with its message).
    Number,
    Choice(&'static [&'static str]),
}

/// One field of an object part: form name = JSON name.
struct Field {
    json: &'static str,
    label: &'static str,
    kind: Kind,
    hint: &'static str,
}

const fn field(json: &'static str, label: &'static str, kind: Kind, hint: &'static str) -> Field {
    Field { json, label, kind, hint }
}

/// What a part's JSON looks like.
enum Shape {
    /// An object of fields.
    Object(&'static [Field]),
    /// A list of names, one per line.
    Lines,
    /// A map of variables, `NAME=value` per line.
    Map,
    /// Secret variables: names shown, values only written.
    Secrets,
}

/// One part of the configuration.
struct Part {
    id: &'static str,
    title: &'static str,
    /// Read (`None`: the form starts empty), relative to `/v1/envs/{env}/{stage}`.
    read: Option<&'static str>,
    /// Written with this method at this path (`{stage}` = `/v1/envs/{env}/{stage}`,
    /// `{schedules}` = `/v1/schedules/{env}/{stage}`).
    write: (Method, &'static str),
    shape: Shape,
    about: &'static str,
}

fn names<T: Copy + 'static>(all: &'static [T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| name(*v)).collect()
}

fn choices() -> &'static Choices {
    static CHOICES: std::sync::LazyLock<Choices> = std::sync::LazyLock::new(|| Choices {
        acceptance: names(AcceptanceType::ALL, AcceptanceType::as_str).leak(),
        priority: names(DeployPriority::ALL, DeployPriority::as_str).leak(),
        override_policy: names(OverridePolicy::ALL, OverridePolicy::as_str).leak(),
        promote: names(PromoteType::ALL, PromoteType::as_str).leak(),
        fail: names(PromoteFailPolicy::ALL, PromoteFailPolicy::as_str).leak(),
        disable: names(PromoteDisablePolicy::ALL, PromoteDisablePolicy::as_str).leak(),
        constraint: names(DeployConstraintType::ALL, DeployConstraintType::as_str).leak(),
    });
    &CHOICES
}

struct Choices {
    acceptance: &'static [&'static str],
    priority: &'static [&'static str],
    override_policy: &'static [&'static str],
    promote: &'static [&'static str],
    fail: &'static [&'static str],
    disable: &'static [&'static str],
    constraint: &'static [&'static str],
}

fn parts() -> &'static [Part] {
    static PARTS: std::sync::LazyLock<Vec<Part>> = std::sync::LazyLock::new(|| {
        let c = choices();
        let general: &'static [Field] = vec![
            field("description", "Description", Kind::Text, ""),
            field("buildName", "Build name", Kind::Text, "the builds this stage deploys"),
            field("branch", "Branch", Kind::Text, ""),
            field("chatroom", "Chat room", Kind::Text, ""),
            field("maxParallel", "Hosts at once", Kind::Number, "a number of hosts"),
            field("maxParallelPct", "Hosts at once, in percent", Kind::Number, "overrides the number when above 0"),
            field("successThreshold", "Success threshold", Kind::Number, "hundredths of a percent: 10000 is 100%"),
            field("stuckThreshold", "Stuck after (minutes)", Kind::Number, ""),
            field("acceptanceType", "Acceptance", Kind::Choice(c.acceptance), ""),
            field("acceptanceTimeout", "Acceptance timeout (minutes)", Kind::Number, ""),
            field("priority", "Priority", Kind::Choice(c.priority), ""),
            field("overridePolicy", "Override policy", Kind::Choice(c.override_policy), ""),
            field("maxDeployNum", "Most deploys kept", Kind::Number, ""),
            field("maxDeployDay", "Days deploys are kept", Kind::Number, ""),
        ]
        .leak();
        let promote: &'static [Field] = vec![
            field("type", "Promotion", Kind::Choice(c.promote), "AUTO deploys what the stage before offers"),
            field("predStage", "Stage before", Kind::Text, "a stage of this environment, or BUILDS for new builds"),
            field("queueSize", "Queue size", Kind::Number, ""),
            field("schedule", "Schedule (cron)", Kind::Text, "when auto-promotion may run; empty: any time"),
            field("delay", "Delay (minutes)", Kind::Number, ""),
            field("failPolicy", "When a promoted deploy fails", Kind::Choice(c.fail), ""),
            field("disablePolicy", "When someone deploys by hand", Kind::Choice(c.disable), ""),
        ]
        .leak();
        let constraint: &'static [Field] = vec![
            field("constraintKey", "Host tag", Kind::Text, "e.g. zone: hosts are rolled out tag value by tag value"),
            field("maxParallel", "Hosts at once per value", Kind::Number, ""),
            field("constraintType", "Order", Kind::Choice(c.constraint), ""),
        ]
        .leak();
        let schedule: &'static [Field] = vec![
            field("totalSessions", "Sessions", Kind::Number, "0 removes the schedule"),
            field("cooldownTimes", "Pauses between sessions (minutes)", Kind::Text, "comma separated, one per session"),
            field("hostNumbers", "Hosts per session", Kind::Text, "comma separated, one per session"),
        ]
        .leak();
        vec![
            Part {
                id: "general",
                title: "General",
                read: Some(""),
                write: (Method::PUT, "{stage}"),
                shape: Shape::Object(general),
                about: "",
            },
            Part {
                id: "hosts",
                title: "Hosts",
                read: Some("/capacity?capacityType=HOST"),
                write: (Method::PUT, "{stage}/capacity?capacityType=HOST"),
                shape: Shape::Lines,
                about: "Host names, one per line: the stage's hosts besides those of its groups.",
            },
            Part {
                id: "groups",
                title: "Groups",
                read: Some("/capacity?capacityType=GROUP"),
                write: (Method::PUT, "{stage}/capacity?capacityType=GROUP"),
                shape: Shape::Lines,
                about: "Host groups, one per line: their hosts belong to the stage.",
            },
            Part {
                id: "promote",
                title: "Pipeline and auto-deploy",
                read: Some("/promotes"),
                write: (Method::PUT, "{stage}/promotes"),
                shape: Shape::Object(promote),
                about: "",
            },
            Part {
                id: "constraint",
                title: "Deploy constraint",
                read: Some("/deploy_constraint"),
                write: (Method::POST, "{stage}/deploy_constraint"),
                shape: Shape::Object(constraint),
                about: "",
            },
            Part {
                id: "schedule",
                title: "Schedule",
                read: None,
                write: (Method::PUT, "{schedules}/schedules"),
                shape: Shape::Object(schedule),
                about: "Deploy in sessions: so many hosts, then a pause.",
            },
            Part {
                id: "script",
                title: "Script variables",
                read: Some("/script_configs"),
                write: (Method::PUT, "{stage}/script_configs"),
                shape: Shape::Map,
                about: "NAME=value, one per line: the hooks' environment.",
            },
            Part {
                id: "secrets",
                title: "Secret script variables",
                read: Some("/script_secrets"),
                write: (Method::PUT, "{stage}/script_secrets"),
                shape: Shape::Secrets,
                about: "Values are sent to hosts only and never shown again. NAME=value sets one; NAME= removes it.",
            },
            Part {
                id: "agent",
                title: "Agent variables",
                read: Some("/agent_configs"),
                write: (Method::PUT, "{stage}/agent_configs"),
                shape: Shape::Map,
                about: "NAME=value, one per line: the agent's settings for this stage.",
            },
        ]
    });
    &PARTS
}

/// A part's form again after a refusal: what was typed and the API's message.
struct Refused {
    part: &'static str,
    values: HashMap<String, String>,
    error: ApiError,
}

/// `GET /envs/{env}/{stage}/config`.
pub async fn page(
    State(board): State<Board>,
    viewer: Viewer,
    flash: Option<Extension<Flash>>,
    Path((env, stage)): Path<(String, String)>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    render(&board, &viewer, &env, &stage, flash.map(|f| f.0), None, StatusCode::OK).await
}

async fn render(
    board: &Board,
    viewer: &Viewer,
    env: &EnvName,
    stage: &StageName,
    flash: Option<Flash>,
    refused: Option<Refused>,
    status: StatusCode,
) -> BoardResult<Response> {
    let base = format!("/v1/envs/{env}/{stage}");
    let read = |path: String| async move { forward::call(&board.rest, &viewer.creds, Method::GET, &path, None).await };
    let stage_json: Value = serde_json::from_slice(&read(base.clone()).await?.1).unwrap_or(Value::Null);
    let may = viewer.may_operate(env);
    let mut sections = Vec::new();
    for part in parts() {
        let current = match (part.id, part.read) {
            ("schedule", _) => match stage_json["scheduleId"].as_str() {
                Some(id) => {
                    let path = format!("/v1/schedules/{env}/{stage}/{}", forward::encode(id));
                    read(path).await.ok().and_then(|(_, b)| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
                }
                None => Value::Null,
            },
            ("general", _) => stage_json.clone(),
            (_, Some(path)) => {
                let (_, body) = read(format!("{base}{path}")).await?;
                serde_json::from_slice(&body).unwrap_or(Value::Null)
            }
            (_, None) => Value::Null,
        };
        let refused = refused.as_ref().filter(|r| r.part == part.id);
        sections.push(section(viewer, env, stage, part, &current, refused, may));
    }
    let body = html! {
        h1 { "Configuration of " a href=(format!("/envs/{env}/{stage}")) { (env) "/" (stage) } }
        @if !may { p.hint { "You may read this configuration; changing it needs the OPERATOR role on " (env) "." } }
        nav.pager aria-label="Parts" { @for p in parts() { a href=(format!("#{}", p.id)) { (p.title) } } }
        @for s in sections { (s) }
    };
    let title = format!("Configuration of {env}/{stage}");
    Ok((status, layout::page(&title, viewer, flash.as_ref(), body)).into_response())
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn section(
    viewer: &Viewer,
    env: &EnvName,
    stage: &StageName,
    part: &Part,
    current: &Value,
    refused: Option<&Refused>,
    may: bool,
) -> Markup {
    let error = refused.map(|r| r.error.message.as_str());
    // The field the message names, when this form has it (else the message goes on top).
    let bad_field = error
        .and_then(field_of)
        .filter(|f| matches!(&part.shape, Shape::Object(fields) if fields.iter().any(|x| x.json == *f)));
    let typed = |name: &str| refused.and_then(|r| r.values.get(name)).cloned();
    let action = format!("/envs/{env}/{stage}/config/{}", part.id);
    html! {
        section.card #(part.id) aria-labelledby=(format!("{}-title", part.id)) {
            h2 id=(format!("{}-title", part.id)) { (part.title) }
            @if !part.about.is_empty() { p.hint { (part.about) } }
            @if let (Some(e), None) = (error, bad_field) {
                p.error role="alert" id=(format!("{}-error", part.id)) { (e) }
            }
            form method="post" action=(action) novalidate {
                (layout::csrf(viewer))
                @match &part.shape {
                    Shape::Object(fields) => {
                        @for f in fields.iter() {
                            @let id = format!("{}-{}", part.id, f.json);
                            @let bad = bad_field == Some(f.json);
                            @let value = typed(f.json).unwrap_or_else(|| text_of(&current[f.json]));
                            label for=(id) { (f.label) }
                            @match f.kind {
                                Kind::Choice(options) => {
                                    select id=(id) name=(f.json) disabled[!may] aria-invalid=(bad) {
                                        option value="" { "—" }
                                        @for o in options { option selected[value == *o] { (o) } }
                                    }
                                }
                                Kind::Text | Kind::Number => {
                                    input id=(id) type="text" name=(f.json) value=(value) disabled[!may]
                                        inputmode=(if matches!(f.kind, Kind::Number) { "numeric" } else { "text" })
                                        aria-invalid=(bad)
                                        aria-describedby=(format!("{id}-error {id}-hint"));
                                }
                            }
                            @if bad { p.field-error id=(format!("{id}-error")) role="alert" { (error.unwrap_or_default()) } }
                            @if !f.hint.is_empty() { p.hint id=(format!("{id}-hint")) { (f.hint) } }
                        }
                    }
                    Shape::Lines => {
                        @let value = typed("lines").unwrap_or_else(|| {
                            current.as_array().map(|a| a.iter().map(text_of).collect::<Vec<_>>().join("\n")).unwrap_or_default()
                        });
                        label for=(format!("{}-lines", part.id)) { (part.title) }
                        textarea id=(format!("{}-lines", part.id)) name="lines" rows="6" disabled[!may] { (value) }
                    }
                    Shape::Map => {
                        @let value = typed("lines").unwrap_or_else(|| {
                            current.as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", text_of(v))).collect::<Vec<_>>().join("\n")).unwrap_or_default()
                        });
                        label for=(format!("{}-lines", part.id)) { (part.title) }
                        textarea id=(format!("{}-lines", part.id)) name="lines" rows="6" disabled[!may] { (value) }
                    }
                    Shape::Secrets => {
                        @let names: Vec<String> = current.as_array().map(|a| a.iter().map(text_of).collect()).unwrap_or_default();
                        @if names.is_empty() { p { "None set." } } @else {
                            ul { @for n in &names { li { code { (n) } " = ••••••" } } }
                        }
                        label for=(format!("{}-lines", part.id)) { "Set or remove" }
                        textarea id=(format!("{}-lines", part.id)) name="lines" rows="3" disabled[!may] autocomplete="off" {}
                    }
                }
                @if may { button.primary type="submit" { "Save " (part.title.to_lowercase()) } }
            }
        }
    }
}

/// The JSON a part's form sends.
fn body_of(part: &Part, values: &HashMap<String, String>) -> Result<Value, ApiError> {
    let lines =
        || values.get("lines").map(String::as_str).unwrap_or_default().lines().map(str::trim).filter(|l| !l.is_empty());
    let pairs = |secret: bool| -> Result<Map<String, Value>, ApiError> {
        let mut map = Map::new();
        for line in lines() {
            let Some((k, v)) = line.split_once('=') else {
                return Err(ApiError::bad_request(format!("{line:?}: write NAME=value")));
            };
            let value = if secret && v.is_empty() { Value::Null } else { Value::String(v.to_string()) };
            map.insert(k.trim().to_string(), value);
        }
        Ok(map)
    };
    Ok(match &part.shape {
        Shape::Object(fields) => {
            let mut map = Map::new();
            for f in fields.iter() {
                let Some(v) = values.get(f.json).map(|v| v.trim()).filter(|v| !v.is_empty()) else { continue };
                let value = match f.kind {
                    Kind::Number => v.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(v.into())),
                    Kind::Text | Kind::Choice(_) => Value::String(v.into()),
                };
                map.insert(f.json.to_string(), value);
            }
            Value::Object(map)
        }
        Shape::Lines => Value::Array(lines().map(|l| Value::String(l.into())).collect()),
        Shape::Map => Value::Object(pairs(false)?),
        Shape::Secrets => Value::Object(pairs(true)?),
    })
}

/// `POST /envs/{env}/{stage}/config/{part}`.
pub async fn save(
    State(board): State<Board>,
    viewer: Viewer,
    https: Option<Extension<Https>>,
    Path((env, stage, part)): Path<(String, String, String)>,
    Posted(values): Posted<HashMap<String, String>>,
) -> BoardResult<Response> {
    let (env, stage) = stage_key(env, stage)?;
    let Some(part) = parts().iter().find(|p| p.id == part) else {
        return Err(BoardError(ApiError::not_found(format!("no configuration part {part:?}"))));
    };
    let path = part
        .write
        .1
        .replace("{stage}", &format!("/v1/envs/{env}/{stage}"))
        .replace("{schedules}", &format!("/v1/schedules/{env}/{stage}"));
    let outcome = match body_of(part, &values) {
        Ok(body) => {
            forward::call(&board.rest, &viewer.creds, part.write.0.clone(), &path, Some(body)).await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => {
            let to = format!("/envs/{env}/{stage}/config#{}", part.id);
            Ok(session::redirect_with(&to, Flash::ok(format!("{} saved.", part.title)), https.is_some()))
        }
        Err(e) if e.status == StatusCode::FORBIDDEN => Err(BoardError(e)),
        Err(error) => {
            let status = error.status;
            let refused = Refused { part: part.id, values, error };
            render(&board, &viewer, &env, &stage, None, Some(refused), status).await
        }
    }
}
