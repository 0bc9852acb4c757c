//! The outbox: messages written in the transaction of the change they announce, published
//! to RabbitMQ by a relay afterwards. A row is leased while a relay publishes it, and deleted
//! once the broker confirmed it; a relay that dies leaves a lease that expires.

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::rows::get;
use crate::{Error, Result, Store};

/// Which exchange a message goes to (the bus adds its namespace prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// Goal changes for the gateways (fanout).
    Changes,
    /// Domain events (topic).
    Events,
    /// Webhook deliveries for the webhook workers (the `webhooks` work queue).
    Webhooks,
}

impl Exchange {
    /// Name stored in the row.
    pub fn as_str(self) -> &'static str {
        match self {
            Exchange::Changes => "changes",
            Exchange::Events => "events",
            Exchange::Webhooks => "webhooks",
        }
    }

    fn parse(s: &str) -> Result<Exchange> {
        match s {
            "changes" => Ok(Exchange::Changes),
            "events" => Ok(Exchange::Events),
            "webhooks" => Ok(Exchange::Webhooks),
            other => Err(Error::Corrupt(format!("outbox exchange {other:?}"))),
        }
    }
}

/// A message claimed for publishing.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Row id (publish in this order).
    pub id: i64,
    /// Target exchange.
    pub exchange: Exchange,
    /// Routing key.
    pub routing_key: String,
    /// JSON body.
    pub payload: serde_json::Value,
}

/// Adds a message to the outbox within the caller's transaction.
pub(crate) async fn enqueue(
    c: &impl GenericClient,
    exchange: Exchange,
    routing_key: &str,
    payload: &impl Serialize,
) -> Result<()> {
    let payload = serde_json::to_value(payload).map_err(|e| Error::Corrupt(format!("outbox payload: {e}")))?;
    c.execute(
        "INSERT INTO outbox (exchange, routing_key, payload) VALUES ($1, $2, $3)",
        &[&exchange.as_str(), &routing_key, &payload],
    )
    .await?;
    // Wakes relays that listen, so changes reach gateways without waiting for a poll.
    c.execute("SELECT pg_notify('teletraan_outbox', '')", &[]).await?;
    Ok(())
}

impl Store {
    /// Leases up to `limit` unsent messages, oldest first, for `lease`.
    pub async fn lease_outbox(&self, limit: i64, lease: Duration) -> Result<Vec<OutboxMessage>> {
        let client = self.client().await?;
        let secs = lease.as_secs_f64();
        let rows = client
            .query(
                "UPDATE outbox SET leased_until = now() + make_interval(secs => $2)
                 WHERE id IN (SELECT id FROM outbox WHERE leased_until < now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, exchange, routing_key, payload",
                &[&limit, &secs],
            )
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(OutboxMessage {
                    id: get(r, "id")?,
                    exchange: Exchange::parse(get(r, "exchange")?)?,
                    routing_key: get(r, "routing_key")?,
                    payload: get(r, "payload")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    /// Deletes messages the broker confirmed.
    pub async fn delete_outbox(&self, ids: &[i64]) -> Result<()> {
        let client = self.client().await?;
        client.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids]).await?;
        Ok(())
    }

    /// Releases the lease of messages that could not be published, so they go out next time.
    pub async fn release_outbox(&self, ids: &[i64]) -> Result<()> {
        let client = self.client().await?;
        client.execute("UPDATE outbox SET leased_until = '-infinity' WHERE id = ANY($1)", &[&ids]).await?;
        Ok(())
    }

    /// Number of messages waiting.
    pub async fn outbox_len(&self) -> Result<i64> {
        let client = self.client().await?;
        Ok(client.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0))
    }

    /// Opens a dedicated connection that receives a notification whenever a message is added
    /// to the outbox; the returned receiver yields `()` per wake-up and closes when the
    /// connection is lost.
    pub async fn listen_outbox(url: &str) -> Result<tokio::sync::mpsc::Receiver<()>> {
        use futures_util::StreamExt;
        let (config, tls) = crate::client_config(url, crate::StoreOptions::default().connect_timeout)?;
        let (client, mut conn) = config.connect(tls).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let client = std::sync::Arc::new(client);
        let held = client.clone();
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        tokio::spawn(async move {
            // The task owns the connection (it drives it) and a handle to the client, so both
            // live exactly as long as someone listens and the server is there.
            let _client = held;
            loop {
                tokio::select! {
                    msg = messages.next() => match msg {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                            let _ = tx.try_send(());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                    _ = tx.closed() => break,
                }
            }
        });
        client.batch_execute("LISTEN teletraan_outbox").await?;
        Ok(rx)
    }
}
