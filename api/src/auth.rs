//! Authentication and authorization of the REST API.
//!
//! A caller is a principal: found by its token (`Authorization: token <T>`, as Teletraan's
//! clients send it; `Bearer` also accepted; looked up by its SHA-256), or, when trusted-header
//! mode is on, named by a header that a company SSO proxy sets (only for requests that come
//! from the proxy's addresses). Its grants (a role on the system or on an environment, held
//! directly or through a directory group) decide what it may do: every route declares what it
//! needs ([`Need`]), and [`authorize`] checks it before the handler runs. Routes whose target
//! is in the body (a build's name, a tag's target) declare the least role they need anywhere,
//! and their handler checks the exact target with [`Principal::require`].

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use schema::rules::access::{self, Grant, Target};
use schema::{AccessRole, DeployId, EnvName};
use store::{Store, TokenKind};

use crate::error::ApiError;

/// Who is calling, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name (recorded as the operator of what it does).
    pub name: String,
    /// Its grants, direct and through its groups.
    pub grants: Vec<Grant>,
}

impl Principal {
    /// Whether it holds `needed` on `target`.
    pub fn may(&self, needed: AccessRole, target: Target<'_>) -> bool {
        access::allows(&self.grants, needed, target)
    }

    /// Refuses (403) unless it holds `needed` on `target`; the message says what is missing.
    pub fn require(&self, needed: AccessRole, target: Target<'_>) -> Result<(), ApiError> {
        if self.may(needed, target) {
            return Ok(());
        }
        let on = match target {
            Target::System => "the system".to_string(),
            Target::Env(e) => format!("environment {e}"),
        };
        Err(ApiError::forbidden(format!("{} needs the {needed} role on {on}", self.name)))
    }
}

/// Where a route's target environment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The whole system.
    System,
    /// The `{env}` of the path.
    EnvPath,
    /// The environment of the deploy named by the `{id}` of the path.
    DeployPath,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any grant (reads).
    Read,
    /// A role on a target found from the request's path.
    Role(AccessRole, From),
    /// A role on a target only the handler knows (in the body); checked there, after this
    /// role has been found somewhere. The text says on what (for the documentation).
    InHandler(AccessRole, &'static str),
    /// Any authenticated principal, whatever it holds (its own identity, its own tokens).
    Authenticated,
    /// A host of the fleet: an agent token or a host credential, which the gateway checks
    /// itself (the ping and the enrollment; no REST route needs it).
    Fleet(&'static str),
}

impl Need {
    /// What it needs, in words (the route table of the documentation).
    pub fn describe(&self) -> String {
        match self {
            Need::Read => "READER (any role)".into(),
            Need::Authenticated => "any principal".into(),
            Need::Role(role, From::System) => format!("{role} on the system"),
            Need::Role(role, From::EnvPath) => format!("{role} on `{{env}}`"),
            Need::Role(role, From::DeployPath) => format!("{role} on the deploy's environment"),
            Need::InHandler(role, on) => format!("{role} {on}"),
            Need::Fleet(what) => (*what).into(),
        }
    }
}

/// One route: method, path pattern, what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern as axum matches it (`/v1/envs/{env}/{stage}`).
    pub path: &'static str,
    /// What it needs.
    pub need: Need,
}

/// Trusted-header mode: a company SSO proxy in front of the API names the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedHeaders {
    /// Header with the user's name (`X-Forwarded-User`); `None`: the mode is off.
    pub user_header: Option<String>,
    /// Header with the user's directory groups, comma separated.
    pub groups_header: Option<String>,
    /// Addresses the proxy connects from (CIDR blocks); a request from elsewhere is not
    /// trusted, whatever its headers say.
    pub proxies: Vec<Cidr>,
}

/// An address block (`10.0.0.0/8`, `::1/128`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an address or address block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, bits })
    }
}

impl Cidr {
    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.bits == 0 { 0 } else { u32::MAX << (32 - u32::from(self.bits)) };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.bits == 0 { 0 } else { u128::MAX << (128 - u32::from(self.bits)) };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
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

/// What the authorization middleware needs.
#[derive(Clone)]
pub struct AuthState {
    /// Tokens and grants.
    pub store: Store,
    /// Every route and what it needs.
    pub routes: std::sync::Arc<std::collections::HashMap<(Method, &'static str), Need>>,
    /// Trusted-header mode.
    pub trusted: std::sync::Arc<TrustedHeaders>,
}

/// The caller's name and groups: from its token, or from the SSO proxy's headers.
async fn identify(s: &AuthState, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(String, Vec<String>), ApiError> {
    if let Some(token) = bearer(headers) {
        let Some(owner) = s.store.authenticate(token, schema::time::now_ms()).await? else {
            return Err(ApiError::unauthorized("unknown, revoked or expired token"));
        };
        match owner.kind {
            TokenKind::Api => {}
            TokenKind::Agent => return Err(ApiError::forbidden("agent tokens may only ping the gateway")),
            TokenKind::Enroll => return Err(ApiError::forbidden("enrollment tokens may only enroll hosts")),
        }
        return Ok((owner.principal, Vec::new()));
    }
    let t = &s.trusted;
    if let Some(user_header) = &t.user_header {
        let from_proxy = peer.is_some_and(|ip| t.proxies.iter().any(|c| c.contains(ip)));
        let user = headers.get(user_header.as_str()).and_then(|v| v.to_str().ok()).map(str::trim);
        if let (true, Some(user)) = (from_proxy, user.filter(|u| !u.is_empty())) {
            schema::model::check_text("user", user, 256).map_err(|_| ApiError::unauthorized("bad user header"))?;
            let groups = t
                .groups_header
                .as_ref()
                .and_then(|h| headers.get(h.as_str()))
                .and_then(|v| v.to_str().ok())
                .map(|g| g.split(',').map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect())
                .unwrap_or_default();
            return Ok((user.to_string(), groups));
        }
    }
    Err(ApiError::unauthorized("missing credentials: send 'Authorization: token <token>'"))
}

/// The principal of a request's credentials (a token, or the SSO proxy's headers from one
/// of its addresses), with its grants; 401 without credentials or with a bad token.
pub async fn principal(s: &AuthState, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<Principal, ApiError> {
    let (name, groups) = identify(s, headers, peer).await?;
    let grants = s.store.grants_of(&name, &groups).await?;
    Ok(Principal { name, grants })
}

/// Middleware of the REST API: identifies the caller, loads its grants, and checks what the
/// matched route needs; the handler finds the [`Principal`] in the request's extensions.
pub async fn authorize(State(s): State<AuthState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let principal = principal(&s, req.headers(), peer).await?;
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let Some(need) = s.routes.get(&(req.method().clone(), path.as_str())).copied() else {
        // Every route is declared with what it needs; one that is not is refused.
        return Err(ApiError::forbidden("this route declares no role; refused"));
    };
    if !access::may_read(&principal.grants) && need != Need::Authenticated {
        return Err(ApiError::forbidden(format!("{} holds no role", principal.name)));
    }
    match need {
        Need::Read | Need::Authenticated => {}
        Need::Fleet(_) => return Err(ApiError::forbidden("a fleet route is served by the gateway")),
        Need::InHandler(role, _) => {
            if !access::allows_somewhere(&principal.grants, role) {
                return Err(ApiError::forbidden(format!("{} needs the {role} role", principal.name)));
            }
        }
        Need::Role(role, from) => {
            let params = {
                let (mut parts, body) = req.into_parts();
                let params =
                    <RawPathParams as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &())
                        .await
                        .map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
                req = Request::from_parts(parts, body);
                params
            };
            let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
            match from {
                From::System => principal.require(role, Target::System)?,
                From::EnvPath => {
                    let env = EnvName::parse(param("env").unwrap_or_default())?;
                    principal.require(role, Target::Env(&env))?;
                }
                From::DeployPath => {
                    let id = DeployId::parse(param("id").unwrap_or_default())?;
                    let env = s.store.env_of_deploy(&id).await?;
                    principal.require(role, Target::Env(&env))?;
                }
            }
        }
    }
    req.extensions_mut().insert(principal);
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

    #[test]
    fn address_blocks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()), "IPv4 seen through an IPv6 socket");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }
}
