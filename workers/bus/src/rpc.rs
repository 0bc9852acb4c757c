//! Commands with replies: the API publishes a command with publisher confirms and waits a
//! bounded time for the worker's answer on RabbitMQ's direct reply-to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use schema::bus::{CommandEnvelope, CommandReply};
use tokio::sync::{Mutex, oneshot};

use crate::{BusConfig, BusError, WorkQueue, connect, declare_topology, json_props};

/// RabbitMQ's pseudo-queue for direct replies.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

type Pending = Arc<StdMutex<HashMap<String, oneshot::Sender<CommandReply>>>>;

struct RpcChannel {
    _conn: Connection,
    ch: Channel,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

/// Sends commands and receives their replies.
pub struct CommandClient {
    cfg: BusConfig,
    state: Mutex<Option<Arc<RpcChannel>>>,
}

impl CommandClient {
    /// A client; it connects on first use and reconnects when the connection breaks.
    pub fn new(cfg: BusConfig) -> Self {
        CommandClient { cfg, state: Mutex::new(None) }
    }

    async fn channel(&self) -> Result<Arc<RpcChannel>, BusError> {
        let mut state = self.state.lock().await;
        if let Some(rpc) = state.as_ref()
            && rpc.alive.load(Ordering::Acquire)
            && rpc.ch.status().connected()
        {
            return Ok(rpc.clone());
        }
        let conn = connect(&self.cfg).await?;
        let ch = conn.create_channel().await?;
        declare_topology(&ch, &self.cfg).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        // Direct reply-to: consume the pseudo-queue in no-ack mode on the publishing channel,
        // before publishing.
        let mut replies = ch
            .basic_consume(
                REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let pending: Pending = Arc::new(StdMutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let (task_pending, task_alive) = (pending.clone(), alive.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let Ok(reply) = serde_json::from_slice::<CommandReply>(&d.data) else {
                    tracing::warn!("undecodable command reply ignored");
                    continue;
                };
                let waiter = task_pending.lock().ok().and_then(|mut p| p.remove(&reply.command_id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
            task_alive.store(false, Ordering::Release);
        });
        let rpc = Arc::new(RpcChannel { _conn: conn, ch, pending, alive });
        *state = Some(rpc.clone());
        Ok(rpc)
    }

    /// Publishes a command (confirmed by the broker) and waits up to `wait` for its reply.
    /// `Ok(None)`: the command is queued but no reply came in time (a worker will still apply
    /// it). `Err`: the command could not be queued.
    pub async fn send(&self, envelope: &CommandEnvelope, wait: Duration) -> Result<Option<CommandReply>, BusError> {
        let rpc = self.channel().await?;
        let payload = serde_json::to_vec(envelope).map_err(|e| BusError::Refused(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = rpc.pending.lock() {
            p.insert(envelope.id.clone(), tx);
        }
        let forget = |rpc: &RpcChannel| {
            if let Ok(mut p) = rpc.pending.lock() {
                p.remove(&envelope.id);
            }
        };
        let props = json_props().with_reply_to(REPLY_TO.into()).with_correlation_id(envelope.id.as_str().into());
        let published = async {
            let confirm = rpc
                .ch
                .basic_publish(
                    self.cfg.exchange(WorkQueue::Commands).as_str().into(),
                    WorkQueue::Commands.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &payload,
                    props,
                )
                .await?
                .await?;
            match confirm {
                lapin::Confirmation::Ack(None) => Ok(()),
                lapin::Confirmation::Ack(Some(r)) => Err(BusError::Refused(r.reply_text.to_string())),
                lapin::Confirmation::Nack(_) => Err(BusError::Refused("nack".into())),
                lapin::Confirmation::NotRequested => Ok(()),
            }
        }
        .await;
        if let Err(e) = published {
            forget(&rpc);
            rpc.alive.store(false, Ordering::Release);
            return Err(e);
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(reply)) => Ok(Some(reply)),
            _ => {
                forget(&rpc);
                Ok(None)
            }
        }
    }
}
