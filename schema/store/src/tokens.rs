//! API tokens, stored as SHA-256 hashes: a database leak does not leak usable tokens.

use schema::time::EpochMs;
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use crate::rows::*;
use crate::{Error, Result, Store};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Only ping the gateway (deploy agents).
    Agent,
}

impl Role {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Agent => "AGENT",
        }
    }

    fn parse(s: &str) -> Result<Role> {
        match s {
            "ADMIN" => Ok(Role::Admin),
            "AGENT" => Ok(Role::Agent),
            other => Err(Error::Corrupt(format!("token role {other:?}"))),
        }
    }
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Store {
    /// Creates or replaces the token called `name` (how start-up seeds the admin and agent tokens).
    pub async fn seed_token(&self, name: &str, role: Role, token: &str, now: EpochMs) -> Result<()> {
        let hash = hash_token(token).to_vec();
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO tokens (token_hash, name, role, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET token_hash = EXCLUDED.token_hash, role = EXCLUDED.role",
                &[&hash, &name, &role.as_str(), &ts(now)],
            )
            .await?;
        Ok(())
    }

    /// The name and role of a token, if it exists and has not expired.
    pub async fn token(&self, token: &str, now: EpochMs) -> Result<Option<(String, Role)>> {
        let hash = hash_token(token).to_vec();
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT name, role FROM tokens WHERE token_hash = $1 AND (expires_at IS NULL OR expires_at > $2)",
                &[&hash, &ts(now)],
            )
            .await?;
        row.map(|r| Ok((get(&r, "name")?, Role::parse(get(&r, "role")?)?))).transpose()
    }

    /// Every valid token hash with its role (gateways keep them in memory).
    pub async fn token_hashes(&self, now: EpochMs) -> Result<Vec<([u8; 32], Role)>> {
        let client = self.client().await?;
        token_hashes(&**client, now).await
    }
}

pub(crate) async fn token_hashes(c: &impl GenericClient, now: EpochMs) -> Result<Vec<([u8; 32], Role)>> {
    let rows =
        c.query("SELECT token_hash, role FROM tokens WHERE expires_at IS NULL OR expires_at > $1", &[&ts(now)]).await?;
    rows.iter()
        .map(|r| {
            let hash: Vec<u8> = get(r, "token_hash")?;
            let hash: [u8; 32] = hash.try_into().map_err(|_| Error::Corrupt("token hash length".into()))?;
            Ok((hash, Role::parse(get(r, "role")?)?))
        })
        .collect()
}
