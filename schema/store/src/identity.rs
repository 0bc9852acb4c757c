//! Per-host agent identity: hosts enroll with an ENROLL token and get a credential bound to
//! their host id and name. Only the binding is stored (which generation of the credential is
//! good, the groups it may claim); the credential is signed with a key of `signing_keys`, so
//! gateways check it without a lookup. Every enrollment and revocation bumps the generation,
//! announces it to gateways and writes a history row, in one transaction.

use schema::bus::ChangeMessage;
use schema::rules::identity::{Binding, Refusal, admit_enrollment};
use schema::time::EpochMs;
use schema::{GroupName, HostId, HostName};
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use crate::history::{self, Change, Place};
use crate::outbox::{Exchange, enqueue};
use crate::rows::{get, get_id, get_ms, get_opt_ms, ts};
use crate::tokens::hash_token;
use crate::{Error, Result, Store};

/// Name of the key host credentials are signed with.
pub const HOST_CREDENTIAL_KEY: &str = "host-credentials";

/// A host's enrollment, as listed (never a credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostCredential {
    /// The host.
    pub host_id: HostId,
    /// The name it enrolled with.
    pub host_name: HostName,
    /// Bumped by every enrollment and revocation; credentials of older generations are refused.
    pub generation: u32,
    /// The groups it may claim (its enrollment token's scope; `None`: any).
    pub groups: Option<Vec<GroupName>>,
    /// The enrollment token it used.
    pub token_id: String,
    /// When it last enrolled.
    pub enrolled_at: EpochMs,
    /// When its credential was revoked (until it enrolls again).
    pub revoked_at: Option<EpochMs>,
    /// Last change.
    pub updated_at: EpochMs,
}

impl HostCredential {
    /// The binding the identity rule reads.
    pub fn binding(&self) -> Binding<'_> {
        Binding { generation: self.generation, revoked: self.revoked_at.is_some(), host_name: &self.host_name }
    }
}

const COLUMNS: &str = "host_id, host_name, generation, groups, token_id, enrolled_at, revoked_at, updated_at";

fn groups_of(r: &Row) -> Result<Option<Vec<GroupName>>> {
    let groups: Option<Vec<String>> = get(r, "groups")?;
    groups
        .map(|g| g.into_iter().map(GroupName::parse).collect::<std::result::Result<Vec<_>, _>>())
        .transpose()
        .map_err(|e| Error::Corrupt(format!("credential groups: {e}")))
}

fn credential_from_row(r: &Row) -> Result<HostCredential> {
    let generation: i32 = get(r, "generation")?;
    Ok(HostCredential {
        host_id: get_id(r, "host_id")?,
        host_name: get_id(r, "host_name")?,
        generation: u32::try_from(generation).map_err(|_| Error::Corrupt(format!("generation {generation}")))?,
        groups: groups_of(r)?,
        token_id: get(r, "token_id")?,
        enrolled_at: get_ms(r, "enrolled_at")?,
        revoked_at: get_opt_ms(r, "revoked_at")?,
        updated_at: get_ms(r, "updated_at")?,
    })
}

/// A host asking to enroll.
#[derive(Debug, Clone)]
pub struct Enrollment<'a> {
    /// The ENROLL token it presents (its secret).
    pub token: &'a str,
    /// The host id it asks a credential for.
    pub host_id: &'a HostId,
    /// Its name.
    pub host_name: &'a HostName,
    /// The groups it is in now (must be within the token's scope).
    pub groups: &'a [GroupName],
}

/// What an enrollment came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolled {
    /// Bound: sign a credential of this generation and scope.
    Done(HostCredential),
    /// The rule refused it.
    Refused(Refusal),
    /// The token is not a live ENROLL token.
    BadToken,
}

async fn announce(c: &impl GenericClient, h: &HostCredential) -> Result<()> {
    let msg = ChangeMessage::HostCredentialV1 {
        host_id: h.host_id.clone(),
        host_name: h.host_name.clone(),
        generation: h.generation,
        revoked: h.revoked_at.is_some(),
    };
    enqueue(c, Exchange::Changes, "hosts", &msg).await
}

impl Store {
    /// The secret of a signing key, made (random, 32 bytes) the first time anyone asks.
    pub async fn signing_key(&self, name: &str, now: EpochMs) -> Result<Vec<u8>> {
        let client = self.client().await?;
        let mut fresh = Vec::with_capacity(32);
        fresh.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        fresh.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        client
            .execute(
                "INSERT INTO signing_keys (name, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh, &ts(now)],
            )
            .await?;
        let row = client.query_one("SELECT secret FROM signing_keys WHERE name = $1", &[&name]).await?;
        get(&row, "secret")
    }

    /// Enrolls a host: checks the token (live, ENROLL) and the rule under the host's row lock,
    /// then binds the next generation with the token's scope.
    pub async fn enroll_host(&self, e: &Enrollment<'_>, now: EpochMs) -> Result<Enrolled> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let token = tx
            .query_opt(
                "SELECT name, principal, groups, reenroll FROM tokens
                 WHERE token_hash = $1 AND role = 'ENROLL' AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > $2)",
                &[&hash_token(e.token).to_vec(), &ts(now)],
            )
            .await?;
        let Some(token) = token else { return Ok(Enrolled::BadToken) };
        let (token_id, principal): (String, String) = (get(&token, "name")?, get(&token, "principal")?);
        let scope = groups_of(&token)?;
        let reenroll: bool = get(&token, "reenroll")?;
        // Serialises enrollments of one host id (a row lock, or the lock of a row to be).
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('host_credentials'), hashtext($1))", &[&e.host_id.as_str()])
            .await?;
        let before = tx
            .query_opt(&format!("SELECT {COLUMNS} FROM host_credentials WHERE host_id = $1"), &[&e.host_id.as_str()])
            .await?
            .as_ref()
            .map(credential_from_row)
            .transpose()?;
        let name_taken = tx
            .query_opt(
                "SELECT 1 FROM host_credentials WHERE host_name = $1 AND host_id <> $2 AND revoked_at IS NULL",
                &[&e.host_name.as_str(), &e.host_id.as_str()],
            )
            .await?
            .is_some();
        let binding = before.as_ref().map(HostCredential::binding);
        if let Err(refusal) = admit_enrollment(scope.as_deref(), e.groups, binding, reenroll, name_taken) {
            return Ok(Enrolled::Refused(refusal));
        }
        let generation = before.as_ref().map_or(1, |b| b.generation.saturating_add(1));
        let groups: Option<Vec<&str>> = scope.as_ref().map(|g| g.iter().map(GroupName::as_str).collect());
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO host_credentials (host_id, host_name, generation, groups, token_id, enrolled_at,
                         revoked_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, $6)
                     ON CONFLICT (host_id) DO UPDATE SET host_name = EXCLUDED.host_name,
                         generation = EXCLUDED.generation, groups = EXCLUDED.groups, token_id = EXCLUDED.token_id,
                         enrolled_at = EXCLUDED.enrolled_at, revoked_at = NULL, updated_at = EXCLUDED.updated_at
                     RETURNING {COLUMNS}"
                ),
                &[
                    &e.host_id.as_str(),
                    &e.host_name.as_str(),
                    &i32::try_from(generation).unwrap_or(i32::MAX),
                    &groups,
                    &token_id,
                    &ts(now),
                ],
            )
            .await?;
        let made = credential_from_row(&row)?;
        announce(&*tx, &made).await?;
        let change = Change {
            kind: history::kind::HOST_CREDENTIAL,
            action: "enroll",
            before: before.as_ref().map(history::json).transpose()?,
            after: Some(history::json(&made)?),
        };
        history::record(&*tx, Place::System, &principal, None, change, now).await?;
        tx.execute("UPDATE tokens SET last_used_at = $2 WHERE name = $1", &[&token_id, &ts(now)]).await?;
        tx.commit().await?;
        Ok(Enrolled::Done(made))
    }

    /// Revokes a host's credential: refused from now on (by gateways as soon as they hear of
    /// it), until the host enrolls again. Static tokens still cannot claim the host.
    pub async fn revoke_host_credential(
        &self,
        host_id: &HostId,
        operator: &str,
        now: EpochMs,
    ) -> Result<HostCredential> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let before = tx
            .query_opt(
                &format!("SELECT {COLUMNS} FROM host_credentials WHERE host_id = $1 FOR UPDATE"),
                &[&host_id.as_str()],
            )
            .await?
            .as_ref()
            .map(credential_from_row)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("Host {host_id} has not enrolled.")))?;
        let row = tx
            .query_one(
                &format!(
                    "UPDATE host_credentials SET generation = generation + 1, revoked_at = $2, updated_at = $2
                     WHERE host_id = $1 RETURNING {COLUMNS}"
                ),
                &[&host_id.as_str(), &ts(now)],
            )
            .await?;
        let after = credential_from_row(&row)?;
        announce(&*tx, &after).await?;
        let change = Change {
            kind: history::kind::HOST_CREDENTIAL,
            action: "revoke",
            before: Some(history::json(&before)?),
            after: Some(history::json(&after)?),
        };
        history::record(&*tx, Place::System, operator, None, change, now).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// One host's enrollment.
    pub async fn host_credential(&self, host_id: &HostId) -> Result<HostCredential> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {COLUMNS} FROM host_credentials WHERE host_id = $1"), &[&host_id.as_str()])
            .await?
            .ok_or_else(|| Error::NotFound(format!("Host {host_id} has not enrolled.")))?;
        credential_from_row(&row)
    }

    /// Enrollments by host id, a page at a time (`page_index` from 1).
    pub async fn host_credentials(&self, page_index: i64, page_size: i64) -> Result<Vec<HostCredential>> {
        let client = self.client().await?;
        let offset = (page_index.max(1) - 1).saturating_mul(page_size);
        client
            .query(
                &format!("SELECT {COLUMNS} FROM host_credentials ORDER BY host_id LIMIT $1 OFFSET $2"),
                &[&page_size, &offset],
            )
            .await?
            .iter()
            .map(credential_from_row)
            .collect()
    }

    /// Enrollments changed at or after `since` (gateways catch up with these every check).
    pub async fn host_credentials_since(&self, since: EpochMs) -> Result<Vec<HostCredential>> {
        let client = self.client().await?;
        credentials_since(&**client, since).await
    }
}

/// Every enrollment changed at or after `since` (0: all of them).
pub(crate) async fn credentials_since(c: &impl GenericClient, since: EpochMs) -> Result<Vec<HostCredential>> {
    c.query(&format!("SELECT {COLUMNS} FROM host_credentials WHERE updated_at >= $1"), &[&ts(since)])
        .await?
        .iter()
        .map(credential_from_row)
        .collect()
}
