//! The periodic sweep: re-evaluates every stage with an active deploy, which moves deploys
//! that stopped progressing to FAILING and admits hosts that no event woke up for. A stage
//! another worker is evaluating right now is skipped, not waited for.

use std::time::Duration;

use store::Store;
use tokio::sync::watch;

use schema::time::now_ms;

/// Runs the sweep every `interval` until `shutdown` turns true.
pub async fn run(store: Store, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        match store.stages_with_active_deploys().await {
            Ok(stages) => {
                for env_id in stages {
                    if *shutdown.borrow() {
                        return;
                    }
                    if let Err(e) = store.refresh_stage_if_free(&env_id, now_ms()).await {
                        tracing::warn!(env_id = %env_id, error = %e, "sweep of a stage failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweep could not list stages"),
        }
    }
}
