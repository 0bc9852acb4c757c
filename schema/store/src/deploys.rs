//! Deploys: creating one (with the retirement of the previous one and the first admissions),
//! evaluating the current one, and reading them.

use schema::bus::{DeployEvent, StageAgents, StageDeploy};
use schema::model::{Deploy, Environ, Invalid};
use schema::rules::acceptance::{self, AcceptanceEvent};
use schema::rules::deploy_state::{self, DeployFacts, Progress};
use schema::rules::schedule;
use schema::time::EpochMs;
use schema::{
    AcceptanceStatus, BuildId, BuildName, DeployId, DeployState, DeployType, EnvId, EnvName, EnvState, ScheduleState,
    StageName,
};
use tokio_postgres::{GenericClient, Row};

use crate::live::Refreshed;
use crate::outbox::{Exchange, enqueue};
use crate::rows::{get, get_id, get_ms, get_opt_id, get_opt_ms, get_opt_parsed, get_parsed, ts};
use crate::stages::{announce_stage, lock_stage_by_id};
use crate::{Error, Result, Store, agents, schedules};

pub(crate) const DEPLOY_COLUMNS: &str = "deploy_id, env_id, build_id, deploy_type, alias, state, start_date, operator, last_update, \
     description, suc_total, fail_total, total, suc_date, acc_status, from_deploy, pending_verdict";

/// The same columns of `deploys d` (for joins).
pub(crate) const DEPLOY_COLUMNS_OF_D: &str = "d.deploy_id, d.env_id, d.build_id, d.deploy_type, d.alias, d.state, d.start_date, \
     d.operator, d.last_update, d.description, d.suc_total, d.fail_total, d.total, d.suc_date, d.acc_status, d.from_deploy, \
     d.pending_verdict";

pub(crate) fn deploy_from_row(r: &Row) -> Result<Deploy> {
    Ok(Deploy {
        id: get_id(r, "deploy_id")?,
        alias: get_opt_id(r, "alias")?,
        env_id: get_id(r, "env_id")?,
        build_id: get_id(r, "build_id")?,
        deploy_type: get_parsed(r, "deploy_type")?,
        state: get_parsed(r, "state")?,
        start_date: get_ms(r, "start_date")?,
        operator: get(r, "operator")?,
        last_update_date: get_ms(r, "last_update")?,
        description: get(r, "description")?,
        success_total: get(r, "suc_total")?,
        fail_total: get(r, "fail_total")?,
        total: get(r, "total")?,
        success_date: get_opt_ms(r, "suc_date")?,
        acceptance_status: get_parsed(r, "acc_status")?,
        from_deploy_id: get_opt_id(r, "from_deploy")?,
        pending_verdict: get_opt_parsed(r, "pending_verdict")?,
    })
}

pub(crate) async fn lock_deploy(c: &impl GenericClient, id: &DeployId) -> Result<Option<Deploy>> {
    let row = c
        .query_opt(&format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE deploy_id = $1 FOR UPDATE"), &[&id.as_str()])
        .await?;
    row.as_ref().map(deploy_from_row).transpose()
}

pub(crate) async fn event(
    c: &impl GenericClient,
    kind: &str,
    e: &Environ,
    deploy: &Deploy,
    now: EpochMs,
) -> Result<()> {
    let event = DeployEvent {
        kind: kind.to_string(),
        env_name: e.env_name.clone(),
        stage_name: e.stage_name.clone(),
        deploy: deploy.clone(),
        at: now,
    };
    enqueue(c, Exchange::Events, kind, &event).await
}

/// What a new deploy is.
pub(crate) struct NewDeploy<'a> {
    pub build_id: &'a BuildId,
    pub deploy_type: DeployType,
    pub description: Option<String>,
    pub operator: &'a str,
    pub alias: Option<DeployId>,
    pub from_deploy: Option<DeployId>,
}

/// Creates a deploy on a locked stage: inserts it, retires the previous one, makes it current,
/// announces it and admits the first hosts. Validation happens before any write.
pub(crate) async fn create(c: &impl GenericClient, mut e: Environ, new: NewDeploy<'_>, now: EpochMs) -> Result<Deploy> {
    // A disabled stage or a frozen system takes no new build, whoever asks (people, the
    // auto-promoter): checked here, where every deploy is made, under the stage's lock.
    crate::freeze::check_deploy(c, &e, new.deploy_type).await?;
    let build_name: Option<String> = c
        // FOR KEY SHARE: the build cannot be deleted before this deploy commits.
        .query_opt("SELECT build_name FROM builds WHERE build_id = $1 FOR KEY SHARE", &[&new.build_id.as_str()])
        .await?
        .map(|r| r.get(0));
    let Some(build_name) = build_name else {
        return Err(Error::NotFound(format!("Build {} does not exist.", new.build_id)));
    };
    if build_name != e.build_name.as_str() {
        return Err(Error::Invalid(Invalid {
            field: "buildId",
            message: format!(
                "build {} is named {build_name:?} but stage {}/{} deploys builds named {:?}",
                new.build_id,
                e.env_name,
                e.stage_name,
                e.build_name.as_str()
            ),
        }));
    }
    let total: i64 = c.query_one("SELECT count(*) FROM agents WHERE env_id = $1", &[&e.id.as_str()]).await?.get(0);
    let deploy = Deploy {
        id: DeployId::generate(),
        alias: new.alias,
        env_id: e.id.clone(),
        build_id: new.build_id.clone(),
        deploy_type: new.deploy_type,
        state: DeployState::Running,
        start_date: now,
        operator: new.operator.to_string(),
        last_update_date: now,
        description: new.description,
        success_total: 0,
        fail_total: 0,
        total: i32::try_from(total).unwrap_or(i32::MAX),
        success_date: None,
        acceptance_status: AcceptanceStatus::PendingDeploy,
        from_deploy_id: new.from_deploy,
        pending_verdict: None,
    };
    c.execute(
        &format!("INSERT INTO deploys ({DEPLOY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"),
        &[
            &deploy.id.as_str(),
            &deploy.env_id.as_str(),
            &deploy.build_id.as_str(),
            &deploy.deploy_type.as_str(),
            &deploy.alias.as_ref().map(|a| a.as_str()),
            &deploy.state.as_str(),
            &ts(deploy.start_date),
            &deploy.operator,
            &ts(deploy.last_update_date),
            &deploy.description,
            &deploy.success_total,
            &deploy.fail_total,
            &deploy.total,
            &deploy.success_date.map(ts),
            &deploy.acceptance_status.as_str(),
            &deploy.from_deploy_id.as_ref().map(|d| d.as_str()),
            &deploy.pending_verdict.map(AcceptanceStatus::as_str),
        ],
    )
    .await?;

    if let Some(previous_id) = &e.deploy_id
        && let Some(mut previous) = lock_deploy(c, previous_id).await?
    {
        previous.state = deploy_state::retired(previous.state);
        previous.acceptance_status = deploy_state::retired_acceptance(previous.acceptance_status);
        previous.last_update_date = now;
        c.execute(
            "UPDATE deploys SET state = $2, acc_status = $3, last_update = $4 WHERE deploy_id = $1",
            &[&previous.id.as_str(), &previous.state.as_str(), &previous.acceptance_status.as_str(), &ts(now)],
        )
        .await?;
        let kind = match previous.state {
            DeployState::Succeeded => "deploy.succeeded",
            _ => "deploy.aborted",
        };
        event(c, kind, &e, &previous, now).await?;
    }
    c.execute(
        "UPDATE environs SET deploy_id = $2, deploy_type = $3 WHERE env_id = $1",
        &[&e.id.as_str(), &deploy.id.as_str(), &deploy.deploy_type.as_str()],
    )
    .await?;
    e.deploy_id = Some(deploy.id.clone());
    e.deploy_type = Some(deploy.deploy_type);
    // Every new deploy restarts the stage's schedule at its first session (Teletraan does it
    // for deploys and restarts only, so a promotion or rollback ignored the schedule).
    if schedules::load(c, &e.id).await?.is_some() {
        schedules::save_progress(c, &e.id, &schedule::start(now)).await?;
    }
    announce_stage(c, &e.id).await?;
    event(c, "deploy.started", &e, &deploy, now).await?;
    crate::webhooks::enqueue_deliveries(c, &e, &deploy, schema::model::HookPhase::Pre, now).await?;
    agents::admit(c, &e, now).await?;
    Ok(deploy)
}

/// The current deploy of a stage, as stored now.
async fn current_of(c: &impl GenericClient, e: &Environ) -> Result<Option<Deploy>> {
    let Some(id) = &e.deploy_id else { return Ok(None) };
    let row =
        c.query_opt(&format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE deploy_id = $1"), &[&id.as_str()]).await?;
    row.as_ref().map(deploy_from_row).transpose()
}

/// Counts the agent records that make a deploy's progress, and the hosts that finished it
/// (serving it, held or failed on it, or lost on it: what ends a schedule's session; a host
/// lost mid-deploy holds up a session no more than it holds a slot, and `admission::charged`
/// stops the rollout when more than a cap of them are lost).
async fn progress(c: &impl GenericClient, env_id: &EnvId, deploy_id: &DeployId) -> Result<(Progress, u32)> {
    let row = c
        .query_one(
            "SELECT count(*) AS total,
                count(*) FILTER (WHERE deploy_id = $2 AND deploy_stage IN ('SERVING_BUILD', 'STOPPED')
                                 AND state <> 'PAUSED_BY_USER') AS succeeded,
                count(*) FILTER (WHERE deploy_id = $2 AND state = 'PAUSED_BY_SYSTEM') AS failed,
                count(*) FILTER (WHERE deploy_id = $2 AND (deploy_stage = 'SERVING_BUILD'
                                 OR state IN ('PAUSED_BY_USER', 'PAUSED_BY_SYSTEM', 'UNREACHABLE'))) AS finished
             FROM agents WHERE env_id = $1",
            &[&env_id.as_str(), &deploy_id.as_str()],
        )
        .await?;
    let n = |col: &str| -> Result<u32> { Ok(u32::try_from(get::<i64>(&row, col)?).unwrap_or(u32::MAX)) };
    Ok((Progress { total: n("total")?, succeeded: n("succeeded")?, failed: n("failed")? }, n("finished")?))
}

/// Evaluates the current deploy of a locked stage and stores what changed. A paused stage's
/// deploy is frozen: its state does not move until it is resumed.
pub(crate) async fn evaluate_current(c: &impl GenericClient, e: &Environ, now: EpochMs) -> Result<()> {
    let Some(deploy_id) = &e.deploy_id else { return Ok(()) };
    if e.env_state != EnvState::Normal {
        return Ok(());
    }
    let Some(mut deploy) = lock_deploy(c, deploy_id).await? else { return Ok(()) };
    let (counts, finished) = progress(c, &e.id, deploy_id).await?;
    // The schedule moves first: a session whose hosts are done cools down, a cooldown that is
    // over opens the next session.
    let mut cooling_down = false;
    if let Some(s) = schedules::load(c, &e.id).await? {
        let moved = schedule::advance(&s.config, s.progress, finished, counts.total, now);
        if moved != s.progress {
            schedules::save_progress(c, &e.id, &moved).await?;
        }
        cooling_down = moved.state == ScheduleState::CoolingDown;
    }
    let facts = DeployFacts {
        state: deploy.state,
        stored: Progress {
            total: u32::try_from(deploy.total).unwrap_or(0),
            succeeded: u32::try_from(deploy.success_total).unwrap_or(0),
            failed: u32::try_from(deploy.fail_total).unwrap_or(0),
        },
        last_update: deploy.last_update_date,
        succeeded_before: deploy.success_date.is_some(),
        success_threshold: e.success_threshold,
        stuck_threshold_secs: e.stuck_threshold,
        schedule_cooling_down: cooling_down,
    };
    // A verdict that did not come in time counts as a rejection (a pipeline's fail policy then
    // applies), whatever the counts do.
    if acceptance::timed_out(deploy.acceptance_status, deploy.success_date, e.acceptance_timeout, now)
        && let Some(rejected) = acceptance::transition(deploy.acceptance_status, AcceptanceEvent::TimedOut)
    {
        deploy.acceptance_status = rejected;
        c.execute(
            "UPDATE deploys SET acc_status = $2 WHERE deploy_id = $1",
            &[&deploy.id.as_str(), &rejected.as_str()],
        )
        .await?;
        tracing::info!(deploy.id = %deploy.id, "no verdict within the acceptance timeout: rejected");
        event(c, "deploy.rejected", e, &deploy, now).await?;
    }
    let Some(eval) = deploy_state::evaluate(&facts, counts, now) else { return Ok(()) };
    if !eval.touch && !eval.first_success && eval.state == deploy.state && eval.progress == facts.stored {
        return Ok(());
    }
    let old_state = deploy.state;
    deploy.state = eval.state;
    deploy.total = i32::try_from(eval.progress.total).unwrap_or(i32::MAX);
    deploy.success_total = i32::try_from(eval.progress.succeeded).unwrap_or(i32::MAX);
    deploy.fail_total = i32::try_from(eval.progress.failed).unwrap_or(i32::MAX);
    if eval.touch {
        deploy.last_update_date = now;
    }
    if eval.first_success {
        deploy.success_date = Some(now);
        // A verdict that came early counts now (on a MANUAL stage); either way it is done.
        let early = deploy.pending_verdict.take().and_then(AcceptanceEvent::verdict);
        deploy.acceptance_status = acceptance::on_first_success(deploy.acceptance_status, e.acceptance_type, early);
    }
    c.execute(
        "UPDATE deploys SET state = $2, total = $3, suc_total = $4, fail_total = $5, last_update = $6, suc_date = $7,
             acc_status = $8, pending_verdict = $9
         WHERE deploy_id = $1",
        &[
            &deploy.id.as_str(),
            &deploy.state.as_str(),
            &deploy.total,
            &deploy.success_total,
            &deploy.fail_total,
            &ts(deploy.last_update_date),
            &deploy.success_date.map(ts),
            &deploy.acceptance_status.as_str(),
            &deploy.pending_verdict.map(AcceptanceStatus::as_str),
        ],
    )
    .await?;
    if eval.first_success {
        crate::webhooks::enqueue_deliveries(c, e, &deploy, schema::model::HookPhase::Post, now).await?;
    }
    if deploy.state != old_state {
        let kind = format!("deploy.{}", deploy.state.as_str().to_ascii_lowercase());
        event(c, &kind, e, &deploy, now).await?;
    }
    Ok(())
}

impl Store {
    /// Re-evaluates a stage after its agent records changed: the deploy's progress and state,
    /// then admission of the next hosts. A stage that no longer exists is ignored.
    pub async fn refresh_stage(&self, env_id: &EnvId, now: EpochMs) -> Result<()> {
        self.refresh(env_id, now, false).await.map(|_| ())
    }

    /// Like [`Store::refresh_stage`], but skips (returns `None`) a stage that another
    /// transaction is evaluating: for periodic sweeps, which must not queue on busy stages.
    /// A stage it evaluated answers what the board is to be told.
    pub async fn refresh_stage_if_free(&self, env_id: &EnvId, now: EpochMs) -> Result<Option<Refreshed>> {
        self.refresh(env_id, now, true).await
    }

    async fn refresh(&self, env_id: &EnvId, now: EpochMs, skip_locked: bool) -> Result<Option<Refreshed>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(e) = lock_stage_by_id(&*tx, env_id, skip_locked).await? else { return Ok(None) };
        let before = current_of(&*tx, &e).await?;
        evaluate_current(&*tx, &e, now).await?;
        let admitted = agents::admit(&*tx, &e, now).await?;
        let deploy = current_of(&*tx, &e).await?;
        tx.commit().await?;
        let stage = |e: &Environ| (e.id.clone(), e.env_name.clone(), e.stage_name.clone());
        Ok(Some(Refreshed {
            deploy_changed: deploy != before,
            deploy: deploy.map(|deploy| {
                let (env_id, env_name, stage_name) = stage(&e);
                StageDeploy { env_id, env_name, stage_name, deploy, paused: e.env_state == EnvState::Paused }
            }),
            admitted: (!admitted.is_empty()).then(|| {
                let (env_id, env_name, stage_name) = stage(&e);
                StageAgents { env_id, env_name, stage_name, agents: admitted }
            }),
        }))
    }

    /// Stages with a current deploy that is still active (for the periodic evaluation).
    pub async fn stages_with_active_deploys(&self) -> Result<Vec<EnvId>> {
        let client = self.client().await?;
        client
            .query(
                "SELECT e.env_id FROM environs e JOIN deploys d ON d.deploy_id = e.deploy_id
                 WHERE d.state IN ('RUNNING', 'FAILING', 'SUCCEEDING')",
                &[],
            )
            .await?
            .iter()
            .map(|r| get_id(r, "env_id"))
            .collect()
    }

    /// One deploy.
    pub async fn deploy(&self, id: &DeployId) -> Result<Deploy> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE deploy_id = $1"), &[&id.as_str()])
            .await?
            .ok_or_else(|| Error::NotFound(format!("Deploy {id} does not exist.")))?;
        deploy_from_row(&row)
    }

    /// The environment of a deploy's stage (what the deploy's roles are checked on).
    pub async fn env_of_deploy(&self, id: &DeployId) -> Result<EnvName> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT e.env_name FROM deploys d JOIN environs e ON e.env_id = d.env_id WHERE d.deploy_id = $1",
                &[&id.as_str()],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("Deploy {id} does not exist.")))?;
        get_id(&row, "env_name")
    }

    /// Environments whose stages deploy builds of `name` (a publisher of one may publish them).
    pub async fn envs_of_build_name(&self, name: &BuildName) -> Result<Vec<EnvName>> {
        let client = self.client().await?;
        client
            .query("SELECT DISTINCT env_name FROM environs WHERE build_name = $1", &[&name.as_str()])
            .await?
            .iter()
            .map(|r| get_id(r, "env_name"))
            .collect()
    }

    /// The current deploy of a stage.
    pub async fn current_deploy(&self, env: &EnvName, stage: &StageName) -> Result<Deploy> {
        let e = self.stage(env, stage).await?;
        match &e.deploy_id {
            Some(id) => self.deploy(id).await,
            None => Err(Error::NotFound(format!("Environment {env}/{stage} has no deploy yet."))),
        }
    }

    /// The deploys of these ids (for the board's list of stages: one query for all).
    pub async fn deploys_with_ids(&self, ids: &[DeployId]) -> Result<Vec<Deploy>> {
        let ids: Vec<&str> = ids.iter().map(DeployId::as_str).collect();
        let client = self.client().await?;
        let rows =
            client.query(&format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE deploy_id = ANY($1)"), &[&ids]).await?;
        rows.iter().map(deploy_from_row).collect()
    }

    /// Deploys of a stage, newest first.
    pub async fn deploys_of_stage(&self, env_id: &EnvId, limit: i64) -> Result<Vec<Deploy>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE env_id = $1 ORDER BY start_date DESC LIMIT $2"),
                &[&env_id.as_str(), &limit],
            )
            .await?;
        rows.iter().map(deploy_from_row).collect()
    }
}
