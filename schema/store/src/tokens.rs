//! Tokens: secrets that stand for a principal, stored as SHA-256 hashes (a database leak does
//! not leak usable tokens), shown once when made. An API token acts with its principal's
//! grants; an agent token may only ping the gateway (within its groups, when scoped); an
//! enrollment token may only enroll hosts (within its groups), each of which then pings with
//! a credential of its own (`identity.rs`).

use schema::GroupName;
use schema::time::EpochMs;
use sha2::{Digest, Sha256};
use tokio_postgres::{GenericClient, Row};

use crate::history::{self, Change, Place};
use crate::outbox::{Exchange, enqueue};
use crate::rows::{get, get_ms, get_opt_ms, ts};
use crate::{Error, Result, Store};
use schema::bus::ChangeMessage;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// The REST API, with the principal's grants.
    Api,
    /// Only pinging the gateway (deploy agents).
    Agent,
    /// Only enrolling hosts at the gateway, each of which receives its own credential.
    Enroll,
}

impl TokenKind {
    /// Stored name (in the `role` column, which older releases read).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Api => "API",
            TokenKind::Agent => "AGENT",
            TokenKind::Enroll => "ENROLL",
        }
    }

    /// Reads a stored or requested kind (`ADMIN` is how tokens made before principals were
    /// stored).
    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "API" | "ADMIN" => Some(TokenKind::Api),
            "AGENT" => Some(TokenKind::Agent),
            "ENROLL" => Some(TokenKind::Enroll),
            _ => None,
        }
    }

    fn read(s: &str) -> Result<TokenKind> {
        TokenKind::parse(s).ok_or_else(|| Error::Corrupt(format!("token kind {s:?}")))
    }
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two hashes in constant time (the lookup is by hash; this keeps the last
/// comparison from depending on where they differ).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Public id (to revoke it).
    pub id: String,
    /// Who it stands for.
    pub principal: String,
    /// API, AGENT or ENROLL.
    pub kind: String,
    /// The host groups an AGENT or ENROLL token may claim (`None`: any).
    pub groups: Option<Vec<String>>,
    /// Whether an ENROLL token may replace the credential of a host that already enrolled.
    pub reenroll: bool,
    /// Why it exists.
    pub description: Option<String>,
    /// Made when, by whom.
    pub created_at: EpochMs,
    /// By whom.
    pub created_by: Option<String>,
    /// Refused from then on.
    pub expires_at: Option<EpochMs>,
    /// Revoked when.
    pub revoked_at: Option<EpochMs>,
    /// Last used (to the minute).
    pub last_used_at: Option<EpochMs>,
}

const TOKEN_COLUMNS: &str = "name, principal, role, description, created_at, created_by, expires_at, revoked_at, \
     last_used_at, groups, reenroll";

fn info_from_row(r: &Row) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: get(r, "name")?,
        principal: get(r, "principal")?,
        kind: TokenKind::read(get(r, "role")?)?.as_str().to_string(),
        groups: get(r, "groups")?,
        reenroll: get(r, "reenroll")?,
        description: get(r, "description")?,
        created_at: get_ms(r, "created_at")?,
        created_by: get(r, "created_by")?,
        expires_at: get_opt_ms(r, "expires_at")?,
        revoked_at: get_opt_ms(r, "revoked_at")?,
        last_used_at: get_opt_ms(r, "last_used_at")?,
    })
}

/// Who a valid token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    /// The principal.
    pub principal: String,
    /// The token's kind.
    pub kind: TokenKind,
    /// The token's id.
    pub token_id: String,
}

/// A new random secret: 32 random bytes (two v4 UUIDs' worth of entropy) in hex, prefixed so
/// that scanners recognise a leaked one.
pub fn new_secret() -> String {
    format!("tlt_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// A new public token id.
fn new_token_id() -> String {
    format!("tok_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Tells gateways to read the tokens again (in the caller's transaction).
pub(crate) async fn announce_tokens(c: &impl GenericClient) -> Result<()> {
    enqueue(c, Exchange::Changes, "tokens", &ChangeMessage::TokensV1 {}).await
}

/// A token to make.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// Who it stands for (must exist).
    pub principal: &'a str,
    /// Its kind; `None`: what the principal's kind implies (AGENT for agents, else API).
    pub kind: Option<TokenKind>,
    /// Why it exists.
    pub description: Option<&'a str>,
    /// Refused from then on.
    pub expires_at: Option<EpochMs>,
    /// For AGENT and ENROLL tokens: the host groups they may claim (`None`: any).
    pub groups: Option<Vec<GroupName>>,
    /// For ENROLL tokens: may replace the credential of a host that already enrolled.
    pub reenroll: bool,
}

impl<'a> NewToken<'a> {
    /// A token of `principal` with nothing else said.
    pub fn of(principal: &'a str) -> Self {
        NewToken { principal, kind: None, description: None, expires_at: None, groups: None, reenroll: false }
    }
}

pub(crate) async fn insert_token(
    c: &impl GenericClient,
    t: &NewToken<'_>,
    kind: TokenKind,
    created_by: &str,
    now: EpochMs,
) -> Result<(TokenInfo, String)> {
    let secret = new_secret();
    let groups: Option<Vec<&str>> = t.groups.as_ref().map(|g| g.iter().map(GroupName::as_str).collect());
    let row = c
        .query_one(
            &format!(
                "INSERT INTO tokens (token_hash, name, role, principal, description, created_at, created_by, expires_at,
                     groups, reenroll)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {TOKEN_COLUMNS}"
            ),
            &[
                &hash_token(&secret).to_vec(),
                &new_token_id(),
                &kind.as_str(),
                &t.principal,
                &t.description,
                &ts(now),
                &created_by,
                &t.expires_at.map(ts),
                &groups,
                &t.reenroll,
            ],
        )
        .await?;
    announce_tokens(c).await?;
    Ok((info_from_row(&row)?, secret))
}

/// The kind a new token gets: what was asked, if the principal's kind allows it.
fn kind_for(principal_kind: &str, asked: Option<TokenKind>, t: &NewToken<'_>) -> Result<TokenKind> {
    let refuse = |m: String| Err(Error::Invalid(schema::model::Invalid { field: "kind", message: m }));
    let kind = match (principal_kind, asked) {
        ("AGENT", None) => TokenKind::Agent,
        ("AGENT", Some(k @ (TokenKind::Agent | TokenKind::Enroll))) => k,
        ("AGENT", Some(TokenKind::Api)) => return refuse("an agent principal holds AGENT or ENROLL tokens".into()),
        (_, None | Some(TokenKind::Api)) => TokenKind::Api,
        (other, Some(k)) => {
            return refuse(format!("a {other} principal holds API tokens, not {}", k.as_str()));
        }
    };
    if kind == TokenKind::Api && t.groups.is_some() {
        let message = "only AGENT and ENROLL tokens are scoped to host groups".into();
        return Err(Error::Invalid(schema::model::Invalid { field: "groups", message }));
    }
    if kind != TokenKind::Enroll && t.reenroll {
        let message = "only ENROLL tokens may re-enroll hosts".into();
        return Err(Error::Invalid(schema::model::Invalid { field: "reenroll", message }));
    }
    Ok(kind)
}

/// A token as gateways hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayToken {
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// Its kind.
    pub kind: TokenKind,
    /// The host groups it may claim (`None`: any).
    pub groups: Option<Vec<GroupName>>,
}

impl Store {
    /// Creates or replaces the token with id `name` of principal `name` (how start-up seeds
    /// the bootstrap admin and agent tokens); an API token's principal is made ADMIN of the
    /// system.
    pub async fn seed_token(&self, name: &str, kind: TokenKind, token: &str, now: EpochMs) -> Result<()> {
        let hash = hash_token(token).to_vec();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let principal_kind = match kind {
            TokenKind::Api => "USER",
            TokenKind::Agent | TokenKind::Enroll => "AGENT",
        };
        tx.execute(
            "INSERT INTO principals (name, kind, created_at, created_by) VALUES ($1, $2, $3, 'configuration')
             ON CONFLICT (name) DO NOTHING",
            &[&name, &principal_kind, &ts(now)],
        )
        .await?;
        tx.execute(
            "INSERT INTO tokens (token_hash, name, role, principal, created_at, created_by) VALUES ($1, $2, $3, $2, $4, 'configuration')
             ON CONFLICT (name) DO UPDATE SET token_hash = EXCLUDED.token_hash, role = EXCLUDED.role,
                 principal = EXCLUDED.principal, revoked_at = NULL, expires_at = NULL",
            &[&hash, &name, &kind.as_str(), &ts(now)],
        )
        .await?;
        announce_tokens(&*tx).await?;
        if kind == TokenKind::Api {
            tx.execute(
                "INSERT INTO grants (subject_kind, subject, scope, role, granted_by, granted_at)
                 VALUES ('PRINCIPAL', $1, '*', 'ADMIN', 'configuration', $2)
                 ON CONFLICT (subject_kind, subject, scope) DO UPDATE SET role = 'ADMIN'",
                &[&name, &ts(now)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Who a token stands for, if it exists, is not revoked and has not expired. Marks it used
    /// (at most once a minute, so a busy token costs no write per request).
    pub async fn authenticate(&self, token: &str, now: EpochMs) -> Result<Option<TokenOwner>> {
        let hash = hash_token(token).to_vec();
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT token_hash, name, principal, role FROM tokens
                 WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
                &[&hash, &ts(now)],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: Vec<u8> = get(&row, "token_hash")?;
        if !same(&stored, &hash) {
            return Ok(None);
        }
        let owner = TokenOwner {
            principal: get(&row, "principal")?,
            kind: TokenKind::read(get(&row, "role")?)?,
            token_id: get(&row, "name")?,
        };
        client
            .execute(
                "UPDATE tokens SET last_used_at = $2 WHERE name = $1
                   AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')",
                &[&owner.token_id, &ts(now)],
            )
            .await?;
        Ok(Some(owner))
    }

    /// Makes a token (its principal must exist, and its kind suit the principal: agent
    /// principals hold AGENT and ENROLL tokens, others API tokens); the secret is returned once.
    pub async fn create_token(&self, t: &NewToken<'_>, created_by: &str, now: EpochMs) -> Result<(TokenInfo, String)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let principal = t.principal;
        let principal_kind: Option<String> =
            tx.query_opt("SELECT kind FROM principals WHERE name = $1", &[&principal]).await?.map(|r| r.get(0));
        let Some(principal_kind) = principal_kind else {
            return Err(Error::NotFound(format!("Principal {principal} does not exist.")));
        };
        let kind = kind_for(&principal_kind, t.kind, t)?;
        let made = insert_token(&*tx, t, kind, created_by, now).await?;
        let change =
            Change { kind: history::kind::TOKEN, action: "create", before: None, after: Some(history::json(&made.0)?) };
        history::record(&*tx, Place::System, created_by, None, change, now).await?;
        tx.commit().await?;
        Ok(made)
    }

    /// Tokens (of one principal, or all), newest first, without their secrets.
    pub async fn tokens(&self, principal: Option<&str>) -> Result<Vec<TokenInfo>> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ($1::text IS NULL OR principal = $1)
                     ORDER BY created_at DESC, name"
                ),
                &[&principal],
            )
            .await?
            .iter()
            .map(info_from_row)
            .collect()
    }

    /// One token, without its secret.
    pub async fn token_info(&self, id: &str) -> Result<TokenInfo> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE name = $1"), &[&id])
            .await?
            .ok_or_else(|| Error::NotFound(format!("Token {id} does not exist.")))?;
        info_from_row(&row)
    }

    /// Revokes a token: refused from now on (gateways drop agent tokens at their next check).
    /// The configuration's tokens are refused (409): start-up would bring them back, so a
    /// revocation through the API would only lock their holders out until the next restart.
    pub async fn revoke_token(&self, id: &str, operator: &str, now: EpochMs) -> Result<TokenInfo> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let origin = tx.query_opt("SELECT created_by FROM tokens WHERE name = $1 FOR UPDATE", &[&id]).await?;
        if origin.is_some_and(|r| r.get::<_, String>(0) == "configuration") {
            return Err(Error::Conflict(format!(
                "token {id} comes from the server's configuration: replace it there and restart to retire it"
            )));
        }
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1 RETURNING {TOKEN_COLUMNS}"
                ),
                &[&id, &ts(now)],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("Token {id} does not exist.")))?;
        let info = info_from_row(&row)?;
        announce_tokens(&*tx).await?;
        let change =
            Change { kind: history::kind::TOKEN, action: "revoke", before: None, after: Some(history::json(&info)?) };
        history::record(&*tx, Place::System, operator, None, change, now).await?;
        tx.commit().await?;
        Ok(info)
    }

    /// Every valid token as gateways hold it.
    pub async fn token_hashes(&self, now: EpochMs) -> Result<Vec<GatewayToken>> {
        let client = self.client().await?;
        token_hashes(&**client, now).await
    }
}

pub(crate) async fn token_hashes(c: &impl GenericClient, now: EpochMs) -> Result<Vec<GatewayToken>> {
    let rows = c
        .query(
            "SELECT token_hash, role, groups FROM tokens
             WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)",
            &[&ts(now)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let hash: Vec<u8> = get(r, "token_hash")?;
            let hash: [u8; 32] = hash.try_into().map_err(|_| Error::Corrupt("token hash length".into()))?;
            let groups: Option<Vec<String>> = get(r, "groups")?;
            let groups = groups
                .map(|g| g.into_iter().map(GroupName::parse).collect::<std::result::Result<Vec<_>, _>>())
                .transpose()
                .map_err(|e| Error::Corrupt(format!("token groups: {e}")))?;
            Ok(GatewayToken { hash, kind: TokenKind::read(get(r, "role")?)?, groups })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_compare_whole() {
        assert!(same(&[1, 2, 3], &[1, 2, 3]));
        assert!(!same(&[1, 2, 3], &[1, 2, 4]));
        assert!(!same(&[1, 2], &[1, 2, 3]));
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("tlt_") && a.len() == 68);
    }
}
