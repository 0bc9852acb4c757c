//! Principals and their grants: a role on the system (`*`) or on one environment, held by a
//! principal or by a directory group (groups come from a trusted SSO proxy). The rule that
//! reads them is `schema::rules::access`.

use schema::AccessRole;
use schema::rules::access::{Grant, GrantScope};
use schema::time::EpochMs;
use tokio_postgres::Row;

use crate::history::{self, Change, Place};
use crate::rows::{get, get_ms, get_parsed, ts};
use crate::tokens::{NewToken, TokenInfo, TokenKind, insert_token};
use crate::{Error, Result, Store};

/// Who holds a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A principal (a person, a script).
    Principal,
    /// A directory group.
    Group,
}

impl Subject {
    fn as_str(self) -> &'static str {
        match self {
            Subject::Principal => "PRINCIPAL",
            Subject::Group => "GROUP",
        }
    }
}

/// A grant as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantRow {
    /// The principal or group.
    pub name: String,
    /// `*` or an environment's name.
    pub resource: String,
    /// `SYSTEM` or `ENV` (Teletraan's resource types).
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The role.
    pub role: AccessRole,
    /// Who granted it.
    pub granted_by: String,
    /// When.
    pub granted_at: EpochMs,
}

fn grant_from_row(r: &Row) -> Result<GrantRow> {
    let resource: String = get(r, "scope")?;
    Ok(GrantRow {
        resource_type: if resource == "*" { "SYSTEM".into() } else { "ENV".into() },
        resource,
        name: get(r, "subject")?,
        role: get_parsed(r, "role")?,
        granted_by: get(r, "granted_by")?,
        granted_at: get_ms(r, "granted_at")?,
    })
}

/// A principal as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalRow {
    /// Name (recorded as the operator of what it does).
    pub name: String,
    /// USER, SCRIPT or AGENT.
    pub kind: String,
    /// Made when.
    pub created_at: EpochMs,
    /// By whom.
    pub created_by: String,
}

/// Where a grant's history goes: its environment, or the system.
fn place(scope: &GrantScope) -> Place<'_> {
    match scope {
        GrantScope::System => Place::System,
        GrantScope::Env(e) => Place::Env(e),
    }
}

impl Store {
    /// The grants a principal holds, directly or through `groups`.
    pub async fn grants_of(&self, principal: &str, groups: &[String]) -> Result<Vec<Grant>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT scope, role FROM grants
                 WHERE (subject_kind = 'PRINCIPAL' AND subject = $1) OR (subject_kind = 'GROUP' AND subject = ANY($2))",
                &[&principal, &groups],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let scope: &str = get(r, "scope")?;
                Ok(Grant {
                    scope: GrantScope::parse(scope).map_err(|e| Error::Corrupt(format!("grant scope: {e}")))?,
                    role: get_parsed(r, "role")?,
                })
            })
            .collect()
    }

    /// Grants of one kind of subject on one scope (`*` or an environment), by name.
    pub async fn grants_on(&self, subject: Subject, scope: &GrantScope) -> Result<Vec<GrantRow>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT subject, scope, role, granted_by, granted_at FROM grants
                 WHERE subject_kind = $1 AND scope = $2 ORDER BY subject",
                &[&subject.as_str(), &scope.as_str()],
            )
            .await?
            .iter()
            .map(grant_from_row)
            .collect()
    }

    /// One grant.
    pub async fn grant(&self, subject: Subject, name: &str, scope: &GrantScope) -> Result<GrantRow> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT subject, scope, role, granted_by, granted_at FROM grants
                 WHERE subject_kind = $1 AND subject = $2 AND scope = $3",
                &[&subject.as_str(), &name, &scope.as_str()],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("{name} has no role on {}.", scope.as_str())))?;
        grant_from_row(&row)
    }

    /// Grants (or changes) a role; a principal that does not exist yet is made (a person).
    pub async fn set_grant(
        &self,
        subject: Subject,
        name: &str,
        scope: &GrantScope,
        role: AccessRole,
        granted_by: &str,
        now: EpochMs,
    ) -> Result<GrantRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if subject == Subject::Principal {
            tx.execute(
                "INSERT INTO principals (name, kind, created_at, created_by) VALUES ($1, 'USER', $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &ts(now), &granted_by],
            )
            .await?;
        }
        let row = tx
            .query_one(
                "INSERT INTO grants (subject_kind, subject, scope, role, granted_by, granted_at) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (subject_kind, subject, scope) DO UPDATE SET role = EXCLUDED.role,
                     granted_by = EXCLUDED.granted_by, granted_at = EXCLUDED.granted_at
                 RETURNING subject, scope, role, granted_by, granted_at",
                &[&subject.as_str(), &name, &scope.as_str(), &role.as_str(), &granted_by, &ts(now)],
            )
            .await?;
        let granted = grant_from_row(&row)?;
        let change = Change {
            kind: history::kind::ROLE,
            action: "grant",
            before: None,
            after: Some(serde_json::json!({"subject": subject.as_str(), "grant": history::json(&granted)?})),
        };
        history::record(&*tx, place(scope), granted_by, None, change, now).await?;
        tx.commit().await?;
        Ok(granted)
    }

    /// Removes a grant.
    pub async fn delete_grant(
        &self,
        subject: Subject,
        name: &str,
        scope: &GrantScope,
        operator: &str,
        now: EpochMs,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "DELETE FROM grants WHERE subject_kind = $1 AND subject = $2 AND scope = $3
                 RETURNING subject, scope, role, granted_by, granted_at",
                &[&subject.as_str(), &name, &scope.as_str()],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("{name} has no role on {}.", scope.as_str())))?;
        let change = Change {
            kind: history::kind::ROLE,
            action: "revoke",
            before: Some(
                serde_json::json!({"subject": subject.as_str(), "grant": history::json(&grant_from_row(&row)?)?}),
            ),
            after: None,
        };
        history::record(&*tx, place(scope), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes a principal (USER, SCRIPT or AGENT); a name that exists is a conflict.
    pub async fn create_principal(
        &self,
        name: &str,
        kind: &str,
        created_by: &str,
        now: EpochMs,
    ) -> Result<PrincipalRow> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "INSERT INTO principals (name, kind, created_at, created_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO NOTHING RETURNING name, kind, created_at, created_by",
                &[&name, &kind, &ts(now), &created_by],
            )
            .await?
            .ok_or_else(|| Error::Conflict(format!("Principal {name} exists already.")))?;
        let made = PrincipalRow {
            name: get(&row, "name")?,
            kind: get(&row, "kind")?,
            created_at: get_ms(&row, "created_at")?,
            created_by: get(&row, "created_by")?,
        };
        let change = Change {
            kind: history::kind::PRINCIPAL,
            action: "create",
            before: None,
            after: Some(history::json(&made)?),
        };
        history::record(&*tx, Place::System, created_by, None, change, now).await?;
        tx.commit().await?;
        Ok(made)
    }

    /// Every principal, by name.
    pub async fn principals(&self) -> Result<Vec<PrincipalRow>> {
        let client = self.client().await?;
        client
            .query("SELECT name, kind, created_at, created_by FROM principals ORDER BY name", &[])
            .await?
            .iter()
            .map(|r| {
                Ok(PrincipalRow {
                    name: get(r, "name")?,
                    kind: get(r, "kind")?,
                    created_at: get_ms(r, "created_at")?,
                    created_by: get(r, "created_by")?,
                })
            })
            .collect()
    }

    /// A script principal with a role on one environment and a token (Teletraan's script
    /// tokens): all three in one transaction; the secret is returned once.
    pub async fn create_script(
        &self,
        name: &str,
        scope: &GrantScope,
        role: AccessRole,
        expires_at: Option<EpochMs>,
        created_by: &str,
        now: EpochMs,
    ) -> Result<(GrantRow, TokenInfo, String)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let made = tx
            .execute(
                "INSERT INTO principals (name, kind, created_at, created_by) VALUES ($1, 'SCRIPT', $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &ts(now), &created_by],
            )
            .await?;
        if made == 0 {
            return Err(Error::Conflict(format!("Script {name} exists already.")));
        }
        let row = tx
            .query_one(
                "INSERT INTO grants (subject_kind, subject, scope, role, granted_by, granted_at)
                 VALUES ('PRINCIPAL', $1, $2, $3, $4, $5) RETURNING subject, scope, role, granted_by, granted_at",
                &[&name, &scope.as_str(), &role.as_str(), &created_by, &ts(now)],
            )
            .await?;
        let (token, secret) = insert_token(
            &*tx,
            &NewToken { description: Some("script token"), expires_at, ..NewToken::of(name) },
            TokenKind::Api,
            created_by,
            now,
        )
        .await?;
        let granted = grant_from_row(&row)?;
        let after =
            serde_json::json!({"script": name, "grant": history::json(&granted)?, "token": history::json(&token)?});
        let change = Change { kind: history::kind::TOKEN, action: "create script", before: None, after: Some(after) };
        history::record(&*tx, place(scope), created_by, None, change, now).await?;
        tx.commit().await?;
        Ok((granted, token, secret))
    }

    /// Removes a principal with its grants and tokens.
    pub async fn delete_principal(&self, name: &str, operator: &str, now: EpochMs) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM grants WHERE subject_kind = 'PRINCIPAL' AND subject = $1", &[&name]).await?;
        tx.execute("DELETE FROM tokens WHERE principal = $1", &[&name]).await?;
        crate::tokens::announce_tokens(&*tx).await?;
        let n = tx.execute("DELETE FROM principals WHERE name = $1", &[&name]).await?;
        if n == 0 {
            return Err(Error::NotFound(format!("Principal {name} does not exist.")));
        }
        let before = Some(serde_json::json!({ "name": name }));
        let change = Change { kind: history::kind::PRINCIPAL, action: "delete", before, after: None };
        history::record(&*tx, Place::System, operator, None, change, now).await?;
        tx.commit().await?;
        Ok(())
    }
}
