//! The command consumer: applies deploy commands and replies to the API.

use lapin::options::BasicPublishOptions;
use schema::bus::{CommandEnvelope, CommandReply};
use store::Store;

use bus::{DeliveryCtx, Disposition, Handler, json_props};
use schema::time::now_ms;

/// Applies commands from the `commands` queue.
pub struct CommandHandler {
    store: Store,
}

impl CommandHandler {
    /// A handler on a store.
    pub fn new(store: Store) -> Self {
        CommandHandler { store }
    }
}

impl Handler for CommandHandler {
    async fn handle(&self, ctx: &DeliveryCtx<'_>) -> Disposition {
        let d = ctx.delivery;
        let envelope: CommandEnvelope = match serde_json::from_slice(&d.data) {
            Ok(e) => e,
            Err(e) => return Disposition::Dead(format!("undecodable command: {e}")),
        };
        let outcome = match self.store.apply_command(&envelope, now_ms()).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_transient() => return Disposition::RetryLater(format!("command {}: {e}", envelope.id)),
            Err(e) => return Disposition::Retry(format!("command {}: {e}", envelope.id)),
        };
        tracing::info!(command.id = %envelope.id, command.kind = envelope.command.kind(), operator = %envelope.operator,
            ok = matches!(outcome, schema::bus::CommandOutcome::Ok { .. }), "command applied");
        // The outcome is committed; a lost reply only makes the API answer 202 and the caller
        // poll the command.
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
        Disposition::Ack
    }
}
