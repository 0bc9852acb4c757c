//! Host enrollment on a real Postgres: only a live ENROLL token enrolls, within its groups; a
//! host enrolls once unless the token may replace its credential; a name belongs to one
//! enrolled host; revocation and re-enrollment bump the generation; every change is announced
//! to gateways and leaves a history row.

mod common;

use common::{NOW, changes, id};
use schema::bus::ChangeMessage;
use schema::rules::identity::Refusal;
use schema::{GroupName, HostId, HostName};
use store::testing::TestDatabase;
use store::{Enrolled, Enrollment, HistoryQuery, NewToken, Store, TokenKind, history_kind};

fn groups(names: &[&str]) -> Vec<GroupName> {
    names.iter().map(|g| id(g)).collect()
}

/// An agent principal with an ENROLL token scoped to `scope`; answers the secret.
async fn enroll_token(s: &Store, scope: Option<&[&str]>, reenroll: bool) -> String {
    if s.create_principal("fleet", "AGENT", "root", NOW).await.is_err() {
        // Made by an earlier call.
    }
    let spec = NewToken { kind: Some(TokenKind::Enroll), groups: scope.map(groups), reenroll, ..NewToken::of("fleet") };
    s.create_token(&spec, "root", NOW).await.unwrap().1
}

async fn enroll(s: &Store, token: &str, host: &str, name: &str, in_groups: &[&str], now: i64) -> Enrolled {
    let (host_id, host_name): (HostId, HostName) = (id(host), id(name));
    let g = groups(in_groups);
    let e = Enrollment { token, host_id: &host_id, host_name: &host_name, groups: &g };
    s.enroll_host(&e, now).await.unwrap()
}

fn done(e: Enrolled) -> store::HostCredential {
    match e {
        Enrolled::Done(c) => c,
        other => panic!("not enrolled: {other:?}"),
    }
}

#[tokio::test]
async fn a_host_enrolls_once_within_the_token_scope() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let token = enroll_token(s, Some(&["web", "web-canary"]), false).await;
    changes(s).await;

    let made = done(enroll(s, &token, "i-1", "web-1", &["web"], NOW).await);
    assert_eq!((made.generation, made.revoked_at), (1, None));
    assert_eq!(made.groups, Some(groups(&["web", "web-canary"])), "the credential carries the token's scope");
    assert_eq!(s.host_credential(&id("i-1")).await.unwrap(), made);
    assert_eq!(
        changes(s).await,
        [ChangeMessage::HostCredentialV1 { host_id: id("i-1"), host_name: id("web-1"), generation: 1, revoked: false }]
    );

    let refusals = [
        (enroll(s, &token, "i-2", "web-2", &["db"], NOW).await, Enrolled::Refused(Refusal::GroupOutOfScope(id("db")))),
        (enroll(s, &token, "i-1", "web-1", &["web"], NOW).await, Enrolled::Refused(Refusal::AlreadyEnrolled)),
        (enroll(s, &token, "i-3", "web-1", &["web"], NOW).await, Enrolled::Refused(Refusal::NameTaken)),
        (enroll(s, "not-a-token", "i-4", "web-4", &[], NOW).await, Enrolled::BadToken),
    ];
    for (got, want) in refusals {
        assert_eq!(got, want);
    }
    assert!(changes(s).await.is_empty(), "a refusal announces nothing");
    assert_eq!(s.host_credentials(1, 100).await.unwrap().len(), 1, "and stores nothing");
}

#[tokio::test]
async fn only_live_enroll_tokens_enroll() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    s.create_principal("fleet", "AGENT", "root", NOW).await.unwrap();
    let (_, agent) = s.create_token(&NewToken::of("fleet"), "root", NOW).await.unwrap();
    assert_eq!(enroll(s, &agent, "i-1", "h-1", &[], NOW).await, Enrolled::BadToken, "an AGENT token");
    let spec = NewToken { kind: Some(TokenKind::Enroll), expires_at: Some(NOW + 10), ..NewToken::of("fleet") };
    let (info, expiring) = s.create_token(&spec, "root", NOW).await.unwrap();
    assert_eq!(enroll(s, &expiring, "i-1", "h-1", &[], NOW + 10).await, Enrolled::BadToken, "expired");
    s.revoke_token(&info.id, "root", NOW).await.unwrap();
    assert_eq!(enroll(s, &expiring, "i-1", "h-1", &[], NOW).await, Enrolled::BadToken, "revoked");

    // A person's principal holds API tokens only; scopes and re-enrollment belong to agents'.
    s.create_principal("alice", "USER", "root", NOW).await.unwrap();
    for bad in [
        NewToken { kind: Some(TokenKind::Enroll), ..NewToken::of("alice") },
        NewToken { groups: Some(groups(&["web"])), ..NewToken::of("alice") },
        NewToken { kind: Some(TokenKind::Api), ..NewToken::of("fleet") },
        NewToken { reenroll: true, ..NewToken::of("fleet") },
    ] {
        assert!(matches!(s.create_token(&bad, "root", NOW).await, Err(store::Error::Invalid(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn revocation_and_reenrollment_move_the_generation_and_are_audited() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let once = enroll_token(s, None, false).await;
    let again = enroll_token(s, None, true).await;
    done(enroll(s, &once, "i-1", "web-1", &["web"], NOW).await);
    let replaced = done(enroll(s, &again, "i-1", "web-1", &["web"], NOW + 1).await);
    assert_eq!(replaced.generation, 2, "a re-enrolling token replaces a live credential");

    let revoked = s.revoke_host_credential(&id("i-1"), "root", NOW + 2).await.unwrap();
    assert_eq!((revoked.generation, revoked.revoked_at), (3, Some(NOW + 2)));
    assert!(matches!(s.revoke_host_credential(&id("nope"), "root", NOW).await, Err(store::Error::NotFound(_))));
    // Revoked, the host may enroll again with any enrollment token; its name is free too.
    done(enroll(s, &once, "i-9", "web-1", &[], NOW + 3).await);
    let back = done(enroll(s, &once, "i-1", "web-1b", &[], NOW + 4).await);
    assert_eq!((back.generation, back.revoked_at), (4, None));

    let since = s.host_credentials_since(NOW + 3).await.unwrap();
    assert_eq!(since.len(), 2, "what changed since a time, for gateways catching up");

    let q = HistoryQuery {
        kind: Some(history_kind::HOST_CREDENTIAL.into()),
        page_index: 1,
        page_size: 10,
        ..Default::default()
    };
    let rows = s.history(&q).await.unwrap();
    let actions: Vec<(&str, &str)> = rows.iter().map(|r| (r.action.as_str(), r.operator.as_str())).collect();
    assert_eq!(
        actions,
        [("enroll", "fleet"), ("enroll", "fleet"), ("revoke", "root"), ("enroll", "fleet"), ("enroll", "fleet")]
    );
    assert!(!serde_json::to_string(&rows).unwrap().contains(&once), "no secret in the history");
}
