//! Sessions and form protection: the token cookie, the CSRF cookie, the flash message of the
//! page after an action, logging in and out.

use axum::Form;
use axum::body::{Body, Bytes};
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use store::TokenKind;

use super::layout::{self, Flash};
use super::{Board, BoardError};
use crate::error::ApiError;

/// The cookie holding the viewer's API token.
pub const TOKEN_COOKIE: &str = "tt_token";
/// The cookie holding the browser's form token.
const CSRF_COOKIE: &str = "tt_csrf";
/// The cookie carrying the outcome of an action to the next page.
const FLASH_COOKIE: &str = "tt_flash";

/// Marks a request that came over TLS (the HTTPS listener adds it): cookies are then Secure.
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// The browser's form token, found in its cookie or made for it.
#[derive(Clone)]
pub struct Csrf(pub String);

/// The value of cookie `name`, if the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, the whole site, Secure over TLS;
/// `max_age` 0 deletes it, `None` makes it last as long as the browser session.
fn set_cookie(name: &str, value: &str, https: bool, max_age: Option<u32>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if https {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    // Every part is ASCII we chose or checked (`cookie_safe`).
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("tt_invalid=; Max-Age=0"))
}

/// Whether a value can go in a cookie as it is.
fn cookie_safe(v: &str) -> bool {
    !v.is_empty() && v.len() <= 512 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%+".contains(&b))
}

/// A fresh random token (244 bits from the system's generator).
fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Middleware of every board route: makes sure the browser has a form token, hands the page
/// the flash message of the previous action and clears it once shown.
pub async fn cookies(mut req: Request, next: Next) -> Response {
    let https = req.extensions().get::<Https>().is_some();
    let existing = cookie(req.headers(), CSRF_COOKIE).filter(|v| cookie_safe(v) && v.len() == 64).map(str::to_string);
    let fresh = existing.is_none();
    let csrf = existing.unwrap_or_else(random_token);
    let flash = cookie(req.headers(), FLASH_COOKIE).and_then(Flash::decode);
    req.extensions_mut().insert(Csrf(csrf.clone()));
    if let Some(f) = &flash {
        req.extensions_mut().insert(f.clone());
    }
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    if fresh {
        headers.append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, &csrf, https, None));
    }
    let sets_flash = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.starts_with(&format!("{FLASH_COOKIE}="))));
    if flash.is_some() && !sets_flash {
        headers.append(header::SET_COOKIE, set_cookie(FLASH_COOKIE, "", https, Some(0)));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

/// A posted form whose form token was checked ([`check_form`]) before it was read: every
/// board handler of a POST takes one, so none can forget the check. A body that is not a form
/// of `T` is a 400 with the parser's message.
pub struct Posted<T>(pub T);

#[derive(Deserialize)]
struct TokenField {
    csrf: Option<String>,
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Posted<T> {
    type Rejection = BoardError;

    async fn from_request(req: Request, state: &S) -> Result<Self, BoardError> {
        let (parts, body) = req.into_parts();
        let csrf = parts.extensions.get::<Csrf>().map(|c| c.0.clone()).unwrap_or_default();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| BoardError(crate::extract::body_error(e)))?;
        let read = |bytes: Bytes| Request::from_parts(parts.clone(), Body::from(bytes));
        let bad = |e: FormRejection| BoardError(ApiError::bad_request(e.body_text()));
        let Form(token) = Form::<TokenField>::from_request(read(bytes.clone()), state).await.map_err(bad)?;
        check_form(&parts.headers, &csrf, token.csrf.as_deref())?;
        let Form(form) = Form::<T>::from_request(read(bytes), state).await.map_err(bad)?;
        Ok(Posted(form))
    }
}

/// Refuses (403) a form without this browser's form token, or sent from another site.
pub fn check_form(headers: &HeaderMap, csrf: &str, sent: Option<&str>) -> Result<(), BoardError> {
    let same = sent.is_some_and(|s| constant_time_eq(s.as_bytes(), csrf.as_bytes())) && !csrf.is_empty();
    if !same {
        return Err(BoardError(ApiError::forbidden(
            "the form's security token is missing or stale: reload the page and try again",
        )));
    }
    if let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        let origin = origin.to_str().unwrap_or_default();
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        if origin_host.as_bytes() != host.as_bytes() {
            return Err(BoardError(ApiError::forbidden("a form of another site may not act here")));
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A redirect to `to` that shows `flash` on the page it lands on.
pub fn redirect_with(to: &str, flash: Flash, https: bool) -> Response {
    let mut response = Redirect::to(to).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(FLASH_COOKIE, &flash.encode(), https, Some(60)));
    response
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a path of this site is a place to go after logging in.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

/// `GET /login`.
pub async fn login_page(
    axum::Extension(csrf): axum::Extension<Csrf>,
    Query(q): Query<NextQuery>,
    flash: Option<axum::Extension<Flash>>,
) -> Response {
    login_form(&csrf.0, local_path(q.next.as_deref()), flash.map(|f| f.0), StatusCode::OK)
}

fn login_form(csrf: &str, next: &str, flash: Option<Flash>, status: StatusCode) -> Response {
    let body = layout::bare(
        "Log in",
        html! {
            main.narrow {
                h1 { "Log in to the deploy board" }
                (layout::flash(flash.as_ref()))
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    label for="token" { "API token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    p.hint { "A token made with " code { "POST /v1/tokens" } " (or printed by " code { "teletraan up" }
                        "). It is kept in a cookie this site only can read, until you log out or close the browser." }
                    button type="submit" { "Log in" }
                }
            }
        },
    );
    (status, body).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: Option<String>,
    next: Option<String>,
}

/// `POST /login`: checks the token and keeps it in the session cookie.
pub async fn login(
    State(board): State<Board>,
    axum::Extension(csrf): axum::Extension<Csrf>,
    https: Option<axum::Extension<Https>>,
    Posted(form): Posted<LoginForm>,
) -> Result<Response, BoardError> {
    let next = local_path(form.next.as_deref()).to_string();
    let token = form.token.as_deref().map(str::trim).unwrap_or_default();
    let refuse = |why: &str| Ok(login_form(&csrf.0, &next, Some(Flash::error(why)), StatusCode::UNAUTHORIZED));
    if !cookie_safe(token) {
        return refuse("that is not a token: paste the whole token");
    }
    match board.api.store.authenticate(token, schema::time::now_ms()).await.map_err(ApiError::from)? {
        Some(owner) if owner.kind == TokenKind::Api => {
            let mut response = Redirect::to(&next).into_response();
            response.headers_mut().append(header::SET_COOKIE, set_cookie(TOKEN_COOKIE, token, https.is_some(), None));
            Ok(response)
        }
        Some(_) => refuse("agent and enrollment tokens cannot log in; use an API token"),
        None => refuse("unknown, revoked or expired token"),
    }
}

/// `POST /logout`: forgets the token.
pub async fn logout(https: Option<axum::Extension<Https>>, Posted(_): Posted<serde::de::IgnoredAny>) -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(TOKEN_COOKIE, "", https.is_some(), Some(0)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; tt_token=abc; b=".parse().unwrap());
        assert_eq!(cookie(&h, "tt_token"), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/envs/web/prod")), "/envs/web/prod");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn forms_need_the_token_and_the_same_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "board:8080".parse().unwrap());
        assert!(check_form(&h, "t", Some("t")).is_ok());
        assert!(check_form(&h, "t", Some("u")).is_err());
        assert!(check_form(&h, "t", None).is_err());
        assert!(check_form(&h, "", Some("")).is_err());
        h.insert(header::ORIGIN, "http://board:8080".parse().unwrap());
        assert!(check_form(&h, "t", Some("t")).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(check_form(&h, "t", Some("t")).is_err());
    }
}
