//! `201 Created` with a JSON body and, when the resource has a URL of its own, a `Location`:
//! a type, so that the API contract reads the answer off the handler's signature.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A new resource.
pub struct Created<T> {
    /// Its URL, for `Location`.
    pub location: Option<String>,
    /// The resource.
    pub body: T,
}

impl<T> Created<T> {
    /// A new resource found at `location`.
    pub fn at(location: String, body: T) -> Created<T> {
        Created { location: Some(location), body }
    }

    /// A new resource without a URL of its own.
    pub fn new(body: T) -> Created<T> {
        Created { location: None, body }
    }
}

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        match self.location {
            Some(l) => (StatusCode::CREATED, [(header::LOCATION, l)], Json(self.body)).into_response(),
            None => (StatusCode::CREATED, Json(self.body)).into_response(),
        }
    }
}
