//! Tags: marks on builds, stages and the system. A build tag is stored against the build's
//! name with the tagged build's facts (commit, repository, branch, commit date), which is what
//! the effective-tag rule (`schema::rules::build_tag`) walks.

use std::collections::BTreeMap;

use schema::model::{Build, BuildWithTag, NewTag, Tag};
use schema::rules::build_tag::{self, BuildFacts, BuildTag};
use schema::time::EpochMs;
use schema::{BuildId, BuildName, TagTargetType, TagValue};
use tokio_postgres::{GenericClient, Row};

use crate::builds::build_from_row;
use crate::history::{self, Change, Place};
use crate::rows::{get, get_ms, get_opt_ms, get_parsed, ts};
use crate::{Error, Result, Store};

const TAG_COLUMNS: &str = "tag_id, value, target_type, target_id, build_id, build_commit, build_repo, build_branch, \
     build_commit_date, operator, created_date, comments, meta_info";

fn tag_from_row(r: &Row) -> Result<Tag> {
    Ok(Tag {
        id: get(r, "tag_id")?,
        value: get_parsed(r, "value")?,
        target_type: get_parsed(r, "target_type")?,
        target_id: get(r, "target_id")?,
        build_id: get(r, "build_id")?,
        operator: get(r, "operator")?,
        created_date: get_ms(r, "created_date")?,
        comments: get(r, "comments")?,
        meta_info: get(r, "meta_info")?,
    })
}

fn build_tag_from_row(r: &Row) -> Result<BuildTag> {
    Ok(BuildTag {
        id: get(r, "tag_id")?,
        value: get_parsed(r, "value")?,
        commit: get::<Option<String>>(r, "build_commit")?.unwrap_or_default(),
        repo: get::<Option<String>>(r, "build_repo")?.unwrap_or_default(),
        branch: get::<Option<String>>(r, "build_branch")?.unwrap_or_default(),
        commit_date: get_opt_ms(r, "build_commit_date")?.unwrap_or(0),
        created: get_ms(r, "created_date")?,
    })
}

/// The facts of a build the effective-tag rule reads.
pub(crate) fn facts(b: &Build) -> BuildFacts<'_> {
    BuildFacts { commit: &b.commit, repo: &b.repo, branch: &b.branch, commit_date: b.commit_date }
}

/// Tags a build inside the caller's transaction (a rollback marking the build it leaves).
pub(crate) async fn tag_build(
    c: &impl GenericClient,
    build: &Build,
    value: TagValue,
    comments: Option<&str>,
    operator: &str,
    now: EpochMs,
) -> Result<Tag> {
    let meta = serde_json::to_string(build).map_err(|e| Error::Corrupt(e.to_string()))?;
    let row = c
        .query_one(
            &format!(
                "INSERT INTO tags ({TAG_COLUMNS}) VALUES ($1, $2, 'BUILD', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 RETURNING {TAG_COLUMNS}"
            ),
            &[
                &uuid::Uuid::new_v4().simple().to_string(),
                &value.as_str(),
                &build.name.as_str(),
                &build.id.as_str(),
                &build.commit,
                &build.repo,
                &build.branch,
                &ts(build.commit_date),
                &operator,
                &ts(now),
                &comments,
                &meta,
            ],
        )
        .await?;
    tag_from_row(&row)
}

/// The build tags of a build name (any order).
pub(crate) async fn build_tags(c: &impl GenericClient, name: &BuildName) -> Result<Vec<BuildTag>> {
    c.query(
        &format!("SELECT {TAG_COLUMNS} FROM tags WHERE target_type = 'BUILD' AND target_id = $1"),
        &[&name.as_str()],
    )
    .await?
    .iter()
    .map(build_tag_from_row)
    .collect()
}

/// Stores a tag inside the caller's transaction (see [`Store::insert_tag`]).
pub(crate) async fn insert(client: &impl GenericClient, tag: &NewTag, operator: &str, now: EpochMs) -> Result<Tag> {
    match tag.target_type {
        TagTargetType::Build => {
            let id = BuildId::parse(tag.target_id.as_str())
                .map_err(|e| Error::Invalid(schema::model::Invalid { field: "targetId", message: e.to_string() }))?;
            let row = client
                .query_opt(
                    "SELECT build_id, build_name, artifact_url, artifact_sha256, scm, scm_repo, scm_branch,
                             scm_commit, scm_commit_7, commit_info, commit_date, publish_info, publisher, publish_date
                         FROM builds WHERE build_id = $1",
                    &[&id.as_str()],
                )
                .await?
                .ok_or_else(|| Error::NotFound(format!("Build {id} does not exist.")))?;
            let build = build_from_row(&row, "")?;
            tag_build(client, &build, tag.value, tag.comments.as_deref(), operator, now).await
        }
        TagTargetType::Environment | TagTargetType::Teletraan => {
            if tag.target_type == TagTargetType::Environment {
                let exists =
                    client.query_opt("SELECT 1 FROM environs WHERE env_id = $1", &[&tag.target_id]).await?.is_some();
                if !exists {
                    return Err(Error::NotFound(format!("Stage {} does not exist.", tag.target_id)));
                }
            }
            let row = client
                .query_one(
                    &format!(
                        "INSERT INTO tags (tag_id, value, target_type, target_id, operator, created_date, comments)
                             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {TAG_COLUMNS}"
                    ),
                    &[
                        &uuid::Uuid::new_v4().simple().to_string(),
                        &tag.value.as_str(),
                        &tag.target_type.as_str(),
                        &tag.target_id,
                        &operator,
                        &ts(now),
                        &tag.comments,
                    ],
                )
                .await?;
            tag_from_row(&row)
        }
    }
}

impl Store {
    /// Stores a tag. A BUILD tag's target is a build id: it is stored against the build's
    /// name with its facts; a stage tag needs an existing stage id.
    pub async fn insert_tag(&self, tag: &NewTag, operator: &str, now: EpochMs) -> Result<Tag> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let made = insert(&*tx, tag, operator, now).await?;
        let change =
            Change { kind: history::kind::TAG, action: "create", before: None, after: Some(history::json(&made)?) };
        history::record(&*tx, Place::System, operator, None, change, now).await?;
        tx.commit().await?;
        Ok(made)
    }

    /// One tag.
    pub async fn tag(&self, id: &str) -> Result<Tag> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {TAG_COLUMNS} FROM tags WHERE tag_id = $1"), &[&id])
            .await?
            .ok_or_else(|| Error::NotFound(format!("Tag {id} does not exist.")))?;
        tag_from_row(&row)
    }

    /// Deletes a tag.
    pub async fn delete_tag(&self, id: &str, operator: &str, now: EpochMs) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(&format!("DELETE FROM tags WHERE tag_id = $1 RETURNING {TAG_COLUMNS}"), &[&id])
            .await?
            .ok_or_else(|| Error::NotFound(format!("Tag {id} does not exist.")))?;
        let gone = tag_from_row(&row)?;
        let change =
            Change { kind: history::kind::TAG, action: "delete", before: Some(history::json(&gone)?), after: None };
        history::record(&*tx, Place::System, operator, None, change, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tags of a target (a build name, a stage id, `TELETRAAN`), newest first.
    pub async fn tags_of_target(&self, target_id: &str, limit: i64) -> Result<Vec<Tag>> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {TAG_COLUMNS} FROM tags WHERE target_id = $1 ORDER BY created_date DESC, tag_id LIMIT $2"
                ),
                &[&target_id, &limit],
            )
            .await?
            .iter()
            .map(tag_from_row)
            .collect()
    }

    /// Tags with a value, newest first.
    pub async fn tags_with_value(&self, value: TagValue, limit: i64) -> Result<Vec<Tag>> {
        let client = self.client().await?;
        client
            .query(
                &format!("SELECT {TAG_COLUMNS} FROM tags WHERE value = $1 ORDER BY created_date DESC, tag_id LIMIT $2"),
                &[&value.as_str(), &limit],
            )
            .await?
            .iter()
            .map(tag_from_row)
            .collect()
    }

    /// Builds with their effective tags: the tags of each build name are read once.
    pub async fn with_effective_tags(&self, builds: Vec<Build>) -> Result<Vec<BuildWithTag>> {
        let client = self.client().await?;
        let mut by_name: BTreeMap<BuildName, Vec<BuildTag>> = BTreeMap::new();
        for b in &builds {
            if !by_name.contains_key(&b.name) {
                by_name.insert(b.name.clone(), build_tags(&**client, &b.name).await?);
            }
        }
        let mut out = Vec::with_capacity(builds.len());
        for build in builds {
            let tags = by_name.get(&build.name).map(Vec::as_slice).unwrap_or_default();
            let tag = match build_tag::effective(&facts(&build), tags) {
                Some(t) => {
                    let row = client
                        .query_opt(&format!("SELECT {TAG_COLUMNS} FROM tags WHERE tag_id = $1"), &[&t.id])
                        .await?;
                    row.as_ref().map(tag_from_row).transpose()?
                }
                None => None,
            };
            out.push(BuildWithTag { build, tag });
        }
        Ok(out)
    }

    /// The effective tag of a build (`None` when no tag reaches it).
    pub async fn effective_tag(&self, id: &BuildId) -> Result<Option<Tag>> {
        let build = self.build(id).await?;
        let client = self.client().await?;
        let tags = build_tags(&**client, &build.name).await?;
        match build_tag::effective(&facts(&build), &tags) {
            Some(t) => Ok(Some(self.tag(&t.id).await?)),
            None => Ok(None),
        }
    }
}
