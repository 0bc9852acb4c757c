//! The command consumer: applies deploy commands and replies to the API.

use lapin::options::BasicPublishOptions;
use schema::bus::{Command, CommandEnvelope, CommandOutcome, CommandReply};
use schema::time::EpochMs;
use store::{CommandStage, Store};
use tracing::Instrument;

use bus::{DeliveryCtx, Disposition, Handler, json_props};
use schema::time::now_ms;

use crate::live::LiveEvents;

/// Applies commands from the `commands` queue.
pub struct CommandHandler {
    store: Store,
    live: LiveEvents,
}

impl CommandHandler {
    /// A handler on a store.
    pub fn new(store: Store) -> Self {
        CommandHandler { store, live: LiveEvents::default() }
    }

    /// The same, telling the board the stage's deploy and the records a command wrote.
    pub fn with_live(self, live: LiveEvents) -> Self {
        CommandHandler { live, ..self }
    }

    /// Reads what an applied command changed and queues it for the board; a failure costs the
    /// board an update, never the command.
    async fn tell_the_board(&self, command: &Command, at: EpochMs) {
        let stage = match (command.stage_names(), command) {
            (Some((env_name, stage_name)), _) => CommandStage::Names(env_name, stage_name),
            (None, Command::UpdateDeployV1 { deploy_id, .. }) => CommandStage::OfDeploy(deploy_id),
            (None, _) => return,
        };
        match self.store.live_after_command(stage, at).await {
            Ok(events) => self.live.send(events),
            Err(e) => tracing::debug!(error = %e, "no live event for a command"),
        }
    }
}

impl Handler for CommandHandler {
    async fn handle(&self, ctx: &DeliveryCtx<'_>) -> Disposition {
        let d = ctx.delivery;
        let envelope: CommandEnvelope = match serde_json::from_slice(&d.data) {
            Ok(e) => e,
            Err(e) => return Disposition::Dead(format!("undecodable command: {e}")),
        };
        let (env, stage) = envelope.command.stage_names().map_or(("-", "-"), |(e, s)| (e.as_str(), s.as_str()));
        let span = tracing::info_span!(
            "command",
            command.id = %envelope.id,
            command.kind = envelope.command.kind(),
            request.id = envelope.request_id.as_deref().unwrap_or("-"),
            env = env,
            stage = stage,
        );
        self.apply(ctx, envelope).instrument(span).await
    }
}

impl CommandHandler {
    async fn apply(&self, ctx: &DeliveryCtx<'_>, envelope: CommandEnvelope) -> Disposition {
        let d = ctx.delivery;
        let now = now_ms();
        let (applied, admitted) = store::counting_admissions(self.store.apply_command(&envelope, now)).await;
        let outcome = match applied {
            Ok(outcome) => outcome,
            Err(e) if e.is_transient() => return Disposition::RetryLater(format!("command {}: {e}", envelope.id)),
            Err(e) => return Disposition::Retry(format!("command {}: {e}", envelope.id)),
        };
        let deploy = deploy_of(&envelope.command, &outcome);
        tracing::info!(command.id = %envelope.id, command.kind = envelope.command.kind(), operator = %envelope.operator,
            deploy.id = deploy.unwrap_or("-"), ok = matches!(outcome, CommandOutcome::Ok { .. }), "command applied");
        // The outcome is committed; a lost reply only makes the API answer 202 and the caller
        // poll the command.
        let applied = matches!(outcome, CommandOutcome::Ok { .. });
        if applied {
            // A deploy's first hosts, or the next ones after a host action freed a slot.
            crate::metrics::admitted(admitted);
        }
        if let Some(reply_to) = d.properties.reply_to() {
            let reply = CommandReply { command_id: envelope.id.clone(), outcome };
            if let Ok(body) = serde_json::to_vec(&reply) {
                let props = json_props().with_correlation_id(envelope.id.as_str().into());
                let sent = ctx
                    .channel
                    .basic_publish("".into(), reply_to.clone(), BasicPublishOptions::default(), &body, props)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(command.id = %envelope.id, error = %e, "could not send the command reply");
                }
            }
        }
        // After the reply, so the caller does not wait for the board.
        if applied && self.live.is_on() {
            self.tell_the_board(&envelope.command, now).await;
        }
        Disposition::Ack
    }
}

/// The deploy a command made or changed, for the log: the one it names, or the one its result
/// is (a new deploy, a promotion, a rollback, a restart).
fn deploy_of<'a>(command: &'a Command, outcome: &'a CommandOutcome) -> Option<&'a str> {
    match (command, outcome) {
        (Command::UpdateDeployV1 { deploy_id, .. }, _) => Some(deploy_id.as_str()),
        (Command::CreateDeployV1 { .. } | Command::DeployActionV1 { .. }, CommandOutcome::Ok { result }) => {
            result.get("id").and_then(serde_json::Value::as_str)
        }
        _ => None,
    }
}
