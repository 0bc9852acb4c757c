//! Disabled stages and the system-wide change freeze: which new deploys they hold back, and
//! the reason a refused deploy gives.
//!
//! A disabled stage (`state: DISABLED`, set by `POST /v1/envs/{env}/{stage}/actions`) and a
//! frozen system (`POST /v1/envs/actions?actionType=DISABLE`) take no new build: no deploy,
//! promotion or automatic promotion. What runs may still be rolled back or restarted, so an
//! incident can be handled during a freeze. (Teletraan refuses only promotions into a
//! disabled stage and leaves plain deploys to its UI; its freeze disables every stage, so
//! lifting it also re-enables the stages someone had disabled on purpose. Here the freeze is
//! a switch of its own.)

use crate::time::{EpochMs, format_utc};
use crate::{DeployType, EnvName, EnvironState, StageName};

/// Who switched something off, when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// The principal.
    pub operator: String,
    /// When.
    pub at: EpochMs,
    /// Why, as they said it.
    pub description: Option<String>,
}

impl Switched {
    fn describe(&self) -> String {
        let why = self.description.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        format!("since {} by {}{why}", format_utc(self.at), self.operator)
    }
}

/// Whether a deploy of this type brings a new build, which a disabled stage or a freeze
/// holds back. Rollbacks go back to what ran; restarts run what runs.
pub const fn brings_new_build(deploy_type: DeployType) -> bool {
    match deploy_type {
        DeployType::Regular | DeployType::Hotfix => true,
        DeployType::Rollback | DeployType::Restart | DeployType::Stop => false,
    }
}

/// Whether a stage takes new builds at all (what the auto-promoter asks before it looks for
/// candidates): enabled, and the system not frozen.
pub const fn takes_new_builds(state: EnvironState, frozen: bool) -> bool {
    match state {
        EnvironState::Normal => !frozen,
        EnvironState::Disabled => false,
    }
}

/// Why a deploy of `deploy_type` on `env/stage` is refused, or `None` when it may go ahead.
/// `disabled_by` says who disabled the stage, when that is known; `freeze` is the
/// system-wide freeze, when it is on. The freeze is named first: lifting it is not up to the
/// stage's owners.
pub fn refusal(
    env: &EnvName,
    stage: &StageName,
    deploy_type: DeployType,
    state: EnvironState,
    disabled_by: Option<&Switched>,
    freeze: Option<&Switched>,
) -> Option<String> {
    if !brings_new_build(deploy_type) {
        return None;
    }
    if let Some(f) = freeze {
        return Some(format!(
            "deploys of new builds are frozen system-wide ({}); rollbacks and restarts are still allowed, \
             and POST /v1/envs/actions?actionType=ENABLE lifts the freeze",
            f.describe()
        ));
    }
    match state {
        EnvironState::Normal => None,
        EnvironState::Disabled => {
            let since = disabled_by.map(|d| format!(" ({})", d.describe())).unwrap_or_default();
            Some(format!(
                "Environment {env}/{stage} is disabled{since}; rollbacks and restarts are still allowed, \
                 and POST /v1/envs/{env}/{stage}/actions?actionType=ENABLE enables it"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (EnvName, StageName) {
        (EnvName::parse("web").unwrap(), StageName::parse("prod").unwrap())
    }

    fn alice() -> Switched {
        Switched { operator: "alice".into(), at: 1_800_000_000_000, description: Some("holiday".into()) }
    }

    #[test]
    fn an_enabled_stage_of_a_system_not_frozen_takes_every_deploy() {
        let (env, stage) = names();
        for t in DeployType::ALL {
            assert_eq!(refusal(&env, &stage, *t, EnvironState::Normal, None, None), None, "{t}");
        }
        assert!(takes_new_builds(EnvironState::Normal, false));
    }

    #[test]
    fn a_disabled_stage_refuses_new_builds_only() {
        let (env, stage) = names();
        let who = alice();
        for t in [DeployType::Regular, DeployType::Hotfix] {
            let why = refusal(&env, &stage, t, EnvironState::Disabled, Some(&who), None).unwrap();
            assert!(why.starts_with("Environment web/prod is disabled (since 2027-01-15T08:00:00Z by alice: holiday)"));
            assert!(why.contains("actionType=ENABLE"), "{why}");
        }
        for t in [DeployType::Rollback, DeployType::Restart] {
            assert_eq!(refusal(&env, &stage, t, EnvironState::Disabled, Some(&who), None), None, "{t}");
        }
        let unknown = refusal(&env, &stage, DeployType::Regular, EnvironState::Disabled, None, None).unwrap();
        assert!(unknown.starts_with("Environment web/prod is disabled; "), "{unknown}");
        assert!(!takes_new_builds(EnvironState::Disabled, false));
    }

    #[test]
    fn a_freeze_refuses_new_builds_everywhere_and_is_named_first() {
        let (env, stage) = names();
        let freeze = Switched { description: None, ..alice() };
        for state in [EnvironState::Normal, EnvironState::Disabled] {
            let why = refusal(&env, &stage, DeployType::Regular, state, None, Some(&freeze)).unwrap();
            assert!(
                why.starts_with("deploys of new builds are frozen system-wide (since 2027-01-15T08:00:00Z by alice)")
            );
            assert_eq!(refusal(&env, &stage, DeployType::Rollback, state, None, Some(&freeze)), None);
            assert!(!takes_new_builds(state, true));
        }
    }
}
