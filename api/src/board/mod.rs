//! The deploy board: server-rendered pages for people, on the API's port.
//!
//! Every page is plain HTML that works without JavaScript; a small script makes the stage
//! page live (a server-sent event stream of the board's own, fed by the API's event hub) and
//! asks for confirmation before an action. Reads come from the store after the viewer's
//! grants are checked; every write goes through the REST router in-process, with the viewer's
//! credentials, so the board can do nothing the API would refuse and every refusal shows the
//! API's own message.
//!
//! Sessions: a token typed once at `/login` is kept in an HttpOnly, SameSite=Strict cookie
//! (Secure on TLS), or the SSO proxy's header names the viewer as it does for the API. Every
//! form carries the CSRF token of a cookie of its own and is refused (403) without it.

mod access;
mod assets;
mod builds;
mod config;
mod deploys;
mod envs;
mod forward;
mod grid;
mod hosts;
mod layout;
mod live;
mod session;
mod stage;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use schema::AccessRole;
use schema::rules::access::{Target, allows_somewhere, may_read};

use crate::auth::{AuthState, Principal};
use crate::error::ApiError;
use crate::rest::ApiState;

pub use session::Https;

/// What the board's handlers share.
#[derive(Clone)]
pub struct Board {
    api: ApiState,
    auth: AuthState,
    /// The `/v1` router, called in-process for every write.
    rest: Router,
}

/// The board's routes. `rest` is the `/v1` router (writes go through it).
pub fn router(api: ApiState, auth: AuthState, rest: Router) -> Router {
    let board = Board { api, auth, rest };
    Router::new()
        .route("/", get(envs::index))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/{file}", get(assets::serve))
        .route("/envs/new", get(envs::new_page).post(envs::create))
        .route("/envs/{env}/access", get(access::page))
        .route("/envs/{env}/access/{kind}", post(access::save))
        .route("/envs/{env}/{stage}", get(stage::page))
        .route("/envs/{env}/{stage}/grid", get(grid::fragment))
        .route("/envs/{env}/{stage}/live", get(live::stream))
        .route("/envs/{env}/{stage}/deploy", post(stage::deploy))
        .route("/envs/{env}/{stage}/action", post(stage::action))
        .route("/envs/{env}/{stage}/deploys", get(deploys::history))
        .route("/envs/{env}/{stage}/config", get(config::page))
        .route("/envs/{env}/{stage}/config/{part}", post(config::save))
        .route("/envs/{env}/{stage}/hosts/{host}", get(hosts::page))
        .route("/envs/{env}/{stage}/hosts/{host}/action", post(hosts::action))
        .route("/deploys/{id}", get(deploys::page))
        .route("/deploys/compare", get(deploys::compare))
        .route("/builds", get(builds::list))
        .route("/builds/{id}/verdict", post(builds::verdict))
        .route("/history", get(deploys::audit))
        .layer(middleware::from_fn(session::cookies))
        .with_state(board)
}

/// Who is looking at a page, and how to act for them.
pub struct Viewer {
    /// The principal and its grants.
    pub principal: Principal,
    creds: forward::Credentials,
    /// The form token of this browser.
    pub csrf: String,
}

impl Viewer {
    /// Whether the viewer may operate the stages of `env` (deploy, pause, restart).
    fn may_operate(&self, env: &schema::EnvName) -> bool {
        self.principal.may(AccessRole::Operator, Target::Env(env))
    }

    /// Whether the viewer may mark builds (PUBLISHER somewhere).
    fn may_publish(&self) -> bool {
        allows_somewhere(&self.principal.grants, AccessRole::Publisher)
    }
}

impl FromRequestParts<Board> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, board: &Board) -> Result<Viewer, Response> {
        let csrf = parts.extensions.get::<session::Csrf>().map(|c| c.0.clone()).unwrap_or_default();
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let token = session::cookie(&parts.headers, session::TOKEN_COOKIE);
        let creds = match token {
            Some(t) => forward::Credentials::Token(t.to_string()),
            None => forward::Credentials::Proxy { headers: proxy_headers(&parts.headers, board), peer },
        };
        let mut headers = HeaderMap::new();
        creds.apply(&mut headers);
        match crate::auth::principal(&board.auth, &headers, peer.map(|p| p.ip())).await {
            Ok(principal) if may_read(&principal.grants) => Ok(Viewer { principal, creds, csrf }),
            Ok(principal) => Err(BoardError(ApiError::forbidden(format!(
                "{} holds no role: ask an administrator for one",
                principal.name
            )))
            .into_response()),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                Err(Redirect::to(&format!("/login?next={}", forward::encode(next))).into_response())
            }
            Err(e) => Err(BoardError(e).into_response()),
        }
    }
}

impl OptionalFromRequestParts<Board> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, board: &Board) -> Result<Option<Viewer>, Response> {
        match <Viewer as FromRequestParts<Board>>::from_request_parts(parts, board).await {
            Ok(v) => Ok(Some(v)),
            Err(r) if r.status().is_redirection() => Ok(None),
            Err(r) => Err(r),
        }
    }
}

/// The SSO proxy's headers of a request, when trusted-header mode is on.
fn proxy_headers(headers: &HeaderMap, board: &Board) -> HeaderMap {
    let mut out = HeaderMap::new();
    let trusted = &board.auth.trusted;
    for name in [&trusted.user_header, &trusted.groups_header].into_iter().flatten() {
        if let (Ok(name), Some(value)) = (header::HeaderName::try_from(name.as_str()), headers.get(name.as_str())) {
            out.insert(name, value.clone());
        }
    }
    out
}

/// An error shown as a page: the API's status and message.
pub struct BoardError(pub ApiError);

impl From<ApiError> for BoardError {
    fn from(e: ApiError) -> Self {
        BoardError(e)
    }
}

impl From<store::Error> for BoardError {
    fn from(e: store::Error) -> Self {
        BoardError(e.into())
    }
}

impl From<schema::IdError> for BoardError {
    fn from(e: schema::IdError) -> Self {
        BoardError(e.into())
    }
}

impl IntoResponse for BoardError {
    fn into_response(self) -> Response {
        let title = match self.0.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            s if s.is_client_error() => "Cannot do that",
            _ => "Error",
        };
        let body = layout::bare(
            title,
            maud::html! {
                h1 { (title) }
                p.error role="alert" { (self.0.message) }
                p { a href="/" { "Back to the environments" } }
            },
        );
        (self.0.status, body).into_response()
    }
}

/// A board handler's result.
type BoardResult<T> = Result<T, BoardError>;
