//! Every API request has an id: the caller's `X-Request-Id` when it sends a usable one, else a
//! new one. It is in the answer's header, on every log line of the request (a span), and in
//! the commands the request sends, so a worker's log lines about a command name it too.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being answered, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// A usable id from a caller: 1 to 128 characters of letters, digits, `-`, `_`, `.`, `:`.
fn usable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = (1..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| s.to_string())
}

/// The middleware.
pub async fn assign(request: Request, next: Next) -> Response {
    let id = request.headers().get(HEADER).and_then(usable).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span =
        tracing::info_span!("request", request.id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = CURRENT.scope(id.clone(), next.run(request).instrument(span)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_taken_from_callers() {
        assert_eq!(usable(&HeaderValue::from_static("ci-run-42:step.3")), Some("ci-run-42:step.3".into()));
        for bad in ["", "a b", "x\"y", "é"] {
            let v = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            assert_eq!(usable(&v), None, "{bad:?}");
        }
        assert_eq!(usable(&HeaderValue::from_str(&"a".repeat(129)).unwrap()), None);
    }
}
