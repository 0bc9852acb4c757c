//! The API contract: an OpenAPI 3.1 document generated from the route table, served at
//! `GET /openapi.json`.
//!
//! Nothing is described twice. Each route's request body, query parameters and success
//! answer come from its handler's signature ([`Describe`]: `ApiJson<T>` is the body,
//! `ApiQuery<Q>` the query, `ApiResult<Json<T>>` a 200 with `T`); a handler that answers a
//! bare `Response` (commands, 201 with a `Location`) states its answers in the route table,
//! and a test fails when it does not. The schemas are the serde types' own
//! (`schemars::JsonSchema`, which honours their serde attributes), so a renamed field changes
//! the contract with it. Every route lists the one error shape under the statuses it may
//! answer, and what it needs (its role) under `x-teletraan-needs`.

mod handler;

use std::collections::BTreeMap;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::auth::{Need, RouteSpec};
pub use handler::{Describe, Described};

/// One documented answer of a route: its status, and the schema of its JSON body (none: no
/// body).
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// What the body is.
    pub body: AnswerBody,
}

/// The body of an [`Answer`].
pub enum AnswerBody {
    /// No body (204).
    Empty,
    /// JSON of this schema.
    Json(fn(&mut SchemaGenerator) -> Schema),
    /// Plain text.
    Text,
    /// Server-sent events (`text/event-stream`) that go on until the client leaves; the text
    /// says what they are.
    EventStream(&'static str),
}

impl Answer {
    /// A JSON answer of type `T`.
    pub fn json<T: JsonSchema>(status: u16) -> Answer {
        Answer { status, body: AnswerBody::Json(|g| g.subschema_for::<T>()) }
    }

    /// An answer without a body.
    pub fn empty(status: u16) -> Answer {
        Answer { status, body: AnswerBody::Empty }
    }

    /// A stream of server-sent events (`GET /v1/events`).
    pub fn event_stream(status: u16) -> Answer {
        Answer { status, body: AnswerBody::EventStream(EVENT_STREAM) }
    }
}

/// What `GET /v1/events` sends, for the contract (docs/events.md has it all).
const EVENT_STREAM: &str = "Server-sent events until the client leaves: `event: agents` (`data`: \
    `{envId, envName, stageName, agents: [{hostId, hostName, deployId, deployStage, state, status, lastErrNo, \
    lastUpdateDate, removed}]}`) and `event: deploy` (`data`: `{envId, envName, stageName, deploy}`, the deploy \
    as `GET /v1/deploys/{id}` answers it), each with an increasing `id`; `event: resync` (`data`: `{reason}`) \
    when events may have been lost: reload what is shown. A `: keep-alive` comment every 15 s. No replay: a \
    request with `Last-Event-ID` gets a `resync` first. See docs/events.md.";

/// The answer of a command that a worker did not finish in time: 202 with the command's
/// status and its URL in `Location` (`GET /v1/commands/{id}`).
pub fn accepted() -> Answer {
    Answer::json::<schema::model::CommandStatus>(202)
}

/// What one route's handler says about itself, plus what the route table adds.
pub struct Operation {
    /// The route.
    pub spec: RouteSpec,
    /// From the handler's signature.
    pub described: Described,
    /// Answers stated in the route table (for handlers that answer a bare `Response`).
    pub stated: Vec<Answer>,
}

/// Generates schemas: responses as they are serialized (shared under
/// `#/components/schemas`), requests as they are deserialized (inlined, so that the two
/// contracts of one type never share a name).
pub struct Schemas {
    /// Response schemas.
    pub out: SchemaGenerator,
    /// Request schemas.
    pub input: SchemaGenerator,
}

impl Schemas {
    fn new() -> Schemas {
        let out = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
            })
            .for_serialize()
            .into_generator();
        let input = SchemaSettings::draft2020_12()
            .with(|s| {
                s.meta_schema = None;
                s.inline_subschemas = true;
            })
            .for_deserialize()
            .into_generator();
        Schemas { out, input }
    }
}

/// The error every route answers with: `{"code", "message"}`.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "Stable, machine-readable: bad_request, unauthorized, forbidden, not_found, conflict, payload_too_large, unavailable; credential_retired for a ping with a revoked or replaced host credential…"},
            "message": {"type": "string", "description": "For people."}
        }
    })
}

/// The shared error answers, under `#/components/responses`.
fn error_answers() -> Map<String, Value> {
    ERRORS
        .iter()
        .map(|(status, description)| {
            let answer = json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            });
            (format!("Error{status}"), answer)
        })
        .collect()
}

const ERRORS: &[(u16, &str)] = &[
    (400, "Bad input: the message names the field or parameter."),
    (401, "No credentials, or credentials that are not a live token."),
    (403, "The principal lacks the role this route needs (x-teletraan-needs)."),
    (404, "Nothing at this path: an unknown environment, stage, build, deploy, host…"),
    (409, "Refused by the current state: a freeze, a disabled stage, a conflicting change."),
    (413, "The request body is too large."),
    (503, "Postgres or RabbitMQ cannot be reached, or the request ran out of time; retry after Retry-After."),
];

/// A path parameter's schema: the name types' rules, so that generated clients and fuzzers
/// send names the server can take.
fn path_parameter(name: &str) -> Value {
    let (pattern, longest) = match name {
        "host" | "group" => ("^[A-Za-z0-9_.:-]+$", 128),
        "name" | "target" | "value" => ("^[A-Za-z0-9_.:@-]+$", 64),
        _ => ("^[A-Za-z0-9_-]+$", 64),
    };
    let schema = json!({"type": "string", "minLength": 1, "maxLength": longest, "pattern": pattern});
    let mut parameter = json!({"name": name, "in": "path", "required": true, "schema": schema});
    // The stage `ops/contract-test.sh` creates, so that fuzzers reach answers other than 404.
    match name {
        "env" => parameter["example"] = json!("contract"),
        "stage" => parameter["example"] = json!("prod"),
        _ => {}
    }
    parameter
}

/// The path's `{name}` segments.
fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
}

/// The statuses a route's errors may carry.
fn error_statuses(op: &Operation) -> Vec<u16> {
    let mut out = vec![400, 401];
    if !matches!(op.spec.need, Need::Authenticated) {
        out.push(403);
    }
    out.push(404);
    if op.spec.method != "GET" {
        out.push(409);
    }
    if op.described.body.is_some() {
        out.push(413);
    }
    out.push(503);
    out
}

fn operation(op: &Operation, schemas: &mut Schemas) -> Value {
    let mut parameters: Vec<Value> = path_parameters(op.spec.path).into_iter().map(path_parameter).collect();
    if let Some(query) = op.described.query {
        let schema = query(&mut schemas.input);
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let mut prop = prop.clone();
                let description = prop.as_object_mut().and_then(|o| o.remove("description"));
                let mut p =
                    json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": prop});
                if let Some(d) = description {
                    p["description"] = d;
                }
                parameters.push(p);
            }
        }
    }
    for (name, description) in &op.described.headers {
        parameters.push(json!({"name": name, "in": "header", "required": false, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}}));
    }
    let mut responses = Map::new();
    let answers: Vec<&Answer> =
        if op.stated.is_empty() { op.described.answers.iter().collect() } else { op.stated.iter().collect() };
    for answer in answers {
        let value = match &answer.body {
            AnswerBody::Empty => json!({"description": "Done; no body."}),
            AnswerBody::Text => {
                json!({"description": "Plain text.", "content": {"text/plain": {"schema": {"type": "string"}}}})
            }
            AnswerBody::EventStream(description) => {
                json!({"description": description, "content": {"text/event-stream": {"schema": {"type": "string"}}}})
            }
            AnswerBody::Json(schema) => json!({
                "description": if answer.status == 202 { "Accepted: the command is queued and not done yet; poll the Location." } else { "Success." },
                "content": {"application/json": {"schema": schema(&mut schemas.out)}}
            }),
        };
        responses.insert(answer.status.to_string(), value);
    }
    for status in error_statuses(op) {
        responses
            .entry(status.to_string())
            .or_insert_with(|| json!({"$ref": format!("#/components/responses/Error{status}")}));
    }
    let mut out = json!({
        "operationId": operation_id(&op.spec),
        "summary": format!("{} {}", op.spec.method, op.spec.path),
        "description": format!("Needs: {}.", op.spec.need.describe()),
        "x-teletraan-needs": op.spec.need.describe(),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = op.described.body {
        out["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": body(&mut schemas.input)}}});
    }
    out
}

/// `get_v1_envs_env_stage`: unique per route, stable across builds.
fn operation_id(spec: &RouteSpec) -> String {
    let mut id = spec.method.to_ascii_lowercase();
    for part in spec.path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.extend(part.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').map(|c| c.to_ascii_lowercase()));
    }
    id
}

/// The whole document for these operations.
pub fn document(ops: &[Operation]) -> Value {
    let mut schemas = Schemas::new();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for op in ops {
        let value = operation(op, &mut schemas);
        paths.entry(op.spec.path).or_default().insert(op.spec.method.to_ascii_lowercase(), value);
    }
    let mut components = schemas.out.take_definitions(true);
    components.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Teletraan-class deploy system",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST API (Teletraan's paths and camelCase JSON) and the agents' ping. \
                Send `Authorization: token <token>`. Roles include the ones below them: READER < PUBLISHER < \
                OPERATOR < ADMIN; x-teletraan-needs says what each operation needs. The ping and the \
                enrollment are served by the gateway's listener, everything else by the API's.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": error_answers(),
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`token <secret>`: an API token, a host credential or an agent token (ping), an enrollment token (enroll)."}}
        },
        "security": [{"token": []}],
    })
}
