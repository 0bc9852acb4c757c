//! Builds: immutable artifact records.

use schema::model::Build;
use schema::time::EpochMs;
use schema::{BuildId, BuildName};
use tokio_postgres::Row;

use crate::history::{self, Change, Place};
use crate::rows::{get, get_id, get_ms, is_unique_violation, ts};
use crate::{Error, Result, Store};

/// What `GET /v1/builds` looks for: a name or a commit (full or a prefix of at least 7
/// characters), optionally a branch and a publish time range.
#[derive(Debug, Clone, Default)]
pub struct BuildSearch {
    /// Builds of this name.
    pub name: Option<BuildName>,
    /// Builds of this commit.
    pub commit: Option<String>,
    /// Builds of this branch.
    pub branch: Option<String>,
    /// Published before (ms).
    pub before: Option<EpochMs>,
    /// Published after (ms).
    pub after: Option<EpochMs>,
    /// 1-based page.
    pub page_index: i64,
    /// Page size.
    pub page_size: i64,
}

const BUILD_COLUMNS: &str = "build_id, build_name, artifact_url, artifact_sha256, scm, scm_repo, scm_branch, scm_commit, \
     scm_commit_7, commit_info, commit_date, publish_info, publisher, publish_date";

/// Maps a build row whose columns carry `prefix` (`""`, or `"b_"` in joins).
pub(crate) fn build_from_row(r: &Row, prefix: &str) -> Result<Build> {
    let c = |name: &str| format!("{prefix}{name}");
    Ok(Build {
        id: get_id(r, &c("build_id"))?,
        name: get_id(r, &c("build_name"))?,
        artifact_url: get(r, &c("artifact_url"))?,
        scm: get(r, &c("scm"))?,
        repo: get(r, &c("scm_repo"))?,
        branch: get(r, &c("scm_branch"))?,
        commit: get(r, &c("scm_commit"))?,
        commit_short: get(r, &c("scm_commit_7"))?,
        commit_info: get(r, &c("commit_info"))?,
        commit_date: get_ms(r, &c("commit_date"))?,
        publish_info: get(r, &c("publish_info"))?,
        publisher: get(r, &c("publisher"))?,
        publish_date: get_ms(r, &c("publish_date"))?,
        artifact_sha256: get(r, &c("artifact_sha256"))?,
    })
}

impl Store {
    /// Stores a published build.
    pub async fn insert_build(&self, b: &Build) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
                &format!("INSERT INTO builds ({BUILD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"),
                &[
                    &b.id.as_str(),
                    &b.name.as_str(),
                    &b.artifact_url,
                    &b.artifact_sha256,
                    &b.scm,
                    &b.repo,
                    &b.branch,
                    &b.commit,
                    &b.commit_short,
                    &b.commit_info,
                    &ts(b.commit_date),
                    &b.publish_info,
                    &b.publisher,
                    &ts(b.publish_date),
                ],
            )
            .await
            .map_err(|e| if is_unique_violation(&e) { Error::Conflict(format!("build {} exists", b.id)) } else { e.into() })?;
        let change =
            Change { kind: history::kind::BUILD, action: "publish", before: None, after: Some(history::json(b)?) };
        history::record(&*tx, Place::System, &b.publisher, None, change, b.publish_date).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One build.
    pub async fn build(&self, id: &BuildId) -> Result<Build> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE build_id = $1"), &[&id.as_str()])
            .await?
            .ok_or_else(|| Error::NotFound(format!("Build {id} does not exist.")))?;
        build_from_row(&row, "")
    }

    /// Builds of a name or of a commit (full or short), optionally of a branch and published
    /// in a time range, newest first, one page (1-based).
    pub async fn search_builds(&self, q: &BuildSearch) -> Result<Vec<Build>> {
        let client = self.client().await?;
        let offset = (q.page_index.max(1) - 1).saturating_mul(q.page_size);
        let short: Option<String> = q.commit.as_ref().map(|c| c.chars().take(7).collect());
        let rows = client
            .query(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM builds
                     WHERE ($1::text IS NULL OR build_name = $1)
                       AND ($2::text IS NULL OR (scm_commit_7 = $2 AND starts_with(scm_commit, $3)))
                       AND ($4::text IS NULL OR scm_branch = $4)
                       AND ($5::timestamptz IS NULL OR publish_date < $5)
                       AND ($6::timestamptz IS NULL OR publish_date > $6)
                     ORDER BY publish_date DESC, build_id LIMIT $7 OFFSET $8"
                ),
                &[
                    &q.name.as_ref().map(BuildName::as_str),
                    &short,
                    &q.commit,
                    &q.branch,
                    &q.before.map(ts),
                    &q.after.map(ts),
                    &q.page_size,
                    &offset,
                ],
            )
            .await?;
        rows.iter().map(|r| build_from_row(r, "")).collect()
    }

    /// Deletes a build no deploy uses (409 while one does: its history needs it).
    pub async fn delete_build(&self, id: &BuildId, operator: &str, now: EpochMs) -> Result<Build> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE build_id = $1 FOR UPDATE"), &[&id.as_str()])
            .await?
            .ok_or_else(|| Error::NotFound(format!("Build {id} does not exist.")))?;
        let build = build_from_row(&row, "")?;
        let used: i64 = tx.query_one("SELECT count(*) FROM deploys WHERE build_id = $1", &[&id.as_str()]).await?.get(0);
        if used > 0 {
            return Err(Error::Conflict(format!("build {id} is used by {used} deploy(s); it cannot be deleted")));
        }
        tx.execute("DELETE FROM builds WHERE build_id = $1", &[&id.as_str()]).await.map_err(|e| {
            // A deploy made meanwhile (it locks the build's key, so only before this lock).
            if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
                Error::Conflict(format!("build {id} is used by a deploy; it cannot be deleted"))
            } else {
                e.into()
            }
        })?;
        let change =
            Change { kind: history::kind::BUILD, action: "delete", before: Some(history::json(&build)?), after: None };
        history::record(&*tx, Place::System, operator, None, change, now).await?;
        tx.commit().await?;
        Ok(build)
    }

    /// Distinct build names containing `filter` (any when `None`), in order, one page.
    pub async fn build_names(&self, filter: Option<&str>, page_index: i64, page_size: i64) -> Result<Vec<String>> {
        let client = self.client().await?;
        let offset = (page_index.max(1) - 1).saturating_mul(page_size);
        client
            .query(
                "SELECT DISTINCT build_name FROM builds WHERE ($1::text IS NULL OR strpos(build_name, $1) > 0)
                 ORDER BY build_name LIMIT $2 OFFSET $3",
                &[&filter, &page_size, &offset],
            )
            .await?
            .iter()
            .map(|r| get(r, "build_name"))
            .collect()
    }

    /// The branches builds of a name were published from, in order.
    pub async fn build_branches(&self, name: &BuildName) -> Result<Vec<String>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT DISTINCT scm_branch FROM builds WHERE build_name = $1 ORDER BY scm_branch",
                &[&name.as_str()],
            )
            .await?
            .iter()
            .map(|r| get(r, "scm_branch"))
            .collect()
    }
}
