//! Dead-lettered commands end FAILED: the watcher of the commands' dead letters
//! (`bus::watch_dead_letters`) hands each one here, and its command's status says it will
//! never be applied, with the reason, so `GET /v1/commands/{id}` reaches a final state.

use bus::DeadLetterHandler;
use schema::bus::CommandEnvelope;
use schema::time::now_ms;
use store::Store;

/// Marks dead-lettered commands FAILED.
pub struct DeadCommands {
    store: Store,
}

impl DeadCommands {
    /// A handler on a store.
    pub fn new(store: Store) -> Self {
        DeadCommands { store }
    }
}

impl DeadLetterHandler for DeadCommands {
    async fn dead(&self, body: &[u8], reason: Option<&str>) -> Result<(), String> {
        let reason = reason.unwrap_or("no reason recorded");
        // The whole envelope when it reads; else its id, when the body is JSON with one.
        let envelope = serde_json::from_slice::<CommandEnvelope>(body).ok();
        let id = match &envelope {
            Some(e) => Some(e.id.clone()),
            None => serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string)),
        };
        let Some(id) = id.filter(|id| !id.is_empty() && id.len() <= 64) else {
            tracing::error!(reason, "a dead-lettered command has no id: nothing to mark");
            return Ok(());
        };
        match self.store.fail_dead_command(&id, envelope.as_ref(), reason, now_ms()).await {
            Ok(marked) => {
                tracing::error!(command.id = %id, reason, marked, "command dead-lettered");
                Ok(())
            }
            Err(e) if e.is_transient() => Err(format!("command {id}: {e}")),
            Err(e) => {
                tracing::error!(command.id = %id, error = %e, "could not mark a dead-lettered command");
                Ok(())
            }
        }
    }
}
