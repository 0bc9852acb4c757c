//! Applying the commands the API sends through RabbitMQ: deploys, deploy actions (promote,
//! restart, rollback, pause, resume), host actions, verdicts and schedule overrides. One
//! transaction per command, under the stage's row lock; the outcome is stored with the command
//! so a redelivery changes nothing.

use schema::bus::{AgentControl, ChangeMessage, Command, CommandEnvelope, CommandError, CommandOutcome};
use schema::model::{Deploy, Environ, Invalid, check_text};
use schema::rules::acceptance::{self, AcceptanceEvent};
use schema::rules::agent_state::{self, AgentEvent};
use schema::rules::schedule;
use schema::time::EpochMs;
use schema::{
    AcceptanceStatus, DeployAction, DeployId, DeployType, EnvId, EnvName, EnvState, HostId, HostState, StageName,
    TagValue,
};
use serde_json::{Value, json};
use tokio_postgres::GenericClient;

use crate::agents::{AgentRow, admit, agent_row, lock_rows};
use crate::deploys::{DEPLOY_COLUMNS, NewDeploy, create, deploy_from_row, evaluate_current, lock_deploy};
use crate::history::{self, Change, Place, kind};
use crate::rows::{get, get_id, ts};
use crate::stages::{announce_stage, announce_with, lock_stage};
use crate::{Error, Result, Store, commands, promotes, schedules};

fn to_json(v: &impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Corrupt(e.to_string()))
}

fn refusal(e: Error) -> Result<CommandError> {
    Ok(match e {
        Error::NotFound(message) => CommandError { status: 404, code: "not_found".into(), message },
        Error::Invalid(i) => CommandError { status: 400, code: "invalid".into(), message: i.to_string() },
        Error::BadData(message) => CommandError { status: 400, code: "invalid".into(), message },
        Error::Conflict(message) => CommandError { status: 409, code: "conflict".into(), message },
        other => return Err(other),
    })
}

impl Store {
    /// Applies a command exactly once: a redelivered command returns the stored outcome.
    /// Refusals (unknown stage, build, host or deploy; invalid input; conflicts) are outcomes,
    /// stored and returned, and leave nothing else changed; database failures are errors, and
    /// the command can be retried.
    pub async fn apply_command(&self, envelope: &CommandEnvelope, now: EpochMs) -> Result<CommandOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(done) = commands::begin(&*tx, envelope, now).await? {
            tx.commit().await?;
            return Ok(done);
        }
        tx.batch_execute("SAVEPOINT command").await?;
        let outcome = match apply(&*tx, envelope, now).await {
            Ok(result) => {
                audit(&*tx, envelope, &result, now).await?;
                CommandOutcome::Ok { result }
            }
            Err(e) => {
                let error = refusal(e)?;
                // A refusal keeps nothing of what the command did before it was refused.
                tx.batch_execute("ROLLBACK TO SAVEPOINT command").await?;
                CommandOutcome::Err { error }
            }
        };
        commands::finish(&*tx, &envelope.id, &outcome, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Writes the history row of an applied command: the action, on which stage, by whom, with
/// the command's id; `after` holds what was asked and what it made.
async fn audit(c: &impl GenericClient, envelope: &CommandEnvelope, result: &Value, now: EpochMs) -> Result<()> {
    let (what, action, env, stage): (&str, String, Option<(EnvName, StageName)>, Option<&DeployId>) =
        match &envelope.command {
            Command::CreateDeployV1 { env_name, stage_name, .. } => {
                (kind::ACTION, "DEPLOY".into(), Some((env_name.clone(), stage_name.clone())), None)
            }
            Command::DeployActionV1 { env_name, stage_name, action, .. } => {
                (kind::ACTION, action.to_string(), Some((env_name.clone(), stage_name.clone())), None)
            }
            Command::HostActionV1 { env_name, stage_name, action, .. } => {
                (kind::HOST_ACTION, action.to_string(), Some((env_name.clone(), stage_name.clone())), None)
            }
            Command::ResetFailedV1 { env_name, stage_name, .. } => {
                (kind::HOST_ACTION, "RESET_FAILED".into(), Some((env_name.clone(), stage_name.clone())), None)
            }
            Command::StopHostsV1 { env_name, stage_name, .. } => {
                (kind::HOST_ACTION, "STOP".into(), Some((env_name.clone(), stage_name.clone())), None)
            }
            Command::OverrideScheduleV1 { env_name, stage_name, .. } => {
                (kind::ACTION, "OVERRIDE_SCHEDULE".into(), Some((env_name.clone(), stage_name.clone())), None)
            }
            Command::UpdateDeployV1 { deploy_id, .. } => (kind::ACTION, "UPDATE_DEPLOY".into(), None, Some(deploy_id)),
        };
    let row = match (&env, stage) {
        (Some((env, stage)), _) => {
            c.query_opt(
                "SELECT env_id, env_name, stage_name FROM environs WHERE env_name = $1 AND stage_name = $2",
                &[&env.as_str(), &stage.as_str()],
            )
            .await?
        }
        (None, Some(deploy)) => {
            c.query_opt(
                "SELECT e.env_id, e.env_name, e.stage_name FROM deploys d JOIN environs e ON e.env_id = d.env_id
                 WHERE d.deploy_id = $1",
                &[&deploy.as_str()],
            )
            .await?
        }
        (None, None) => None,
    };
    let asked = history::json(&envelope.command)?;
    let after = serde_json::json!({ "command": asked, "result": result });
    let change = Change { kind: what, action: &action, before: None, after: Some(after) };
    let (id, env_name, stage_name): (Option<String>, Option<EnvName>, Option<StageName>) = match &row {
        Some(r) => (Some(get(r, "env_id")?), Some(get_id(r, "env_name")?), Some(get_id(r, "stage_name")?)),
        None => (None, None, None),
    };
    let place = match (&env_name, &stage_name) {
        (Some(e), Some(s)) => Place::Names(id.as_deref(), e, s),
        _ => Place::System,
    };
    history::record(c, place, &envelope.operator, Some(&envelope.id), change, now).await
}

async fn apply(c: &impl GenericClient, envelope: &CommandEnvelope, now: EpochMs) -> Result<Value> {
    let operator = envelope.operator.as_str();
    match &envelope.command {
        Command::CreateDeployV1 { env_name, stage_name, build_id, description } => {
            let e = lock_stage(c, env_name, stage_name).await?;
            promotes::person_took_over(c, &e, operator, now).await?;
            let new = NewDeploy {
                build_id,
                deploy_type: DeployType::Regular,
                description: description.clone(),
                operator,
                alias: None,
                from_deploy: None,
            };
            to_json(&create(c, e, new, now).await?)
        }
        Command::DeployActionV1 {
            env_name,
            stage_name,
            action,
            from_deploy_id,
            to_deploy_id,
            description,
            mark_bad,
        } => {
            let e = lock_stage(c, env_name, stage_name).await?;
            match action {
                DeployAction::Promote | DeployAction::Restart | DeployAction::Rollback => {
                    promotes::person_took_over(c, &e, operator, now).await?;
                }
                DeployAction::Pause | DeployAction::Resume => {}
            }
            if *mark_bad && *action != DeployAction::Rollback {
                return Err(Error::Invalid(Invalid {
                    field: "markBad",
                    message: "only a ROLLBACK can mark the build it leaves bad".into(),
                }));
            }
            let req = ActionRequest {
                from: from_deploy_id.as_ref(),
                to: to_deploy_id.as_ref(),
                description,
                operator,
                mark_bad: *mark_bad,
            };
            deploy_action(c, e, *action, req, now).await
        }
        Command::HostActionV1 { env_name, stage_name, action, host_ids } => {
            let e = lock_stage(c, env_name, stage_name).await?;
            let Some(event) = AgentEvent::of_user(*action) else {
                return Err(Error::Invalid(Invalid {
                    field: "actionType",
                    message: format!("{action} is not a host action; use PAUSED_BY_USER, RESET, NORMAL or STOP"),
                }));
            };
            let changed = set_states(c, &e, host_ids, event, operator, now).await?;
            refresh(c, &e, now).await?;
            Ok(json!({ "updated": changed }))
        }
        Command::ResetFailedV1 { env_name, stage_name, deploy_id } => {
            let e = lock_stage(c, env_name, stage_name).await?;
            let failed: Vec<HostId> = c
                .query(
                    "SELECT host_id FROM agents WHERE env_id = $1 AND deploy_id = $2
                         AND status NOT IN ('SUCCEEDED', 'UNKNOWN') ORDER BY host_id",
                    &[&e.id.as_str(), &deploy_id.as_str()],
                )
                .await?
                .iter()
                .map(|r| get_id(r, "host_id"))
                .collect::<Result<_>>()?;
            let changed = set_states(c, &e, &failed, AgentEvent::UserReset, operator, now).await?;
            refresh(c, &e, now).await?;
            Ok(json!({ "updated": changed }))
        }
        Command::StopHostsV1 { env_name, stage_name, host_ids, replace } => {
            let e = lock_stage(c, env_name, stage_name).await?;
            stop_hosts(c, &e, host_ids, *replace, operator, now).await
        }
        Command::UpdateDeployV1 { deploy_id, acceptance_status, description } => {
            update_deploy(c, deploy_id, *acceptance_status, description.as_deref(), now).await
        }
        Command::OverrideScheduleV1 { env_name, stage_name, session } => {
            let e = lock_stage(c, env_name, stage_name).await?;
            let Some(s) = schedules::load(c, &e.id).await? else {
                return Err(Error::NotFound(format!("Environment {env_name}/{stage_name} has no deploy schedule.")));
            };
            let Some(moved) = schedule::override_session(&s.config, s.progress, *session, now) else {
                return Err(Error::Conflict(format!(
                    "session {session} is not the current session of the schedule (session {}, {})",
                    s.progress.session, s.progress.state
                )));
            };
            schedules::save_progress(c, &e.id, &moved).await?;
            refresh(c, &e, now).await?;
            Ok(json!({ "currentSession": moved.session, "state": moved.state }))
        }
    }
}

/// The deploy's evaluation then admission, as after any change of a stage's records.
async fn refresh(c: &impl GenericClient, e: &Environ, now: EpochMs) -> Result<()> {
    evaluate_current(c, e, now).await?;
    admit(c, e, now).await?;
    Ok(())
}

/// What a deploy action asks for beyond its kind.
pub(crate) struct ActionRequest<'a> {
    /// PROMOTE: the deploy whose build to deploy.
    pub from: Option<&'a DeployId>,
    /// ROLLBACK: the deploy to go back to (default: the last one that succeeded).
    pub to: Option<&'a DeployId>,
    /// Free text for the new deploy.
    pub description: &'a Option<String>,
    /// Who asks.
    pub operator: &'a str,
    /// ROLLBACK: tag the build of the deploy it leaves BAD_BUILD.
    pub mark_bad: bool,
}

async fn deploy_of(c: &impl GenericClient, id: &DeployId) -> Result<Deploy> {
    let row = c
        .query_opt(&format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE deploy_id = $1"), &[&id.as_str()])
        .await?
        .ok_or_else(|| Error::NotFound(format!("Deploy {id} does not exist.")))?;
    deploy_from_row(&row)
}

async fn current_json(c: &impl GenericClient, e: &Environ) -> Result<Value> {
    match &e.deploy_id {
        Some(id) => to_json(&deploy_of(c, id).await?),
        None => Ok(Value::Null),
    }
}

pub(crate) async fn deploy_action(
    c: &impl GenericClient,
    mut e: Environ,
    action: DeployAction,
    req: ActionRequest<'_>,
    now: EpochMs,
) -> Result<Value> {
    let new = |build_id, deploy_type, alias, from_deploy| NewDeploy {
        build_id,
        deploy_type,
        description: req.description.clone(),
        operator: req.operator,
        alias,
        from_deploy,
    };
    match action {
        DeployAction::Promote => {
            let Some(from) = req.from else {
                return Err(Error::Invalid(Invalid {
                    field: "fromDeployId",
                    message: "is required to promote".into(),
                }));
            };
            let source = deploy_of(c, from).await?;
            let deploy =
                create(c, e, new(&source.build_id, DeployType::Regular, None, Some(source.id.clone())), now).await?;
            to_json(&deploy)
        }
        DeployAction::Restart => {
            let Some(current) = e.deploy_id.clone() else {
                return Err(Error::Conflict(format!(
                    "Environment {}/{} has no deploy to restart.",
                    e.env_name, e.stage_name
                )));
            };
            let current = deploy_of(c, &current).await?;
            to_json(&create(c, e, new(&current.build_id, DeployType::Restart, None, None), now).await?)
        }
        DeployAction::Rollback => {
            let target = match req.to {
                Some(id) => deploy_of(c, id).await?,
                None => {
                    // The last deploy of the stage that succeeded, found with one indexed query
                    // (Teletraan pages through up to 5000 deploys).
                    let row = c
                        .query_opt(
                            &format!(
                                "SELECT {DEPLOY_COLUMNS} FROM deploys WHERE env_id = $1 AND state = 'SUCCEEDED'
                                 ORDER BY start_date DESC LIMIT 1"
                            ),
                            &[&e.id.as_str()],
                        )
                        .await?
                        .ok_or_else(|| {
                            Error::NotFound(format!(
                                "Environment {}/{} has no succeeded deploy to roll back to.",
                                e.env_name, e.stage_name
                            ))
                        })?;
                    deploy_from_row(&row)?
                }
            };
            if target.env_id != e.id {
                return Err(Error::Invalid(Invalid {
                    field: "toDeployId",
                    message: format!("deploy {} belongs to another stage", target.id),
                }));
            }
            if e.deploy_id.as_ref() == Some(&target.id) {
                return Err(Error::Conflict(format!("deploy {} is already the current deploy", target.id)));
            }
            if req.mark_bad {
                mark_left_build_bad(c, &e, &target, req.operator, now).await?;
            }
            // The alias is kept even when the target was chosen here (Teletraan loses it then,
            // and every host redeploys): hosts still serving the target are left alone.
            let alias = Some(target.id.clone());
            to_json(&create(c, e, new(&target.build_id, DeployType::Rollback, alias, None), now).await?)
        }
        DeployAction::Pause | DeployAction::Resume => {
            let wanted = if action == DeployAction::Pause { EnvState::Paused } else { EnvState::Normal };
            if e.env_state != wanted {
                c.execute(
                    "UPDATE environs SET env_state = $2, last_operator = $3, last_update = $4 WHERE env_id = $1",
                    &[&e.id.as_str(), &wanted.as_str(), &req.operator, &ts(now)],
                )
                .await?;
                e.env_state = wanted;
                announce_stage(c, &e.id).await?;
                if wanted == EnvState::Normal {
                    // What waited during the pause goes on now, and the deploy is evaluated
                    // again (its state was frozen).
                    refresh(c, &e, now).await?;
                }
            }
            current_json(c, &e).await
        }
    }
}

/// Tags BAD_BUILD the build a rollback leaves (the current deploy's), in the rollback's
/// transaction: auto-promotion will not spread it, nor later builds of its branch.
async fn mark_left_build_bad(
    c: &impl GenericClient,
    e: &Environ,
    target: &Deploy,
    operator: &str,
    now: EpochMs,
) -> Result<()> {
    let Some(current) = &e.deploy_id else {
        return Err(Error::Invalid(Invalid {
            field: "markBad",
            message: format!("{}/{} has no current deploy whose build could be marked bad", e.env_name, e.stage_name),
        }));
    };
    let current = deploy_of(c, current).await?;
    if current.build_id == target.build_id {
        return Err(Error::Conflict(format!(
            "deploy {} runs build {}, the build it rolls back to: it cannot be marked bad",
            current.id, current.build_id
        )));
    }
    let row = c
        .query_one(
            "SELECT build_id, build_name, artifact_url, artifact_sha256, scm, scm_repo, scm_branch, scm_commit,
                 scm_commit_7, commit_info, commit_date, publish_info, publisher, publish_date
             FROM builds WHERE build_id = $1",
            &[&current.build_id.as_str()],
        )
        .await?;
    let build = crate::builds::build_from_row(&row, "")?;
    let comment = format!("marked bad by a rollback of {}/{}", e.env_name, e.stage_name);
    crate::tags::tag_build(c, &build, TagValue::BadBuild, Some(&comment), operator, now).await?;
    Ok(())
}

/// Applies an operator's event to some hosts' records on a stage; every host must have a
/// record there. Changed records get a new control sequence and are announced. Returns how
/// many changed.
async fn set_states(
    c: &impl GenericClient,
    e: &Environ,
    host_ids: &[HostId],
    event: AgentEvent,
    operator: &str,
    now: EpochMs,
) -> Result<usize> {
    let rows = lock_rows(c, &e.id, host_ids).await?;
    if let Some(missing) = host_ids.iter().find(|h| !rows.iter().any(|r| &r.host_id == *h)) {
        return Err(Error::NotFound(format!("Host {missing} has no record on {}/{}.", e.env_name, e.stage_name)));
    }
    let changed = update_states(c, &e.id, rows, event, operator, now).await?;
    let n = changed.len();
    announce_rows(c, &e.id, changed).await?;
    Ok(n)
}

pub(crate) async fn update_states(
    c: &impl GenericClient,
    env_id: &EnvId,
    rows: Vec<AgentRow>,
    event: AgentEvent,
    operator: &str,
    now: EpochMs,
) -> Result<Vec<AgentRow>> {
    let mut changed = Vec::new();
    for row in rows {
        let state = agent_state::next(row.record.state, event);
        if state == row.record.state {
            continue;
        }
        let updated = c
            .query_one(
                &format!(
                    "WITH changed AS (
                     UPDATE agents SET state = $3, control_seq = control_seq + 1, last_update = $4, last_operator = $5,
                         changed = true
                     WHERE env_id = $1 AND host_id = $2 RETURNING {}, changed),
                     {}
                     SELECT * FROM changed",
                    crate::agents::AGENT_COLUMNS,
                    crate::agents::log_steps("changed")
                ),
                &[&env_id.as_str(), &row.host_id.as_str(), &state.as_str(), &ts(now), &operator],
            )
            .await?;
        changed.push(agent_row(&updated)?);
    }
    Ok(changed)
}

pub(crate) async fn announce_rows(c: &impl GenericClient, env_id: &EnvId, rows: Vec<AgentRow>) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let agents = rows
        .into_iter()
        .map(|r| AgentControl { host_id: r.host_id, record: Some(r.record), control_seq: r.control_seq })
        .collect();
    announce_with(c, env_id, |version| ChangeMessage::AgentsV1 { env_id: env_id.clone(), version, agents }).await?;
    Ok(())
}

/// Stops the service on hosts of a stage: every record of those hosts, on every stage, goes to
/// STOP (agents run STOPPING, then STOPPED), and the hosts are marked for termination.
async fn stop_hosts(
    c: &impl GenericClient,
    e: &Environ,
    host_ids: &[HostId],
    replace: bool,
    operator: &str,
    now: EpochMs,
) -> Result<Value> {
    let on_stage = lock_rows(c, &e.id, host_ids).await?;
    if let Some(missing) = host_ids.iter().find(|h| !on_stage.iter().any(|r| &r.host_id == *h)) {
        return Err(Error::NotFound(format!("Host {missing} has no record on {}/{}.", e.env_name, e.stage_name)));
    }
    let ids: Vec<&str> = host_ids.iter().map(|h| h.as_str()).collect();
    let stages: Vec<EnvId> = c
        .query("SELECT DISTINCT env_id FROM agents WHERE host_id = ANY($1) ORDER BY env_id", &[&ids])
        .await?
        .iter()
        .map(|r| get_id(r, "env_id"))
        .collect::<Result<_>>()?;
    let mut stopped = 0;
    for env_id in &stages {
        let rows = lock_rows(c, env_id, host_ids).await?;
        let changed = update_states(c, env_id, rows, AgentEvent::UserStopped, operator, now).await?;
        stopped += changed.len();
        announce_rows(c, env_id, changed).await?;
    }
    let state = if replace { HostState::PendingTerminate } else { HostState::PendingTerminateNoReplace };
    c.execute(
        "UPDATE hosts SET state = $2, last_update = $3 WHERE host_id = ANY($1)",
        &[&ids, &state.as_str(), &ts(now)],
    )
    .await?;
    refresh(c, e, now).await?;
    Ok(json!({ "updated": stopped }))
}

/// A verdict on a deploy (`PENDING_ACCEPT`, `ACCEPTED`, `REJECTED`) and/or a new description.
async fn update_deploy(
    c: &impl GenericClient,
    id: &DeployId,
    verdict: Option<AcceptanceStatus>,
    description: Option<&str>,
    now: EpochMs,
) -> Result<Value> {
    let mut deploy =
        lock_deploy(c, id).await?.ok_or_else(|| Error::NotFound(format!("Deploy {id} does not exist.")))?;
    if let Some(wanted) = verdict {
        let Some(event) = AcceptanceEvent::verdict(wanted) else {
            return Err(Error::Invalid(Invalid {
                field: "acceptanceStatus",
                message: format!("{wanted} is not a verdict; send PENDING_ACCEPT, ACCEPTED or REJECTED"),
            }));
        };
        if acceptance::is_early(deploy.acceptance_status) {
            // The deploy has not succeeded yet: the verdict is kept, and applied when it does.
            let kept = deploy.pending_verdict.and_then(AcceptanceEvent::verdict);
            deploy.pending_verdict = acceptance::keep_early(kept, event).as_status();
        } else {
            let Some(next) = acceptance::transition(deploy.acceptance_status, event) else {
                return Err(Error::Conflict(format!(
                    "deploy {id} is {}: it cannot become {wanted}",
                    deploy.acceptance_status
                )));
            };
            deploy.acceptance_status = next;
        }
    }
    if let Some(d) = description {
        check_text("description", d, 2048)?;
        deploy.description = Some(d.to_string());
    }
    // The last update is left alone: it measures the rollout's progress (stuck detection),
    // which a verdict does not change.
    let _ = now;
    c.execute(
        "UPDATE deploys SET acc_status = $2, description = $3, pending_verdict = $4 WHERE deploy_id = $1",
        &[
            &id.as_str(),
            &deploy.acceptance_status.as_str(),
            &deploy.description,
            &deploy.pending_verdict.map(AcceptanceStatus::as_str),
        ],
    )
    .await?;
    to_json(&deploy)
}
