//! What a handler's signature says about its route: the same trick axum's `Handler` plays,
//! read for documentation. Each argument type contributes ([`Arg`]): `ApiJson<T>` the request
//! body, `ApiQuery<Q>` the query parameters, state and extensions nothing. The return type
//! contributes the success answers ([`Output`]).

use std::future::Future;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use schemars::JsonSchema;
use schemars::Schema;
use schemars::generate::SchemaGenerator;

use super::{Answer, AnswerBody};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey};

/// A schema, made when the document is generated.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// What a handler's signature tells.
#[derive(Default)]
pub struct Described {
    /// The JSON request body.
    pub body: Option<SchemaFn>,
    /// The query parameters (an object schema whose properties are the parameters).
    pub query: Option<SchemaFn>,
    /// The success answers its return type implies (empty for a bare `Response`).
    pub answers: Vec<Answer>,
    /// Request headers it reads: (name, description).
    pub headers: Vec<(&'static str, &'static str)>,
}

/// A handler argument's part in the description.
pub trait Arg {
    /// Adds what this argument implies.
    fn describe(_: &mut Described) {}
}

impl<S> Arg for State<S> {}
impl<T> Arg for axum::Extension<T> {}
impl<T> Arg for ApiPath<T> {}
impl Arg for HeaderMap {}
impl<T> Arg for axum::extract::ConnectInfo<T> {}

impl Arg for IdempotencyKey {
    fn describe(d: &mut Described) {
        d.headers.push((
            "Idempotency-Key",
            "Makes a retry safe: a request repeated with the same key (1 to 255 visible ASCII characters, \
             a UUID for instance) by the same principal answers the first one's outcome and sends no second \
             command; the same key with a different request is refused (409).",
        ));
    }
}

/// Reads its parameters itself (repeated keys); they are not described.
impl Arg for axum::extract::RawQuery {}

/// A body read raw: one name, as a JSON string or as plain text.
impl Arg for Result<Bytes, BytesRejection> {
    fn describe(d: &mut Described) {
        d.body = Some(|g| g.subschema_for::<String>());
    }
}

impl<T: JsonSchema> Arg for ApiJson<T> {
    fn describe(d: &mut Described) {
        d.body = Some(|g| g.subschema_for::<T>());
    }
}

impl<T: JsonSchema> Arg for ApiQuery<T> {
    fn describe(d: &mut Described) {
        d.query = Some(|g| g.root_schema_for::<T>());
    }
}

/// A handler return type's part in the description: its success answers.
pub trait Output {
    /// The success answers (none: the route table must state them).
    fn answers() -> Vec<Answer>;
}

impl<T: Output> Output for ApiResult<T> {
    fn answers() -> Vec<Answer> {
        T::answers()
    }
}

impl<T: JsonSchema> Output for Json<T> {
    fn answers() -> Vec<Answer> {
        vec![Answer::json::<T>(200)]
    }
}

impl<T: JsonSchema> Output for crate::created::Created<T> {
    fn answers() -> Vec<Answer> {
        vec![Answer::json::<T>(201)]
    }
}

/// A bare status: the handlers that return one answer 204 (or say otherwise in the table).
impl Output for StatusCode {
    fn answers() -> Vec<Answer> {
        vec![Answer::empty(204)]
    }
}

impl Output for () {
    fn answers() -> Vec<Answer> {
        vec![Answer::empty(200)]
    }
}

impl Output for String {
    fn answers() -> Vec<Answer> {
        vec![Answer { status: 200, body: AnswerBody::Text }]
    }
}

/// Says nothing: the route table states the answers.
impl Output for Response {
    fn answers() -> Vec<Answer> {
        Vec::new()
    }
}

/// A handler whose signature can be read; `Args` is the tuple of its argument types.
pub trait Describe<Args> {
    /// What the signature tells.
    fn described(&self) -> Described;
}

macro_rules! describe_arity {
    ($($arg:ident),*) => {
        impl<F, Fut, $($arg,)*> Describe<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut,
            Fut: Future,
            Fut::Output: Output,
            $($arg: Arg,)*
        {
            fn described(&self) -> Described {
                let mut d = Described { answers: <Fut::Output as Output>::answers(), ..Described::default() };
                $(<$arg as Arg>::describe(&mut d);)*
                d
            }
        }
    };
}

describe_arity!(A1);
describe_arity!(A1, A2);
describe_arity!(A1, A2, A3);
describe_arity!(A1, A2, A3, A4);
describe_arity!(A1, A2, A3, A4, A5);
describe_arity!(A1, A2, A3, A4, A5, A6);
