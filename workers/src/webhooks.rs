//! The webhook worker: sends each delivery of the `webhooks` queue, with a timeout per attempt,
//! retries with backoff on network errors, 408, 429 and 5xx, and an HMAC-SHA256 signature when
//! the stage has a secret. Every attempt is recorded in Postgres (attempts are counted there,
//! not in the message), so a redelivered message resumes where the last worker stopped and a
//! settled delivery is acknowledged without sending anything.
//!
//! Nothing in the deploy path waits for this worker: deploys only insert the deliveries.

use std::time::Duration;

use bus::{DeliveryCtx, Disposition, Handler};
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use schema::bus::WebhookMessage;
use schema::model::{DeliveryStatus, HookMethod, HookPhase};
use schema::time::now_ms;
use sha2::Sha256;
use store::{AttemptRecord, ClaimedDelivery, DeliveryClaim, Store};
use tokio::sync::watch;

use crate::metrics;

/// Header naming the delivery; receivers dedupe on it (a delivery may arrive twice when a
/// worker dies between sending and recording).
pub const DELIVERY_HEADER: &str = "x-teletraan-delivery";
/// Header with the Unix time (seconds) of the attempt, part of what is signed.
pub const TIMESTAMP_HEADER: &str = "x-teletraan-timestamp";
/// Header with `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-teletraan-signature";

/// Longest part of an error answer kept in `lastError`.
const SNIPPET_BYTES: usize = 512;
/// Added to a lease beyond the attempt or the backoff it covers.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// Settings of the webhook worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Deliveries handled at once (each may be backing off).
    pub prefetch: u16,
    /// Longest one attempt may take (connect, send, answer).
    pub timeout: Duration,
    /// Attempts before a delivery is FAILED.
    pub attempts: u32,
    /// Wait after the first failed attempt; doubled after each next one…
    pub backoff_base: Duration,
    /// …up to this.
    pub backoff_max: Duration,
    /// A receiver's `Retry-After` (seconds) is honoured up to this.
    pub retry_after_max: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            prefetch: 8,
            timeout: Duration::from_secs(10),
            attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(60),
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256 keyed by `secret` over `"<delivery id>.<timestamp>.<body>"`:
/// the value of [`SIGNATURE_HEADER`]. The delivery id is signed so that a captured request
/// cannot be replayed under another id (receivers dedupe on it), the timestamp so that it
/// cannot be replayed later.
pub fn signature(secret: &str, delivery: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails; an empty key would still sign.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(delivery.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// 2xx.
    Delivered(u16),
    /// Network error, timeout, 408, 429 or 5xx: worth another attempt.
    Retryable { code: Option<u16>, error: String, retry_after: Option<Duration> },
    /// Any other answer, or a request that cannot be sent: retrying cannot help.
    Fatal { code: Option<u16>, error: String },
}

/// Whether an HTTP status is worth another attempt.
fn retryable(code: u16) -> bool {
    matches!(code, 408 | 429 | 500..=599)
}

/// The wait after failed attempt number `attempt` (1-based): exponential, capped, and at
/// least what the receiver asked for (capped too).
fn backoff(cfg: &WebhookConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let wait = cfg.backoff_base.saturating_mul(factor).min(cfg.backoff_max);
    match retry_after {
        Some(asked) => wait.max(asked.min(cfg.retry_after_max)),
        None => wait,
    }
}

/// What to record of attempt number `attempt`, the metric outcome, and the wait before the
/// next attempt (`None`: settled).
fn decide(cfg: &WebhookConfig, attempt: u32, result: Attempt) -> (AttemptRecord, &'static str, Option<Duration>) {
    match result {
        Attempt::Delivered(code) => (
            AttemptRecord { status: DeliveryStatus::Delivered, status_code: Some(code), error: None },
            "delivered",
            None,
        ),
        Attempt::Retryable { code, error, retry_after } if attempt < cfg.attempts => (
            AttemptRecord { status: DeliveryStatus::Pending, status_code: code, error: Some(error) },
            "retry",
            Some(backoff(cfg, attempt, retry_after)),
        ),
        Attempt::Retryable { code, error, .. } => (
            AttemptRecord {
                status: DeliveryStatus::Failed,
                status_code: code,
                error: Some(format!("{error} (gave up after {attempt} attempts)")),
            },
            "failed",
            None,
        ),
        Attempt::Fatal { code, error } => {
            (AttemptRecord { status: DeliveryStatus::Failed, status_code: code, error: Some(error) }, "failed", None)
        }
    }
}

fn phase_label(p: HookPhase) -> &'static str {
    match p {
        HookPhase::Pre => "pre",
        HookPhase::Post => "post",
    }
}

/// An error as text without the URL (it may carry credentials in its query), with its causes.
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} s", timeout.as_secs_f64());
    }
    let what = if e.is_connect() { "cannot connect" } else { "request failed" };
    let e = e.without_url();
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Sends the deliveries of the `webhooks` queue.
pub struct WebhookHandler {
    store: Store,
    http: reqwest::Client,
    config: WebhookConfig,
    shutdown: watch::Receiver<bool>,
}

impl WebhookHandler {
    /// A handler; fails only when the HTTP client cannot be built (no TLS backend).
    pub fn new(
        store: Store,
        config: WebhookConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<WebhookHandler, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            // A redirect would re-send (or, for POST, drop) the body to a place nobody
            // configured; a 3xx is an answer to fix in the hook.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(WebhookHandler { store, http, config, shutdown })
    }

    /// Sends one delivery until it is settled or must wait for a later message.
    async fn deliver(&self, id: &str) -> Disposition {
        // One token per message: the lease it takes is renewed by this loop only.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut shutdown = self.shutdown.clone();
        let lease = self.config.timeout + LEASE_MARGIN;
        loop {
            let claimed = match self.store.claim_webhook_delivery(id, &token, lease, now_ms()).await {
                Ok(DeliveryClaim::Gone) => return Disposition::Ack,
                Ok(DeliveryClaim::Busy) => {
                    return Disposition::RetryLater(format!("webhook delivery {id} is held by another worker"));
                }
                Ok(DeliveryClaim::Ready(c)) => c,
                Err(e) => return store_failure(id, e),
            };
            let attempt = u32::try_from(claimed.delivery.attempts).unwrap_or(0).saturating_add(1);
            let result = self.send(&claimed).await;
            let (record, outcome, wait) = decide(&self.config, attempt, result);
            metrics::webhook_attempt(phase_label(claimed.delivery.phase), outcome);
            let d = &claimed.delivery;
            tracing::info!(delivery.id = %d.id, env = %d.env_name, stage = %d.stage_name, deploy.id = %d.deploy_id,
                phase = d.phase.as_str(), attempt, status_code = record.status_code, outcome,
                error = record.error.as_deref().unwrap_or(""), "webhook attempt");
            // While backing off, the lease stays: a duplicate message must not skip the wait.
            let hold = wait.map(|w| w + LEASE_MARGIN);
            match self.store.record_webhook_attempt(id, &token, &record, hold, now_ms()).await {
                Ok(true) => {}
                // The lease was lost to another worker: the delivery is in its hands.
                Ok(false) => return Disposition::Ack,
                Err(e) => return store_failure(id, e),
            }
            let Some(wait) = wait else { return Disposition::Ack };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // The message comes back after the bus's retry delay; attempts are in Postgres.
                _ = shutdown.wait_for(|s| *s) => {
                    return Disposition::RetryLater(format!("shutting down while webhook delivery {id} backs off"));
                }
            }
        }
    }

    /// One attempt.
    async fn send(&self, c: &ClaimedDelivery) -> Attempt {
        let d = &c.delivery;
        let url = match reqwest::Url::parse(&d.request.url) {
            Ok(u) => u,
            Err(e) => return Attempt::Fatal { code: None, error: format!("invalid URL: {e}") },
        };
        let mut headers = HeaderMap::new();
        for h in &d.request.headers {
            let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value.as_bytes()))
            else {
                return Attempt::Fatal { code: None, error: format!("invalid header {}", h.name) };
            };
            headers.append(name, value);
        }
        if !headers.contains_key(USER_AGENT) {
            headers.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("teletraan-webhooks/", env!("CARGO_PKG_VERSION"))),
            );
        }
        if d.request.body.is_some() && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let body = d.request.body.clone().unwrap_or_default();
        let timestamp = u64::try_from(now_ms() / 1000).unwrap_or(0);
        let ours = [
            (DELIVERY_HEADER, d.id.clone()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (
                SIGNATURE_HEADER,
                c.secret
                    .as_deref()
                    .map(|s| signature(s, &c.delivery.id, timestamp, body.as_bytes()))
                    .unwrap_or_default(),
            ),
        ];
        for (name, value) in ours {
            if let (false, Ok(value)) = (value.is_empty(), HeaderValue::from_str(&value)) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        let method = match d.request.method {
            HookMethod::Get => reqwest::Method::GET,
            HookMethod::Post => reqwest::Method::POST,
            HookMethod::Put => reqwest::Method::PUT,
            HookMethod::Delete => reqwest::Method::DELETE,
        };
        let mut request = self.http.request(method, url).headers(headers);
        if d.request.body.is_some() {
            request = request.body(body);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retryable { code: None, error: describe(e, self.config.timeout), retry_after: None };
            }
        };
        let status = response.status();
        let code = status.as_u16();
        if status.is_success() {
            return Attempt::Delivered(code);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The start of the answer says why; the rest is not worth waiting for.
        let mut snippet = Vec::new();
        while snippet.len() < SNIPPET_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => snippet.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        snippet.truncate(SNIPPET_BYTES);
        let text: String =
            String::from_utf8_lossy(&snippet).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let error = match text.trim() {
            "" => format!("HTTP {status}"),
            t => format!("HTTP {status}: {t}"),
        };
        if retryable(code) {
            Attempt::Retryable { code: Some(code), error, retry_after }
        } else {
            Attempt::Fatal { code: Some(code), error }
        }
    }
}

fn store_failure(id: &str, e: store::Error) -> Disposition {
    if e.is_transient() {
        Disposition::RetryLater(format!("webhook delivery {id}: {e}"))
    } else {
        Disposition::Retry(format!("webhook delivery {id}: {e}"))
    }
}

impl Handler for WebhookHandler {
    async fn handle(&self, ctx: &DeliveryCtx<'_>) -> Disposition {
        match serde_json::from_slice::<WebhookMessage>(&ctx.delivery.data) {
            Ok(WebhookMessage::DeliverV1 { delivery_id }) => self.deliver(&delivery_id).await,
            Err(e) => Disposition::Dead(format!("undecodable webhook message: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WebhookConfig {
        WebhookConfig::default()
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_delivery_timestamp_and_body() {
        let sig = signature("Jefe", "d1", 0, b"what do ya want for nothing?");
        let direct = {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
            mac.update(b"d1.0.what do ya want for nothing?");
            mac.finalize().into_bytes()
        };
        let hex: String = direct.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sig, format!("sha256={hex}"));
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let rfc: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(rfc, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "the crate is HMAC-SHA256");
        assert_ne!(signature("Jefe", "d1", 1, b"x"), signature("Jefe", "d1", 2, b"x"), "the timestamp is signed");
        assert_ne!(signature("Jefe", "d1", 1, b"x"), signature("Jefe", "d2", 1, b"x"), "the delivery id is signed");
        // What the README's openssl and Python recipes compute for the same input.
        assert_eq!(
            signature("s3cret-0123456789", "d-0123", 1_700_000_000, br#"{"a":1}"#),
            "sha256=3e11f539a37b7430e648fceb92eed8a1827cbddfbcbea140586e34a09c4c2afe"
        );
    }

    #[test]
    fn network_errors_408_429_and_5xx_are_retried_other_statuses_are_not() {
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert!(retryable(code), "{code}");
        }
        for code in [301, 400, 401, 403, 404, 410, 422] {
            assert!(!retryable(code), "{code}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after_within_bounds() {
        let c = cfg();
        let waits: Vec<u64> = (1..=7).map(|a| backoff(&c, a, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(&c, 1, Some(Duration::from_secs(20))), Duration::from_secs(20));
        assert_eq!(backoff(&c, 1, Some(Duration::from_secs(3600))), Duration::from_secs(60), "capped");
        assert_eq!(backoff(&c, 5, Some(Duration::from_secs(1))), Duration::from_secs(16), "never shorter");
        assert_eq!(backoff(&c, u32::MAX, None), Duration::from_secs(30), "no overflow");
    }

    #[test]
    fn attempts_are_settled_as_delivered_pending_or_failed() {
        let c = WebhookConfig { attempts: 3, ..cfg() };
        let retry = || Attempt::Retryable { code: Some(503), error: "HTTP 503".into(), retry_after: None };
        let (r, outcome, wait) = decide(&c, 1, retry());
        assert_eq!((r.status, outcome, wait), (DeliveryStatus::Pending, "retry", Some(Duration::from_secs(1))));
        assert_eq!(r.status_code, Some(503));
        let (r, outcome, wait) = decide(&c, 3, retry());
        assert_eq!((r.status, outcome, wait), (DeliveryStatus::Failed, "failed", None));
        assert!(r.error.unwrap().contains("gave up after 3 attempts"));
        let (r, outcome, wait) = decide(&c, 1, Attempt::Fatal { code: Some(404), error: "HTTP 404".into() });
        assert_eq!((r.status, outcome, wait), (DeliveryStatus::Failed, "failed", None));
        let (r, outcome, wait) = decide(&c, 2, Attempt::Delivered(204));
        assert_eq!(
            (r.status, r.status_code, r.error, outcome, wait),
            (DeliveryStatus::Delivered, Some(204), None, "delivered", None)
        );
    }
}
