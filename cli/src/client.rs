//! The REST client: reads are retried with backoff when the network or the server fails;
//! commands carry an `Idempotency-Key`, so they are retried too and applied once; other writes
//! are sent once.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Context;
use crate::error::CliError;

/// Attempts of a request that may be repeated.
const ATTEMPTS: usize = 5;
/// Bound of one request (an event stream has none).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A server and a token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Whether a request may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// A read, or a command with its idempotency key: yes.
    Safe,
    /// Any other write: never blindly.
    Once,
}

/// A success answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body (`Null` when empty).
    pub body: Value,
}

impl Client {
    /// A client of this context's server.
    pub fn new(ctx: &Context) -> Result<Client, CliError> {
        let base = ctx.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::usage(format!("the server's URL must start with http:// or https://, not {base:?}")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("teletraan-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::usage(format!("cannot make an HTTP client: {e}")))?;
        Ok(Client { http, base, token: ctx.token.clone() })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("token {}", self.token))
    }

    /// A GET whose JSON answer is decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let reply = self.send(Method::GET, path, None, Repeat::Safe, None).await?;
        serde_json::from_value(reply.body)
            .map_err(|e| CliError::failed(format!("unexpected answer to GET {path}: {e}")))
    }

    /// A command (deploy, action): sent with a fresh idempotency key, repeated with it after a
    /// failure, so the server applies it once.
    pub async fn command(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply, CliError> {
        let key = uuid::Uuid::new_v4().to_string();
        self.send(method, path, body, Repeat::Safe, Some(&key)).await
    }

    /// A write that is not a command: sent once.
    pub async fn write(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply, CliError> {
        self.send(method, path, body, Repeat::Once, None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        repeat: Repeat,
        key: Option<&str>,
    ) -> Result<Reply, CliError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(4))
            .with_jitter()
            .with_max_times(ATTEMPTS - 1)
            .build();
        loop {
            let mut req = self.request(method.clone(), path).timeout(REQUEST_TIMEOUT);
            if let Some(key) = key {
                req = req.header("Idempotency-Key", key);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let outcome = match req.send().await {
                Ok(resp) => answer(resp, &method, path).await,
                Err(e) => Err(Failure::Network(describe(&e))),
            };
            let error = match outcome {
                Ok(reply) => return Ok(reply),
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::Network(message)) => {
                    CliError::unavailable(format!("cannot reach {}: {message}", self.base))
                }
                Err(Failure::Server(e)) => e,
            };
            match (repeat, delays.next()) {
                (Repeat::Safe, Some(delay)) => tokio::time::sleep(delay).await,
                _ => return Err(error),
            }
        }
    }

    /// Opens the event stream of a stage (`GET /v1/events?env=&stage=`).
    pub async fn events(&self, env: &str, stage: &str) -> Result<reqwest::Response, CliError> {
        let resp = self
            .request(Method::GET, "/v1/events")
            .query(&[("env", env), ("stage", stage)])
            .header("Accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| CliError::unavailable(format!("cannot reach {}: {}", self.base, describe(&e))))?;
        if resp.status().is_success() { Ok(resp) } else { Err(error_of(resp).await) }
    }
}

enum Failure {
    /// The server said no (4xx): final.
    Refused(CliError),
    /// The server failed (5xx): worth another try when safe.
    Server(CliError),
    /// No answer.
    Network(String),
}

async fn answer(resp: reqwest::Response, method: &Method, path: &str) -> Result<Reply, Failure> {
    let status = resp.status();
    if status.is_success() {
        let text = resp.text().await.map_err(|e| Failure::Network(describe(&e)))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|e| Failure::Refused(CliError::failed(format!("{method} {path}: not JSON: {e}"))))?
        };
        return Ok(Reply { status, body });
    }
    let error = error_of(resp).await;
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(Failure::Server(error))
    } else {
        Err(Failure::Refused(error))
    }
}

/// The API's `{"code", "message"}` answer as one line.
async fn error_of(resp: reqwest::Response) -> CliError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v["code"].is_string() => {
            CliError::api(status, v["code"].as_str().unwrap_or_default(), v["message"].as_str().unwrap_or_default())
        }
        _ => {
            let first = text.lines().next().unwrap_or_default().chars().take(200).collect::<String>();
            CliError::api(status, "http_error", if first.is_empty() { "no message" } else { &first })
        }
    }
}

/// A transport error with its cause (reqwest's own message names only the URL).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Encodes one path segment (names are validated by the server; this keeps odd input from
/// changing the path).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
