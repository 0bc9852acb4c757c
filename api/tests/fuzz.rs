//! Fuzzing of the two HTTP surfaces (docs/fuzzing.md): the gateway's ping, sent over HTTP to
//! a running gateway, and the JSON bodies, query strings and path segments of every REST
//! route that reads a body or a query (`every_route_with_a_body_or_a_query_is_fuzzed` checks
//! that against the API contract), sent to the API's router in-process, with the gateway's
//! enrollment sent over HTTP.
//!
//! Inputs are arbitrary bytes, or valid requests with hostile edits: fields of the wrong type,
//! huge or control-character texts, numbers out of every range, nesting past the parser's
//! limit, invalid UTF-8, duplicate keys, cut or flipped bytes. The oracles: never a 5xx, never
//! a panic; every error is a 4xx with the documented shape `{"code", "message"}`; every ping
//! answered 200 is a ping answer; the servers answer normally afterwards.
//! `TELETRAAN_FUZZ_CASES` sets the number of cases (`ops/fuzz/run.sh`).

mod common;

#[path = "../../ops/fuzz/budget.rs"]
mod budget;

use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use budget::{Bytes, ensure};
use common::{App, Host, eventually, report, spawn_app, spawn_app_with, str_of};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// Stands for raw JSON text in a value until it is serialized (see [`Edit::Raw`]).
const RAW: &str = "\u{1}raw\u{1}";
/// A request body at most this long: past the 2 MB limit the server may answer 413 before the
/// client is done sending, and the hostile-client tests cover that.
const MAX_BODY: usize = 1_900_000;

/// Words the routes and the ping know, and a few they must refuse.
const WORDS: [&str; 52] = [
    "PAUSED_BY_USER",
    "RESET",
    "NORMAL",
    "GROUP",
    "HOST",
    "PROMOTE",
    "ROLLBACK",
    "RESTART",
    "PAUSE",
    "RESUME",
    "ENABLE",
    "DISABLE",
    "SERVING_BUILD",
    "DOWNLOADING",
    "PRE_DOWNLOAD",
    "SUCCEEDED",
    "FAILED",
    "TOO_MANY_RETRY",
    "RESET_BY_SYSTEM",
    "PRODUCTION",
    "DEV",
    "AUTO",
    "MANUAL",
    "BUILD",
    "GOOD_BUILD",
    "BAD_BUILD",
    "GROUP_BY_GROUP",
    "READER",
    "ADMIN",
    "AGENT",
    "ENROLL",
    "ACCEPTED",
    "web",
    "prod",
    "i-h1",
    "h1",
    "5",
    "5.0",
    "-1",
    "{build}",
    "{deploy}",
    "{env}",
    "true",
    "",
    " ",
    "https://artifacts.example.com/web/1.tgz",
    "http://127.0.0.1:9/hook",
    common::SOME_SHA256,
    "0 0/30 9-17 ? * MON-FRI",
    "1,50%",
    "a\u{0}b",
    "é✓",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => select(WORDS.to_vec()).prop_map(String::from),
        3 => "\\PC{0,24}",
        1 => "[\\x00-\\x1f\\x7f]{1,4}",
        // Long texts: past every field's length limit, in ASCII and in wider characters.
        1 => (1_000usize..300_000).prop_map(|n| "x".repeat(n)),
        1 => ("\\PC{1,3}", 20usize..400).prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// A JSON value of any type, with texts and numbers chosen to break parsers and validators.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Numbers every type holds, but not every setting takes.
        any::<i32>().prop_map(Value::from),
        (-1_000i64..100_000).prop_map(Value::from),
        (-1_000i64..100_000).prop_map(|n| Value::from(n.to_string())),
        select(vec![0i64, -1, 1, 1 << 31, -(1 << 31) - 1, 1 << 53, i64::MAX, i64::MIN]).prop_map(Value::from),
        prop_oneof![any::<f64>(), Just(1.5), Just(1e300), Just(-0.0), Just(5.0)]
            .prop_filter_map("a finite number", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        text().prop_map(Value::String),
    ];
    let nested = leaf.clone().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map("[a-zA-Z]{1,10}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![3 => leaf, 1 => nested]
}

/// JSON text no `Value` holds, or that a parser must refuse: numbers out of range, bad
/// escapes, nesting around and far past serde_json's limit of 128, broken syntax.
fn raw_json() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "1e400", "-1e400", "18446744073709551616", "-9223372036854775809", "9223372036854775807", "4294967296",
            "2147483648", "-0", "1.0", "5.5", "1e2", "\"\\ud800\"", "\"\\u0000\"", "\"\\x\"", "tru", "nul",
            "\"unterminated", "NaN", "Infinity", "01", "+1", "{\"a\":1,\"a\":2}", "[1,]", "{,}", "{\"a\" 1}", "",
        ])
        .prop_map(String::from),
        2 => (1usize..400).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        1 => (1usize..300).prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))),
        1 => (1_000usize..200_000).prop_map(|n| "[".repeat(n)),
    ]
}

/// A change to a JSON value; a path picks a node (each step an index among the keys or items
/// there, taken modulo their number).
#[derive(Debug, Clone)]
enum Edit {
    Set(Vec<u16>, Value),
    Raw(Vec<u16>, String),
    Remove(Vec<u16>),
    Add(Vec<u16>, String, Value),
    Wrap(Vec<u16>),
}

fn edit(keys: &'static [&'static str]) -> impl Strategy<Value = Edit> {
    let path = vec(any::<u16>(), 0..3);
    let key = prop_oneof![3 => select(keys.to_vec()).prop_map(String::from), 1 => "\\PC{0,12}"];
    prop_oneof![
        5 => (path.clone(), hostile_value()).prop_map(|(p, v)| Edit::Set(p, v)),
        3 => (path.clone(), raw_json()).prop_map(|(p, r)| Edit::Raw(p, r)),
        1 => path.clone().prop_map(Edit::Remove),
        2 => (path.clone(), key, hostile_value()).prop_map(|(p, k, v)| Edit::Add(p, k, v)),
        1 => path.prop_map(Edit::Wrap),
    ]
}

fn node<'v>(v: &'v mut Value, path: &[u16]) -> &'v mut Value {
    let Some((step, rest)) = path.split_first() else { return v };
    let i = usize::from(*step);
    let inner = match &*v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if inner == 0 {
        return v;
    }
    let child = match v {
        Value::Object(m) => m.values_mut().nth(i % inner),
        Value::Array(a) => a.get_mut(i % inner),
        _ => None,
    };
    match child {
        Some(c) => node(c, rest),
        None => unreachable!("a node with {inner} children has child {}", i % inner),
    }
}

fn apply(mut v: Value, edits: &[Edit]) -> (Value, Vec<String>) {
    let mut raws = Vec::new();
    for e in edits {
        match e {
            Edit::Set(p, x) => *node(&mut v, p) = x.clone(),
            Edit::Raw(p, r) => {
                *node(&mut v, p) = Value::String(RAW.into());
                raws.push(r.clone());
            }
            Edit::Remove(p) => {
                let (parent, last) = match p.split_last() {
                    Some((last, parent)) => (node(&mut v, parent), usize::from(*last)),
                    None => (&mut v, 0),
                };
                match parent {
                    Value::Object(m) if !m.is_empty() => {
                        let key = m.keys().nth(last % m.len()).cloned().unwrap_or_default();
                        m.remove(&key);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let n = a.len();
                        a.remove(last % n);
                    }
                    _ => {}
                }
            }
            Edit::Add(p, k, x) => match node(&mut v, p) {
                Value::Object(m) => {
                    m.insert(k.clone(), x.clone());
                }
                Value::Array(a) => a.push(x.clone()),
                other => *other = x.clone(),
            },
            Edit::Wrap(p) => {
                let n = node(&mut v, p);
                *n = Value::Array(vec![n.take()]);
            }
        }
    }
    (v, raws)
}

/// A change to the serialized text.
#[derive(Debug, Clone)]
enum TextEdit {
    /// Bytes that are not UTF-8, just after the `n`th quote (inside a string, mostly).
    NotUtf8(u16, Vec<u8>),
    /// A first key repeated with another value, as `"key": <raw>,` after the first `{`.
    Duplicate(&'static str, String),
    Flip(f64, u8),
    Cut(f64),
    Insert(f64, Vec<u8>),
}

fn text_edit(keys: &'static [&'static str]) -> impl Strategy<Value = TextEdit> {
    let bad = select(vec![&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf", b"\x80\x80"]);
    prop_oneof![
        3 => (any::<u16>(), bad).prop_map(|(n, b)| TextEdit::NotUtf8(n, b.to_vec())),
        3 => (select(keys.to_vec()), prop_oneof![raw_json(), hostile_value().prop_map(|v| v.to_string())])
            .prop_map(|(k, r)| TextEdit::Duplicate(k, r)),
        2 => (0.0..1.0f64, 1u8..=255).prop_map(|(a, x)| TextEdit::Flip(a, x)),
        1 => (0.0..1.0f64).prop_map(TextEdit::Cut),
        1 => (0.0..1.0f64, vec(any::<u8>(), 1..8)).prop_map(|(a, b)| TextEdit::Insert(a, b)),
    ]
}

fn apply_text(mut data: Vec<u8>, edits: &[TextEdit]) -> Vec<u8> {
    let at = |data: &Vec<u8>, f: f64| ((data.len() as f64) * f) as usize;
    for e in edits {
        match e {
            TextEdit::NotUtf8(n, bytes) => {
                let quotes: Vec<usize> = data.iter().enumerate().filter(|(_, b)| **b == b'"').map(|(i, _)| i).collect();
                let i = if quotes.is_empty() { 0 } else { quotes[usize::from(*n) % quotes.len()] + 1 };
                data.splice(i..i, bytes.iter().copied());
            }
            TextEdit::Duplicate(key, raw) => {
                if let Some(i) = data.iter().position(|b| *b == b'{') {
                    let pair = format!("\"{key}\": {raw},");
                    data.splice(i + 1..i + 1, pair.into_bytes());
                }
            }
            TextEdit::Flip(f, x) => {
                let i = at(&data, *f);
                if let Some(b) = data.get_mut(i) {
                    *b ^= x;
                }
            }
            TextEdit::Cut(f) => data.truncate(at(&data, *f)),
            TextEdit::Insert(f, bytes) => {
                let i = at(&data, *f);
                data.splice(i..i, bytes.iter().copied());
            }
        }
    }
    data
}

/// A request body: arbitrary bytes, or a valid document with edits to its value and text.
#[derive(Debug, Clone)]
enum Payload {
    Bytes(Bytes),
    Json { base: Value, edits: Vec<Edit>, text: Vec<TextEdit> },
}

impl Payload {
    /// The bytes to send, with the fixture's ids in place of `{build}`, `{deploy}`, `{env}`,
    /// `tame` applied to the edited value.
    fn bytes(&self, fixture: &Fixture, tame: fn(&mut Value)) -> Vec<u8> {
        let mut out = match self {
            Payload::Bytes(b) => b.0.clone(),
            Payload::Json { base, edits, text } => {
                let (mut value, raws) = apply(base.clone(), edits);
                tame(&mut value);
                let mut serialized = fixture.fill(&value.to_string());
                let marker = serde_json::to_string(RAW).unwrap_or_default();
                for raw in raws {
                    serialized = serialized.replacen(&marker, &raw, 1);
                }
                apply_text(serialized.into_bytes(), text)
            }
        };
        out.truncate(MAX_BODY);
        out
    }
}

fn payload(base: impl Strategy<Value = Value>, keys: &'static [&'static str]) -> impl Strategy<Value = Payload> {
    // A third of the documents are left valid, so that they reach the code past the parser.
    let edits = prop_oneof![1 => Just(Vec::new()), 2 => vec(edit(keys), 1..3)];
    let structured = (base, edits, prop_oneof![4 => Just(Vec::new()), 1 => vec(text_edit(keys), 1..3)])
        .prop_map(|(base, edits, text)| Payload::Json { base, edits, text });
    prop_oneof![
        8 => structured,
        1 => vec(any::<u8>(), 0..2048).prop_map(|b| Payload::Bytes(Bytes(b))),
    ]
}

/// What every case refers to: a stage `web/prod` deploying a build to host `h1`; for the REST
/// cases also (see [`Fixture::for_rest`]) roles to change, a FAILED webhook delivery of
/// `web/beta` and an enrollment token.
struct Fixture {
    env_id: String,
    build_id: String,
    deploy_id: String,
    delivery_id: String,
    enroll_token: String,
}

impl Fixture {
    async fn new(app: &App) -> Fixture {
        let stage = app.create_stage("web", "prod").await;
        app.set_capacity("web", "prod", "GROUP", &["web"]).await;
        let build = app.publish_build("web", "abcdef12").await;
        let deploy = app.deploy("web", "prod", str_of(&build, "id")).await;
        let fixture = Fixture {
            env_id: str_of(&stage, "id").to_string(),
            build_id: str_of(&build, "id").to_string(),
            deploy_id: str_of(&deploy, "id").to_string(),
            delivery_id: String::new(),
            enroll_token: String::new(),
        };
        app.serve_deploy(&Host::new("h1", "web"), &fixture.deploy_id).await;
        fixture
    }

    /// [`Fixture::new`], and what the routes that change something need to find so that a
    /// valid case gets past their lookups: the principal `fuzzer` with roles on `web` and on
    /// the system, the group `devs` likewise, the script `deployer` of `web`, a FAILED
    /// delivery of a webhook of `web/beta` (the app makes one attempt per delivery), and an
    /// ENROLL token of the agent principal `fleet` for the groups `web` and `web-canary` that
    /// may enroll a host again.
    async fn for_rest(app: &App) -> Fixture {
        let mut fixture = Fixture::new(app).await;
        for (path, body) in [
            ("/v1/principals", json!({"name": "fuzzer"})),
            ("/v1/principals", json!({"name": "fleet", "kind": "AGENT"})),
            ("/v1/envs/web/user_roles", json!({"name": "fuzzer", "role": "READER"})),
            ("/v1/envs/web/group_roles", json!({"name": "devs", "role": "READER"})),
            ("/v1/envs/web/token_roles", json!({"name": "deployer", "role": "OPERATOR"})),
            ("/v1/system/user_roles", json!({"name": "fuzzer", "role": "READER"})),
            ("/v1/system/group_roles", json!({"name": "devs", "role": "READER"})),
        ] {
            app.post(path, &body).await.expect(StatusCode::CREATED);
        }
        let token = json!({"principal": "fleet", "kind": "ENROLL", "groups": ["web", "web-canary"], "reenroll": true});
        fixture.enroll_token =
            str_of(&app.post("/v1/tokens", &token).await.expect(StatusCode::CREATED), "token").into();

        app.create_stage("web", "beta").await;
        let hooks = json!({"preDeployHooks": [{"url": "http://127.0.0.1:9/hook", "body": "{}"}]});
        app.put("/v1/envs/web/beta/web_hooks", &hooks).await.expect(StatusCode::OK);
        app.deploy("web", "beta", &fixture.build_id).await;
        fixture.delivery_id = eventually("a FAILED webhook delivery", || async {
            let list = app.get("/v1/envs/web/beta/web_hooks/deliveries?status=FAILED").await.expect(StatusCode::OK);
            list[0]["id"].as_str().map(String::from).ok_or_else(|| list.to_string())
        })
        .await;
        fixture
    }

    fn fill(&self, text: &str) -> String {
        text.replace("{build}", &self.build_id)
            .replace("{deploy}", &self.deploy_id)
            .replace("{env}", &self.env_id)
            .replace("{delivery}", &self.delivery_id)
    }
}

/// Checks an answer: not a 5xx; an error has the documented shape.
fn check_answer(what: &str, status: StatusCode, body: &[u8]) -> Result<(), TestCaseError> {
    let shown = || format!("{what}: {status} {}", String::from_utf8_lossy(&body[..body.len().min(500)]));
    ensure(!status.is_server_error(), || format!("a server error: {}", shown()))?;
    if status.is_client_error() {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let (code, message) = (v["code"].as_str().unwrap_or(""), v["message"].as_str().unwrap_or(""));
        ensure(!code.is_empty() && !message.is_empty(), || format!("not the error shape: {}", shown()))?;
    }
    Ok(())
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

// ---------------------------------------------------------------------------------------------
// The gateway's ping

const PING_KEYS: [&str; 14] = [
    "hostId",
    "hostName",
    "hostIp",
    "autoscalingGroup",
    "availabilityZone",
    "ec2Tags",
    "agentVersion",
    "stageType",
    "groups",
    "accountId",
    "reports",
    "deployId",
    "envId",
    "errorMessage",
];

/// A ping as Teletraan's agent sends it, for the fixture's hosts or others, reporting the
/// fixture's deploy or others, at any stage. `waitSeconds` is never positive: a held ping
/// waits up to a minute by design.
fn ping_base() -> impl Strategy<Value = Value> {
    let name = prop_oneof![3 => select(vec!["h1", "h2", "web-3"]).prop_map(String::from), 1 => "[a-z0-9.-]{1,20}"];
    let id = prop_oneof![Just("{env}".to_string()), Just("{deploy}".to_string()), "[A-Za-z0-9]{1,22}"];
    let one_report = (
        id.clone(),
        id,
        select(vec![
            "PRE_DOWNLOAD",
            "DOWNLOADING",
            "POST_DOWNLOAD",
            "STAGING",
            "RESTARTING",
            "SERVING_BUILD",
            "UNKNOWN",
        ]),
        select(vec![
            "SUCCEEDED",
            "SUCCEEDED",
            "UNKNOWN",
            "TOO_MANY_RETRY",
            "SCRIPT_FAILED",
            "AGENT_FAILED",
            "ABORTED_BY_SERVICE",
            "SCRIPT_TIMEOUT",
        ]),
        any::<i32>(),
        proptest::option::of(text()),
        select(vec![Value::Null, json!("RESET_BY_SYSTEM"), json!("NORMAL")]),
    )
        .prop_map(|(deploy, env, stage, status, code, message, state)| {
            let mut r = report(&deploy, &env, stage, status);
            r["errorCode"] = json!(code);
            r["errorMessage"] = json!(message);
            r["agentState"] = state;
            r
        });
    let wait = select(vec![Value::Null, json!(0), json!(-1), json!(4294967296u64), json!("1"), json!(1.5)]);
    // Texts of the right type in the fields the gateway cleans and cuts.
    let texts =
        vec((select(vec!["hostIp", "autoscalingGroup", "availabilityZone", "agentVersion", "hostName"]), text()), 0..3);
    (name, vec(one_report, 0..3), proptest::option::weighted(0.2, wait), any::<bool>(), texts).prop_map(
        |(name, reports, wait, tags_as_text, texts)| {
            let mut ping = Host::new(&name, "web").ping_body(&reports);
            ping["ec2Tags"] = if tags_as_text { json!("{\"az\": \"1a\"}") } else { json!({"az": "1a", "n": 3}) };
            if let Some(w) = wait {
                ping["waitSeconds"] = w;
            }
            for (field, text) in texts {
                ping[field] = json!(text);
            }
            ping
        },
    )
}

/// Keeps an edited ping from asking to be held: a positive `waitSeconds` (or raw text there)
/// becomes 0, since a held ping waits up to a minute by design.
fn no_long_poll(ping: &mut Value) {
    if let Some(wait) = ping.get_mut("waitSeconds")
        && (wait.as_f64().is_some_and(|w| w > 0.0) || wait.as_str() == Some(RAW))
    {
        *wait = json!(0);
    }
}

#[derive(Debug, Clone)]
enum Token {
    Agent,
    Admin,
    Missing,
    Junk(String),
}

#[test]
fn fuzz_gateway_ping() {
    let rt = runtime();
    let app = rt.block_on(spawn_app());
    let fixture = rt.block_on(Fixture::new(&app));
    // Longer than the longest long-poll, which a byte flipped in `waitSeconds` may still ask for.
    let wait = Duration::from_secs(u64::from(schema::ping::MAX_WAIT_SECONDS) + 10);
    let http = reqwest::Client::builder().timeout(wait).build().expect("a client");
    let url = format!("{}/v1/system/ping", app.gateway);
    let token = prop_oneof![
        20 => Just(Token::Agent),
        1 => Just(Token::Admin),
        1 => Just(Token::Missing),
        1 => "[ -~]{0,40}".prop_map(Token::Junk),
    ];
    budget::run("gateway_ping", 400, (payload(ping_base(), &PING_KEYS), token), |(payload, token)| {
        let body = payload.bytes(&fixture, no_long_poll);
        rt.block_on(async {
            let mut request = http.post(&url).header("Content-Type", "application/json").body(body);
            request = match &token {
                Token::Agent => request.header("Authorization", format!("token {}", app.agent_token)),
                Token::Admin => request.header("Authorization", format!("token {}", app.admin_token)),
                Token::Missing => request,
                Token::Junk(t) => request.header("Authorization", t.as_str()),
            };
            let answer = request.send().await.map_err(|e| TestCaseError::fail(format!("no answer (a panic?): {e}")))?;
            let status = answer.status();
            let body = answer.bytes().await.map_err(|e| TestCaseError::fail(format!("answer cut: {e}")))?;
            check_answer("ping", status, &body)?;
            if status.is_success() {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                ensure(v["opCode"].is_string() && (v["deployGoal"].is_null() || v["deployGoal"].is_object()), || {
                    format!("not a ping answer: {v}")
                })?;
            }
            Ok(())
        })
    });
    // The gateway still answers, pings and probes alike.
    rt.block_on(async {
        let ping = app.ping(&Host::new("h2", "web").ping_body(&[])).await;
        assert_eq!(ping.status, StatusCode::OK, "{}", ping.text);
        let ready = http.get(format!("{}/readyz", app.gateway)).send().await.expect("the gateway answers");
        assert_eq!(ready.status(), StatusCode::OK);
        app.stop().await;
    });
}

// ---------------------------------------------------------------------------------------------
// The REST API

const BODY_KEYS: [&str; 27] = [
    "envName",
    "stageName",
    "maxParallel",
    "description",
    "stageType",
    "name",
    "artifactUrl",
    "artifactSha256",
    "commit",
    "state",
    "totalSessions",
    "hostNumbers",
    "constraintKey",
    "maxParallel",
    "preDeployHooks",
    "url",
    "principal",
    "expiresAt",
    "role",
    "hostId",
    "acceptanceStatus",
    "targetId",
    "type",
    "queueSize",
    "expireDate",
    "hostName",
    "groups",
];

/// Every query parameter some route reads, and a few none does.
const PARAMS: [&str; 34] = [
    "actionType",
    "after",
    "before",
    "branch",
    "buildId",
    "capacityType",
    "commit",
    "commitDate",
    "deployState",
    "deployType",
    "description",
    "envId",
    "envName",
    "filter",
    "fromDeployId",
    "groupName",
    "markBad",
    "name",
    "nameFilter",
    "operator",
    "pageIndex",
    "pageSize",
    "principal",
    "replaceHost",
    "sessionNumber",
    "size",
    "stageType",
    "start",
    "toDeployId",
    "type",
    "status",
    "env",
    "stage",
    "bogus",
];

/// Which listener serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// The API, driven in-process, as the admin.
    Api,
    /// The gateway, over HTTP, with the fixture's enrollment token.
    Gateway,
}

/// One route as the fuzzer calls it: a valid body and query to start from.
struct Route {
    method: Method,
    path: &'static str,
    query: &'static str,
    body: Option<fn() -> Value>,
    on: Listener,
}

fn routes() -> Vec<Route> {
    let r = |method: Method, path, query, body: Option<fn() -> Value>| Route {
        method,
        path,
        query,
        body,
        on: Listener::Api,
    };
    let mut routes = vec![
        r(
            Method::POST,
            "/v1/envs",
            "",
            Some(|| json!({"envName": "fz", "stageName": "s1", "maxParallel": 2, "stageType": "DEV"})),
        ),
        r(
            Method::PUT,
            "/v1/envs/web/prod",
            "",
            Some(|| {
                json!({"description": "d", "maxParallel": 3, "maxParallelPct": 10, "successThreshold": 9000, "stuckThreshold": 600,
                   "acceptanceType": "AUTO", "priority": "NORMAL", "branch": "main", "emailRecipients": "a@example.com"})
            }),
        ),
        r(Method::POST, "/v1/envs/web/prod/deploys", "buildId={build}&description=fuzz", None),
        r(Method::POST, "/v1/envs/web/prod/deploys/current/actions", "actionType=RESTART&description=x", None),
        r(
            Method::POST,
            "/v1/envs/web/prod/deploys/current/actions",
            "actionType=ROLLBACK&toDeployId={deploy}&markBad=true",
            None,
        ),
        r(
            Method::POST,
            "/v1/builds",
            "",
            Some(|| {
                json!({"name": "web", "artifactUrl": "https://artifacts.example.com/web/2.tgz", "artifactSha256": common::SOME_SHA256,
                   "type": "GitHub", "repo": "org/web", "branch": "main", "commit": "abcdef34", "commitDate": 1700000000000i64})
            }),
        ),
        r(Method::GET, "/v1/builds", "name=web&branch=main&pageIndex=1&pageSize=10", None),
        r(Method::GET, "/v1/deploys", "envId={env}&deployState=RUNNING&commit=abcdef12&pageIndex=1&pageSize=5", None),
        r(Method::PUT, "/v1/envs/web/prod/deploys/hostactions", "actionType=PAUSED_BY_USER", Some(|| json!(["i-h1"]))),
        r(Method::PUT, "/v1/envs/web/prod/agents/i-h1", "", Some(|| json!({"state": "NORMAL"}))),
        r(Method::DELETE, "/v1/envs/web/prod/hosts", "replaceHost=false", Some(|| json!(["i-h9"]))),
        r(
            Method::PUT,
            "/v1/schedules/web/prod/schedules",
            "",
            Some(|| json!({"totalSessions": 2, "hostNumbers": "1,50%", "cooldownTimes": "5,-1"})),
        ),
        r(Method::PUT, "/v1/schedules/web/prod/override", "sessionNumber=1", None),
        r(
            Method::POST,
            "/v1/envs/web/prod/deploy_constraint",
            "",
            Some(|| json!({"constraintKey": "az", "maxParallel": 1, "constraintType": "GROUP_BY_GROUP"})),
        ),
        r(
            Method::PUT,
            "/v1/envs/web/prod/web_hooks",
            "",
            Some(|| {
                json!({"preDeployHooks": [{"url": "http://127.0.0.1:9/pre", "method": "POST", "headers": "X-A: b", "body": "{}"}],
                   "postDeployHooks": [], "secret": "0123456789abcdef0123456789"})
            }),
        ),
        r(
            Method::POST,
            "/v1/tokens",
            "",
            Some(|| json!({"principal": "fuzzer", "description": "d", "kind": "API", "expiresAt": 1893456000000i64})),
        ),
        r(Method::POST, "/v1/principals", "", Some(|| json!({"name": "p1", "kind": "AGENT"}))),
        r(Method::POST, "/v1/system/user_roles", "", Some(|| json!({"name": "fuzzer", "role": "READER"}))),
        r(Method::PUT, "/v1/envs/web/prod/capacity", "capacityType=GROUP", Some(|| json!(["web", "web-canary"]))),
        r(Method::POST, "/v1/envs/web/prod/capacity", "capacityType=HOST", Some(|| json!("web-9"))),
        r(Method::PUT, "/v1/envs/web/prod/script_configs", "", Some(|| json!({"PORT": "8080"}))),
        r(Method::PUT, "/v1/envs/web/prod/agent_configs", "", Some(|| json!({"max_retry": "5"}))),
        r(Method::PUT, "/v1/envs/web/prod/script_secrets", "", Some(|| json!({"DB": "x", "OLD": null}))),
        r(
            Method::PUT,
            "/v1/envs/web/prod/metrics",
            "",
            Some(
                || json!([{"title": "t", "url": "https://m.example.com/x", "specs": [{"min": 0, "max": 1, "color": "red"}]}]),
            ),
        ),
        r(
            Method::PUT,
            "/v1/envs/web/prod/alarms",
            "",
            Some(|| json!([{"name": "a", "alarmUrl": "https://a.example.com", "metricsUrl": "https://m.example.com"}])),
        ),
        r(
            Method::PUT,
            "/v1/envs/web/prod/promotes",
            "",
            Some(
                || json!({"type": "MANUAL", "predStage": "beta", "schedule": "0 0/30 9-17 ? * MON-FRI", "queueSize": 2, "delay": 0}),
            ),
        ),
        r(
            Method::POST,
            "/v1/hosts",
            "",
            Some(|| json!({"hostName": "h9", "hostId": "i-h9", "groupName": "web", "ip": "10.0.0.9"})),
        ),
        r(
            Method::PUT,
            "/v1/deploys/{deploy}",
            "",
            Some(|| json!({"acceptanceStatus": "ACCEPTED", "description": "ok"})),
        ),
        r(
            Method::POST,
            "/v1/tags",
            "",
            Some(|| json!({"value": "GOOD_BUILD", "targetType": "BUILD", "targetId": "{build}", "comments": "c"})),
        ),
        r(Method::POST, "/v1/envs/web/prod/actions", "actionType=ENABLE&description=x", None),
        r(Method::POST, "/v1/envs/actions", "actionType=ENABLE&description=x", None),
        r(Method::GET, "/v1/history", "envName=web&operator=admin&type=Build&pageIndex=1&pageSize=5", None),
        r(Method::GET, "/v1/envs", "envName=web&groupName=web&stageType=DEV", None),
        r(Method::GET, "/v1/envs/names", "nameFilter=w&pageIndex=1&pageSize=10", None),
        r(Method::GET, "/v1/builds/names", "filter=w&start=0&size=10", None),
        r(Method::GET, "/v1/deploys/{deploy}/steps", "pageSize=10", None),
        r(Method::GET, "/v1/agents/h1/steps", "before=1893456000000&pageSize=10", None),
        r(Method::GET, "/v1/envs/web/prod/agents/count", "actionType=SERVING", None),
        r(Method::GET, "/v1/envs/web/prod/web_hooks/deliveries", "pageIndex=1&pageSize=10", None),
        r(Method::GET, "/v1/tokens", "principal=fuzzer", None),
        r(Method::POST, "/v1/envs/web/user_roles", "", Some(|| json!({"name": "fuzzer", "role": "OPERATOR"}))),
        r(Method::PUT, "/v1/envs/web/user_roles/fuzzer", "", Some(|| json!({"role": "ADMIN"}))),
        r(Method::POST, "/v1/envs/web/group_roles", "", Some(|| json!({"name": "devs", "role": "OPERATOR"}))),
        r(Method::PUT, "/v1/envs/web/group_roles/devs", "", Some(|| json!({"role": "PUBLISHER"}))),
        r(
            Method::POST,
            "/v1/envs/web/token_roles",
            "",
            Some(|| json!({"name": "release", "role": "OPERATOR", "expireDate": 1893456000000i64})),
        ),
        r(Method::PUT, "/v1/envs/web/token_roles/deployer", "", Some(|| json!({"role": "READER"}))),
        r(Method::PUT, "/v1/system/user_roles/fuzzer", "", Some(|| json!({"role": "OPERATOR"}))),
        r(Method::POST, "/v1/system/group_roles", "", Some(|| json!({"name": "devs", "role": "OPERATOR"}))),
        r(Method::PUT, "/v1/system/group_roles/devs", "", Some(|| json!({"role": "PUBLISHER"}))),
        r(Method::PUT, "/v1/envs/web/prod/agents/reset_failed_agents/{deploy}", "", None),
        r(Method::POST, "/v1/envs/web/beta/web_hooks/deliveries/{delivery}/retry", "", None),
        r(Method::GET, "/v1/envs/web/prod/capacity", "capacityType=GROUP", None),
        r(Method::DELETE, "/v1/envs/web/prod/capacity", "capacityType=HOST", Some(|| json!("web-9"))),
        r(Method::GET, "/v1/envs/web/prod/history", "pageIndex=1&pageSize=10", None),
        r(Method::GET, "/v1/builds/tags", "name=web&commit=abcdef12&after=0&pageIndex=1&pageSize=10", None),
        r(Method::GET, "/v1/agents/h1/deploys", "pageSize=10", None),
        r(Method::GET, "/v1/host_credentials", "pageIndex=1&pageSize=10", None),
        r(Method::GET, "/v1/events", "env=web&stage=prod", None),
    ];
    routes.push(Route {
        method: Method::POST,
        path: "/v1/system/enroll",
        query: "",
        body: Some(|| json!({"hostId": "i-e1", "hostName": "e1", "groups": ["web"]})),
        on: Listener::Gateway,
    });
    routes
}

/// A query value: text percent-encoded, any bytes percent-encoded (so not always UTF-8 once
/// decoded), or characters left as they are (a lone `%`, `+`, `&&`).
#[derive(Debug, Clone)]
enum QueryValue {
    Text(String),
    Bytes(Bytes),
    Verbatim(&'static str),
}

#[derive(Debug, Clone)]
struct RestCase {
    route: usize,
    /// Keep the route's own query, then add these pairs.
    keep_query: bool,
    query: Vec<(String, QueryValue)>,
    /// A path segment replaced by this (percent-encoded) text.
    segment: Option<(u16, String)>,
    body: Option<Payload>,
    idempotency_key: Option<Bytes>,
    /// An `Authorization` of any printable text in place of the route's token.
    authorization: Option<String>,
}

fn query_value() -> impl Strategy<Value = QueryValue> {
    prop_oneof![
        6 => text().prop_map(|t| QueryValue::Text(t.chars().take(2_000).collect())),
        2 => vec(any::<u8>(), 0..24).prop_map(|b| QueryValue::Bytes(Bytes(b))),
        1 => select(vec!["%", "%z", "%%41", "+", "&&", "=", "%C3", "%FF", "%00", "a=b=c", "%2B1"]).prop_map(QueryValue::Verbatim),
    ]
}

fn rest_case(count: usize) -> impl Strategy<Value = RestCase> {
    let pair = (prop_oneof![6 => select(PARAMS.to_vec()).prop_map(String::from), 1 => "\\PC{0,10}"], query_value());
    let body = payload(hostile_value(), &BODY_KEYS);
    (
        0..count,
        prop::bool::weighted(0.8),
        vec(pair, 0..4),
        proptest::option::weighted(0.1, (any::<u16>(), text())),
        proptest::option::weighted(0.9, body),
        proptest::option::weighted(0.1, vec(any::<u8>(), 0..300).prop_map(Bytes)),
        proptest::option::weighted(0.05, prop_oneof!["[ -~]{0,40}", "token [ -~]{0,40}"]),
    )
        .prop_map(|(route, keep_query, query, segment, body, idempotency_key, authorization)| RestCase {
            route,
            keep_query,
            query,
            segment,
            body,
            idempotency_key,
            authorization,
        })
}

fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (*b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl RestCase {
    /// The request, with the fixture's ids in place, its URI after `base` (the gateway's
    /// address, or nothing for the API's router) and its token the route's listener's; the body
    /// is the route's valid body edited (a `Payload::Json` starting from the hostile value is
    /// re-based on it).
    fn request(&self, routes: &[Route], fixture: &Fixture, base: &str, token: &str) -> Option<Request<Vec<u8>>> {
        let route = &routes[self.route];
        let mut path = fixture.fill(route.path);
        if let Some((i, text)) = &self.segment {
            let mut parts: Vec<String> = path.split('/').map(String::from).collect();
            // Never the empty first part or `v1`.
            let at = 2 + usize::from(*i) % (parts.len() - 2).max(1);
            if at < parts.len() {
                parts[at] = encode(text.as_bytes());
            }
            path = parts.join("/");
        }
        let mut query: Vec<String> = Vec::new();
        if self.keep_query && !route.query.is_empty() {
            query.push(fixture.fill(route.query));
        }
        for (k, v) in &self.query {
            let v = match v {
                QueryValue::Text(t) => encode(fixture.fill(t).as_bytes()),
                QueryValue::Bytes(b) => encode(&b.0),
                QueryValue::Verbatim(s) => (*s).to_string(),
            };
            query.push(format!("{}={v}", encode(k.as_bytes())));
        }
        let uri = if query.is_empty() { format!("{base}{path}") } else { format!("{base}{path}?{}", query.join("&")) };
        let body = match (&self.body, route.body) {
            (Some(Payload::Json { edits, text, .. }), Some(base)) => {
                Payload::Json { base: base(), edits: edits.clone(), text: text.clone() }.bytes(fixture, |_| {})
            }
            (Some(p), _) => p.bytes(fixture, |_| {}),
            (None, Some(base)) => fixture.fill(&base().to_string()).into_bytes(),
            (None, None) => Vec::new(),
        };
        let authorization = self.authorization.clone().unwrap_or_else(|| format!("token {token}"));
        let mut request = Request::builder()
            .method(route.method.clone())
            .uri(uri)
            .header("Authorization", authorization)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.idempotency_key
            && let Ok(value) = HeaderValue::from_bytes(&key.0)
        {
            request = request.header("Idempotency-Key", value);
        }
        request.body(body).ok()
    }
}

/// Sends a case to the API's router in-process, or to the gateway over HTTP; answers the status
/// and the body. A 200 event stream is not read: it goes on until the client leaves.
async fn send(
    router: &axum::Router,
    http: &reqwest::Client,
    on: Listener,
    request: Request<Vec<u8>>,
) -> Result<(StatusCode, Vec<u8>), TestCaseError> {
    let what = format!("{} {}", request.method(), request.uri());
    match on {
        Listener::Api => {
            let Ok(answer) = router.clone().oneshot(request.map(AxumBody::from)).await;
            let status = answer.status();
            let stream =
                answer.headers().get("content-type").is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
            if status.is_success() && stream {
                return Ok((status, Vec::new()));
            }
            let body = axum::body::to_bytes(answer.into_body(), 64 << 20)
                .await
                .map_err(|e| TestCaseError::fail(format!("{what}: answer cut: {e}")))?;
            Ok((status, body.to_vec()))
        }
        Listener::Gateway => {
            let Ok(request) = reqwest::Request::try_from(request) else {
                return Err(TestCaseError::reject("not a URL the client sends"));
            };
            let answer = http
                .execute(request)
                .await
                .map_err(|e| TestCaseError::fail(format!("{what}: no answer (a panic?): {e}")))?;
            let status = answer.status();
            let body = answer.bytes().await.map_err(|e| TestCaseError::fail(format!("{what}: answer cut: {e}")))?;
            Ok((status, body.to_vec()))
        }
    }
}

#[test]
fn fuzz_rest_api() {
    let rt = runtime();
    // One attempt per webhook delivery: the fixture's fails at once, and so does a retried one.
    let app = rt.block_on(spawn_app_with(|c| c.webhooks.attempts = 1));
    let fixture = rt.block_on(Fixture::for_rest(&app));
    let router = app.api_router();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("a client");
    let routes = routes();
    budget::run("rest_api", 400, rest_case(routes.len()), |case| {
        let on = routes[case.route].on;
        let (base, token) = match on {
            Listener::Api => ("", &app.admin_token),
            Listener::Gateway => (app.gateway.as_str(), &fixture.enroll_token),
        };
        let Some(request) = case.request(&routes, &fixture, base, token) else {
            return Err(TestCaseError::reject("not a valid request line"));
        };
        let what = format!("{} {}", request.method(), request.uri());
        rt.block_on(async {
            let (status, body) = send(&router, &http, on, request).await?;
            check_answer(&what, status, &body)
        })
    });
    rt.block_on(async {
        let stage = app.get("/v1/envs/web/prod").await;
        assert!(stage.status == StatusCode::OK || stage.status == StatusCode::NOT_FOUND, "{}", stage.text);
        let enroll = json!({"hostId": "i-e2", "groups": ["web"]});
        let url = format!("{}/v1/system/enroll", app.gateway);
        let made = app.call(Method::POST, &url, Some(&fixture.enroll_token), common::Body::Json(&enroll)).await;
        assert_eq!(made.status, StatusCode::CREATED, "the gateway still enrolls: {}", made.text);
        app.stop().await;
    });
}

/// Every route of the API contract that reads a JSON body or a query string is among the
/// fuzzed routes (the ping has its own target): a route added without being fuzzed fails this.
#[test]
fn every_route_with_a_body_or_a_query_is_fuzzed() {
    let contract = api::contract();
    let mut wanted = Vec::new();
    for (path, methods) in contract["paths"].as_object().expect("paths") {
        for (method, op) in methods.as_object().expect("methods") {
            let query = op["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            if (query || op.get("requestBody").is_some()) && path != "/v1/system/ping" {
                wanted.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    assert!(wanted.len() > 40, "the contract's routes with a body or a query: {wanted:?}");
    let templates: Vec<(String, String)> = contract["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, methods)| {
            methods.as_object().into_iter().flatten().map(|(m, _)| (m.to_ascii_uppercase(), path.clone()))
        })
        .collect();
    // The template the router picks for a fuzzed path: of those it fits, the one with the most
    // literal segments.
    let served: Vec<(String, String)> = routes()
        .iter()
        .filter_map(|r| {
            let segments: Vec<&str> = r.path.split('/').collect();
            templates
                .iter()
                .filter(|(m, t)| {
                    let parts: Vec<&str> = t.split('/').collect();
                    *m == r.method.as_str()
                        && parts.len() == segments.len()
                        && parts.iter().zip(&segments).all(|(p, s)| p.starts_with('{') || p == s)
                })
                .max_by_key(|(_, t)| t.split('/').filter(|p| !p.starts_with('{')).count())
                .cloned()
        })
        .collect();
    let missing: Vec<_> = wanted.iter().filter(|w| !served.contains(w)).collect();
    assert!(missing.is_empty(), "routes with a body or a query that are not fuzzed: {missing:?}");
}
