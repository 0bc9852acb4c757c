//! Pipelines: each stage's auto-deploy settings, the switch to MANUAL when a person takes
//! over, and one round of the auto-promoter for a stage (the rule is
//! `schema::rules::promote`; this gathers its facts under the stage's lock and applies it).

use std::collections::BTreeMap;

use schema::model::{AUTO_PROMOTER, Environ, FROM_BUILDS, Invalid, Promote, PromoteInput};
use schema::rules::build_tag;
use schema::rules::promote::{self, Candidate, Current, Gate, Source};
use schema::time::EpochMs;
use schema::{DeployAction, DeployId, EnvId, EnvName, EnvState, PromoteDisablePolicy, PromoteType, StageName};
use tokio_postgres::{GenericClient, Row};

use crate::actions::{ActionRequest, deploy_action};
use crate::builds::build_from_row;
use crate::deploys::{DEPLOY_COLUMNS_OF_D, NewDeploy, create, deploy_from_row};
use crate::history::{self, Change, Place, json, kind};
use crate::rows::{get, get_ms, get_opt_parsed, get_parsed, ts};
use crate::stages::{lock_stage, lock_stage_by_id};
use crate::tags::{build_tags, facts};
use crate::{Error, Result, Store};

/// Candidates looked at per round (Teletraan: 100).
const MAX_CANDIDATES: i64 = 100;

fn promote_from_row(env_id: &EnvId, r: &Row) -> Result<Promote> {
    Ok(Promote {
        env_id: env_id.clone(),
        promote_type: get_parsed(r, "promote_type")?,
        pred_stage: get(r, "pred_stage")?,
        queue_size: get(r, "queue_size")?,
        schedule: get(r, "schedule")?,
        delay: get(r, "delay")?,
        disable_policy: get_opt_parsed(r, "disable_policy")?.unwrap_or(PromoteDisablePolicy::Auto),
        fail_policy: get_parsed(r, "fail_policy")?,
        last_operator: get(r, "last_operator")?,
        last_update: get_ms(r, "last_update")?,
    })
}

/// A stage's settings (the defaults when it has none).
pub(crate) async fn load(c: &impl GenericClient, env_id: &EnvId) -> Result<Promote> {
    let row = c
        .query_opt(
            "SELECT promote_type, pred_stage, queue_size, schedule, delay, disable_policy, fail_policy, last_operator,
                 last_update
             FROM promotes WHERE env_id = $1",
            &[&env_id.as_str()],
        )
        .await?;
    match row {
        Some(r) => promote_from_row(env_id, &r),
        None => Ok(Promote::default_for(env_id.clone())),
    }
}

async fn save(c: &impl GenericClient, p: &Promote) -> Result<()> {
    c.execute(
        "INSERT INTO promotes (env_id, promote_type, pred_stage, queue_size, schedule, delay, disable_policy, fail_policy,
             last_operator, last_update)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (env_id) DO UPDATE SET promote_type = EXCLUDED.promote_type, pred_stage = EXCLUDED.pred_stage,
             queue_size = EXCLUDED.queue_size, schedule = EXCLUDED.schedule, delay = EXCLUDED.delay,
             disable_policy = EXCLUDED.disable_policy, fail_policy = EXCLUDED.fail_policy,
             last_operator = EXCLUDED.last_operator, last_update = EXCLUDED.last_update",
        &[
            &p.env_id.as_str(),
            &p.promote_type.as_str(),
            &p.pred_stage,
            &p.queue_size,
            &p.schedule,
            &p.delay,
            &p.disable_policy.as_str(),
            &p.fail_policy.as_str(),
            &p.last_operator,
            &ts(p.last_update),
        ],
    )
    .await?;
    Ok(())
}

/// When a person deploys, promotes, rolls back or restarts a stage on AUTO whose disable
/// policy is AUTO, the stage goes MANUAL: a person took over. The auto-promoter's own deploys
/// do not count.
pub(crate) async fn person_took_over(c: &impl GenericClient, e: &Environ, operator: &str, now: EpochMs) -> Result<()> {
    let env_id = &e.id;
    if operator == AUTO_PROMOTER {
        return Ok(());
    }
    let n = c
        .execute(
            "UPDATE promotes SET promote_type = 'MANUAL', last_operator = $2, last_update = $3
             WHERE env_id = $1 AND promote_type = 'AUTO' AND disable_policy = 'AUTO'",
            &[&env_id.as_str(), &operator, &ts(now)],
        )
        .await?;
    if n > 0 {
        tracing::info!(env_id = %env_id, operator, "auto-promotion switched off: a person deployed");
        let change = Change {
            kind: kind::PROMOTE,
            action: "switched to MANUAL: a person deployed",
            before: Some(serde_json::json!({"type": "AUTO"})),
            after: Some(serde_json::json!({"type": "MANUAL"})),
        };
        history::record(c, Place::Stage(e), operator, None, change, now).await?;
    }
    Ok(())
}

async fn switch_to_manual(c: &impl GenericClient, e: &Environ, why: &str, now: EpochMs) -> Result<()> {
    c.execute(
        "UPDATE promotes SET promote_type = 'MANUAL', last_operator = $2, last_update = $3 WHERE env_id = $1",
        &[&e.id.as_str(), &AUTO_PROMOTER, &ts(now)],
    )
    .await?;
    let change = Change {
        kind: kind::PROMOTE,
        action: why,
        before: Some(serde_json::json!({"type": "AUTO"})),
        after: Some(serde_json::json!({"type": "MANUAL"})),
    };
    history::record(c, Place::Stage(e), AUTO_PROMOTER, None, change, now).await
}

/// The stage's newest SUCCEEDED deploy whose build is not marked bad (the target of a
/// ROLLBACK fail policy: going back to a bad build would be no rescue).
async fn last_good_succeeded(c: &impl GenericClient, e: &schema::model::Environ) -> Result<Option<DeployId>> {
    let rows = c
        .query(
            "SELECT d.deploy_id, b.build_id, b.build_name, b.artifact_url, b.artifact_sha256, b.scm, b.scm_repo,
                 b.scm_branch, b.scm_commit, b.scm_commit_7, b.commit_info, b.commit_date, b.publish_info, b.publisher,
                 b.publish_date
             FROM deploys d JOIN builds b ON b.build_id = d.build_id
             WHERE d.env_id = $1 AND d.state = 'SUCCEEDED' AND d.deploy_id IS DISTINCT FROM $2
             ORDER BY d.start_date DESC LIMIT $3",
            &[&e.id.as_str(), &e.deploy_id.as_ref().map(|d| d.as_str()), &MAX_CANDIDATES],
        )
        .await?;
    let mut tags: BTreeMap<String, Vec<schema::rules::build_tag::BuildTag>> = BTreeMap::new();
    for r in &rows {
        let build = build_from_row(r, "")?;
        if !tags.contains_key(build.name.as_str()) {
            tags.insert(build.name.as_str().to_string(), build_tags(c, &build.name).await?);
        }
        let of_name = tags.get(build.name.as_str()).map(Vec::as_slice).unwrap_or_default();
        if !build_tag::is_bad(&facts(&build), of_name) {
            return Ok(Some(crate::rows::get_id(r, "deploy_id")?));
        }
    }
    Ok(None)
}

/// What one round of the auto-promoter did for a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoteOutcome {
    /// Another worker holds the stage.
    Busy,
    /// The stage is gone, paused, disabled, or not on AUTO.
    Skipped,
    /// The current deploy is still rolling out or awaiting its verdict.
    Waiting,
    /// Nothing (new enough, good enough, or in the schedule's window) to promote.
    NothingToDo,
    /// Promoted: the new deploy.
    Promoted(DeployId),
    /// The current deploy failed: switched to MANUAL.
    Disabled,
    /// The current deploy failed: rolled back (the new deploy, when there was a deploy to go
    /// back to) and switched to MANUAL.
    RolledBack(Option<DeployId>),
}

impl Store {
    /// A stage's pipeline settings (the defaults when none were set).
    pub async fn promote(&self, env: &EnvName, stage: &StageName) -> Result<Promote> {
        let e = self.stage(env, stage).await?;
        let client = self.client().await?;
        load(&**client, &e.id).await
    }

    /// Changes a stage's pipeline settings. `predStage` must be another stage of the
    /// environment (or `BUILD`), and no loop of promotions may form.
    pub async fn set_promote(
        &self,
        env: &EnvName,
        stage: &StageName,
        input: PromoteInput,
        operator: &str,
        now: EpochMs,
    ) -> Result<Promote> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Every stage of the environment, this one included, locked in name order first: two
        // changes can neither make a loop together nor wait for each other's stage.
        let rows = tx
            .query(
                "SELECT e.stage_name, p.pred_stage FROM environs e LEFT JOIN promotes p ON p.env_id = e.env_id
                 WHERE e.env_name = $1 ORDER BY e.stage_name FOR UPDATE OF e",
                &[&env.as_str()],
            )
            .await?;
        let mut preds: BTreeMap<String, Option<String>> = BTreeMap::new();
        for r in &rows {
            preds.insert(get(r, "stage_name")?, get(r, "pred_stage")?);
        }
        let e = lock_stage(&*tx, env, stage).await?;
        let mut p = load(&*tx, &e.id).await?;
        let before = json(&p)?;
        p.apply(input, operator, now)?;
        if let Some(pred) = p.pred_stage.as_deref().filter(|p| *p != FROM_BUILDS) {
            if !preds.contains_key(pred) {
                return Err(Error::Invalid(Invalid {
                    field: "predStage",
                    message: format!("environment {env} has no stage {pred:?} (name a stage of it, or BUILD)"),
                }));
            }
            let pred_of = |s: &str| preds.get(s).and_then(|p| p.as_deref());
            if let Some(path) = promote::cycle(stage.as_str(), pred, pred_of) {
                return Err(Error::Invalid(Invalid {
                    field: "predStage",
                    message: format!("promotions would go round in a loop: {}", path.join(" ← ")),
                }));
            }
        }
        save(&*tx, &p).await?;
        let change = Change { kind: kind::PROMOTE, action: "update", before: Some(before), after: Some(json(&p)?) };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(p)
    }

    /// Stages on AUTO promotion.
    pub async fn auto_promoted_stages(&self) -> Result<Vec<EnvId>> {
        let client = self.client().await?;
        client
            .query("SELECT env_id FROM promotes WHERE promote_type = 'AUTO' ORDER BY env_id", &[])
            .await?
            .iter()
            .map(|r| crate::rows::get_id(r, "env_id"))
            .collect()
    }

    /// One round of the auto-promoter for a stage, at `now`, with `buffer_ms` after each fire
    /// time of a schedule. A stage another worker holds is skipped.
    pub async fn auto_promote(&self, env_id: &EnvId, now: EpochMs, buffer_ms: i64) -> Result<PromoteOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(e) = lock_stage_by_id(&*tx, env_id, true).await? else {
            let exists = tx.query_opt("SELECT 1 FROM environs WHERE env_id = $1", &[&env_id.as_str()]).await?;
            return Ok(if exists.is_some() { PromoteOutcome::Busy } else { PromoteOutcome::Skipped });
        };
        let p = load(&*tx, env_id).await?;
        let Some(pred) = p.pred_stage.clone() else { return Ok(PromoteOutcome::Skipped) };
        let frozen = crate::freeze::frozen(&*tx).await?.is_some();
        if p.promote_type != PromoteType::Auto
            || e.env_state != EnvState::Normal
            || !schema::rules::freeze::takes_new_builds(e.state, frozen)
        {
            return Ok(PromoteOutcome::Skipped);
        }
        let source = if pred == FROM_BUILDS { Source::Builds } else { Source::Stage };
        // The current deploy and what the rule needs of it.
        let current = match &e.deploy_id {
            Some(id) => {
                let row = tx
                    .query_opt(
                        &format!(
                            "SELECT {DEPLOY_COLUMNS_OF_D}, b.publish_date AS build_published,
                                 (SELECT o.start_date FROM deploys o JOIN environs oe ON oe.env_id = o.env_id
                                  WHERE o.deploy_id = d.from_deploy AND oe.env_name = $2 AND oe.stage_name = $3)
                                  AS origin_start
                             FROM deploys d JOIN builds b ON b.build_id = d.build_id WHERE d.deploy_id = $1"
                        ),
                        &[&id.as_str(), &e.env_name.as_str(), &pred],
                    )
                    .await?;
                match row {
                    Some(r) => {
                        let d = deploy_from_row(&r)?;
                        Some(Current {
                            state: d.state,
                            acceptance: d.acceptance_status,
                            start_date: d.start_date,
                            build_published: get_ms(&r, "build_published")?,
                            origin_start: crate::rows::get_opt_ms(&r, "origin_start")?,
                        })
                    }
                    None => None,
                }
            }
            None => None,
        };
        match promote::gate(current.as_ref(), p.fail_policy) {
            Gate::Open => {}
            Gate::Wait => return Ok(PromoteOutcome::Waiting),
            Gate::Skip => return Ok(PromoteOutcome::Skipped),
            Gate::Disable => {
                switch_to_manual(&*tx, &e, "switched to MANUAL: the deploy failed (fail policy DISABLE)", now).await?;
                tx.commit().await?;
                tracing::warn!(env_id = %env_id, "current deploy failed: auto-promotion switched off");
                return Ok(PromoteOutcome::Disabled);
            }
            Gate::RollbackThenDisable => {
                let target = last_good_succeeded(&*tx, &e).await?;
                tx.batch_execute("SAVEPOINT rollback").await?;
                let description = Some("Auto rollback: the deploy failed".to_string());
                let request = ActionRequest {
                    from: None,
                    to: target.as_ref(),
                    description: &description,
                    operator: AUTO_PROMOTER,
                    mark_bad: false,
                };
                let deploy = match target {
                    // Nothing good succeeded before: there is nothing to go back to.
                    None => None,
                    Some(_) => match deploy_action(&*tx, e.clone(), DeployAction::Rollback, request, now).await {
                        Ok(v) => v.get("id").and_then(|v| v.as_str()).and_then(|s| DeployId::parse(s).ok()),
                        Err(Error::NotFound(_) | Error::Conflict(_)) => {
                            tx.batch_execute("ROLLBACK TO SAVEPOINT rollback").await?;
                            None
                        }
                        Err(other) => return Err(other),
                    },
                };
                let why = "switched to MANUAL: the deploy failed and was rolled back (fail policy ROLLBACK)";
                switch_to_manual(&*tx, &e, why, now).await?;
                if let Some(d) = &deploy {
                    let after = Some(serde_json::json!({"deployId": d.as_str()}));
                    let change = Change { kind: kind::ACTION, action: "ROLLBACK", before: None, after };
                    history::record(&*tx, Place::Stage(&e), AUTO_PROMOTER, None, change, now).await?;
                }
                tx.commit().await?;
                tracing::warn!(env_id = %env_id, rollback = ?deploy, "current deploy failed: rolled back, auto-promotion switched off");
                return Ok(PromoteOutcome::RolledBack(deploy));
            }
        }
        let start = promote::window_start(current.as_ref(), source);
        let end = promote::window_end(now, p.delay);
        let tags = build_tags(&*tx, &e.build_name).await?;
        // Candidates newest first: (what to promote, when it appeared, its build).
        let rows = match source {
            Source::Builds => {
                tx.query(
                    "SELECT build_id, build_name, artifact_url, artifact_sha256, scm, scm_repo, scm_branch, scm_commit,
                         scm_commit_7, commit_info, commit_date, publish_info, publisher, publish_date
                     FROM builds WHERE build_name = $1 AND scm_branch = $2 AND publish_date > $3 AND publish_date <= $4
                     ORDER BY publish_date DESC, build_id LIMIT $5",
                    &[&e.build_name.as_str(), &e.branch, &ts(start), &ts(end), &MAX_CANDIDATES],
                )
                .await?
            }
            Source::Stage => {
                tx.query(
                    "SELECT d.deploy_id AS source_deploy, d.start_date AS source_start, b.build_id, b.build_name,
                         b.artifact_url, b.artifact_sha256, b.scm, b.scm_repo, b.scm_branch, b.scm_commit, b.scm_commit_7,
                         b.commit_info, b.commit_date, b.publish_info, b.publisher, b.publish_date
                     FROM deploys d JOIN environs pe ON pe.env_id = d.env_id JOIN builds b ON b.build_id = d.build_id
                     WHERE pe.env_name = $1 AND pe.stage_name = $2 AND d.deploy_type IN ('REGULAR', 'HOTFIX')
                       AND d.acc_status = 'ACCEPTED' AND d.start_date > $3 AND d.start_date <= $4
                     ORDER BY d.start_date DESC, d.deploy_id LIMIT $5",
                    &[&e.env_name.as_str(), &pred, &ts(start), &ts(end), &MAX_CANDIDATES],
                )
                .await?
            }
        };
        let mut candidates = Vec::with_capacity(rows.len());
        for r in &rows {
            let build = build_from_row(r, "")?;
            let at = match source {
                Source::Builds => build.publish_date,
                Source::Stage => get_ms(r, "source_start")?,
            };
            // A build of another name cannot be deployed here; it is not a candidate.
            let bad = build.name != e.build_name || build_tag::is_bad(&facts(&build), &tags);
            candidates.push(Candidate { at, bad });
        }
        let cron = p.cron();
        let Some(i) = promote::choose(&candidates, p.queue_size, cron.as_ref(), p.delay, buffer_ms, now) else {
            return Ok(PromoteOutcome::NothingToDo);
        };
        let r = &rows[i];
        let build = build_from_row(r, "")?;
        let (from_deploy, description) = match source {
            Source::Builds => (None, format!("Auto promote build {}", build.id)),
            Source::Stage => {
                let d: DeployId = crate::rows::get_id(r, "source_deploy")?;
                (Some(d.clone()), format!("Auto promote deploy {d}"))
            }
        };
        let new = NewDeploy {
            build_id: &build.id,
            deploy_type: schema::DeployType::Regular,
            description: Some(description),
            operator: AUTO_PROMOTER,
            alias: None,
            from_deploy,
        };
        let place = e.clone();
        let deploy = create(&*tx, e, new, now).await?;
        let change = Change { kind: kind::ACTION, action: "AUTO_PROMOTE", before: None, after: Some(json(&deploy)?) };
        history::record(&*tx, Place::Stage(&place), AUTO_PROMOTER, None, change, now).await?;
        tx.commit().await?;
        tracing::info!(env_id = %env_id, deploy.id = %deploy.id, build.id = %build.id, "auto-promoted");
        Ok(PromoteOutcome::Promoted(deploy.id))
    }
}
