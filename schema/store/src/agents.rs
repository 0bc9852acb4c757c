//! Agent records (host x stage): applying gateway reports, admission, and reads.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use schema::bus::{AgentControl, AgentUpdate, AgentView, ChangeMessage, Heartbeat, ReportBatch, StageAgents};
use schema::model::{Agent, Environ};
use schema::rules::admission::{self, StageAdmission};
use schema::rules::constraint::{TagOf, TaggedHost};
use schema::rules::goal::AgentRecord;
use schema::rules::schedule;
use schema::time::EpochMs;
use schema::{AgentState, DeployId, DeployStage, EnvId, EnvState, HostId, HostName};
use tokio_postgres::{GenericClient, Row};

use crate::rows::{get, get_id, get_ms, get_opt_id, get_opt_ms, get_parsed, ts};
use crate::stages::announce_with;
use crate::{Result, Store};

/// Hosts silent for longer than the janitor's first threshold are not admitted (they would
/// take a slot they cannot use): the process's setting, carried by every connection of the
/// pool (`StoreOptions::host_silence`), 150 s when unset.
const HOST_SILENCE_SECS: &str =
    "COALESCE(NULLIF(current_setting('teletraan.host_silence_secs', true), ''), '150')::float8";

pub(crate) const AGENT_COLUMNS: &str = "host_id, env_id, host_name, deploy_id, deploy_stage, state, status, start_date, last_update, \
     last_operator, last_err_no, fail_count, first_deploy, first_deploy_time, stage_start_date, container_health_status, \
     control_seq";

/// Logs the records a statement wrote (a CTE named `$cte` with the record's columns) to
/// `agent_steps`, the rows whose `changed` is true; a data-modifying CTE to add after it.
pub(crate) fn log_steps(cte: &str) -> String {
    format!(
        "logged AS (INSERT INTO agent_steps (host_id, env_id, host_name, deploy_id, deploy_stage, state, status, err_no,
                                             operator, at)
                    SELECT host_id, env_id, host_name, deploy_id, deploy_stage, state, status, last_err_no, last_operator,
                           last_update
                    FROM {cte} WHERE changed ORDER BY host_name, env_id)"
    )
}

/// The same columns of `agents a` (for joins).
pub(crate) const AGENT_COLUMNS_OF_A: &str = "a.host_id, a.env_id, a.host_name, a.deploy_id, a.deploy_stage, a.state, a.status, \
     a.start_date, a.last_update, a.last_operator, a.last_err_no, a.fail_count, a.first_deploy, a.first_deploy_time, \
     a.stage_start_date, a.container_health_status, a.control_seq";

fn agent_from_row(r: &Row) -> Result<Agent> {
    Ok(Agent {
        host_id: get_id(r, "host_id")?,
        host_name: get_id(r, "host_name")?,
        env_id: get_id(r, "env_id")?,
        deploy_id: get_id(r, "deploy_id")?,
        deploy_stage: get_parsed(r, "deploy_stage")?,
        state: get_parsed(r, "state")?,
        status: get_parsed(r, "status")?,
        start_date: get_ms(r, "start_date")?,
        last_update_date: get_ms(r, "last_update")?,
        last_operator: get(r, "last_operator")?,
        last_errno: get(r, "last_err_no")?,
        fail_count: get(r, "fail_count")?,
        first_deploy: get(r, "first_deploy")?,
        first_deploy_date: get_opt_ms(r, "first_deploy_time")?,
        stage_start_date: get_ms(r, "stage_start_date")?,
        container_health_status: get(r, "container_health_status")?,
    })
}

fn record_from_row(r: &Row) -> Result<AgentRecord> {
    Ok(AgentRecord {
        deploy_id: get_id(r, "deploy_id")?,
        stage: get_parsed(r, "deploy_stage")?,
        status: get_parsed(r, "status")?,
        state: get_parsed(r, "state")?,
        err_no: get(r, "last_err_no")?,
        fail_count: get(r, "fail_count")?,
        first_deploy: get(r, "first_deploy")?,
        container_health: get(r, "container_health_status")?,
    })
}

/// One agent record with what a gateway keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    /// Stage.
    pub env_id: EnvId,
    /// Host.
    pub host_id: HostId,
    /// Host name.
    pub host_name: HostName,
    /// The record.
    pub record: AgentRecord,
    /// Sequence of user actions on it.
    pub control_seq: i64,
}

pub(crate) fn agent_row(r: &Row) -> Result<AgentRow> {
    Ok(AgentRow {
        env_id: get_id(r, "env_id")?,
        host_id: get_id(r, "host_id")?,
        host_name: get_id(r, "host_name")?,
        record: record_from_row(r)?,
        control_seq: get(r, "control_seq")?,
    })
}

/// Reads and locks some hosts' records on a stage, in host order.
pub(crate) async fn lock_rows(c: &impl GenericClient, env_id: &EnvId, host_ids: &[HostId]) -> Result<Vec<AgentRow>> {
    let ids: Vec<&str> = host_ids.iter().map(|h| h.as_str()).collect();
    let rows = c
        .query(
            &format!(
                "SELECT {AGENT_COLUMNS} FROM agents WHERE env_id = $1 AND host_id = ANY($2) ORDER BY host_id FOR UPDATE"
            ),
            &[&env_id.as_str(), &ids],
        )
        .await?;
    rows.iter().map(agent_row).collect()
}

/// Every agent record (a gateway's full load), as a stream of rows: read as they are used.
pub(crate) async fn all_rows(c: &impl GenericClient) -> Result<tokio_postgres::RowStream> {
    let none: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
    Ok(c.query_raw(&format!("SELECT {AGENT_COLUMNS} FROM agents"), none).await?)
}

/// The agent records of one stage (a gateway's reload of that stage).
pub(crate) async fn stage_rows(c: &impl GenericClient, env_id: &EnvId) -> Result<Vec<AgentRow>> {
    let rows = c.query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE env_id = $1"), &[&env_id.as_str()]).await?;
    rows.iter().map(agent_row).collect()
}

/// What the board shows of a record, from a row with the agent columns (`removed`: the row is
/// what a `DELETE` returned).
pub(crate) fn view_from_row(r: &Row, removed: bool) -> Result<AgentView> {
    Ok(AgentView {
        host_id: get_id(r, "host_id")?,
        host_name: get_id(r, "host_name")?,
        deploy_id: get_id(r, "deploy_id")?,
        deploy_stage: get_parsed(r, "deploy_stage")?,
        state: get_parsed(r, "state")?,
        status: get_parsed(r, "status")?,
        last_err_no: get(r, "last_err_no")?,
        last_update_date: get_ms(r, "last_update")?,
        removed,
    })
}

/// Adds rows with the agent columns, `env_name` and `stage_name` to their stage's group.
fn add_to_stages(stages: &mut BTreeMap<EnvId, StageAgents>, rows: &[Row], removed: bool) -> Result<()> {
    for r in rows {
        let env_id: EnvId = get_id(r, "env_id")?;
        let view = view_from_row(r, removed)?;
        match stages.get_mut(&env_id) {
            Some(group) => group.agents.push(view),
            None => {
                let group = StageAgents {
                    env_id: env_id.clone(),
                    env_name: get_id(r, "env_name")?,
                    stage_name: get_id(r, "stage_name")?,
                    agents: vec![view],
                };
                stages.insert(env_id, group);
            }
        }
    }
    Ok(())
}

/// What applying a report batch touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedBatch {
    /// Stages whose records changed (to re-evaluate).
    pub stages: BTreeSet<EnvId>,
    /// The records written or removed, as they are now (removed ones flagged, with their last
    /// values), one group per stage in stage id order, by host name within a stage: what the
    /// board is told after the commit. Updates refused as stale are not in it.
    pub live: Vec<StageAgents>,
    /// Records written.
    pub written: u64,
    /// Records removed.
    pub deleted: u64,
    /// Updates dropped because a newer decision was stored (an admission, a later report).
    pub skipped: u64,
}

tokio::task_local! {
    /// Hosts admitted while a [`counting_admissions`] scope runs.
    static ADMITTED: std::cell::Cell<usize>;
}

/// Runs `work` and counts the hosts the store admitted in it, whether or not its transaction
/// then committed: the caller counts only work that did (a command applied, a promotion made).
pub async fn counting_admissions<T>(work: impl std::future::Future<Output = T>) -> (T, usize) {
    ADMITTED
        .scope(std::cell::Cell::new(0), async move {
            let out = work.await;
            (out, ADMITTED.with(std::cell::Cell::get))
        })
        .await
}

/// Admits the next waiting hosts of a locked stage into its current deploy, within the cap:
/// their records move to the current deploy at PRE_DOWNLOAD, and the gateways are told.
/// Returns the admitted records as they are now.
pub(crate) async fn admit(c: &impl GenericClient, e: &Environ, now: EpochMs) -> Result<Vec<AgentView>> {
    let Some(deploy_id) = &e.deploy_id else { return Ok(Vec::new()) };
    if e.env_state != EnvState::Normal {
        return Ok(Vec::new());
    }
    let counts = c
        .query_one(
            "SELECT count(*) FILTER (WHERE NOT first_deploy) AS existing,
                -- AgentRecord::is_active, as a filter.
                count(*) FILTER (WHERE (NOT first_deploy AND deploy_stage <> 'SERVING_BUILD'
                                        AND state NOT IN ('PAUSED_BY_USER', 'UNREACHABLE'))
                                 OR state = 'STOP') AS active,
                count(*) AS total,
                count(*) FILTER (WHERE deploy_id = $2) AS on_deploy,
                -- Lost mid-deploy: went silent while working on the current deploy.
                count(*) FILTER (WHERE state = 'UNREACHABLE' AND deploy_id = $2
                                 AND deploy_stage <> 'SERVING_BUILD') AS lost,
                (SELECT alias FROM deploys WHERE deploy_id = $2) AS alias
             FROM agents WHERE env_id = $1",
            &[&e.id.as_str(), &deploy_id.as_str()],
        )
        .await?;
    let n = |col: &str| -> Result<u32> { Ok(u32::try_from(get::<i64>(&counts, col)?).unwrap_or(u32::MAX)) };
    let (existing, total, on_deploy) = (n("existing")?, n("total")?, n("on_deploy")?);
    let alias: Option<DeployId> = get_opt_id(&counts, "alias")?;
    let cap = admission::parallel_cap(e.max_parallel, e.max_parallel_pct, existing);
    let active = admission::charged(n("active")?, n("lost")?, cap);
    let schedule_allowance = crate::schedules::load(c, &e.id)
        .await?
        .and_then(|s| schedule::allowance(&s.config, s.progress, on_deploy, total));
    let slots = admission::open_slots(cap, active).min(schedule_allowance.unwrap_or(u32::MAX));
    if slots == 0 {
        return Ok(Vec::new());
    }
    let mut hosts: Vec<String> = match crate::constraints::load(c, &e.id).await? {
        None => {
            // The same rule as `admission::waits_for_admission`, as a query; the store tests
            // check that both agree.
            let rows = c
                .query(
                    &format!(
                        "SELECT a.host_id FROM agents a LEFT JOIN host_heartbeats h ON h.host_id = a.host_id
                         WHERE a.env_id = $1 AND a.deploy_stage = 'SERVING_BUILD'
                           AND ((a.state = 'NORMAL' AND a.deploy_id <> $2) OR a.state IN ('RESET', 'RESET_BY_SYSTEM'))
                           AND ($4::text IS NULL OR a.deploy_id <> $4)
                           AND (h.last_seen IS NULL OR h.last_seen > now() - make_interval(secs => {HOST_SILENCE_SECS}))
                         ORDER BY h.last_seen DESC NULLS LAST, a.host_name
                         LIMIT $3"
                    ),
                    &[&e.id.as_str(), &deploy_id.as_str(), &i64::from(slots), &alias.as_ref().map(|a| a.as_str())],
                )
                .await?;
            rows.iter().map(|r| get(r, "host_id")).collect::<Result<_>>()?
        }
        Some(constraint) => {
            // With a constraint the whole stage matters (which values are busy or finished),
            // so the rule runs here on every record of the stage.
            let rows = c
                .query(
                    &format!(
                        "SELECT {AGENT_COLUMNS}, t.tag_value, ho.facts_at IS NOT NULL AS tags_stored,
                             (h.last_seen IS NULL OR h.last_seen > now() - make_interval(secs => {HOST_SILENCE_SECS})) AS alive
                         FROM agents a LEFT JOIN host_tags t ON t.host_id = a.host_id AND t.tag_name = $2
                             LEFT JOIN hosts ho ON ho.host_id = a.host_id
                             LEFT JOIN host_heartbeats h ON h.host_id = a.host_id
                         WHERE a.env_id = $1
                         ORDER BY h.last_seen DESC NULLS LAST, a.host_name",
                        AGENT_COLUMNS = AGENT_COLUMNS_OF_A
                    ),
                    &[&e.id.as_str(), &constraint.key],
                )
                .await?;
            let mut tagged = Vec::with_capacity(rows.len());
            let mut waiting = Vec::new();
            for r in &rows {
                let row = agent_row(r)?;
                let rec = &row.record;
                // A host lost on the deploy holds up its value no more than a slot.
                let done = &rec.deploy_id == deploy_id
                    && (rec.stage == DeployStage::ServingBuild
                        || matches!(
                            rec.state,
                            AgentState::PausedByUser | AgentState::PausedBySystem | AgentState::Unreachable
                        ));
                if get::<bool>(r, "alive")? && admission::waits_for_admission(rec, deploy_id, alias.as_ref()) {
                    waiting.push(row.host_id.clone());
                }
                let tag = match (get::<bool>(r, "tags_stored")?, get::<Option<String>>(r, "tag_value")?) {
                    (_, Some(v)) => TagOf::Value(v),
                    (true, None) => TagOf::Untagged,
                    (false, None) => TagOf::Unknown,
                };
                tagged.push(TaggedHost { host_id: row.host_id, tag, active: rec.is_active(), done });
            }
            let a = StageAdmission { cap, active, schedule_allowance, constraint: Some((&constraint, &tagged)) };
            admission::select(&a, &waiting).into_iter().map(HostId::into_string).collect()
        }
    };
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    hosts.sort();
    let now_ts = ts(now);
    let rows = c
        .query(
            &format!(
                "WITH admitted AS (
                 UPDATE agents SET deploy_id = $2, deploy_stage = 'PRE_DOWNLOAD', status = 'UNKNOWN',
                     -- A reset stays a reset until the host starts over: it serves this very
                     -- deploy, and only the reset tells the gateway to run it again.
                     state = CASE WHEN state IN ('RESET', 'RESET_BY_SYSTEM') THEN state ELSE 'NORMAL' END,
                     last_err_no = 0, fail_count = 0, start_date = $3, stage_start_date = $3, last_update = $3,
                     last_operator = 'system', control_seq = control_seq + 1, changed = true
                 WHERE env_id = $1 AND host_id = ANY($4)
                 RETURNING {AGENT_COLUMNS}, changed),
                 {logged}
                 SELECT * FROM admitted",
                logged = log_steps("admitted")
            ),
            &[&e.id.as_str(), &deploy_id.as_str(), &now_ts, &hosts],
        )
        .await?;
    let mut admitted = Vec::with_capacity(rows.len());
    let mut controls = Vec::with_capacity(rows.len());
    for r in &rows {
        let row = agent_row(r)?;
        admitted.push(view_from_row(r, false)?);
        controls.push(AgentControl { host_id: row.host_id, record: Some(row.record), control_seq: row.control_seq });
    }
    tracing::debug!(env_id = %e.id, deploy_id = %deploy_id, admitted = admitted.len(), cap, active, "admitted hosts");
    announce_with(c, &e.id, |version| ChangeMessage::AgentsV1 { env_id: e.id.clone(), version, agents: controls })
        .await?;
    let _ = ADMITTED.try_with(|n| n.set(n.get() + admitted.len()));
    Ok(admitted)
}

impl Store {
    /// Stores what a gateway sent: host facts, heartbeats and agent records. A record computed
    /// before a newer decision does not overwrite it: workers bump a record's `control_seq`
    /// whenever they decide for it (an admission, a user action), and a gateway sends the
    /// sequence it knew; a later report (`report_at`) wins over an earlier one.
    pub async fn apply_report_batch(&self, batch: &ReportBatch) -> Result<AppliedBatch> {
        let tagged = self.upsert_hosts(&batch.hosts).await?;
        // A host a report mentions was seen then: every host with a record or an identity has a
        // heartbeat row, which is what the janitor scans for silent hosts.
        let mut beats = batch.heartbeats.clone();
        beats.extend(batch.agents.iter().map(|u| Heartbeat { host_id: u.host_id.clone(), at: u.at }));
        beats.extend(batch.hosts.iter().map(|h| Heartbeat { host_id: h.host_id.clone(), at: h.seen_at }));
        self.record_heartbeats(&beats).await?;

        // Keep the newest update per (host, stage), in key order so concurrent batches lock
        // rows in the same order.
        let mut updates: Vec<&AgentUpdate> = batch.agents.iter().collect();
        updates.sort_by(|a, b| (&a.host_id, &a.env_id, a.at).cmp(&(&b.host_id, &b.env_id, b.at)));
        updates.reverse();
        updates.dedup_by(|a, b| a.host_id == b.host_id && a.env_id == b.env_id);
        updates.reverse();

        let mut applied = AppliedBatch::default();
        let mut live = BTreeMap::new();
        let (upserts, deletes): (Vec<&AgentUpdate>, Vec<&AgentUpdate>) =
            updates.into_iter().partition(|u| u.record.is_some());
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !tagged.is_empty() {
            // Admission under a constraint reads the hosts' tags: it may now start them, or
            // (GROUP_BY_GROUP) others that waited for their tags.
            let rows = tx
                .query(
                    "SELECT DISTINCT a.env_id FROM agents a JOIN deploy_constraints c ON c.env_id = a.env_id
                     WHERE a.host_id = ANY($1)",
                    &[&tagged],
                )
                .await?;
            for r in &rows {
                applied.stages.insert(get_id(r, "env_id")?);
            }
        }
        if !upserts.is_empty() {
            let mut host_id = Vec::new();
            let mut host_name = Vec::new();
            let mut env_id = Vec::new();
            let mut deploy_id = Vec::new();
            let mut stage = Vec::new();
            let mut status = Vec::new();
            let mut state = Vec::new();
            let mut err_no = Vec::new();
            let mut fail_count = Vec::new();
            let mut first_deploy = Vec::new();
            let mut health = Vec::new();
            let mut control_seq = Vec::new();
            let mut at: Vec<SystemTime> = Vec::new();
            for u in &upserts {
                let Some(r) = &u.record else { continue };
                host_id.push(u.host_id.as_str());
                host_name.push(u.host_name.as_str());
                env_id.push(u.env_id.as_str());
                deploy_id.push(r.deploy_id.as_str());
                stage.push(r.stage.as_str());
                status.push(r.status.as_str());
                state.push(r.state.as_str());
                err_no.push(r.err_no);
                fail_count.push(r.fail_count);
                first_deploy.push(r.first_deploy);
                health.push(r.container_health.as_str());
                control_seq.push(u.control_seq);
                at.push(ts(u.at));
            }
            // The rows written (not those refused as stale), with their stage's names for the
            // board.
            let rows = tx
                .query(
                    &format!(
                        "WITH written AS (
                     INSERT INTO agents AS a (host_id, env_id, host_name, deploy_id, deploy_stage, state, status, start_date,
                         last_update, last_operator, last_err_no, fail_count, first_deploy, stage_start_date,
                         container_health_status, control_seq, report_at)
                     SELECT u.host_id, u.env_id, u.host_name, u.deploy_id, u.stage, u.state, u.status, u.at, u.at, 'system',
                         u.err_no, u.fail_count, u.first_deploy, u.at, u.health, u.control_seq, u.at
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                 $8::int4[], $9::int4[], $10::bool[], $11::text[], $12::int8[], $13::timestamptz[])
                          AS u(host_id, host_name, env_id, deploy_id, stage, status, state, err_no, fail_count,
                               first_deploy, health, control_seq, at)
                     WHERE EXISTS (SELECT 1 FROM environs e WHERE e.env_id = u.env_id)
                     -- Rows are locked in key order, the order admissions lock them in.
                     ORDER BY u.host_id, u.env_id
                     ON CONFLICT (host_id, env_id) DO UPDATE SET
                         host_name = EXCLUDED.host_name,
                         deploy_id = EXCLUDED.deploy_id,
                         deploy_stage = EXCLUDED.deploy_stage,
                         status = EXCLUDED.status,
                         state = EXCLUDED.state,
                         start_date = CASE WHEN a.deploy_id <> EXCLUDED.deploy_id THEN EXCLUDED.start_date ELSE a.start_date END,
                         stage_start_date = CASE WHEN a.deploy_id <> EXCLUDED.deploy_id OR a.deploy_stage <> EXCLUDED.deploy_stage
                                                 THEN EXCLUDED.stage_start_date ELSE a.stage_start_date END,
                         last_update = EXCLUDED.last_update,
                         last_operator = 'system',
                         last_err_no = EXCLUDED.last_err_no,
                         fail_count = EXCLUDED.fail_count,
                         first_deploy = a.first_deploy AND EXCLUDED.deploy_stage <> 'SERVING_BUILD'
                                        AND EXCLUDED.state <> 'PAUSED_BY_SYSTEM',
                         first_deploy_time = CASE WHEN a.first_deploy AND (EXCLUDED.deploy_stage = 'SERVING_BUILD'
                                                       OR EXCLUDED.state = 'PAUSED_BY_SYSTEM')
                                                  THEN EXCLUDED.last_update ELSE a.first_deploy_time END,
                         container_health_status = EXCLUDED.container_health_status,
                         report_at = EXCLUDED.report_at,
                         changed = a.deploy_id <> EXCLUDED.deploy_id OR a.deploy_stage <> EXCLUDED.deploy_stage
                                   OR a.status <> EXCLUDED.status OR a.state <> EXCLUDED.state
                     -- Evaluated on the latest row version, after waiting for its lock: a record
                     -- computed before a worker decided for it (admission, user action) or before
                     -- a newer report was stored is refused.
                     WHERE a.control_seq <= EXCLUDED.control_seq
                       AND (a.report_at IS NULL OR a.report_at <= EXCLUDED.report_at)
                     RETURNING a.host_id, a.env_id, a.host_name, a.deploy_id, a.deploy_stage, a.state, a.status,
                         a.last_err_no, a.last_update, a.last_operator, a.changed),
                     {logged}
                     SELECT w.*, e.env_name, e.stage_name FROM written w JOIN environs e ON e.env_id = w.env_id
                     ORDER BY w.env_id, w.host_name, w.host_id",
                        logged = log_steps("written")
                    ),
                    &[
                        &host_id,
                        &host_name,
                        &env_id,
                        &deploy_id,
                        &stage,
                        &status,
                        &state,
                        &err_no,
                        &fail_count,
                        &first_deploy,
                        &health,
                        &control_seq,
                        &at,
                    ],
                )
                .await?;
            applied.written = rows.len() as u64;
            applied.skipped += upserts.len() as u64 - applied.written;
            for r in &rows {
                applied.stages.insert(get_id(r, "env_id")?);
            }
            add_to_stages(&mut live, &rows, false)?;

            // Errors: the latest text per host and stage, for the UI, in one statement; an
            // older report's error (a redelivery) does not replace a newer one.
            let errors: Vec<&&AgentUpdate> = upserts
                .iter()
                .filter(|u| u.error_message.is_some() && u.record.as_ref().is_some_and(|r| r.err_no != 0))
                .collect();
            if !errors.is_empty() {
                let hosts: Vec<&str> = errors.iter().map(|u| u.host_id.as_str()).collect();
                let envs: Vec<&str> = errors.iter().map(|u| u.env_id.as_str()).collect();
                let names: Vec<&str> = errors.iter().map(|u| u.host_name.as_str()).collect();
                let texts: Vec<&str> = errors.iter().map(|u| u.error_message.as_deref().unwrap_or_default()).collect();
                let at: Vec<SystemTime> = errors.iter().map(|u| ts(u.at)).collect();
                tx.execute(
                    "INSERT INTO agent_errors (host_id, env_id, host_name, error_msg, updated_at)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                          AS u(host_id, env_id, host_name, error_msg, updated_at)
                     WHERE EXISTS (SELECT 1 FROM environs e WHERE e.env_id = u.env_id)
                     ORDER BY 1, 2
                     ON CONFLICT (host_id, env_id) DO UPDATE SET host_name = EXCLUDED.host_name,
                         error_msg = EXCLUDED.error_msg, updated_at = EXCLUDED.updated_at
                     WHERE agent_errors.updated_at <= EXCLUDED.updated_at",
                    &[&hosts, &envs, &names, &texts, &at],
                )
                .await?;
            }
        }
        for u in &deletes {
            let rows = tx
                .query(
                    "WITH removed AS (
                         DELETE FROM agents WHERE host_id = $1 AND env_id = $2 AND control_seq <= $4
                             AND (report_at IS NULL OR report_at <= $3)
                         RETURNING host_id, env_id, host_name, deploy_id, deploy_stage, state, status, last_err_no,
                             last_update)
                     SELECT r.*, e.env_name, e.stage_name FROM removed r JOIN environs e ON e.env_id = r.env_id",
                    &[&u.host_id.as_str(), &u.env_id.as_str(), &ts(u.at), &u.control_seq],
                )
                .await?;
            applied.deleted += rows.len() as u64;
            for r in &rows {
                applied.stages.insert(get_id(r, "env_id")?);
            }
            add_to_stages(&mut live, &rows, true)?;
        }
        tx.commit().await?;
        applied.live = live.into_values().collect();
        for stage in &mut applied.live {
            // Removals were added after the writes.
            stage.agents.sort_by(|a, b| (&a.host_name, &a.host_id).cmp(&(&b.host_name, &b.host_id)));
        }
        Ok(applied)
    }

    /// The agent records of a stage (the host grid), by host name.
    pub async fn agents_of_stage(&self, env_id: &EnvId) -> Result<Vec<Agent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE env_id = $1 ORDER BY host_name"),
                &[&env_id.as_str()],
            )
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// One page of a stage's records by host name (`offset` records skipped, at most `limit`),
    /// and how many records the stage has: the board's grid reads no more than it shows.
    pub async fn agents_page(&self, env_id: &EnvId, offset: i64, limit: i64) -> Result<(Vec<Agent>, i64)> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {AGENT_COLUMNS}, count(*) OVER () AS total FROM agents WHERE env_id = $1
                     ORDER BY host_name, host_id LIMIT $2 OFFSET $3"
                ),
                &[&env_id.as_str(), &limit, &offset],
            )
            .await?;
        let total = match rows.first() {
            Some(r) => get::<i64>(r, "total")?,
            // Past the last page: count alone.
            None => {
                client.query_one("SELECT count(*) FROM agents WHERE env_id = $1", &[&env_id.as_str()]).await?.get(0)
            }
        };
        Ok((rows.iter().map(agent_from_row).collect::<Result<_>>()?, total))
    }

    /// Every stage's record of the hosts of this name (`GET /v1/agents/{hostName}`), or of the
    /// host of this id (`GET /v1/agents/id/{hostId}`).
    pub async fn agents_of_host(&self, name: Option<&HostName>, id: Option<&HostId>) -> Result<Vec<Agent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {AGENT_COLUMNS} FROM agents
                     WHERE ($1::text IS NULL OR host_name = $1) AND ($2::text IS NULL OR host_id = $2)
                       AND ($1::text IS NOT NULL OR $2::text IS NOT NULL)
                     ORDER BY host_name, host_id, env_id"
                ),
                &[&name.map(HostName::as_str), &id.map(HostId::as_str)],
            )
            .await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// The last error a host reported for a stage.
    pub async fn agent_error(&self, env_id: &EnvId, host_name: &HostName) -> Result<Option<(HostId, String)>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT host_id, error_msg FROM agent_errors WHERE env_id = $1 AND host_name = $2
                 ORDER BY updated_at DESC LIMIT 1",
                &[&env_id.as_str(), &host_name.as_str()],
            )
            .await?;
        row.map(|r| Ok((get_id(&r, "host_id")?, get(&r, "error_msg")?))).transpose()
    }
}
