//! One ping: authenticate, parse, check who may ping as that host, decide with `schema::rules::goal::plan` on the in-memory
//! state, queue what changed, answer. Synchronous after parsing; no IO.

use std::sync::Arc;
use std::sync::LazyLock;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use prometheus::{Histogram, IntCounter, IntCounterVec, register_histogram, register_int_counter_vec};
use schema::bus::{AgentUpdate, HostFacts};
use schema::ping::{MAX_WAIT_SECONDS, PingHost, PingRequest, PingResponse, ReportIn};
use schema::rules::goal::{EnvInput, RecordChange, plan};
use schema::time::EpochMs;
use schema::{EnvId, EnvName, OpCode, StageName};

use super::Gateway;
use super::fasthash::hash_of;
use super::identity::NotASender;
use super::publisher::Item;
use super::state::{AgentEntry, HostEntry, StageEntry, Stages};
use crate::auth::bearer;
use crate::error::ApiError;
use crate::extract::body_error;

/// Pings answered, by outcome (the counters resolved once: a ping does not hash labels).
struct Outcomes {
    counters: Option<[IntCounter; 7]>,
}

const OUTCOMES: [&str; 7] = ["unauthorized", "forbidden", "unavailable", "bad_request", "long_poll", "goal", "noop"];

static REFUSALS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "teletraan_gateway_identity_refusals_total",
        "Pings refused because their credential may not ping as that host, by reason",
        &["reason"]
    )
    .ok()
});

static PINGS: LazyLock<Outcomes> = LazyLock::new(|| {
    let counters =
        register_int_counter_vec!("teletraan_gateway_pings_total", "Pings answered, by outcome", &["outcome"])
            .ok()
            .map(|v| OUTCOMES.map(|o| v.with_label_values(&[o])));
    Outcomes { counters }
});
/// Goals handed out, by op code (resolved once, like the outcomes).
static GOALS: LazyLock<Option<Vec<(OpCode, IntCounter)>>> = LazyLock::new(|| {
    register_int_counter_vec!("teletraan_gateway_goals_total", "Pings answered with a goal, by its op code", &["op"])
        .ok()
        .map(|v| OpCode::ALL.iter().map(|op| (*op, v.with_label_values(&[op.as_str()]))).collect())
});

static PING_SECONDS: LazyLock<Option<Histogram>> = LazyLock::new(|| {
    register_histogram!(
        "teletraan_gateway_ping_duration_seconds",
        "Time to decide a ping (after parsing)",
        vec![0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01]
    )
    .ok()
});

fn count(outcome: &str) {
    if let (Some(counters), Some(i)) = (PINGS.counters.as_ref(), OUTCOMES.iter().position(|o| *o == outcome)) {
        counters[i].inc();
    }
}

/// `POST /v1/system/ping`.
pub(super) async fn ping(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(token) = bearer(&headers) else {
        count("unauthorized");
        return ApiError::unauthorized("missing credentials: send 'Authorization: token <token>'").into_response();
    };
    let sender = match gw.identity.sender(token) {
        Ok(s) => s,
        Err(NotASender::Unknown) => {
            count("unauthorized");
            return ApiError::unauthorized("unknown, revoked or expired token or credential").into_response();
        }
        Err(NotASender::NotForPings(why)) => {
            count("forbidden");
            return ApiError::forbidden(why).into_response();
        }
    };
    if !gw.is_ready() {
        count("unavailable");
        return ApiError::unavailable("the gateway is loading; try again").into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            count("bad_request");
            return body_error(e).into_response();
        }
    };
    let request: PingRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            count("bad_request");
            return ApiError::bad_request(format!("malformed ping: {e}")).into_response();
        }
    };
    let wait = request.wait_seconds.filter(|w| *w > 0).map(|w| w.min(MAX_WAIT_SECONDS));
    let (host, reports) = match request.normalize() {
        Ok(v) => v,
        Err(e) => {
            count("bad_request");
            return ApiError::bad_request(e.to_string()).into_response();
        }
    };
    if let Err(refusal) = gw.identity.check(&sender, &host) {
        count("forbidden");
        if let Some(c) = REFUSALS.as_ref() {
            c.with_label_values(&[refusal.reason()]).inc();
        }
        tracing::debug!(host.id = %host.host_id, reason = refusal.reason(), "ping refused");
        let mut refused = ApiError::forbidden(refusal.to_string());
        refused.code = refusal.code();
        return refused.into_response();
    }
    // Registered before deciding, so a change that lands meanwhile wakes the wait at once.
    let registration = wait
        .map(|_| gw.polls.register(&host.host_id, gw.stage_ids_of(&host), host.host_name.clone(), host.groups.clone()));
    let started = std::time::Instant::now();
    let mut response = gw.decide(&host, &reports, schema::time::now_ms());
    if let Some(h) = PING_SECONDS.as_ref() {
        h.observe(started.elapsed().as_secs_f64());
    }
    if let (Some(secs), Some(registration)) = (wait, registration.as_ref()) {
        // Wakes can be for a change that does not concern this host after all (another host's
        // admission on the same stage, a reload): decide again and keep waiting until there is
        // something to do or the time is up.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(u64::from(secs));
        while response.deploy_goal.is_none() {
            tokio::select! {
                _ = registration.changed() => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = gw.stopping() => break,
            }
            response = gw.decide(&host, &reports, schema::time::now_ms());
        }
        count("long_poll");
    }
    count(if response.deploy_goal.is_some() { "goal" } else { "noop" });
    if response.deploy_goal.is_some()
        && let Some((_, c)) = GOALS.as_ref().and_then(|g| g.iter().find(|(op, _)| *op == response.op_code))
    {
        c.inc();
    }
    Json(response).into_response()
}

/// What is known of one stage of the host while deciding.
struct EnvFacts<'s> {
    env_id: EnvId,
    stage: Option<&'s StageEntry>,
    report: Option<usize>,
    names: Option<&'s (EnvName, StageName)>,
}

impl Gateway {
    /// The stages a host belongs to now.
    pub(crate) fn stage_ids_of(&self, host: &PingHost) -> Vec<EnvId> {
        let stages = self.stages.read().unwrap_or_else(|p| p.into_inner());
        stages.stages_of(&host.host_name, &host.groups).iter().map(|s| s.snapshot.goal.env_id.clone()).collect()
    }

    /// Decides a ping and queues what it changed.
    pub(crate) fn decide(&self, host: &PingHost, reports: &[ReportIn], now: EpochMs) -> PingResponse {
        let stages = self.stages.read().unwrap_or_else(|p| p.into_inner());
        let mine = stages.stages_of(&host.host_name, &host.groups);
        let response = self.hosts.with(&host.host_id, |entry| {
            let facts = env_facts(&stages, &mine, reports, entry);
            let records: Vec<Option<&AgentEntry>> = facts.iter().map(|f| entry.agent(&f.env_id)).collect();
            let inputs: Vec<EnvInput<'_>> = facts
                .iter()
                .zip(&records)
                .map(|(f, rec)| {
                    let env_name = f.stage.as_ref().map(|s| &s.snapshot.goal.env_name);
                    let other_stage_of_env = env_name.is_some_and(|name| {
                        entry.agents.iter().any(|a| {
                            a.env_id != f.env_id && stages.names.get(&a.env_id).is_some_and(|(n, _)| n == name)
                        })
                    });
                    // A host that reports a stage we hold no record for is not new: its record
                    // lives in Postgres (another gateway, or a reload in progress). Treating it
                    // as a first deploy would let it skip the caps.
                    let env_installed = other_stage_of_env || (rec.is_none() && f.report.is_some());
                    EnvInput {
                        env_id: &f.env_id,
                        stage: f.stage.as_ref().map(|s| &s.snapshot.goal),
                        report: f.report.map(|i| &reports[i]),
                        record: rec.map(|a| &a.record),
                        env_installed,
                        names: f.names.map(|(e, s)| (e, s)),
                    }
                })
                .collect();
            // The gateway admits first deploys itself; every other host that must leave
            // service waits until a worker admits it (its record then names the deploy).
            let p = plan(&inputs, |_, install| install.record.first_deploy);
            for (env_id, change) in p.records {
                let i = facts.iter().position(|f| f.env_id == env_id);
                let report = i.and_then(|i| facts[i].report).map(|r| &reports[r]);
                self.record(host, entry, &env_id, change, report, now);
            }
            self.host_seen(host, entry, now);
            p.response
        });
        drop(stages);
        response
    }

    /// Queues a record that differs from what the gateway holds, and holds it once queued.
    fn record(
        &self,
        host: &PingHost,
        entry: &mut HostEntry,
        env_id: &EnvId,
        change: RecordChange,
        report: Option<&ReportIn>,
        now: EpochMs,
    ) {
        let held = entry.agent(env_id);
        match change {
            RecordChange::Upsert(record) => {
                let error = report.filter(|r| r.err_no != 0).and_then(|r| r.err_msg.clone());
                let error_hash = error.as_ref().map(hash_of).unwrap_or(0);
                // Unchanged records are not sent again, except once in a while: a batch the workers
                // lost for good is then repaired, and the host's facts go along (a constraint's
                // admission waits for a host's tags).
                let unchanged =
                    held.is_some_and(|h| h.record == record && (error_hash == 0 || h.error_hash == error_hash));
                let resend_due = held.is_some_and(|h| h.sent_at != 0 && now - h.sent_at >= self.resend_after_ms);
                if unchanged && !resend_due {
                    return;
                }
                let control_seq = held.map(|h| h.control_seq).unwrap_or(0);
                let update = AgentUpdate {
                    host_id: host.host_id.clone(),
                    host_name: host.host_name.clone(),
                    env_id: env_id.clone(),
                    at: now,
                    record: Some(record.clone()),
                    control_seq,
                    error_message: error,
                };
                if self.reports.try_send(Item::Agent(update)).is_ok() {
                    let error_hash = if error_hash == 0 { held.map(|h| h.error_hash).unwrap_or(0) } else { error_hash };
                    entry.set(
                        env_id,
                        Some(AgentEntry { env_id: env_id.clone(), record, control_seq, error_hash, sent_at: now }),
                    );
                    if unchanged {
                        entry.facts_hash = 0;
                    }
                }
            }
            RecordChange::Delete => {
                if held.is_none() {
                    return;
                }
                let update = AgentUpdate {
                    host_id: host.host_id.clone(),
                    host_name: host.host_name.clone(),
                    env_id: env_id.clone(),
                    at: now,
                    record: None,
                    control_seq: held.map(|h| h.control_seq).unwrap_or(0),
                    error_message: None,
                };
                if self.reports.try_send(Item::Agent(update)).is_ok() {
                    entry.set(env_id, None);
                }
            }
        }
    }

    fn host_seen(&self, host: &PingHost, entry: &mut HostEntry, now: EpochMs) {
        if entry.last_seen != 0 && now - entry.last_seen > self.republish_after_ms {
            // Back from a long silence: the janitor may have forgotten the host.
            entry.facts_hash = 0;
        }
        entry.last_seen = now;
        let facts_hash = hash_of(&(
            &host.host_name,
            &host.ip,
            &host.groups,
            &host.agent_version,
            &host.autoscaling_group,
            &host.availability_zone,
            &host.tags,
        ));
        if facts_hash != entry.facts_hash {
            let facts = HostFacts {
                host_id: host.host_id.clone(),
                host_name: host.host_name.clone(),
                ip: host.ip.clone(),
                groups: host.groups.clone(),
                agent_version: host.agent_version.clone(),
                autoscaling_group: host.autoscaling_group.clone(),
                availability_zone: host.availability_zone.clone(),
                tags: host.tags.clone(),
                seen_at: now,
            };
            if self.reports.try_send(Item::Host(facts)).is_ok() {
                entry.facts_hash = facts_hash;
            }
        }
    }
}

/// Every stage this ping concerns: the host's stages, the stages it reports and the stages it
/// has records for, each once, in that order.
fn env_facts<'s>(
    stages: &'s Stages,
    mine: &'s [Arc<StageEntry>],
    reports: &[ReportIn],
    entry: &HostEntry,
) -> Vec<EnvFacts<'s>> {
    let mut out: Vec<EnvFacts<'s>> = Vec::new();
    let add = |env_id: &EnvId, out: &mut Vec<EnvFacts<'s>>| {
        if out.iter().any(|f| &f.env_id == env_id) {
            return;
        }
        out.push(EnvFacts {
            env_id: env_id.clone(),
            stage: mine.iter().find(|s| &s.snapshot.goal.env_id == env_id).map(|s| &**s),
            report: reports.iter().position(|r| &r.env_id == env_id),
            names: stages.names.get(env_id),
        });
    };
    for s in mine {
        add(&s.snapshot.goal.env_id, &mut out);
    }
    for r in reports {
        add(&r.env_id, &mut out);
    }
    for a in &entry.agents {
        add(&a.env_id, &mut out);
    }
    out
}
