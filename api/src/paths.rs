//! Paths as Teletraan's server takes them: a trailing slash on any path is the path without it
//! (`/v1/envs/` is `/v1/envs`). Done before routing, so the route matched, and with it what the
//! route needs (`rest::route_specs`), is the one without the slash.

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use axum::http::uri::PathAndQuery;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower::Layer;

/// `router`, answering paths with trailing slashes as the paths without them.
pub fn trimming_trailing_slashes(router: Router) -> Router {
    Router::new().fallback_service(middleware::from_fn(trim).layer(router))
}

/// The path without its trailing slashes (`/` stays `/`); `None` when there are none.
fn trimmed(path: &str) -> Option<&str> {
    let t = path.trim_end_matches('/');
    match (t.len() == path.len(), t.is_empty()) {
        (true, _) => None,
        (false, true) => (path != "/").then_some("/"),
        (false, false) => Some(t),
    }
}

async fn trim(mut req: Request, next: Next) -> Response {
    if let Some(path) = trimmed(req.uri().path()) {
        let with_query = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = PathAndQuery::try_from(with_query) {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::trimmed;

    #[test]
    fn trailing_slashes_go_and_nothing_else_changes() {
        assert_eq!(trimmed("/v1/envs/"), Some("/v1/envs"));
        assert_eq!(trimmed("/v1/envs//"), Some("/v1/envs"));
        assert_eq!(trimmed("/v1/envs"), None);
        assert_eq!(trimmed("/"), None);
        assert_eq!(trimmed("//"), Some("/"));
        assert_eq!(trimmed("/v1//envs"), None, "only the end of the path");
    }
}
