//! Authentication: `Authorization: token <T>` (as Teletraan's clients send it; `Bearer` also
//! accepted). Tokens are looked up by their SHA-256 hash.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use store::{Role, Store};

use crate::error::ApiError;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token name (recorded as the operator).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// The token in a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then_some(token)
        .filter(|t| !t.is_empty())
}

/// Middleware of the user API: a valid token of a user role is required; agent tokens may
/// only ping.
pub async fn require_user(State(store): State<Store>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let Some(token) = bearer(req.headers()) else {
        return Err(ApiError::unauthorized("missing credentials: send 'Authorization: token <token>'"));
    };
    let Some((name, role)) = store.token(token, schema::time::now_ms()).await? else {
        return Err(ApiError::unauthorized("unknown or expired token"));
    };
    match role {
        Role::Admin => {}
        Role::Agent => return Err(ApiError::forbidden("agent tokens may only ping the gateway")),
    }
    req.extensions_mut().insert(Principal { name, role });
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_schemes() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "token abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert("authorization", "Basic Zm9v".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "token ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
