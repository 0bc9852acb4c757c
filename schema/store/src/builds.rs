//! Builds: immutable artifact records.

use schema::model::Build;
use schema::*;
use tokio_postgres::Row;

use crate::history::{self, Change, Place};
use crate::rows::*;
use crate::{Error, Result, Store};

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

    /// Builds of a name (optionally of a branch), newest first, one page (1-based).
    pub async fn builds_by_name(
        &self,
        name: &BuildName,
        branch: Option<&str>,
        page_index: i64,
        page_size: i64,
    ) -> Result<Vec<Build>> {
        let client = self.client().await?;
        let offset = (page_index.max(1) - 1).saturating_mul(page_size);
        let rows = client
            .query(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE build_name = $1 AND ($2::text IS NULL OR scm_branch = $2)
                     ORDER BY publish_date DESC, build_id LIMIT $3 OFFSET $4"
                ),
                &[&name.as_str(), &branch, &page_size, &offset],
            )
            .await?;
        rows.iter().map(|r| build_from_row(r, "")).collect()
    }

    /// Builds of a commit (full or short), newest first.
    pub async fn builds_by_commit(&self, commit: &str, page_index: i64, page_size: i64) -> Result<Vec<Build>> {
        let client = self.client().await?;
        let offset = (page_index.max(1) - 1).saturating_mul(page_size);
        let short: String = commit.chars().take(7).collect();
        let rows = client
            .query(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE scm_commit_7 = $1 AND starts_with(scm_commit, $2)
                     ORDER BY publish_date DESC, build_id LIMIT $3 OFFSET $4"
                ),
                &[&short, &commit, &page_size, &offset],
            )
            .await?;
        rows.iter().map(|r| build_from_row(r, "")).collect()
    }
}
