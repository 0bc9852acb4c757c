//! Keeps the gateway's memory current: binds a queue to the `changes` fanout, then loads
//! everything from Postgres (one consistent snapshot), then applies changes in version order
//! per stage. A gap in the versions reloads that stage; a lost connection reloads everything;
//! a periodic comparison of stage versions with Postgres, independent of the broker, catches
//! anything else (and reloads the tokens, and forgets idle hosts).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bus::{backoff, connect_with_retry, declare_topology, within};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use schema::EnvId;
use schema::bus::ChangeMessage;
use store::Store;
use tokio::sync::watch;

use super::longpoll::StageReach;
use super::state::{Load, StageEntry, Stages};
use super::{Gateway, GatewayConfig};
use crate::metrics;

/// Runs until `shutdown` turns true.
pub async fn run(gw: Arc<Gateway>, store: Store, config: GatewayConfig, mut shutdown: watch::Receiver<bool>) {
    while let Some(conn) = connect_with_retry(&config.bus, &mut shutdown).await {
        let session = async {
            let limit = config.bus.timeout;
            let (ch, q) = within(limit, "binding the change queue", async {
                let ch = conn.create_channel().await?;
                declare_topology(&ch, &config.bus).await?;
                // Exclusive, server-named and deleted with the connection: one per gateway.
                let q = ch
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                        FieldTable::default(),
                    )
                    .await?;
                ch.queue_bind(
                    q.name().clone(),
                    config.bus.changes_exchange().as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
                Ok::<_, bus::BusError>((ch, q))
            })
            .await?;
            // Bound before loading: no change can fall between the load and the stream.
            load_all(&gw, &store, &mut shutdown).await;
            let consume = ch.basic_consume(
                q.name().clone(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            );
            let mut changes = within(limit, "consuming changes", consume).await?;
            gw.set_ready(true);
            tracing::info!(
                stages = gw.stages.read().map(|s| s.by_id.len()).unwrap_or(0),
                hosts = gw.host_count(),
                "gateway loaded"
            );
            let mut check = tokio::time::interval(config.check_every);
            check.tick().await;
            loop {
                tokio::select! {
                    d = changes.next() => match d {
                        Some(Ok(d)) => match serde_json::from_slice::<ChangeMessage>(&d.data) {
                            Ok(msg) => apply(&gw, &store, msg).await,
                            Err(e) => tracing::warn!(error = %e, "undecodable change ignored"),
                        },
                        Some(Err(e)) => return Err(bus::BusError::from(e)),
                        None => return Ok(()),
                    },
                    _ = shutdown.changed() => if *shutdown.borrow() { return Ok(()) },
                }
            }
        }
        .await;
        let _ = within(config.bus.timeout, "closing", conn.close(200, "bye".into())).await;
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = session {
            tracing::warn!(error = %e, "change stream lost; reconnecting and reloading");
            metrics::reload("stream");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Agent records per chunk of a full load.
const LOAD_CHUNK: usize = 4096;

/// Loads stages, agent records and tokens, retrying until it works or shutdown.
async fn load_all(gw: &Arc<Gateway>, store: &Store, shutdown: &mut watch::Receiver<bool>) {
    let mut delays = backoff();
    loop {
        let failure = match load_once(gw, store).await {
            Ok(()) => {
                gw.polls.wake_all();
                return;
            }
            Err(e) => e,
        };
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        tracing::warn!(error = %failure, "gateway cannot load its state; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// One full load. The records stream from Postgres into a builder off the runtime's threads
/// (building a million takes a while) through a channel of two chunks, so at no moment do all
/// the rows exist next to the state built from them: the peak stays near the steady state.
async fn load_once(gw: &Arc<Gateway>, store: &Store) -> Result<(), String> {
    let now = schema::time::now_ms();
    let key = store.signing_key(store::HOST_CREDENTIAL_KEY, now).await.map_err(|e| e.to_string())?;
    gw.identity.set_key(key);
    gw.identity.synced_at.store(now, std::sync::atomic::Ordering::Release);
    let (parts, received) = tokio::sync::mpsc::channel(2);
    let gw2 = gw.clone();
    let builder = tokio::task::spawn_blocking(move || build(&gw2, received));
    let read = store
        .gateway_load(now, LOAD_CHUNK, |part| {
            let parts = parts.clone();
            async move { parts.send(part).await.is_ok() }
        })
        .await;
    drop(parts);
    let built = builder.await.map_err(|e| format!("building the state failed: {e}"))?;
    match (read, built) {
        (Ok(true), Some(built)) => {
            let gw2 = gw.clone();
            tokio::task::spawn_blocking(move || install(&gw2, built))
                .await
                .map_err(|e| format!("installing the state failed: {e}"))
        }
        (Ok(_), _) => Err("the state builder stopped early".into()),
        (Err(e), _) => Err(e.to_string()),
    }
}

/// A full load built aside: the stages and the records (their ids shared with the stages).
struct Built {
    head: store::GatewayLoad,
    records: Load,
}

/// Builds a full load from its parts as they arrive; `None` when the head never came.
fn build(gw: &Gateway, mut parts: tokio::sync::mpsc::Receiver<store::LoadPart>) -> Option<Built> {
    let Some(store::LoadPart::Head(head)) = parts.blocking_recv() else {
        return None;
    };
    let mut aside = Stages::default();
    aside.replace_all(head.stages.clone());
    let canon = aside.canon();
    let mut records = gw.hosts.begin_load();
    while let Some(part) = parts.blocking_recv() {
        match part {
            store::LoadPart::Agents(rows) => records.add(rows, &canon),
            store::LoadPart::Head(_) => return None,
        }
    }
    Some(Built { head, records })
}

/// Installs a full load: stages and records are swapped under the stages lock, which pings
/// take first, so no ping sees the new stages with the old records.
fn install(gw: &Gateway, built: Built) {
    let Built { head, records } = built;
    gw.identity.replace_tokens(head.tokens);
    gw.identity.merge_bindings(&head.credentials);
    let mut stages = gw.stages.write().unwrap_or_else(|p| p.into_inner());
    stages.replace_all(head.stages);
    gw.hosts.finish_load(records);
    drop(stages);
    release_free_memory();
}

/// Runs the periodic comparison with Postgres until `shutdown` turns true.
pub async fn check(gw: Arc<Gateway>, store: Store, config: GatewayConfig, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(config.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if gw.is_ready() {
            check_versions(&gw, &store).await;
            let before = schema::time::now_ms() - config.forget_idle_after.as_millis() as i64;
            let (gw2, keep) = (gw.clone(), config.max_hosts_without_records);
            // A scan of every host and a trim of the heap: off the runtime's threads.
            let forgotten = tokio::task::spawn_blocking(move || {
                let forgotten = gw2.hosts.evict_idle(before, keep);
                release_free_memory();
                forgotten
            })
            .await
            .unwrap_or(0);
            if forgotten > 0 {
                tracing::debug!(forgotten, "forgot idle hosts");
            }
        }
    }
}

async fn apply(gw: &Gateway, store: &Store, msg: ChangeMessage) {
    let Some((env_id, version)) = msg.stage_version() else {
        match &msg {
            ChangeMessage::HostsForgottenV1 { host_ids } => gw.hosts.unpublish(host_ids),
            ChangeMessage::HostCredentialV1 { host_id, host_name, generation, revoked } => {
                gw.identity.apply_binding(host_id, host_name, *generation, *revoked);
            }
            ChangeMessage::TokensV1 {} => match store.token_hashes(schema::time::now_ms()).await {
                Ok(tokens) => gw.identity.replace_tokens(tokens),
                Err(e) => tracing::warn!(error = %e, "could not reload tokens"),
            },
            ChangeMessage::StageV1 { .. } | ChangeMessage::AgentsV1 { .. } => {}
        }
        return;
    };
    let env_id = env_id.clone();
    let current = gw.stages.read().unwrap_or_else(|p| p.into_inner()).version(&env_id);
    if version <= current {
        metrics::change("stale");
        return;
    }
    // A stage this gateway does not hold is at version 0: its changes since creation are in
    // order from 1; a later one first means earlier ones (records among them) are missing or
    // late, and the stage is reloaded like any other gap.
    let in_order = version == current + 1;
    match msg {
        ChangeMessage::StageV1 { stage, .. } if in_order => {
            let old = gw.stages.write().unwrap_or_else(|p| p.into_inner()).put(&env_id, version, stage.map(|s| *s));
            wake_stage(gw, &env_id, old);
            metrics::change("applied");
        }
        ChangeMessage::AgentsV1 { agents, .. } if in_order => {
            let canon = gw.stages.read().unwrap_or_else(|p| p.into_inner()).canon();
            gw.hosts.apply_controls(&env_id, &agents, &canon);
            gw.stages.read().unwrap_or_else(|p| p.into_inner()).set_version(&env_id, version);
            gw.polls.wake_hosts(agents.iter().map(|a| &a.host_id));
            metrics::change("applied");
        }
        ChangeMessage::StageV1 { .. }
        | ChangeMessage::AgentsV1 { .. }
        | ChangeMessage::HostsForgottenV1 { .. }
        | ChangeMessage::HostCredentialV1 { .. }
        | ChangeMessage::TokensV1 {} => {
            tracing::debug!(env_id = %env_id, have = current, got = version, "change out of order; reloading the stage");
            metrics::change("gap");
            metrics::reload("gap");
            reload_stage(gw, store, &env_id).await;
        }
    }
}

async fn reload_stage(gw: &Gateway, store: &Store, env_id: &EnvId) {
    match store.stage_load(env_id).await {
        Ok((Some((version, snapshot)), rows)) => {
            // Stage and records change together under the stages lock (pings take it first), so
            // no ping sees one without the other; the records share the ids of the new stage.
            let mut stages = gw.stages.write().unwrap_or_else(|p| p.into_inner());
            let old = stages.put(env_id, version, Some(snapshot));
            gw.hosts.replace_stage(env_id, &rows, &stages.canon());
            drop(stages);
            wake_stage(gw, env_id, old);
        }
        Ok((None, _)) => {
            let old = gw.stages.write().unwrap_or_else(|p| p.into_inner()).put(env_id, 0, None);
            wake_stage(gw, env_id, old);
        }
        // The periodic check will try again.
        Err(e) => tracing::warn!(env_id = %env_id, error = %e, "could not reload a stage"),
    }
}

async fn check_versions(gw: &Gateway, store: &Store) {
    match store.token_hashes(schema::time::now_ms()).await {
        Ok(tokens) => gw.identity.replace_tokens(tokens),
        Err(e) => tracing::warn!(error = %e, "could not reload tokens"),
    }
    let since = gw.identity.sync_from(schema::time::now_ms());
    match store.host_credentials_since(since).await {
        Ok(credentials) => gw.identity.merge_bindings(&credentials),
        Err(e) => {
            // Read again from where this read started.
            gw.identity.synced_at.store(since + 60_000, std::sync::atomic::Ordering::Release);
            tracing::warn!(error = %e, "could not read recent enrollments");
        }
    }
    let db = match store.stage_versions().await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "could not compare stage versions");
            return;
        }
    };
    let local = gw.stages.read().unwrap_or_else(|p| p.into_inner()).versions();
    let db_ids: HashSet<&EnvId> = db.iter().map(|(id, _)| id).collect();
    for (id, version) in &db {
        let have = local.iter().find(|(l, _)| l == id).map(|(_, v)| *v).unwrap_or(0);
        if have != *version {
            metrics::reload("drift");
            reload_stage(gw, store, id).await;
        }
    }
    for (id, _) in &local {
        if !db_ids.contains(id) {
            let old = gw.stages.write().unwrap_or_else(|p| p.into_inner()).put(id, 0, None);
            wake_stage(gw, id, old);
        }
    }
}

/// Wakes the long-polls a stage change concerns: hosts the stage covered before the change
/// (`old`) or covers now.
fn wake_stage(gw: &Gateway, env_id: &EnvId, old: Option<Arc<StageEntry>>) {
    let new = gw.stages.read().unwrap_or_else(|p| p.into_inner()).get(env_id);
    let mut reach = StageReach { env_id, hosts: Vec::new(), groups: Vec::new() };
    for s in old.iter().chain(new.iter()) {
        reach.hosts.extend(&s.snapshot.hosts);
        reach.groups.extend(&s.snapshot.groups);
    }
    gw.polls.wake_stage(&reach);
}

/// Hands memory freed since the last call back to the system. A full load builds the new
/// state beside the old and frees the rows it was built from; glibc keeps such memory
/// resident, so the process would look (and be billed) as large as its biggest load.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free pages of glibc's own heaps; it takes no
        // pointer and is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}
