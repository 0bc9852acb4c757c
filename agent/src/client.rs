//! The gateway client: `POST <server>/v1/system/ping`, Teletraan's way.
//!
//! Any HTTP status above 300 is a failed ping; an empty body is NOOP. One call makes up to
//! `1 + retry_delays.len()` attempts (Teletraan: 3 attempts, 1 s then 2 s apart), except
//! after a 401 or 403: the gateway refused who is asking ([`Error::Rejected`]), and asking
//! again a second later would be refused the same way.

use std::time::Duration;

use schema::ping::{PingRequest, PingResponse};

use crate::ca::CaFile;
use crate::config::Config;
use crate::error::{Error, Result};

/// Timeout of one HTTP request (Teletraan's agent uses 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    retry_delays: Vec<Duration>,
}

/// The HTTP client for the gateway (pings and enrollment): the configured CA trusted, bounded
/// requests.
pub fn gateway_client(config: &Config) -> Result<reqwest::Client> {
    CaFile::trust(config.ca_file.as_ref(), reqwest::Client::builder())?
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(crate::AGENT_VERSION)
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
}

impl Gateway {
    /// A client for the configured server and token.
    pub fn new(config: &Config) -> Result<Gateway> {
        let http = gateway_client(config)?;
        Ok(Gateway {
            http,
            url: format!("{}/v1/system/ping", config.server),
            token: config.token.clone(),
            retry_delays: config.ping_retry_delays.clone(),
        })
    }

    /// Replaces the token pings are sent with (a new host credential).
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// Pings, retrying failed attempts after the configured delays.
    pub async fn ping(&self, request: &PingRequest) -> Result<PingResponse> {
        let mut delays = self.retry_delays.iter();
        loop {
            match self.ping_once(request).await {
                Ok(r) => return Ok(r),
                Err(e @ Error::Rejected { .. }) => return Err(e),
                Err(e) => match delays.next() {
                    Some(d) => {
                        tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "ping failed, retrying");
                        tokio::time::sleep(*d).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }

    /// One attempt.
    pub async fn ping_once(&self, request: &PingRequest) -> Result<PingResponse> {
        let mut req = self.http.post(&self.url).json(request);
        if let Some(w) = request.wait_seconds {
            // A held ping may take the whole wait before its answer comes.
            req = req.timeout(REQUEST_TIMEOUT + Duration::from_secs(u64::from(w)));
        }
        if let Some(t) = &self.token {
            req = req.header(reqwest::header::AUTHORIZATION, format!("token {t}"));
        }
        let resp = req.send().await.map_err(|e| Error::Ping(format!("{}: {}", self.url, error_chain(&e))))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| Error::Ping(format!("reading the answer: {}", error_chain(&e))))?;
        if status.as_u16() == 401 || status.as_u16() == 403 {
            let (code, message) = crate::identity::answer_error(&String::from_utf8_lossy(&body));
            return Err(Error::Rejected { what: "ping", status: status.as_u16(), message, code });
        }
        if status.as_u16() > 300 {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(300).collect();
            return Err(Error::Ping(format!("gateway answered HTTP {status}: {text}")));
        }
        parse_response(&body)
    }
}

/// Decodes a ping answer; an empty body is NOOP.
pub fn parse_response(body: &[u8]) -> Result<PingResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PingResponse::noop());
    }
    serde_json::from_slice(body).map_err(|e| Error::Ping(format!("cannot decode the gateway's answer: {e}")))
}

/// An error with its causes, `a: b: c` (reqwest hides the interesting part in the sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::OpCode;

    #[test]
    fn empty_body_is_noop() {
        assert_eq!(parse_response(b"").unwrap(), PingResponse::noop());
        assert_eq!(parse_response(b" \n").unwrap().op_code, OpCode::Noop);
    }

    #[test]
    fn bad_goal_is_a_clear_error() {
        let err = parse_response(br#"{"opCode":"DEPLOY","deployGoal":{"deployId":"x"}}"#).unwrap_err();
        assert!(err.to_string().contains("cannot decode"), "{err}");
        let err = parse_response(br#"{"opCode":"DANCE"}"#).unwrap_err();
        assert!(err.to_string().contains("DANCE"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_server_fails_after_the_retries() {
        // Port 9 on loopback: nothing listens there in the test environment; the connection is refused.
        let mut c = Config::with_defaults("/nonexistent", "http://127.0.0.1:9", "h");
        c.ping_retry_delays = vec![Duration::from_millis(1), Duration::from_millis(1)];
        let err = Gateway::new(&c).unwrap().ping(&PingRequest::default()).await.unwrap_err();
        assert!(matches!(err, Error::Ping(_)), "{err}");
    }
}
