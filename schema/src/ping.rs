//! The agent ping protocol, wire-compatible with Teletraan (`POST /v1/system/ping`).
//!
//! Requests are read leniently the way Teletraan's agent writes them (every field may be
//! `null`, unknown fields are ignored) and then normalised into [`PingHost`] and
//! [`ReportIn`] values that the rules work on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Build, Invalid, StringMap};
use crate::{
    AgentState, AgentStatus, DeployId, DeployStage, DeployType, EnvId, EnvName, EnvType, GroupName, HostId, HostName,
    NULL_GROUP, OpCode, StageName,
};

/// Most reports one ping may carry (one per environment on the host).
pub const MAX_REPORTS: usize = 64;
/// Most groups one host may report.
pub const MAX_GROUPS: usize = 64;
/// Longest error text kept from a report; the tail is kept, as that is where errors are.
pub const MAX_ERROR_MESSAGE: usize = 8 * 1024;

/// A ping as it arrives.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct PingRequest {
    pub host_id: Option<String>,
    pub host_name: Option<String>,
    pub host_ip: Option<String>,
    pub autoscaling_group: Option<String>,
    pub availability_zone: Option<String>,
    /// A JSON object encoded as a string (Teletraan) or, leniently, the object itself.
    pub ec2_tags: Option<serde_json::Value>,
    pub agent_version: Option<String>,
    pub stage_type: Option<String>,
    pub groups: Option<Vec<String>>,
    pub account_id: Option<String>,
    pub normandie_status: Option<String>,
    pub knox_status: Option<String>,
    pub reports: Option<Vec<PingReport>>,
    /// Long-poll (an extension; Teletraan's agent never sends it): when there is nothing to
    /// do, the gateway may hold the answer up to this many seconds until the host's goal
    /// changes, so an admission reaches a waiting host at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u32>,
}

/// Longest a ping may ask to wait for its goal to change.
pub const MAX_WAIT_SECONDS: u32 = 60;

/// One environment's status as the agent reports it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct PingReport {
    pub deploy_id: Option<String>,
    pub env_id: Option<String>,
    pub deploy_stage: Option<DeployStage>,
    pub agent_status: Option<AgentStatus>,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub fail_count: Option<i32>,
    pub extra_info: Option<serde_json::Value>,
    pub deploy_alias: Option<String>,
    pub container_health_status: Option<String>,
    pub agent_state: Option<String>,
}

/// The answer to a ping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingResponse {
    /// What to do.
    pub op_code: OpCode,
    /// The step to run; `null` with NOOP.
    pub deploy_goal: Option<DeployGoal>,
}

impl PingResponse {
    /// Nothing to do.
    pub fn noop() -> Self {
        PingResponse { op_code: OpCode::Noop, deploy_goal: None }
    }
}

/// The step a host must run now for one environment. Its `Debug` hides the values of the
/// script variables (some are secrets).
#[derive(Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct DeployGoal {
    pub deploy_id: DeployId,
    pub deploy_type: DeployType,
    pub env_id: EnvId,
    /// Always set, except in a DELETE goal for a stage whose name is no longer known.
    pub env_name: Option<EnvName>,
    pub stage_name: Option<StageName>,
    pub stage_type: EnvType,
    pub deploy_stage: DeployStage,
    /// Sent only with DOWNLOADING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    pub deploy_alias: Option<DeployId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_configs: Option<StringMap>,
    /// Sent only with PRE_DOWNLOAD; `{}` means "there are none" (the agent deletes its file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_variables: Option<StringMap>,
    #[serde(default)]
    pub first_deploy: bool,
    #[serde(default)]
    pub is_docker: bool,
}

impl std::fmt::Debug for DeployGoal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployGoal")
            .field("deploy_id", &self.deploy_id)
            .field("deploy_type", &self.deploy_type)
            .field("env_id", &self.env_id)
            .field("env_name", &self.env_name)
            .field("stage_name", &self.stage_name)
            .field("stage_type", &self.stage_type)
            .field("deploy_stage", &self.deploy_stage)
            .field("build", &self.build)
            .field("deploy_alias", &self.deploy_alias)
            .field("agent_configs", &self.agent_configs)
            .field("script_variables", &self.script_variables.as_ref().map(crate::model::KeysOnly))
            .field("first_deploy", &self.first_deploy)
            .field("is_docker", &self.is_docker)
            .finish()
    }
}

/// Who is pinging, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PingHost {
    /// Stable id.
    pub host_id: HostId,
    /// Name (defaults to the id).
    pub host_name: HostName,
    /// Address as reported.
    pub ip: Option<String>,
    /// Groups, sorted and de-duplicated; `NULL` when none were reported.
    pub groups: Vec<GroupName>,
    /// Autoscaling group.
    pub autoscaling_group: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Tags from `ec2Tags` (deploy constraints read them).
    pub tags: BTreeMap<String, String>,
    /// Agent version (`UNKNOWN` when absent).
    pub agent_version: String,
}

/// One report, normalised; reports without an env id or deploy id are dropped, as Teletraan does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportIn {
    /// The stage.
    pub env_id: EnvId,
    /// The deploy the host works on or serves (for a rollback possibly the alias).
    pub deploy_id: DeployId,
    /// The stage the agent last ran.
    pub stage: DeployStage,
    /// Its outcome.
    pub status: AgentStatus,
    /// Error number (0 = fine).
    pub err_no: i32,
    /// Error text (tail).
    pub err_msg: Option<String>,
    /// Agent-side retries.
    pub fail_count: i32,
    /// Echo of `deployGoal.deployAlias`.
    pub deploy_alias: Option<DeployId>,
    /// Free text.
    pub container_health: String,
    /// The agent asks to redeploy (`agentState = RESET_BY_SYSTEM`).
    pub reset_by_system: bool,
}

/// Short identity text: control characters dropped (an agent's bytes must never make the
/// database refuse a whole batch), trimmed, cut to `max` characters. Text that is already
/// clean is kept as it is, without copying.
fn opt_text(v: Option<String>, max: usize) -> Option<String> {
    let s = v?;
    let clean = if s.chars().any(char::is_control) { s.chars().filter(|c| !c.is_control()).collect() } else { s };
    let trimmed = clean.trim();
    if trimmed.is_empty() {
        return None;
    }
    let cut = match trimmed.char_indices().nth(max) {
        Some((end, _)) => &trimmed[..end],
        None => trimmed,
    };
    if cut.len() == clean.len() { Some(clean) } else { Some(cut.to_string()) }
}

/// Error text: the last `max` characters, NUL (which Postgres refuses) replaced.
fn tail(s: String, max: usize) -> String {
    let s = if s.contains('\0') { s.replace('\0', "\u{fffd}") } else { s };
    let n = s.chars().count();
    if n <= max { s } else { s.chars().skip(n - max).collect() }
}

impl PingRequest {
    /// Validates and normalises the request.
    pub fn normalize(self) -> Result<(PingHost, Vec<ReportIn>), Invalid> {
        let bad = |field: &'static str, m: String| Invalid { field, message: m };
        let host_id = match self.host_id.as_deref().map(str::trim) {
            None | Some("") => return Err(bad("hostId", "is required".into())),
            Some(id) => HostId::parse(id).map_err(|e| bad("hostId", e.to_string()))?,
        };
        let host_name = match self.host_name.as_deref().map(str::trim) {
            None | Some("") => HostName::parse(host_id.as_str()).map_err(|e| bad("hostName", e.to_string()))?,
            Some(n) => HostName::parse(n).map_err(|e| bad("hostName", e.to_string()))?,
        };
        let mut groups = Vec::new();
        for g in self.groups.unwrap_or_default() {
            let g = g.trim();
            if g.is_empty() {
                continue;
            }
            groups.push(GroupName::parse(g).map_err(|e| bad("groups", e.to_string()))?);
        }
        groups.sort();
        groups.dedup();
        if groups.len() > MAX_GROUPS {
            return Err(bad("groups", format!("at most {MAX_GROUPS} groups")));
        }
        if groups.is_empty() {
            groups.push(GroupName::parse(NULL_GROUP).map_err(|e| bad("groups", e.to_string()))?);
        }
        let tags = parse_tags(self.ec2_tags).map_err(|m| bad("ec2Tags", m))?;
        let reports = self.reports.unwrap_or_default();
        if reports.len() > MAX_REPORTS {
            return Err(bad("reports", format!("at most {MAX_REPORTS} reports")));
        }
        let mut out = Vec::with_capacity(reports.len());
        for r in reports {
            if let Some(r) = r.normalize()? {
                out.push(r);
            }
        }
        let host = PingHost {
            host_id,
            host_name,
            ip: opt_text(self.host_ip, 64),
            groups,
            autoscaling_group: opt_text(self.autoscaling_group, 128),
            availability_zone: opt_text(self.availability_zone, 64),
            tags,
            agent_version: opt_text(self.agent_version, 64).unwrap_or_else(|| "UNKNOWN".into()),
        };
        Ok((host, out))
    }
}

impl PingReport {
    fn normalize(self) -> Result<Option<ReportIn>, Invalid> {
        let bad = |field: &'static str, m: String| Invalid { field, message: m };
        let (Some(env_id), Some(deploy_id)) = (opt_text(self.env_id, 64), opt_text(self.deploy_id, 64)) else {
            return Ok(None);
        };
        let env_id = EnvId::parse(env_id).map_err(|e| bad("reports.envId", e.to_string()))?;
        let deploy_id = DeployId::parse(deploy_id).map_err(|e| bad("reports.deployId", e.to_string()))?;
        let deploy_alias = match opt_text(self.deploy_alias, 64) {
            Some(a) => Some(DeployId::parse(a).map_err(|e| bad("reports.deployAlias", e.to_string()))?),
            None => None,
        };
        Ok(Some(ReportIn {
            env_id,
            deploy_id,
            stage: self.deploy_stage.unwrap_or(DeployStage::Unknown),
            status: self.agent_status.unwrap_or(AgentStatus::Unknown),
            err_no: self.error_code.unwrap_or(0),
            err_msg: self.error_message.filter(|m| !m.is_empty()).map(|m| tail(m, MAX_ERROR_MESSAGE)),
            fail_count: self.fail_count.unwrap_or(0).max(0),
            deploy_alias,
            container_health: opt_text(self.container_health_status, 64).unwrap_or_default(),
            reset_by_system: self.agent_state.as_deref() == Some(AgentState::ResetBySystem.as_str()),
        }))
    }
}

fn parse_tags(v: Option<serde_json::Value>) -> Result<BTreeMap<String, String>, String> {
    let obj = match v {
        None | Some(serde_json::Value::Null) => return Ok(BTreeMap::new()),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => return Ok(BTreeMap::new()),
        Some(serde_json::Value::String(s)) => {
            serde_json::from_str::<serde_json::Value>(&s).map_err(|e| format!("not a JSON object: {e}"))?
        }
        Some(other) => other,
    };
    let serde_json::Value::Object(map) = obj else {
        return Err("must be a JSON object of tag names to values".into());
    };
    if map.len() > 64 {
        return Err("at most 64 tags".into());
    }
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            let clean = |s: &str, max: usize| s.chars().filter(|c| !c.is_control()).take(max).collect::<String>();
            (clean(&k, 128), clean(&v, 256))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_text_is_cleaned_trimmed_and_cut() {
        assert_eq!(opt_text(Some("web-1".into()), 64).as_deref(), Some("web-1"));
        assert_eq!(opt_text(Some("  web-1 \t".into()), 64).as_deref(), Some("web-1"));
        assert_eq!(opt_text(Some("we\u{0}b\u{7}-1".into()), 64).as_deref(), Some("web-1"));
        assert_eq!(opt_text(Some(" \n ".into()), 64), None);
        assert_eq!(opt_text(None, 64), None);
        assert_eq!(opt_text(Some("ééééé".into()), 3).as_deref(), Some("ééé"));
        assert_eq!(opt_text(Some(" abcdef".into()), 3).as_deref(), Some("abc"));
    }

    #[test]
    fn error_text_keeps_its_tail_without_nul() {
        assert_eq!(tail("abc".into(), 10), "abc");
        assert_eq!(tail("a\0c".into(), 10), "a\u{fffd}c");
        assert_eq!(tail("abcdé".into(), 2), "dé");
    }

    #[test]
    fn teletraan_agent_ping_parses() {
        let body = r#"{"hostId": "i-0a1b", "hostName": "web-1", "hostIp": "10.1.2.3", "autoscalingGroup": "web-asg",
         "availabilityZone": "us-east-1a", "agentVersion": "1.2.76", "groups": ["web"],
         "normandieStatus": "ERROR", "knoxStatus": "ERROR",
         "reports": [{"deployId": "HAjRbeCrTrede8arVGJAbQ", "envId": "CZP5TxfBS7G77MWdhY6zZA",
           "deployStage": "DOWNLOADING", "agentStatus": "SUCCEEDED", "errorCode": 0, "errorMessage": null,
           "failCount": 0, "deployAlias": null, "containerHealthStatus": null, "agentState": null}],
         "someFutureField": {"x": 1}}"#;
        let (host, reports) = serde_json::from_str::<PingRequest>(body).unwrap().normalize().unwrap();
        assert_eq!(host.host_name.as_str(), "web-1");
        assert_eq!(host.groups.len(), 1);
        assert_eq!(reports[0].stage, DeployStage::Downloading);
        assert_eq!(reports[0].status, AgentStatus::Succeeded);
        assert!(!reports[0].reset_by_system);
    }

    #[test]
    fn missing_host_id_is_rejected() {
        let err = serde_json::from_str::<PingRequest>(r#"{"hostName":"x"}"#).unwrap().normalize().unwrap_err();
        assert_eq!(err.field, "hostId");
    }

    #[test]
    fn defaults_fill_name_group_and_version() {
        let (host, reports) = serde_json::from_str::<PingRequest>(r#"{"hostId":"h1","reports":[{"envId":null}]}"#)
            .unwrap()
            .normalize()
            .unwrap();
        assert_eq!(host.host_name.as_str(), "h1");
        assert_eq!(host.groups[0].as_str(), "NULL");
        assert_eq!(host.agent_version, "UNKNOWN");
        assert!(reports.is_empty(), "a report without envId is not recorded");
    }

    #[test]
    fn ec2_tags_come_as_a_json_string() {
        let req = r#"{"hostId":"h","ec2Tags":"{\"az\":\"us-east-1a\",\"n\":3}"}"#;
        let (host, _) = serde_json::from_str::<PingRequest>(req).unwrap().normalize().unwrap();
        assert_eq!(host.tags["az"], "us-east-1a");
        assert_eq!(host.tags["n"], "3");
        let bad = serde_json::from_str::<PingRequest>(r#"{"hostId":"h","ec2Tags":"[1]"}"#).unwrap().normalize();
        assert_eq!(bad.unwrap_err().field, "ec2Tags");
    }

    #[test]
    fn control_characters_never_reach_the_records() {
        let req = r#"{"hostId":"h","hostIp":"10.0.0.1\u0000","ec2Tags":{"a\u0000":"b\u0000"},
            "reports":[{"envId":"e","deployId":"d","errorCode":1,"errorMessage":"bad\u0000output"}]}"#;
        let (host, reports) = serde_json::from_str::<PingRequest>(req).unwrap().normalize().unwrap();
        assert_eq!(host.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(host.tags["a"], "b");
        assert_eq!(reports[0].err_msg.as_deref(), Some("bad\u{fffd}output"));
    }

    #[test]
    fn noop_serializes_like_teletraan() {
        assert_eq!(serde_json::to_string(&PingResponse::noop()).unwrap(), r#"{"opCode":"NOOP","deployGoal":null}"#);
    }
}
