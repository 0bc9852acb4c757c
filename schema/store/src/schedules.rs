//! Deploy schedules: their configuration (written by users) and their progress (moved by the
//! workers under the stage lock).

use schema::model::{ScheduleBean, ScheduleInput};
use schema::rules::schedule::{ScheduleConfig, ScheduleProgress};
use schema::time::EpochMs;
use schema::{EnvId, EnvName, StageName};
use tokio_postgres::GenericClient;

use crate::history::{self, Change, Place, json, kind};
use crate::rows::{get, get_ms, get_parsed, ts};
use crate::stages::lock_stage;
use crate::{Error, Result, Store};

/// A stage's schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredSchedule {
    pub id: String,
    pub config: ScheduleConfig,
    pub progress: ScheduleProgress,
}

impl StoredSchedule {
    fn bean(&self) -> ScheduleBean {
        ScheduleBean {
            id: self.id.clone(),
            total_sessions: self.config.sessions.len() as i32,
            cooldown_times: self.config.cooldown_times(),
            host_numbers: self.config.host_numbers(),
            current_session: self.progress.session as i32,
            state: self.progress.state,
            state_start_time: self.progress.since,
        }
    }
}

/// The schedule of a stage (locked by the caller's stage lock).
pub(crate) async fn load(c: &impl GenericClient, env_id: &EnvId) -> Result<Option<StoredSchedule>> {
    let Some(r) = c
        .query_opt(
            "SELECT schedule_id, total_sessions, host_numbers, cooldown_times, state, current_session, state_start_time
             FROM schedules WHERE env_id = $1",
            &[&env_id.as_str()],
        )
        .await?
    else {
        return Ok(None);
    };
    let config =
        ScheduleConfig::parse(get(&r, "total_sessions")?, get(&r, "host_numbers")?, get(&r, "cooldown_times")?)
            .map_err(|e| Error::Corrupt(format!("schedule of {env_id}: {e}")))?;
    let session: i32 = get(&r, "current_session")?;
    Ok(Some(StoredSchedule {
        id: get(&r, "schedule_id")?,
        config,
        progress: ScheduleProgress {
            state: get_parsed(&r, "state")?,
            session: u32::try_from(session).unwrap_or(0),
            since: get_ms(&r, "state_start_time")?,
        },
    }))
}

/// Stores a schedule's progress.
pub(crate) async fn save_progress(c: &impl GenericClient, env_id: &EnvId, p: &ScheduleProgress) -> Result<()> {
    c.execute(
        "UPDATE schedules SET state = $2, current_session = $3, state_start_time = $4 WHERE env_id = $1",
        &[&env_id.as_str(), &p.state.as_str(), &(p.session as i32), &ts(p.since)],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Sets (or, with `totalSessions` ≤ 0, removes) a stage's schedule. A new schedule starts
    /// with the next deploy; changing one keeps its progress.
    pub async fn set_schedule(
        &self,
        env: &EnvName,
        stage: &StageName,
        input: ScheduleInput,
        operator: &str,
        now: EpochMs,
    ) -> Result<Option<ScheduleBean>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let e = lock_stage(&*tx, env, stage).await?;
        let before = load(&*tx, &e.id).await?.map(|s| s.bean());
        let before = before.as_ref().map(json).transpose()?;
        let total = input.total_sessions.unwrap_or(0);
        if total <= 0 {
            tx.execute("DELETE FROM schedules WHERE env_id = $1", &[&e.id.as_str()]).await?;
            if before.is_some() {
                let change = Change { kind: kind::SCHEDULE, action: "delete", before, after: None };
                history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
            }
            tx.commit().await?;
            return Ok(None);
        }
        let config = ScheduleConfig::parse(
            total,
            input.host_numbers.as_deref().unwrap_or_default(),
            input.cooldown_times.as_deref().unwrap_or_default(),
        )?;
        let current = load(&*tx, &e.id).await?;
        let progress = match &current {
            Some(s) => ScheduleProgress { session: s.progress.session.min(config.sessions.len() as u32), ..s.progress },
            None => ScheduleProgress { since: now, ..ScheduleProgress::not_started() },
        };
        let id = current.as_ref().map(|s| s.id.clone()).unwrap_or_else(|| EnvId::generate().into_string());
        tx.execute(
            "INSERT INTO schedules (env_id, schedule_id, total_sessions, host_numbers, cooldown_times, state, current_session,
                 state_start_time)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (env_id) DO UPDATE SET total_sessions = EXCLUDED.total_sessions,
                 host_numbers = EXCLUDED.host_numbers, cooldown_times = EXCLUDED.cooldown_times,
                 current_session = EXCLUDED.current_session",
            &[
                &e.id.as_str(),
                &id,
                &total,
                &config.host_numbers(),
                &config.cooldown_times(),
                &progress.state.as_str(),
                &(progress.session as i32),
                &ts(progress.since),
            ],
        )
        .await?;
        let bean = StoredSchedule { id, config, progress }.bean();
        let action = if before.is_some() { "update" } else { "create" };
        let change = Change { kind: kind::SCHEDULE, action, before, after: Some(json(&bean)?) };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(Some(bean))
    }

    /// A stage's schedule.
    pub async fn schedule(&self, env: &EnvName, stage: &StageName) -> Result<Option<ScheduleBean>> {
        let e = self.stage(env, stage).await?;
        let client = self.client().await?;
        Ok(load(&**client, &e.id).await?.map(|s| s.bean()))
    }
}
