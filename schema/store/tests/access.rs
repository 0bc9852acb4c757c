//! Principals, grants and tokens on a real Postgres: tokens are found by their hash only, can
//! expire and be revoked; grants come directly or through groups; a script is a principal, a
//! role on one environment and a token, made and removed together.

mod common;

use common::{NOW, id};
use schema::AccessRole;
use schema::rules::access::{Grant, GrantScope};
use store::testing::TestDatabase;
use store::{NewToken, Subject, TokenKind};

const DAY: i64 = 86_400_000;

#[tokio::test]
async fn tokens_are_found_by_their_hash_and_stop_when_revoked_or_expired() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    s.seed_token("admin", TokenKind::Api, "s3cret-admin", NOW).await.unwrap();
    let owner = s.authenticate("s3cret-admin", NOW).await.unwrap().unwrap();
    assert_eq!((owner.principal.as_str(), owner.kind), ("admin", TokenKind::Api));
    assert_eq!(s.authenticate("other", NOW).await.unwrap(), None);
    s.seed_token("admin", TokenKind::Api, "rotated", NOW).await.unwrap();
    assert_eq!(s.authenticate("s3cret-admin", NOW).await.unwrap(), None, "seeding again replaces the token");
    assert_eq!(
        s.grants_of("admin", &[]).await.unwrap(),
        [Grant { scope: GrantScope::System, role: AccessRole::Admin }]
    );

    let (info, secret) = s
        .create_token(
            &NewToken { description: Some("laptop"), expires_at: Some(NOW + DAY), ..NewToken::of("admin") },
            "admin",
            NOW,
        )
        .await
        .unwrap();
    assert!(secret.starts_with("tlt_"));
    assert_eq!(s.authenticate(&secret, NOW).await.unwrap().map(|o| o.token_id), Some(info.id.clone()));
    assert_eq!(s.authenticate(&secret, NOW + DAY).await.unwrap(), None, "expired");
    let listed = s.tokens(Some("admin")).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|t| t.id == info.id && t.description.as_deref() == Some("laptop")));
    s.revoke_token(&info.id, "root", NOW + 1).await.unwrap();
    assert_eq!(s.authenticate(&secret, NOW + 2).await.unwrap(), None, "revoked");
    assert!(s.token_info(&info.id).await.unwrap().revoked_at.is_some());
    assert!(matches!(s.create_token(&NewToken::of("nobody"), "admin", NOW).await, Err(store::Error::NotFound(_))));
    let hashes = s.token_hashes(NOW).await.unwrap();
    assert_eq!(hashes.len(), 1, "only the live bootstrap token");
}

#[tokio::test]
async fn grants_come_directly_or_through_groups() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let web = GrantScope::Env(id("web"));
    s.set_grant(Subject::Principal, "alice", &web, AccessRole::Operator, "admin", NOW).await.unwrap();
    s.set_grant(Subject::Group, "sre", &GrantScope::System, AccessRole::Reader, "admin", NOW).await.unwrap();
    let mut g = s.grants_of("alice", &["sre".into(), "other".into()]).await.unwrap();
    g.sort();
    assert_eq!(
        g,
        [
            Grant { scope: GrantScope::System, role: AccessRole::Reader },
            Grant { scope: web.clone(), role: AccessRole::Operator }
        ]
    );
    assert_eq!(s.grants_of("alice", &[]).await.unwrap().len(), 1, "the group's grant needs the group");
    s.set_grant(Subject::Principal, "alice", &web, AccessRole::Admin, "admin", NOW).await.unwrap();
    assert_eq!(s.grant(Subject::Principal, "alice", &web).await.unwrap().role, AccessRole::Admin, "changed, not added");
    assert_eq!(s.grants_on(Subject::Principal, &web).await.unwrap().len(), 1);
    s.delete_grant(Subject::Principal, "alice", &web, "root", NOW).await.unwrap();
    assert!(matches!(
        s.delete_grant(Subject::Principal, "alice", &web, "root", NOW).await,
        Err(store::Error::NotFound(_))
    ));
    assert!(s.principals().await.unwrap().iter().any(|p| p.name == "alice" && p.kind == "USER"));
}

#[tokio::test]
async fn a_script_is_a_principal_a_role_and_a_token() {
    let db = TestDatabase::new().await;
    let s = &db.store;
    let web = GrantScope::Env(id("web"));
    let (grant, token, secret) =
        s.create_script("ci@web", &web, AccessRole::Publisher, Some(NOW + 180 * DAY), "admin", NOW).await.unwrap();
    assert_eq!((grant.role, grant.resource.as_str()), (AccessRole::Publisher, "web"));
    assert_eq!(token.expires_at, Some(NOW + 180 * DAY));
    assert_eq!(s.authenticate(&secret, NOW).await.unwrap().map(|o| o.principal), Some("ci@web".into()));
    assert!(matches!(
        s.create_script("ci@web", &web, AccessRole::Publisher, None, "admin", NOW).await,
        Err(store::Error::Conflict(_))
    ));
    s.delete_principal("ci@web", "root", NOW).await.unwrap();
    assert_eq!(s.authenticate(&secret, NOW).await.unwrap(), None, "its token went with it");
    assert!(s.grants_of("ci@web", &[]).await.unwrap().is_empty());
}
