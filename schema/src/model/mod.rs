//! The Teletraan-compatible JSON beans (camelCase, epoch milliseconds) and the validation of
//! what users send, one file per resource. Timestamps are [`EpochMs`](crate::time::EpochMs);
//! `null` in an update means "leave unchanged".

mod build;
mod deploy;
mod host;
pub mod lenient;
mod links;
mod promote;
mod rollout;
mod stage;
mod tag;
mod webhook;

use std::collections::BTreeMap;

pub use crate::artifact::ArtifactPolicy;
pub use build::{Build, BuildInput};
pub use deploy::{Agent, AgentStep, CommandStatus, Deploy, DeploySteps, HostDeploy, HostSteps};
pub use host::{Host, HostInput, NewHost};
pub use links::{
    Alarm, AlarmInput, LinkInvalid, MAX_LINKS, MAX_SPECS, MetricsConfig, MetricsConfigInput, MetricsSpec,
    MetricsSpecInput, check_alarms, check_metrics,
};
pub use promote::{AUTO_PROMOTER, FROM_BUILDS, Promote, PromoteInput};
pub use rollout::{ConstraintBean, ConstraintInput, ScheduleBean, ScheduleInput};
pub use stage::{Environ, EnvironInput};
pub use tag::{BuildWithTag, NewTag, Tag, TagInput};
pub use webhook::{
    DeliveryStatus, EnvWebHooks, EnvWebHooksInput, HookHeader, HookMethod, HookPhase, HookRequest, SecretChange,
    WebHook, WebHookConfig, WebHookDelivery, WebHookInput, WebHookInvalid,
};

/// A rejected input, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// JSON name of the field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { field, message: message.into() }
}

/// Free text: at most `max` characters, no control characters but newlines and tabs (Postgres
/// refuses NUL, and nothing else belongs in these fields).
pub fn check_text(field: &'static str, v: &str, max: usize) -> Result<(), Invalid> {
    if v.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    if let Some(c) = v.chars().find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(invalid(field, format!("contains the control character {c:?}")));
    }
    Ok(())
}

pub(crate) fn optional_text(field: &'static str, v: Option<String>, max: usize) -> Result<Option<String>, Invalid> {
    if let Some(v) = &v {
        check_text(field, v, max)?;
    }
    Ok(v)
}

pub(crate) fn check_chars(
    field: &'static str,
    v: &str,
    max: usize,
    ok: fn(char) -> bool,
    allowed: &str,
) -> Result<(), Invalid> {
    if v.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    match v.chars().find(|c| !ok(*c)) {
        Some(c) => Err(invalid(field, format!("may only contain {allowed}; found {c:?}"))),
        None => Ok(()),
    }
}

/// A string→string map (script variables, agent configs).
pub type StringMap = BTreeMap<String, String>;

/// Shows a map's keys and hides its values, for `Debug` of what carries script variables
/// (some are secrets: they must never reach a log).
pub struct KeysOnly<'a>(pub &'a StringMap);

impl std::fmt::Debug for KeysOnly<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, "<hidden>"))).finish()
    }
}

pub(crate) fn required(field: &'static str, v: Option<String>, max: usize) -> Result<String, Invalid> {
    let v = v.map(|s| s.trim().to_string()).unwrap_or_default();
    if v.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if v.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(v)
}
