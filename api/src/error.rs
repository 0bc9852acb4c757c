//! API errors: a stable JSON shape `{"code": "...", "message": "..."}` with the right status.
//! A 500 is a bug; its detail goes to the log, never to the client. A dependency that cannot
//! be reached (Postgres, RabbitMQ) is a 503 with `Retry-After`, never a 500.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code: "bad_request", message: message.into() }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into() }
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: message.into() }
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::FORBIDDEN, code: "forbidden", message: message.into() }
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::CONFLICT, code: "conflict", message: message.into() }
    }

    /// 503: a dependency is down; try again.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, code: "unavailable", message: message.into() }
    }

    /// 500 with the detail logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message: "internal error".into() }
    }
}

/// Seconds a client is asked to wait before trying again after a 503 (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u32 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Body { code: self.code, message: &self.message })).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NotFound(m) => ApiError::not_found(m),
            store::Error::Conflict(m) => ApiError { status: StatusCode::CONFLICT, code: "conflict", message: m },
            store::Error::Invalid(i) => ApiError::bad_request(i.to_string()),
            store::Error::BadData(m) => ApiError::bad_request(format!("invalid value: {m}")),
            store::Error::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                ApiError::unavailable("the database is unavailable; try again")
            }
            // The database going away mid-query (restart, failover, admin shutdown), busy or
            // read-only, or a lost deadlock: not a bug, and it passes.
            e @ store::Error::Db(_) if e.is_transient() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable("the database is unavailable; try again")
            }
            e @ (store::Error::Db(_) | store::Error::Corrupt(_)) => ApiError::internal(e),
        }
    }
}

impl From<schema::model::Invalid> for ApiError {
    fn from(e: schema::model::Invalid) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<schema::model::LinkInvalid> for ApiError {
    fn from(e: schema::model::LinkInvalid) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<schema::IdError> for ApiError {
    fn from(e: schema::IdError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<schema::bus::CommandError> for ApiError {
    fn from(e: schema::bus::CommandError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        let code = match e.status {
            404 => "not_found",
            409 => "conflict",
            _ => "bad_request",
        };
        ApiError { status, code, message: e.message }
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
