//! Who may ping as which host: the rule the gateway applies to every ping, and to every
//! enrollment, before it decides anything.
//!
//! A host that enrolled holds a credential bound to its host id and name and scoped to the
//! groups of the enrollment token it used; a static agent token (what unmodified Teletraan
//! agents send) may be scoped to groups, and can never claim a host that enrolled, nor its
//! name. Re-enrolling or revoking bumps a host's generation, which retires older credentials.

use crate::{GroupName, HostId, HostName};

/// What a ping's credential says about its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A static agent token, shared by any number of hosts; `groups` is its scope (`None`: any).
    Static {
        /// The groups the token may claim.
        groups: Option<&'a [GroupName]>,
    },
    /// A host credential.
    Host {
        /// The host it was issued to.
        host_id: &'a HostId,
        /// The name it enrolled with.
        host_name: &'a HostName,
        /// Its generation (see [`Binding::generation`]).
        generation: u32,
        /// The groups it may claim (the enrollment token's scope; `None`: any).
        groups: Option<&'a [GroupName]>,
    },
}

/// What the gateway knows of a host id's enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// Bumped by every enrollment and revocation; only credentials of the current generation
    /// are good (a newer one is good too: the gateway has not heard of it yet).
    pub generation: u32,
    /// Revoked: no credential of this generation is good until the host enrolls again.
    pub revoked: bool,
    /// The name the host enrolled with.
    pub host_name: &'a HostName,
}

/// Why a ping or an enrollment is refused (each is counted under [`Refusal::reason`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A host credential used for another host id.
    OtherHost,
    /// A host credential used with another host name than it enrolled with.
    OtherName,
    /// A group outside the credential's or token's scope.
    GroupOutOfScope(GroupName),
    /// A static token claiming a host id that enrolled.
    EnrolledHost,
    /// A static token claiming the name of a host that enrolled.
    EnrolledName,
    /// A credential older than the host's latest enrollment, or revoked.
    Retired,
    /// An enrollment for a host that holds a live credential, with a token that may not
    /// replace it.
    AlreadyEnrolled,
    /// An enrollment under a name another enrolled host holds.
    NameTaken,
}

/// The error `code` of a ping refused for a retired credential: an agent that can enroll
/// does so again on seeing it (every other refusal is `forbidden`).
pub const RETIRED_CODE: &str = "credential_retired";

impl Refusal {
    /// The error `code` a refused ping answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Retired => RETIRED_CODE,
            _ => "forbidden",
        }
    }

    /// Label of the refusal in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::OtherHost => "other_host",
            Refusal::OtherName => "other_name",
            Refusal::GroupOutOfScope(_) => "group_out_of_scope",
            Refusal::EnrolledHost => "enrolled_host",
            Refusal::EnrolledName => "enrolled_name",
            Refusal::Retired => "retired",
            Refusal::AlreadyEnrolled => "already_enrolled",
            Refusal::NameTaken => "name_taken",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::OtherHost => f.write_str("this credential belongs to another host id"),
            Refusal::OtherName => f.write_str("this credential belongs to a host of another name"),
            Refusal::GroupOutOfScope(g) => write!(f, "group {g} is outside this credential's scope"),
            Refusal::EnrolledHost => f.write_str("this host enrolled: it must ping with its own credential"),
            Refusal::EnrolledName => f.write_str("a host of this name enrolled: it must ping with its own credential"),
            Refusal::Retired => f.write_str("this credential was revoked or replaced by a newer enrollment"),
            Refusal::AlreadyEnrolled => {
                f.write_str("this host already enrolled; an admin must revoke its credential before it enrolls again")
            }
            Refusal::NameTaken => f.write_str("another enrolled host holds this host name"),
        }
    }
}

/// Whether every group is within `scope` (`None`: any group).
fn in_scope(scope: Option<&[GroupName]>, groups: &[GroupName]) -> Result<(), Refusal> {
    match scope {
        None => Ok(()),
        Some(scope) => match groups.iter().find(|g| !scope.contains(g)) {
            Some(g) => Err(Refusal::GroupOutOfScope(g.clone())),
            None => Ok(()),
        },
    }
}

/// May `caller` ping as host `host_id` named `host_name` in `groups`? `binding` is the
/// host id's enrollment, if any; `name_taken` whether a host that enrolled holds `host_name`
/// (under any host id).
pub fn admit_ping(
    caller: Caller<'_>,
    host_id: &HostId,
    host_name: &HostName,
    groups: &[GroupName],
    binding: Option<Binding<'_>>,
    name_taken: bool,
) -> Result<(), Refusal> {
    match caller {
        Caller::Static { groups: scope } => {
            if binding.is_some() {
                return Err(Refusal::EnrolledHost);
            }
            if name_taken {
                return Err(Refusal::EnrolledName);
            }
            in_scope(scope, groups)
        }
        Caller::Host { host_id: bound, host_name: bound_name, generation, groups: scope } => {
            if bound != host_id {
                return Err(Refusal::OtherHost);
            }
            if bound_name != host_name {
                return Err(Refusal::OtherName);
            }
            if binding.is_some_and(|b| generation < b.generation || (generation == b.generation && b.revoked)) {
                return Err(Refusal::Retired);
            }
            in_scope(scope, groups)
        }
    }
}

/// May a host enroll in `groups` with a token scoped to `scope` (`None`: any), given its
/// host id's current binding? `reenroll` says whether the token may replace a live
/// credential; `name_taken` whether another host id that enrolled holds the name.
pub fn admit_enrollment(
    scope: Option<&[GroupName]>,
    groups: &[GroupName],
    binding: Option<Binding<'_>>,
    reenroll: bool,
    name_taken: bool,
) -> Result<(), Refusal> {
    in_scope(scope, groups)?;
    if name_taken {
        return Err(Refusal::NameTaken);
    }
    match binding {
        Some(b) if !b.revoked && !reenroll => Err(Refusal::AlreadyEnrolled),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(names: &[&str]) -> Vec<GroupName> {
        names.iter().map(|n| GroupName::parse(*n).unwrap()).collect()
    }

    fn h(s: &str) -> HostId {
        HostId::parse(s).unwrap()
    }

    fn n(s: &str) -> HostName {
        HostName::parse(s).unwrap()
    }

    #[test]
    fn a_static_token_pings_as_any_host_that_did_not_enroll_within_its_scope() {
        let scope = g(&["web"]);
        let any = Caller::Static { groups: None };
        let web = Caller::Static { groups: Some(&scope) };
        assert_eq!(admit_ping(any, &h("a"), &n("a"), &g(&["db", "web"]), None, false), Ok(()));
        assert_eq!(admit_ping(web, &h("a"), &n("a"), &g(&["web"]), None, false), Ok(()));
        assert_eq!(admit_ping(web, &h("a"), &n("a"), &[], None, false), Ok(()));
        assert_eq!(
            admit_ping(web, &h("a"), &n("a"), &g(&["web", "db"]), None, false),
            Err(Refusal::GroupOutOfScope(GroupName::parse("db").unwrap()))
        );
    }

    #[test]
    fn a_static_token_never_claims_an_enrolled_host_or_its_name() {
        let name = n("a");
        let any = Caller::Static { groups: None };
        for revoked in [false, true] {
            let b = Binding { generation: 1, revoked, host_name: &name };
            assert_eq!(admit_ping(any, &h("a"), &n("a"), &[], Some(b), true), Err(Refusal::EnrolledHost));
        }
        assert_eq!(admit_ping(any, &h("b"), &n("a"), &[], None, true), Err(Refusal::EnrolledName));
    }

    #[test]
    fn a_host_credential_pings_only_as_its_host_within_its_scope() {
        let (id, name, scope) = (h("a"), n("a"), g(&["web", "web-canary"]));
        let cred = Caller::Host { host_id: &id, host_name: &name, generation: 2, groups: Some(&scope) };
        let b = Binding { generation: 2, revoked: false, host_name: &name };
        assert_eq!(admit_ping(cred, &h("a"), &n("a"), &g(&["web"]), Some(b), true), Ok(()));
        assert_eq!(admit_ping(cred, &h("b"), &n("a"), &g(&["web"]), None, false), Err(Refusal::OtherHost));
        assert_eq!(admit_ping(cred, &h("a"), &n("b"), &g(&["web"]), Some(b), false), Err(Refusal::OtherName));
        assert_eq!(
            admit_ping(cred, &h("a"), &n("a"), &g(&["db"]), Some(b), true),
            Err(Refusal::GroupOutOfScope(GroupName::parse("db").unwrap()))
        );
        let unscoped = Caller::Host { host_id: &id, host_name: &name, generation: 2, groups: None };
        assert_eq!(admit_ping(unscoped, &h("a"), &n("a"), &g(&["db"]), Some(b), true), Ok(()));
    }

    #[test]
    fn only_the_latest_generation_of_a_credential_is_good() {
        let (id, name) = (h("a"), n("a"));
        let cred = |generation| Caller::Host { host_id: &id, host_name: &name, generation, groups: None };
        let at = |generation, revoked| Some(Binding { generation, revoked, host_name: &name });
        assert_eq!(admit_ping(cred(2), &id, &name, &[], at(2, false), true), Ok(()));
        assert_eq!(admit_ping(cred(1), &id, &name, &[], at(2, false), true), Err(Refusal::Retired));
        assert_eq!(admit_ping(cred(2), &id, &name, &[], at(2, true), true), Err(Refusal::Retired));
        assert_eq!(admit_ping(cred(3), &id, &name, &[], at(2, true), true), Ok(()), "enrolled again meanwhile");
        assert_eq!(admit_ping(cred(1), &id, &name, &[], None, false), Ok(()), "not heard of yet");
    }

    #[test]
    fn enrollment_stays_in_scope_and_replaces_a_live_credential_only_when_allowed() {
        let (name, scope) = (n("a"), g(&["web"]));
        let live = Some(Binding { generation: 1, revoked: false, host_name: &name });
        let revoked = Some(Binding { generation: 2, revoked: true, host_name: &name });
        assert_eq!(admit_enrollment(Some(&scope), &g(&["web"]), None, false, false), Ok(()));
        assert_eq!(
            admit_enrollment(Some(&scope), &g(&["db"]), None, false, false),
            Err(Refusal::GroupOutOfScope(GroupName::parse("db").unwrap()))
        );
        assert_eq!(admit_enrollment(None, &g(&["db"]), live, false, false), Err(Refusal::AlreadyEnrolled));
        assert_eq!(admit_enrollment(None, &g(&["db"]), live, true, false), Ok(()));
        assert_eq!(admit_enrollment(None, &[], revoked, false, false), Ok(()));
        assert_eq!(admit_enrollment(None, &[], None, true, true), Err(Refusal::NameTaken));
    }

    #[test]
    fn every_refusal_explains_itself_and_has_a_label() {
        let all = [
            Refusal::OtherHost,
            Refusal::OtherName,
            Refusal::GroupOutOfScope(GroupName::parse("db").unwrap()),
            Refusal::EnrolledHost,
            Refusal::EnrolledName,
            Refusal::Retired,
            Refusal::AlreadyEnrolled,
            Refusal::NameTaken,
        ];
        let labels: std::collections::BTreeSet<_> = all.iter().map(Refusal::reason).collect();
        assert_eq!(labels.len(), all.len());
        assert!(all.iter().all(|r| !r.to_string().is_empty()));
    }
}
