//! Webhooks: each stage's hooks, the deliveries a deploy fires (written in the deploy's own
//! transaction, with one outbox message each), and what the webhook workers record of every
//! attempt. A webhook never blocks a deploy: firing only inserts rows; sending is the workers'.

use std::fmt;
use std::time::Duration;

use schema::bus::WebhookMessage;
use schema::model::{
    DeliveryStatus, Deploy, EnvWebHooks, Environ, HookHeader, HookMethod, HookPhase, HookRequest, SecretChange,
    WebHook, WebHookConfig, WebHookDelivery,
};
use schema::rules::webhook::{HookVars, render};
use schema::time::EpochMs;
use schema::{EnvName, StageName, base64_id};
use tokio_postgres::{GenericClient, Row};

use crate::history::{self, Change, Place};
use crate::outbox::{Exchange, enqueue};
use crate::rows::{get, get_id, get_ms, get_opt_ms, ts};
use crate::stages::lock_stage;
use crate::{Error, Result, Store};

/// Routing key of delivery messages: the binding of the bus's `webhooks` work queue.
const ROUTING_KEY: &str = "webhooks";

const DELIVERY_COLUMNS: &str = "id, env_name, stage_name, deploy_id, phase, hook_index, method, url, headers, body, \
     status, attempts, last_status_code, last_error, created_at, updated_at, delivered_at";

/// What a claim on a delivery found.
#[derive(Debug)]
pub enum DeliveryClaim {
    /// Unknown, or settled (delivered or failed): nothing to send.
    Gone,
    /// Another worker is sending it now.
    Busy,
    /// Leased to the caller: send it.
    Ready(Box<ClaimedDelivery>),
}

/// A delivery leased for sending, with the stage's current secret.
pub struct ClaimedDelivery {
    /// The delivery (its request, its attempts so far).
    pub delivery: WebHookDelivery,
    /// The stage's secret, when deliveries are signed.
    pub secret: Option<String>,
}

impl fmt::Debug for ClaimedDelivery {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("delivery", &self.delivery)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The outcome of one attempt, as the worker decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// DELIVERED, PENDING (another attempt follows) or FAILED.
    pub status: DeliveryStatus,
    /// HTTP status, when an answer came back.
    pub status_code: Option<u16>,
    /// Why it failed (`None` when delivered).
    pub error: Option<String>,
}

fn delivery_from_row(r: &Row) -> Result<WebHookDelivery> {
    let phase: &str = get(r, "phase")?;
    let method: &str = get(r, "method")?;
    let status: &str = get(r, "status")?;
    let headers: Vec<HookHeader> = serde_json::from_value(get(r, "headers")?)
        .map_err(|e| Error::Corrupt(format!("webhook delivery headers: {e}")))?;
    Ok(WebHookDelivery {
        id: get(r, "id")?,
        env_name: get_id(r, "env_name")?,
        stage_name: get_id(r, "stage_name")?,
        deploy_id: get_id(r, "deploy_id")?,
        phase: HookPhase::parse(phase).ok_or_else(|| Error::Corrupt(format!("webhook phase {phase:?}")))?,
        hook_index: get(r, "hook_index")?,
        request: HookRequest {
            method: HookMethod::parse(method).ok_or_else(|| Error::Corrupt(format!("webhook method {method:?}")))?,
            url: get(r, "url")?,
            headers,
            body: get(r, "body")?,
        },
        status: DeliveryStatus::parse(status).ok_or_else(|| Error::Corrupt(format!("webhook status {status:?}")))?,
        attempts: get(r, "attempts")?,
        last_status_code: get(r, "last_status_code")?,
        last_error: get(r, "last_error")?,
        created_at: get_ms(r, "created_at")?,
        updated_at: get_ms(r, "updated_at")?,
        delivered_at: get_opt_ms(r, "delivered_at")?,
    })
}

fn hooks_of(r: &Row, col: &str) -> Result<Vec<WebHook>> {
    serde_json::from_value(get(r, col)?).map_err(|e| Error::Corrupt(format!("{col}: {e}")))
}

fn later(now: EpochMs, d: Duration) -> EpochMs {
    now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
}

fn json_of(v: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Corrupt(format!("webhook JSON: {e}")))
}

/// Fires a phase's hooks for a deploy inside the caller's transaction: one delivery per hook,
/// its request computed now, fully substituted, and one outbox message per delivery. A hook
/// whose request cannot be built (a substituted value broke a header) is stored FAILED with the
/// reason, and the deploy goes on: a webhook never blocks a deploy. Firing a phase twice for a
/// deploy inserts nothing the second time.
pub(crate) async fn enqueue_deliveries(
    c: &impl GenericClient,
    e: &Environ,
    deploy: &Deploy,
    phase: HookPhase,
    now: EpochMs,
) -> Result<()> {
    let column = match phase {
        HookPhase::Pre => "pre_hooks",
        HookPhase::Post => "post_hooks",
    };
    let Some(row) =
        c.query_opt(&format!("SELECT {column} AS hooks FROM webhooks WHERE env_id = $1"), &[&e.id.as_str()]).await?
    else {
        return Ok(());
    };
    let hooks = match hooks_of(&row, "hooks") {
        Ok(h) => h,
        Err(err) => {
            // Unreadable configuration must not fail the deploy; it is loud in the log instead.
            tracing::error!(env = %e.env_name, stage = %e.stage_name, error = %err, "stored webhooks unreadable; none fired");
            return Ok(());
        }
    };
    if hooks.is_empty() {
        return Ok(());
    }
    let commit: Option<String> = c
        .query_opt("SELECT scm_commit FROM builds WHERE build_id = $1", &[&deploy.build_id.as_str()])
        .await?
        .map(|r| r.get(0));
    let vars = HookVars {
        deploy_id: deploy.id.to_string(),
        deploy_start: deploy.start_date,
        state: phase.deploy_state(),
        deploy_type: deploy.deploy_type,
        env_name: e.env_name.to_string(),
        stage_name: e.stage_name.to_string(),
        build_id: deploy.build_id.to_string(),
        commit: commit.unwrap_or_default(),
        operator: deploy.operator.clone(),
    };
    for (index, hook) in hooks.iter().enumerate() {
        let id = base64_id(*uuid::Uuid::new_v4().as_bytes());
        let (request, status, error) = match render(hook, &vars) {
            Ok(request) => (request, DeliveryStatus::Pending, None),
            Err(why) => {
                // Kept as configured, so the list shows what could not be built.
                let raw = HookRequest { method: hook.method, url: hook.url.clone(), headers: Vec::new(), body: None };
                (raw, DeliveryStatus::Failed, Some(format!("cannot build the request: {why}")))
            }
        };
        let inserted = c
            .execute(
                "INSERT INTO webhook_deliveries (id, env_id, env_name, stage_name, deploy_id, phase, hook_index, method,
                     url, headers, body, status, last_error, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
                 ON CONFLICT (deploy_id, phase, hook_index) DO NOTHING",
                &[
                    &id,
                    &e.id.as_str(),
                    &e.env_name.as_str(),
                    &e.stage_name.as_str(),
                    &deploy.id.as_str(),
                    &phase.as_str(),
                    &i32::try_from(index).unwrap_or(i32::MAX),
                    &request.method.as_str(),
                    &request.url,
                    &json_of(&request.headers)?,
                    &request.body,
                    &status.as_str(),
                    &error,
                    &ts(now),
                ],
            )
            .await?;
        if inserted == 1 && status == DeliveryStatus::Pending {
            enqueue(c, Exchange::Webhooks, ROUTING_KEY, &WebhookMessage::DeliverV1 { delivery_id: id }).await?;
        }
    }
    Ok(())
}

impl Store {
    /// A stage's hooks and whether it has a secret (empty lists when none are configured).
    pub async fn webhooks(&self, env: &EnvName, stage: &StageName) -> Result<EnvWebHooks> {
        let e = self.stage(env, stage).await?;
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT pre_hooks, post_hooks, secret IS NOT NULL AS has_secret FROM webhooks WHERE env_id = $1",
                &[&e.id.as_str()],
            )
            .await?;
        match row {
            Some(r) => Ok(EnvWebHooks {
                pre_deploy_hooks: hooks_of(&r, "pre_hooks")?,
                post_deploy_hooks: hooks_of(&r, "post_hooks")?,
                has_secret: get(&r, "has_secret")?,
            }),
            None => Ok(EnvWebHooks::default()),
        }
    }

    /// Replaces a stage's hooks and keeps, removes or replaces its secret; answers the result.
    /// Deliveries already fired keep the request they were created with.
    pub async fn set_webhooks(
        &self,
        env: &EnvName,
        stage: &StageName,
        config: &WebHookConfig,
        secret: &SecretChange,
        operator: &str,
        now: EpochMs,
    ) -> Result<EnvWebHooks> {
        let (change_secret, new_secret) = match secret {
            SecretChange::Keep => (false, None),
            SecretChange::Remove => (true, None),
            SecretChange::Set(s) => (true, Some(s.as_str())),
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The stage lock orders this write with the deploys that read the hooks.
        let e = lock_stage(&*tx, env, stage).await?;
        let before = tx
            .query_opt(
                "SELECT pre_hooks, post_hooks, secret IS NOT NULL AS has_secret FROM webhooks WHERE env_id = $1",
                &[&e.id.as_str()],
            )
            .await?
            .map(|r| -> Result<EnvWebHooks> {
                Ok(EnvWebHooks {
                    pre_deploy_hooks: hooks_of(&r, "pre_hooks")?,
                    post_deploy_hooks: hooks_of(&r, "post_hooks")?,
                    has_secret: get(&r, "has_secret")?,
                })
            })
            .transpose()?;
        let row = tx
            .query_one(
                "INSERT INTO webhooks (env_id, pre_hooks, post_hooks, secret, last_operator, last_update)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (env_id) DO UPDATE SET pre_hooks = EXCLUDED.pre_hooks, post_hooks = EXCLUDED.post_hooks,
                     secret = CASE WHEN $7 THEN EXCLUDED.secret ELSE webhooks.secret END,
                     last_operator = EXCLUDED.last_operator, last_update = EXCLUDED.last_update
                 RETURNING pre_hooks, post_hooks, secret IS NOT NULL AS has_secret",
                &[
                    &e.id.as_str(),
                    &json_of(&config.pre_deploy_hooks)?,
                    &json_of(&config.post_deploy_hooks)?,
                    &new_secret,
                    &operator,
                    &ts(now),
                    &change_secret,
                ],
            )
            .await?;
        let after = EnvWebHooks {
            pre_deploy_hooks: hooks_of(&row, "pre_hooks")?,
            post_deploy_hooks: hooks_of(&row, "post_hooks")?,
            has_secret: get(&row, "has_secret")?,
        };
        // The secret itself is never recorded: only whether there is one.
        let change = Change {
            kind: history::kind::WEBHOOK,
            action: "update",
            before: before.as_ref().map(history::json).transpose()?,
            after: Some(history::json(&after)?),
        };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// A stage's deliveries, newest first, optionally of one status; `page_index` from 1.
    pub async fn webhook_deliveries(
        &self,
        env: &EnvName,
        stage: &StageName,
        status: Option<DeliveryStatus>,
        page_index: i64,
        page_size: i64,
    ) -> Result<Vec<WebHookDelivery>> {
        let e = self.stage(env, stage).await?;
        let client = self.client().await?;
        let offset = page_index.saturating_sub(1).saturating_mul(page_size);
        // Two statements rather than `$2 IS NULL OR …`, so each gets a plan on its own index.
        let rows = match status {
            Some(s) => {
                client
                    .query(
                        &format!(
                            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE env_id = $1 AND status = $2
                             ORDER BY created_at DESC, hook_index, id LIMIT $3 OFFSET $4"
                        ),
                        &[&e.id.as_str(), &s.as_str(), &page_size, &offset],
                    )
                    .await?
            }
            None => {
                client
                    .query(
                        &format!(
                            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE env_id = $1
                             ORDER BY created_at DESC, hook_index, id LIMIT $2 OFFSET $3"
                        ),
                        &[&e.id.as_str(), &page_size, &offset],
                    )
                    .await?
            }
        };
        rows.iter().map(delivery_from_row).collect()
    }

    /// One delivery by id.
    pub async fn webhook_delivery(&self, id: &str) -> Result<WebHookDelivery> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"), &[&id])
            .await?
            .ok_or_else(|| Error::NotFound(format!("Webhook delivery {id} does not exist.")))?;
        delivery_from_row(&row)
    }

    /// Sends a FAILED delivery of a stage again: back to PENDING with its attempts reset and a
    /// new outbox message. NotFound when the stage has no such delivery; Conflict when it is not
    /// FAILED, or when its request could never be built (fix the hook and deploy again).
    pub async fn retry_webhook_delivery(
        &self,
        env: &EnvName,
        stage: &StageName,
        id: &str,
        operator: &str,
        now: EpochMs,
    ) -> Result<WebHookDelivery> {
        let e = self.stage(env, stage).await?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(current) = tx
            .query_opt(
                "SELECT status, attempts FROM webhook_deliveries WHERE id = $1 AND env_id = $2 FOR UPDATE",
                &[&id, &e.id.as_str()],
            )
            .await?
        else {
            return Err(Error::NotFound(format!("Webhook delivery {id} of {env}/{stage} does not exist.")));
        };
        let status: &str = get(&current, "status")?;
        if status != DeliveryStatus::Failed.as_str() {
            return Err(Error::Conflict(format!(
                "Webhook delivery {id} is {status}; only FAILED deliveries are retried."
            )));
        }
        // FAILED without an attempt: the request could not be built when the deploy fired it.
        if get::<i32>(&current, "attempts")? == 0 {
            return Err(Error::Conflict(format!(
                "Webhook delivery {id} never had a valid request; fix the hook and deploy again."
            )));
        }
        let row = tx
            .query_one(
                &format!(
                    "UPDATE webhook_deliveries SET status = 'PENDING', attempts = 0, leased_by = NULL, leased_until = NULL,
                         updated_at = $2
                     WHERE id = $1 RETURNING {DELIVERY_COLUMNS}"
                ),
                &[&id, &ts(now)],
            )
            .await?;
        enqueue(&*tx, Exchange::Webhooks, ROUTING_KEY, &WebhookMessage::DeliverV1 { delivery_id: id.to_string() })
            .await?;
        let after = Some(serde_json::json!({ "delivery": id }));
        let change = Change { kind: history::kind::WEBHOOK, action: "retry delivery", before: None, after };
        history::record(&*tx, Place::Stage(&e), operator, None, change, now).await?;
        tx.commit().await?;
        delivery_from_row(&row)
    }

    /// Sends again (a new queue message) PENDING deliveries that nobody holds and that have not
    /// moved since `stale_before`: their message was lost for good (dead-lettered after a
    /// store error, say). At most `limit` per call; returns how many.
    pub async fn resend_stale_webhook_deliveries(
        &self,
        now: EpochMs,
        stale_before: EpochMs,
        limit: i64,
    ) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ids: Vec<String> = tx
            .query(
                "UPDATE webhook_deliveries d SET updated_at = $1
                 FROM (SELECT id FROM webhook_deliveries
                       WHERE status = 'PENDING' AND (leased_until IS NULL OR leased_until < $1) AND updated_at < $2
                       ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED) AS stale
                 WHERE d.id = stale.id RETURNING d.id",
                &[&ts(now), &ts(stale_before), &limit],
            )
            .await?
            .iter()
            .map(|r| get(r, "id"))
            .collect::<Result<_>>()?;
        for id in &ids {
            enqueue(&*tx, Exchange::Webhooks, ROUTING_KEY, &WebhookMessage::DeliverV1 { delivery_id: id.clone() })
                .await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Leases a PENDING delivery to the holder of `token` for `lease` (longer than one
    /// attempt), so a duplicate message is not sent by two workers at once. The holder may
    /// claim again while its lease runs (after a backoff).
    pub async fn claim_webhook_delivery(
        &self,
        id: &str,
        token: &str,
        lease: Duration,
        now: EpochMs,
    ) -> Result<DeliveryClaim> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE webhook_deliveries d SET leased_by = $3, leased_until = $4
                     WHERE id = $1 AND status = 'PENDING'
                         AND (leased_until IS NULL OR leased_until < $2 OR leased_by = $3)
                     RETURNING {DELIVERY_COLUMNS}, (SELECT secret FROM webhooks w WHERE w.env_id = d.env_id) AS secret"
                ),
                &[&id, &ts(now), &token, &ts(later(now, lease))],
            )
            .await?;
        if let Some(r) = row {
            let claimed = ClaimedDelivery { delivery: delivery_from_row(&r)?, secret: get(&r, "secret")? };
            return Ok(DeliveryClaim::Ready(Box::new(claimed)));
        }
        let pending = client
            .query_opt("SELECT 1 FROM webhook_deliveries WHERE id = $1 AND status = 'PENDING'", &[&id])
            .await?
            .is_some();
        Ok(if pending { DeliveryClaim::Busy } else { DeliveryClaim::Gone })
    }

    /// Records one attempt of a delivery the holder of `token` leased; `hold` keeps the lease
    /// that much longer (through a backoff), else it is released. Answers `false` (and changes
    /// nothing) when the delivery is no longer PENDING or the lease went to someone else.
    pub async fn record_webhook_attempt(
        &self,
        id: &str,
        token: &str,
        attempt: &AttemptRecord,
        hold: Option<Duration>,
        now: EpochMs,
    ) -> Result<bool> {
        let client = self.client().await?;
        let delivered = attempt.status == DeliveryStatus::Delivered;
        let until = hold.map(|h| ts(later(now, h)));
        let changed = client
            .execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $3, last_status_code = $4,
                     last_error = $5, updated_at = $6, delivered_at = CASE WHEN $7 THEN $6 ELSE delivered_at END,
                     leased_until = $8, leased_by = CASE WHEN $8::timestamptz IS NULL THEN NULL ELSE leased_by END
                 WHERE id = $1 AND status = 'PENDING' AND leased_by = $2",
                &[
                    &id,
                    &token,
                    &attempt.status.as_str(),
                    &attempt.status_code.map(i32::from),
                    &attempt.error,
                    &ts(now),
                    &delivered,
                    &until,
                ],
            )
            .await?;
        Ok(changed == 1)
    }
}
