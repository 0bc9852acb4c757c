//! Webhooks of a stage (Teletraan's `EnvWebHookBean`): what users send, the validation, and
//! the deliveries as the API shows them.
//!
//! Errors name the field with its position (`postDeployHooks[1].url`), which the `&'static`
//! field of [`Invalid`](super::Invalid) cannot hold; hence [`WebHookInvalid`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rules::webhook::{HookVars, check_url, parse_headers, substitute};
use crate::time::EpochMs;
use crate::{DeployId, DeployState, EnvName, StageName};

/// At most this many hooks per phase.
pub const MAX_HOOKS_PER_PHASE: usize = 20;
/// Longest URL (before substitution), in characters.
pub const MAX_URL_CHARS: usize = 2048;
/// Largest body (before substitution), in bytes.
pub const MAX_BODY_BYTES: usize = 32 * 1024;
/// Longest header string (`k1:v1;k2:v2`), in bytes.
pub const MAX_HEADERS_BYTES: usize = 16 * 1024;
/// Longest `version`, in characters.
const MAX_VERSION_CHARS: usize = 128;
/// Bounds of a stage's webhook secret, in characters.
pub const SECRET_CHARS: std::ops::RangeInclusive<usize> = 16..=256;

/// A rejected webhook configuration, with the field at fault (`preDeployHooks[0].headers`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct WebHookInvalid {
    /// JSON path of the field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> WebHookInvalid {
    WebHookInvalid { field: field.into(), message: message.into() }
}

/// HTTP method of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HookMethod {
    /// `GET`.
    Get,
    /// `POST` (Teletraan's default).
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
}

impl HookMethod {
    /// The method as sent.
    pub const fn as_str(self) -> &'static str {
        match self {
            HookMethod::Get => "GET",
            HookMethod::Post => "POST",
            HookMethod::Put => "PUT",
            HookMethod::Delete => "DELETE",
        }
    }

    /// Parses a method, ignoring case (Teletraan's clients send `post` as often as `POST`).
    pub fn parse(s: &str) -> Option<HookMethod> {
        [HookMethod::Get, HookMethod::Post, HookMethod::Put, HookMethod::Delete]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for HookMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One hook as stored and shown: placeholders (`$TELETRAAN_DEPLOY_ID`…) are still in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebHook {
    /// HTTP method.
    pub method: HookMethod,
    /// `http(s)://…`.
    pub url: String,
    /// Free text kept for Teletraan's clients.
    pub version: Option<String>,
    /// Headers in Teletraan's string form `k1:v1;k2:v2`.
    pub headers: Option<String>,
    /// Request body.
    pub body: Option<String>,
}

/// One hook as a user sends it; every field optional so that errors name what is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct WebHookInput {
    pub method: Option<String>,
    pub url: Option<String>,
    pub version: Option<String>,
    pub headers: Option<String>,
    pub body: Option<String>,
}

/// `PUT …/web_hooks`: the hooks replace the stored ones (an absent list means none);
/// `secret` is write-only: absent keeps the stored one, `""` removes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct EnvWebHooksInput {
    pub pre_deploy_hooks: Option<Vec<WebHookInput>>,
    pub post_deploy_hooks: Option<Vec<WebHookInput>>,
    pub secret: Option<String>,
}

/// What a PUT does to the stage's secret.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretChange {
    /// Keep the stored one (or none).
    Keep,
    /// Remove it: deliveries go unsigned.
    Remove,
    /// Replace it.
    Set(String),
}

impl fmt::Debug for SecretChange {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretChange::Keep => f.write_str("Keep"),
            SecretChange::Remove => f.write_str("Remove"),
            SecretChange::Set(_) => f.write_str("Set(***)"),
        }
    }
}

/// A stage's hooks, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebHookConfig {
    /// Fired when a deploy is created.
    pub pre_deploy_hooks: Vec<WebHook>,
    /// Fired when a deploy first reaches SUCCEEDING.
    pub post_deploy_hooks: Vec<WebHook>,
}

/// `GET …/web_hooks`: the hooks, and whether deliveries are signed (never the secret).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvWebHooks {
    /// Fired when a deploy is created.
    pub pre_deploy_hooks: Vec<WebHook>,
    /// Fired when a deploy first reaches SUCCEEDING.
    pub post_deploy_hooks: Vec<WebHook>,
    /// Whether the stage has a secret, so deliveries carry `X-Teletraan-Signature`.
    pub has_secret: bool,
}

impl EnvWebHooksInput {
    /// Validates a PUT body: the hooks, then the secret.
    pub fn validate(self) -> Result<(WebHookConfig, SecretChange), WebHookInvalid> {
        let config = WebHookConfig {
            pre_deploy_hooks: validate_phase("preDeployHooks", self.pre_deploy_hooks.unwrap_or_default())?,
            post_deploy_hooks: validate_phase("postDeployHooks", self.post_deploy_hooks.unwrap_or_default())?,
        };
        let secret = match self.secret {
            None => SecretChange::Keep,
            Some(s) if s.is_empty() => SecretChange::Remove,
            Some(s) => {
                let n = s.chars().count();
                if !SECRET_CHARS.contains(&n) {
                    return Err(invalid(
                        "secret",
                        format!(
                            "must be {} to {} characters (\"\" removes it); got {n}",
                            SECRET_CHARS.start(),
                            SECRET_CHARS.end()
                        ),
                    ));
                }
                // Printable ASCII without spaces: the same bytes in every receiver's language,
                // and nothing a copy and paste silently trims.
                if !s.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(invalid("secret", "may only contain printable ASCII characters, without spaces"));
                }
                SecretChange::Set(s)
            }
        };
        Ok((config, secret))
    }
}

fn validate_phase(phase: &str, hooks: Vec<WebHookInput>) -> Result<Vec<WebHook>, WebHookInvalid> {
    if hooks.len() > MAX_HOOKS_PER_PHASE {
        return Err(invalid(phase, format!("at most {MAX_HOOKS_PER_PHASE} hooks; got {}", hooks.len())));
    }
    hooks.into_iter().enumerate().map(|(i, h)| validate_hook(&format!("{phase}[{i}]"), h)).collect()
}

fn validate_hook(at: &str, h: WebHookInput) -> Result<WebHook, WebHookInvalid> {
    let field = |name: &str| format!("{at}.{name}");
    let method = match h.method.as_deref().map(str::trim) {
        None | Some("") => HookMethod::Post,
        Some(m) => HookMethod::parse(m)
            .ok_or_else(|| invalid(field("method"), format!("must be GET, POST, PUT or DELETE; got {m:?}")))?,
    };
    let url = h.url.map(|u| u.trim().to_string()).unwrap_or_default();
    if url.is_empty() {
        return Err(invalid(field("url"), "is required"));
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(invalid(field("url"), format!("longer than {MAX_URL_CHARS} characters")));
    }
    // Placeholders are checked as the worker will see them: substituted.
    let sample = HookVars::sample();
    check_url(&substitute(&url, &sample)).map_err(|m| invalid(field("url"), m))?;
    let version = match h.version {
        Some(v) if v.chars().count() > MAX_VERSION_CHARS => {
            return Err(invalid(field("version"), format!("longer than {MAX_VERSION_CHARS} characters")));
        }
        Some(v) if v.chars().any(char::is_control) => {
            return Err(invalid(field("version"), "contains control characters"));
        }
        v => v,
    };
    let headers = h.headers.filter(|s| !s.trim().is_empty());
    if let Some(s) = &headers {
        if s.len() > MAX_HEADERS_BYTES {
            return Err(invalid(field("headers"), format!("longer than {MAX_HEADERS_BYTES} bytes")));
        }
        // Substituted first, then parsed: Teletraan parsed the raw string and sent the
        // placeholders themselves.
        parse_headers(&substitute(s, &sample)).map_err(|m| invalid(field("headers"), m))?;
    }
    if let Some(b) = &h.body {
        if b.len() > MAX_BODY_BYTES {
            return Err(invalid(field("body"), format!("larger than {MAX_BODY_BYTES} bytes")));
        }
        // Postgres text cannot hold NUL.
        if b.contains('\0') {
            return Err(invalid(field("body"), "contains a NUL character"));
        }
    }
    Ok(WebHook { method, url, version, headers, body: h.body })
}

/// When a hook fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HookPhase {
    /// When a deploy is created (the deploy is RUNNING).
    Pre,
    /// When a deploy first reaches SUCCEEDING.
    Post,
}

impl HookPhase {
    /// Stored and shown value.
    pub const fn as_str(self) -> &'static str {
        match self {
            HookPhase::Pre => "PRE",
            HookPhase::Post => "POST",
        }
    }

    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<HookPhase> {
        match s {
            "PRE" => Some(HookPhase::Pre),
            "POST" => Some(HookPhase::Post),
            _ => None,
        }
    }

    /// The deploy state the phase's requests are computed with.
    pub const fn deploy_state(self) -> DeployState {
        match self {
            HookPhase::Pre => DeployState::Running,
            HookPhase::Post => DeployState::Succeeding,
        }
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DeliveryStatus {
    /// Not delivered yet (waiting, sending, or backing off between attempts).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: attempts exhausted, a status not worth retrying, or a request that could not
    /// be built.
    Failed,
}

impl DeliveryStatus {
    /// Stored and shown value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Failed => "FAILED",
        }
    }

    /// Parses a value, ignoring case (query parameters).
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Failed]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

/// One header of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HookHeader {
    /// Name (an RFC 7230 token).
    pub name: String,
    /// Value (no CR or LF).
    pub value: String,
}

/// A request with every placeholder substituted, computed once when the delivery is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest {
    /// HTTP method.
    pub method: HookMethod,
    /// URL.
    pub url: String,
    /// The hook's headers, in order (the worker adds its own).
    pub headers: Vec<HookHeader>,
    /// Body.
    pub body: Option<String>,
}

/// One delivery of one hook for one deploy, as the API shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebHookDelivery {
    /// Delivery id, sent as `X-Teletraan-Delivery` (receivers dedupe on it).
    pub id: String,
    /// Environment.
    pub env_name: EnvName,
    /// Stage.
    pub stage_name: StageName,
    /// The deploy that fired it.
    pub deploy_id: DeployId,
    /// PRE or POST.
    pub phase: HookPhase,
    /// Position of the hook in its phase's list when it fired.
    pub hook_index: i32,
    /// What is sent.
    pub request: HookRequest,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i32,
    /// HTTP status of the last attempt, if one came back.
    pub last_status_code: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Created at.
    pub created_at: EpochMs,
    /// Last change.
    pub updated_at: EpochMs,
    /// When the receiver answered 2xx.
    pub delivered_at: Option<EpochMs>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(json: &str) -> Result<(WebHookConfig, SecretChange), WebHookInvalid> {
        serde_json::from_str::<EnvWebHooksInput>(json).unwrap().validate()
    }

    fn field_of(json: &str) -> String {
        validate(json).unwrap_err().field
    }

    #[test]
    fn a_teletraan_body_is_accepted_with_post_as_the_default_method() {
        let (c, secret) = validate(
            r#"{"preDeployHooks":[{"url":"https://h/$TELETRAAN_DEPLOY_ID","headers":"a:b;c:$TELETRAAN_OPERATOR"}],
                "postDeployHooks":[{"method":"get","url":"http://h/x","version":"1","body":"{}"}]}"#,
        )
        .unwrap();
        assert_eq!(secret, SecretChange::Keep);
        assert_eq!(c.pre_deploy_hooks[0].method, HookMethod::Post);
        assert_eq!(c.post_deploy_hooks[0].method, HookMethod::Get);
        let shown = serde_json::to_value(&c.post_deploy_hooks[0]).unwrap();
        assert_eq!(shown["method"], "GET");
        assert_eq!(validate("{}").unwrap().0, WebHookConfig::default());
    }

    #[test]
    fn errors_name_the_field_with_its_position() {
        assert_eq!(
            field_of(r#"{"postDeployHooks":[{"url":"https://a"},{"url":"ftp://a"}]}"#),
            "postDeployHooks[1].url"
        );
        assert_eq!(field_of(r#"{"preDeployHooks":[{}]}"#), "preDeployHooks[0].url");
        assert_eq!(
            field_of(r#"{"preDeployHooks":[{"url":"https://a","method":"PATCH"}]}"#),
            "preDeployHooks[0].method"
        );
        assert_eq!(
            field_of(r#"{"preDeployHooks":[{"url":"https://a","headers":"novalue"}]}"#),
            "preDeployHooks[0].headers"
        );
        assert_eq!(
            field_of(r#"{"preDeployHooks":[{"url":"https://a","version":"a\u0007"}]}"#),
            "preDeployHooks[0].version"
        );
        assert_eq!(field_of(r#"{"preDeployHooks":[{"url":"https://a","body":"\u0000"}]}"#), "preDeployHooks[0].body");
        assert_eq!(field_of(r#"{"secret":"short"}"#), "secret");
        assert_eq!(field_of(r#"{"secret":"sixteen chars ok"}"#), "secret", "spaces are refused");
        let err = validate(r#"{"postDeployHooks":[{"url":"https://a"},{"url":"ftp://a"}]}"#).unwrap_err();
        assert!(err.to_string().starts_with("postDeployHooks[1].url: "), "{err}");
    }

    #[test]
    fn limits_are_enforced() {
        let hooks = vec![serde_json::json!({"url": "https://a"}); MAX_HOOKS_PER_PHASE + 1];
        let body = serde_json::json!({ "preDeployHooks": hooks }).to_string();
        assert_eq!(field_of(&body), "preDeployHooks");
        let long_url = format!("https://a/{}", "x".repeat(MAX_URL_CHARS));
        let body = serde_json::json!({"preDeployHooks": [{"url": long_url}]}).to_string();
        assert_eq!(field_of(&body), "preDeployHooks[0].url");
        let big = "x".repeat(MAX_BODY_BYTES + 1);
        let body = serde_json::json!({"preDeployHooks": [{"url": "https://a", "body": big}]}).to_string();
        assert_eq!(field_of(&body), "preDeployHooks[0].body");
        let many: Vec<String> = (0..51).map(|i| format!("h{i}:v")).collect();
        let body = serde_json::json!({"preDeployHooks": [{"url": "https://a", "headers": many.join(";")}]}).to_string();
        assert_eq!(field_of(&body), "preDeployHooks[0].headers");
        let ok: Vec<String> = (0..50).map(|i| format!("h{i}:v")).collect();
        let body = serde_json::json!({"preDeployHooks": [{"url": "https://a", "headers": ok.join(";")}]}).to_string();
        assert!(validate(&body).is_ok());
    }

    #[test]
    fn headers_are_checked_after_substitution_and_reserved_names_refused() {
        // Substituted, the name is a token; the raw string would not be.
        assert!(validate(r#"{"preDeployHooks":[{"url":"https://a","headers":"X-$TELETRAAN_ENV_NAME:1"}]}"#).is_ok());
        assert_eq!(
            field_of(r#"{"preDeployHooks":[{"url":"https://a","headers":"X-Teletraan-Signature:forged"}]}"#),
            "preDeployHooks[0].headers"
        );
        assert_eq!(
            field_of(r#"{"preDeployHooks":[{"url":"https://a","headers":"bad name:1"}]}"#),
            "preDeployHooks[0].headers"
        );
    }

    #[test]
    fn the_secret_is_kept_removed_or_set() {
        assert_eq!(validate(r#"{"secret":""}"#).unwrap().1, SecretChange::Remove);
        let (_, s) = validate(r#"{"secret":"0123456789abcdef"}"#).unwrap();
        assert_eq!(s, SecretChange::Set("0123456789abcdef".into()));
        assert_eq!(format!("{s:?}"), "Set(***)", "never in a log");
        assert_eq!(field_of(&format!(r#"{{"secret":"{}"}}"#, "x".repeat(257))), "secret");
    }

    #[test]
    fn phases_and_statuses_round_trip() {
        for p in [HookPhase::Pre, HookPhase::Post] {
            assert_eq!(HookPhase::parse(p.as_str()), Some(p));
        }
        assert_eq!(HookPhase::Post.deploy_state(), DeployState::Succeeding);
        for s in [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Failed] {
            assert_eq!(DeliveryStatus::parse(&s.as_str().to_ascii_lowercase()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("LOST"), None);
    }
}
