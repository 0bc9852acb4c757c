//! Who may do what: a principal's grants (a role on the whole system or on one environment,
//! held directly or through a directory group) against what an action needs. A role on the
//! system counts for every environment; the strongest grant that applies wins.

use crate::{AccessRole, EnvName};

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantScope {
    /// Everywhere.
    System,
    /// One environment (every stage of it).
    Env(EnvName),
}

impl GrantScope {
    /// Stored form: `*` for the system, else the environment's name.
    pub fn as_str(&self) -> &str {
        match self {
            GrantScope::System => "*",
            GrantScope::Env(e) => e.as_str(),
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Result<GrantScope, crate::IdError> {
        if s == "*" { Ok(GrantScope::System) } else { EnvName::parse(s).map(GrantScope::Env) }
    }
}

/// A role held somewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    /// Where.
    pub scope: GrantScope,
    /// What.
    pub role: AccessRole,
}

/// What an action is on: the system, or one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// System-wide (builds, tokens, the global freeze).
    System,
    /// One environment.
    Env(&'a EnvName),
}

/// The strongest role the grants give on `target` (system grants count everywhere).
pub fn role_on(grants: &[Grant], target: Target<'_>) -> Option<AccessRole> {
    grants
        .iter()
        .filter(|g| match (&g.scope, target) {
            (GrantScope::System, _) => true,
            (GrantScope::Env(e), Target::Env(t)) => e == t,
            (GrantScope::Env(_), Target::System) => false,
        })
        .map(|g| g.role)
        .max_by_key(|r| r.rank())
}

/// Whether the grants give `needed` on `target`.
pub fn allows(grants: &[Grant], needed: AccessRole, target: Target<'_>) -> bool {
    role_on(grants, target).is_some_and(|r| r.includes(needed))
}

/// Whether the grants give `needed` anywhere (on the system or on some environment).
pub fn allows_somewhere(grants: &[Grant], needed: AccessRole) -> bool {
    grants.iter().any(|g| g.role.includes(needed))
}

/// Whether the principal may read: any grant at all. Reads are not secret (but for the secret
/// script variables, which need OPERATOR on their environment).
pub fn may_read(grants: &[Grant]) -> bool {
    !grants.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(s: &str) -> EnvName {
        EnvName::parse(s).unwrap()
    }

    fn grant(scope: Option<&str>, role: AccessRole) -> Grant {
        Grant { scope: scope.map_or(GrantScope::System, |e| GrantScope::Env(env(e))), role }
    }

    #[test]
    fn roles_include_the_ones_below() {
        use AccessRole::*;
        assert!(Admin.includes(Operator) && Operator.includes(Publisher) && Publisher.includes(Reader));
        assert!(!Reader.includes(Publisher) && !Publisher.includes(Operator) && !Operator.includes(Admin));
    }

    #[test]
    fn system_grants_count_everywhere_env_grants_only_there() {
        let (web, api) = (env("web"), env("api"));
        let g = [grant(None, AccessRole::Reader), grant(Some("web"), AccessRole::Operator)];
        assert_eq!(role_on(&g, Target::Env(&web)), Some(AccessRole::Operator));
        assert_eq!(role_on(&g, Target::Env(&api)), Some(AccessRole::Reader));
        assert_eq!(role_on(&g, Target::System), Some(AccessRole::Reader));
        assert!(allows(&g, AccessRole::Operator, Target::Env(&web)));
        assert!(!allows(&g, AccessRole::Operator, Target::Env(&api)));
        assert!(!allows(&g, AccessRole::Publisher, Target::System));
        assert!(allows_somewhere(&g, AccessRole::Operator));
        assert!(!allows_somewhere(&g, AccessRole::Admin));
        assert!(may_read(&g));
        assert!(!may_read(&[]));
        assert_eq!(role_on(&[], Target::System), None);
    }

    #[test]
    fn the_strongest_grant_wins() {
        let web = env("web");
        let g = [grant(Some("web"), AccessRole::Admin), grant(None, AccessRole::Publisher)];
        assert_eq!(role_on(&g, Target::Env(&web)), Some(AccessRole::Admin));
    }

    #[test]
    fn teletraans_role_names_are_understood() {
        assert_eq!(AccessRole::parse_lenient("execute"), Ok(AccessRole::Operator));
        assert_eq!(AccessRole::parse_lenient("READ"), Ok(AccessRole::Reader));
        assert_eq!(AccessRole::parse_lenient("MANAGE_SCRIPT_TOKEN"), Ok(AccessRole::Admin));
        assert!(AccessRole::parse_lenient("ROOT").is_err());
        assert_eq!(GrantScope::parse("*"), Ok(GrantScope::System));
        assert_eq!(GrantScope::parse("web").map(|s| s.as_str().to_string()), Ok("web".into()));
        assert!(GrantScope::parse("we b").is_err());
    }
}
