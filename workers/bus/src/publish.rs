//! Publishing with publisher confirms.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::connection::{BusError, connect, within};
use crate::link::{Healthy, Shared};
use crate::topology::{BusConfig, declare_topology};

/// Persistent JSON message properties.
pub fn json_props() -> BasicProperties {
    BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(2)
}

/// Publishes one message with `mandatory` and waits for its confirm, each step bounded by
/// `limit`.
pub(crate) async fn confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    payload: &[u8],
    props: BasicProperties,
    limit: Duration,
) -> Result<(), BusError> {
    let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
    let confirm =
        within(limit, "publishing", ch.basic_publish(exchange.into(), key.into(), opts, payload, props)).await?;
    check(within(limit, "waiting for the broker's confirm", confirm).await?)
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

/// A connection and its channel in confirm mode, with the topology declared.
/// Dropping it closes both.
struct Link {
    ch: Channel,
    conn: Connection,
}

impl Healthy for Link {
    fn healthy(&self) -> bool {
        self.conn.status().connected() && self.ch.status().connected()
    }
}

async fn open(cfg: &BusConfig) -> Result<Link, BusError> {
    let conn = connect(cfg).await?;
    let ch = within(cfg.timeout, "opening a channel", async {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        declare_topology(&ch, cfg).await?;
        Ok::<_, BusError>(ch)
    })
    .await?;
    Ok(Link { ch, conn })
}

/// A publisher with confirms on a connection of its own, reconnected on demand. Concurrent
/// publishes share the connection and run in parallel; none waits for another's confirms.
pub struct Publisher {
    cfg: BusConfig,
    link: Shared<Link>,
}

impl Publisher {
    /// A publisher; it connects on first use.
    pub fn new(cfg: BusConfig) -> Self {
        Publisher { cfg, link: Shared::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &BusConfig {
        &self.cfg
    }

    /// Publishes messages and returns once the broker confirmed every one, each step within
    /// the configured timeout. When the broker cannot be reached or does not answer in time,
    /// the connection is dropped (the next call opens another) and the error returned: the
    /// caller still holds the messages and decides when to try again. Unroutable messages (no
    /// queue bound, e.g. no gateway running) are not an error for fanout and topic exchanges.
    pub async fn publish(&self, messages: &[Outgoing]) -> Result<(), BusError> {
        let limit = self.cfg.timeout;
        let link = self.link.get(limit, || open(&self.cfg)).await?;
        let result = async {
            let mut pending = Vec::with_capacity(messages.len());
            for m in messages {
                let publish = link.ch.basic_publish(
                    m.exchange.as_str().into(),
                    m.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &m.payload,
                    json_props(),
                );
                pending.push(within(limit, "publishing", publish).await?);
            }
            // One deadline for the confirms of the whole batch.
            let confirms = async {
                for p in pending {
                    if let Confirmation::Nack(_) = p.await? {
                        return Err(BusError::Refused("nack".into()));
                    }
                }
                Ok(())
            };
            within(limit, "waiting for the broker's confirms", confirms).await
        }
        .await;
        if let Err(BusError::Unavailable(_)) = &result {
            self.link.discard(&link);
        }
        result
    }
}
