//! What the deploy board is told after a change (`schema::bus::LiveEvent`): a stage's current
//! deploy and the agent records a change wrote, read in the transaction that made the change
//! or right after it.

use schema::bus::{AgentView, LiveEvent, StageAgents, StageDeploy};
use schema::time::EpochMs;
use schema::{DeployId, EnvId, EnvName, EnvState, StageName};

use crate::agents::{AGENT_COLUMNS_OF_A, view_from_row};
use crate::deploys::{DEPLOY_COLUMNS_OF_D, deploy_from_row};
use crate::rows::{get, get_id, get_parsed, ts};
use crate::{Result, Store};

/// What a stage's re-evaluation leaves for the board.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// The stage's current deploy after the evaluation (none before its first deploy).
    pub deploy: Option<StageDeploy>,
    /// Whether the evaluation changed the deploy (its state, progress, verdict, last update).
    pub deploy_changed: bool,
    /// The hosts it admitted, as they are now (none when it admitted nobody).
    pub admitted: Option<StageAgents>,
}

impl Refreshed {
    /// The live events to publish: the deploy, then the admitted hosts.
    pub fn into_live(self) -> Vec<LiveEvent> {
        let deploy = self.deploy.map(LiveEvent::DeployV1);
        let admitted = self.admitted.map(LiveEvent::AgentsV1);
        deploy.into_iter().chain(admitted).collect()
    }
}

/// The stage a command was about.
#[derive(Debug, Clone, Copy)]
pub enum CommandStage<'a> {
    /// Named in the command.
    Names(&'a EnvName, &'a StageName),
    /// The stage of a deploy (a verdict names only the deploy).
    OfDeploy(&'a DeployId),
}

impl Store {
    /// What the board is told after a command on a stage committed: the stage's current
    /// deploy, and the records the command wrote, told by their last update being the
    /// command's time `stamped_at` (admissions and host actions stamp it; a report stored in
    /// the same millisecond may come along, which only tells the board something true). Nothing
    /// for a stage that is gone.
    pub async fn live_after_command(&self, stage: CommandStage<'_>, stamped_at: EpochMs) -> Result<Vec<LiveEvent>> {
        let client = self.client().await?;
        let (env, stage_name, deploy) = match stage {
            CommandStage::Names(env, stage) => (Some(env.as_str()), Some(stage.as_str()), None),
            CommandStage::OfDeploy(deploy) => (None, None, Some(deploy.as_str())),
        };
        // The stage and its current deploy (if any) in one read.
        let Some(e) = client
            .query_opt(
                &format!(
                    "SELECT e.env_id AS stage_id, e.env_name, e.stage_name, e.env_state, {DEPLOY_COLUMNS_OF_D}
                     FROM environs e LEFT JOIN deploys d ON d.deploy_id = e.deploy_id
                     WHERE (e.env_name = $1 AND e.stage_name = $2)
                        OR e.env_id = (SELECT x.env_id FROM deploys x WHERE x.deploy_id = $3)"
                ),
                &[&env, &stage_name, &deploy],
            )
            .await?
        else {
            return Ok(Vec::new());
        };
        let (env_id, env_name, stage_name): (EnvId, EnvName, StageName) =
            (get_id(&e, "stage_id")?, get_id(&e, "env_name")?, get_id(&e, "stage_name")?);
        let mut live = Vec::new();
        if get::<Option<&str>>(&e, "deploy_id")?.is_some() {
            live.push(LiveEvent::DeployV1(StageDeploy {
                env_id: env_id.clone(),
                env_name: env_name.clone(),
                stage_name: stage_name.clone(),
                deploy: deploy_from_row(&e)?,
                paused: get_parsed::<EnvState>(&e, "env_state")? == EnvState::Paused,
            }));
        }
        let stamped = client
            .query(
                &format!(
                    "SELECT {AGENT_COLUMNS_OF_A} FROM agents a WHERE a.env_id = $1 AND a.last_update = $2
                     ORDER BY a.host_name, a.host_id"
                ),
                &[&env_id.as_str(), &ts(stamped_at)],
            )
            .await?;
        let agents: Vec<AgentView> = stamped.iter().map(|r| view_from_row(r, false)).collect::<Result<_>>()?;
        if !agents.is_empty() {
            live.push(LiveEvent::AgentsV1(StageAgents { env_id, env_name, stage_name, agents }));
        }
        Ok(live)
    }
}
