//! Publishing with publisher confirms.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::Mutex;

use crate::connection::{BusError, connect};
use crate::topology::{BusConfig, declare_topology};

/// Persistent JSON message properties.
pub fn json_props() -> BasicProperties {
    BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(2)
}

pub(crate) async fn confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    payload: &[u8],
    props: BasicProperties,
) -> Result<(), BusError> {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            payload,
            props,
        )
        .await?
        .await?;
    check(confirm)
}

fn check(confirm: Confirmation) -> Result<(), BusError> {
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(BusError::Refused(format!("unroutable: {}", returned.reply_text))),
        Confirmation::Nack(_) => Err(BusError::Refused("nack".into())),
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Full exchange name.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Body.
    pub payload: Vec<u8>,
}

/// A publisher with confirms on a connection of its own, reconnected on demand.
pub struct Publisher {
    cfg: BusConfig,
    state: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    /// A publisher; it connects on first use.
    pub fn new(cfg: BusConfig) -> Self {
        Publisher { cfg, state: Mutex::new(None) }
    }

    /// The configuration.
    pub fn config(&self) -> &BusConfig {
        &self.cfg
    }

    /// Publishes messages and returns once the broker confirmed every one. On any error the
    /// connection is dropped (the next call reconnects) and the error returned: the caller
    /// still holds the messages and decides when to try again. Unroutable messages (no queue
    /// bound, e.g. no gateway running) are not an error for fanout and topic exchanges.
    pub async fn publish(&self, messages: &[Outgoing]) -> Result<(), BusError> {
        let mut state = self.state.lock().await;
        if state.as_ref().is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected()) {
            let conn = connect(&self.cfg).await?;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            declare_topology(&ch, &self.cfg).await?;
            *state = Some((conn, ch));
        }
        let Some((_, ch)) = state.as_ref() else { return Err(BusError::Unavailable("no channel".into())) };
        let result = async {
            let mut pending = Vec::with_capacity(messages.len());
            for m in messages {
                let confirm = ch
                    .basic_publish(
                        m.exchange.as_str().into(),
                        m.routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &m.payload,
                        json_props(),
                    )
                    .await?;
                pending.push(confirm);
            }
            for p in pending {
                match p.await? {
                    Confirmation::Nack(_) => return Err(BusError::Refused("nack".into())),
                    Confirmation::Ack(_) | Confirmation::NotRequested => {}
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            *state = None;
        }
        result
    }
}
