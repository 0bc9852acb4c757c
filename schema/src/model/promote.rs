//! A stage's pipeline settings (Teletraan's `PromoteBean`): where it takes builds from and when.

use serde::{Deserialize, Serialize};

use super::{Invalid, invalid};
use crate::rules::cron::Cron;
use crate::time::EpochMs;
use crate::{EnvId, PromoteDisablePolicy, PromoteFailPolicy, PromoteType, StageName};

/// `predStage` naming new builds rather than a stage.
pub const FROM_BUILDS: &str = "BUILD";

/// Who the auto-promoter's deploys are recorded as.
pub const AUTO_PROMOTER: &str = "AutoPromoter";

/// A stage's auto-deploy configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promote {
    /// The stage.
    pub env_id: EnvId,
    /// MANUAL or AUTO.
    #[serde(rename = "type")]
    pub promote_type: PromoteType,
    /// A stage of the same environment, or `BUILD` (new builds of the stage's build name and
    /// branch).
    pub pred_stage: Option<String>,
    /// Candidates needed before one is promoted (1 to 10): the `queueSize`-th newest goes.
    pub queue_size: i32,
    /// Cron expression (UTC): promote only within a few minutes after a fire time.
    pub schedule: Option<String>,
    /// Minutes a candidate must age before it is promoted.
    pub delay: i32,
    /// Whether a person's deploy switches the stage to MANUAL.
    pub disable_policy: PromoteDisablePolicy,
    /// What happens when the stage's current deploy fails.
    pub fail_policy: PromoteFailPolicy,
    /// Who changed it last.
    pub last_operator: String,
    /// When.
    pub last_update: EpochMs,
}

/// Pipeline settings as users send them; absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct PromoteInput {
    #[serde(rename = "type")]
    pub promote_type: Option<PromoteType>,
    pub pred_stage: Option<String>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub queue_size: Option<i32>,
    pub schedule: Option<String>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i32")]
    pub delay: Option<i32>,
    pub disable_policy: Option<PromoteDisablePolicy>,
    pub fail_policy: Option<PromoteFailPolicy>,
}

impl Promote {
    /// What a stage without settings has: MANUAL, queue size 1 (Teletraan answers 1 but
    /// stores 10 when the field is left out; here it is 1 both ways).
    pub fn default_for(env_id: EnvId) -> Promote {
        Promote {
            env_id,
            promote_type: PromoteType::Manual,
            pred_stage: None,
            queue_size: 1,
            schedule: None,
            delay: 0,
            disable_policy: PromoteDisablePolicy::Auto,
            fail_policy: PromoteFailPolicy::Continue,
            last_operator: String::new(),
            last_update: 0,
        }
    }

    /// Applies an update and checks what can be checked without the other stages (that
    /// `predStage` exists and closes no loop is the store's part). An empty `predStage` or
    /// `schedule` removes it.
    pub fn apply(&mut self, input: PromoteInput, operator: &str, now: EpochMs) -> Result<(), Invalid> {
        if let Some(t) = input.promote_type {
            self.promote_type = t;
        }
        if let Some(p) = input.pred_stage {
            let p = p.trim().to_string();
            self.pred_stage = if p.is_empty() {
                None
            } else if p == FROM_BUILDS {
                Some(p)
            } else {
                Some(StageName::parse(p).map_err(|e| invalid("predStage", e.to_string()))?.into_string())
            };
        }
        if let Some(q) = input.queue_size {
            if !(1..=10).contains(&q) {
                return Err(invalid("queueSize", "must be between 1 and 10"));
            }
            self.queue_size = q;
        }
        if let Some(s) = input.schedule {
            let s = s.trim().to_string();
            self.schedule = if s.is_empty() {
                None
            } else {
                Some(Cron::parse(&s).map_err(|e| invalid("schedule", e.to_string()))?.to_string())
            };
        }
        if let Some(d) = input.delay {
            if !(0..=7 * 24 * 60).contains(&d) {
                return Err(invalid("delay", "must be between 0 and 10080 minutes (a week)"));
            }
            self.delay = d;
        }
        if let Some(p) = input.disable_policy {
            self.disable_policy = p;
        }
        if let Some(p) = input.fail_policy {
            self.fail_policy = p;
        }
        if self.promote_type == PromoteType::Auto && self.pred_stage.is_none() {
            return Err(invalid("predStage", "is required for AUTO promotion (a stage of the environment, or BUILD)"));
        }
        self.last_operator = operator.to_string();
        self.last_update = now;
        Ok(())
    }

    /// The parsed schedule, if any.
    pub fn cron(&self) -> Option<Cron> {
        self.schedule.as_deref().and_then(|s| Cron::parse(s).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(json: &str) -> Result<Promote, Invalid> {
        let mut p = Promote::default_for(EnvId::generate());
        p.apply(serde_json::from_str(json).unwrap(), "alice", 5)?;
        Ok(p)
    }

    #[test]
    fn bad_settings_name_their_field() {
        let cases = [
            (r#"{"type":"AUTO"}"#, "predStage"),
            (r#"{"type":"AUTO","predStage":"be ta"}"#, "predStage"),
            (r#"{"predStage":"BUILD","queueSize":0}"#, "queueSize"),
            (r#"{"predStage":"BUILD","queueSize":11}"#, "queueSize"),
            (r#"{"predStage":"BUILD","delay":-1}"#, "delay"),
            (r#"{"predStage":"BUILD","schedule":"0 61 * * * ?"}"#, "schedule"),
            (r#"{"predStage":"BUILD","schedule":"every day"}"#, "schedule"),
        ];
        for (json, field) in cases {
            assert_eq!(apply(json).unwrap_err().field, field, "{json}");
        }
    }

    #[test]
    fn settings_apply_and_clear() {
        let p =
            apply(r#"{"type":"AUTO","predStage":"beta","queueSize":3,"schedule":" 0 0 * * * ? ","delay":5}"#).unwrap();
        assert_eq!(
            (p.promote_type, p.pred_stage.as_deref(), p.queue_size, p.delay),
            (PromoteType::Auto, Some("beta"), 3, 5)
        );
        assert_eq!(p.schedule.as_deref(), Some("0 0 * * * ?"));
        assert!(p.cron().is_some());
        assert_eq!(p.last_operator, "alice");
        let mut p = p;
        p.apply(serde_json::from_str(r#"{"type":"MANUAL","predStage":"","schedule":""}"#).unwrap(), "bob", 6).unwrap();
        assert_eq!((p.pred_stage, p.schedule), (None, None));
        let json = serde_json::to_value(Promote::default_for(EnvId::generate())).unwrap();
        assert_eq!((json["type"].as_str(), json["queueSize"].as_i64()), (Some("MANUAL"), Some(1)));
    }
}
