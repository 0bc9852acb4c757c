//! Commands with replies: the API publishes a command with publisher confirms and waits a
//! bounded time for the worker's answer on RabbitMQ's direct reply-to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use schema::bus::{CommandEnvelope, CommandReply};
use tokio::sync::oneshot;

use crate::link::{Healthy, Shared};
use crate::publish::confirmed;
use crate::{BusConfig, BusError, WorkQueue, connect, declare_topology, json_props, within};

/// RabbitMQ's pseudo-queue for direct replies.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

type Pending = Arc<StdMutex<HashMap<String, oneshot::Sender<CommandReply>>>>;

/// A connection with its channel consuming the direct replies. Dropping it closes both.
struct RpcChannel {
    ch: Channel,
    conn: Connection,
    pending: Pending,
    /// Turns false when the reply stream ends (the connection or channel closed).
    alive: Arc<AtomicBool>,
}

impl Healthy for RpcChannel {
    fn healthy(&self) -> bool {
        self.alive.load(Ordering::Acquire) && self.conn.status().connected() && self.ch.status().connected()
    }
}

/// Sends commands and receives their replies. Concurrent commands share one connection and
/// never wait for each other; a broken connection is replaced by one caller while the others
/// wait for it a bounded time.
pub struct CommandClient {
    cfg: BusConfig,
    link: Shared<RpcChannel>,
}

async fn open(cfg: &BusConfig) -> Result<RpcChannel, BusError> {
    let conn = connect(cfg).await?;
    let (ch, mut replies) = within(cfg.timeout, "opening the command channel", async {
        let ch = conn.create_channel().await?;
        declare_topology(&ch, cfg).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        // Direct reply-to: consume the pseudo-queue in no-ack mode on the publishing channel,
        // before publishing.
        let replies = ch
            .basic_consume(
                REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, BusError>((ch, replies))
    })
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
    Ok(RpcChannel { ch, conn, pending, alive })
}

impl CommandClient {
    /// A client; it connects on first use and reconnects when the connection breaks.
    pub fn new(cfg: BusConfig) -> Self {
        CommandClient { cfg, link: Shared::new() }
    }

    /// The broker it talks to.
    pub fn config(&self) -> &BusConfig {
        &self.cfg
    }

    /// Publishes a command (confirmed by the broker, each step within the configured timeout)
    /// and waits up to `wait` for its reply. `Ok(None)`: the command is queued but no reply
    /// came in time (a worker will still apply it). `Err`: the command could not be queued,
    /// or the broker did not confirm it in time (then it may still have been queued).
    pub async fn send(&self, envelope: &CommandEnvelope, wait: Duration) -> Result<Option<CommandReply>, BusError> {
        let limit = self.cfg.timeout;
        let rpc = self.link.get(limit, || open(&self.cfg)).await?;
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
        let exchange = self.cfg.exchange(WorkQueue::Commands);
        let published = confirmed(&rpc.ch, &exchange, WorkQueue::Commands.as_str(), &payload, props, limit).await;
        if let Err(e) = published {
            forget(&rpc);
            if let BusError::Unavailable(_) = e {
                self.link.discard(&rpc);
            }
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
