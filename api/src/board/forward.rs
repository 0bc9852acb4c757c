//! Writes of the board: REST requests made in-process with the viewer's credentials, so that
//! roles, validation, audit history and commands are the API's own.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use serde::Deserialize;
use tower::ServiceExt;

use crate::error::ApiError;

/// Largest answer the board reads from the API.
const MAX_ANSWER: usize = 8 << 20;

/// How the viewer proves who it is to the API.
pub enum Credentials {
    /// Its API token (from the session cookie).
    Token(String),
    /// The SSO proxy's headers, from the proxy's address.
    Proxy { headers: HeaderMap, peer: Option<SocketAddr> },
}

impl Credentials {
    /// Puts the credentials in a request's headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self {
            Credentials::Token(t) => {
                if let Ok(v) = HeaderValue::from_str(&format!("token {t}")) {
                    headers.insert(header::AUTHORIZATION, v);
                }
            }
            Credentials::Proxy { headers: h, .. } => headers.extend(h.clone()),
        }
    }

    fn peer(&self) -> Option<SocketAddr> {
        match self {
            Credentials::Token(_) => None,
            Credentials::Proxy { peer, .. } => *peer,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

/// Sends `method path` (with its query) and a JSON body to the REST router as the viewer;
/// answers the body of a success, or the API's error with its status and message.
pub async fn call(
    rest: &Router,
    creds: &Credentials,
    method: Method,
    path: &str,
    json: Option<serde_json::Value>,
) -> Result<(StatusCode, axum::body::Bytes), ApiError> {
    let body = match &json {
        Some(v) => Body::from(v.to_string()),
        None => Body::empty(),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| ApiError::bad_request(format!("bad request to the API: {e}")))?;
    creds.apply(request.headers_mut());
    if let Some(peer) = creds.peer() {
        request.extensions_mut().insert(ConnectInfo(peer));
    }
    let Ok(response) = rest.clone().oneshot(request).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER)
        .await
        .map_err(|e| ApiError::unavailable(format!("the API's answer could not be read: {e}")))?;
    if status.is_success() {
        return Ok((status, bytes));
    }
    let message = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|b| b.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::CONFLICT => "conflict",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "bad_request",
    };
    Err(ApiError { status, code, message })
}

/// Percent-encodes a query value or a path segment (everything but unreserved characters).
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_encoded_for_urls() {
        assert_eq!(super::encode("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
        assert_eq!(super::encode("web-1_x.y~"), "web-1_x.y~");
    }
}
