//! Hosts (Teletraan's `HostBean`): one bean per host and group it belongs to, and what a
//! provisioner sends to pre-register a host before its agent pings (`POST /v1/hosts`).

use serde::{Deserialize, Serialize};

use super::{Invalid, check_text, invalid};
use crate::time::EpochMs;
use crate::{GroupName, HostId, HostName, HostState};

/// A host in one of its groups (Teletraan's `HostBean`, with what our agents add).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Its name.
    pub host_name: HostName,
    /// The group of this row (`null` for a host in no group).
    pub group_name: Option<GroupName>,
    /// Its address, as its agent reports it.
    pub ip: Option<String>,
    /// Its id.
    pub host_id: HostId,
    /// Its cloud account (Teletraan's; not kept here, always `null`).
    pub account_id: Option<String>,
    /// When it was first known.
    pub create_date: EpochMs,
    /// When its facts last changed.
    pub last_update_date: EpochMs,
    /// Where it is in its life.
    pub state: HostState,
    /// Teletraan's cluster-replacement mark (not used here: always 0, NEW).
    pub can_retire: i32,
    /// The version its agent reports.
    pub agent_version: String,
    /// Its autoscaling group, as its agent reports it.
    pub autoscaling_group: Option<String>,
    /// Its availability zone, as its agent reports it.
    pub availability_zone: Option<String>,
    /// Its last ping stored (heartbeats are stored about once a minute).
    pub last_ping_date: Option<EpochMs>,
}

/// A host as a provisioner pre-registers it; unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct HostInput {
    pub host_name: Option<String>,
    pub host_id: Option<String>,
    pub group_name: Option<String>,
    pub ip: Option<String>,
    pub state: Option<HostState>,
    /// Accepted for Teletraan's provisioners, not kept.
    pub account_id: Option<String>,
    /// Accepted for Teletraan's provisioners, not kept.
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i64")]
    pub can_retire: Option<i64>,
    /// Accepted for Teletraan's provisioners; the server's clock decides.
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i64")]
    pub create_date: Option<i64>,
    /// Accepted for Teletraan's provisioners; the server's clock decides.
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i64")]
    pub last_update_date: Option<i64>,
}

/// A checked pre-registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHost {
    /// Its id.
    pub host_id: HostId,
    /// Its name.
    pub host_name: HostName,
    /// The group it will belong to (its agent's first ping replaces its groups).
    pub group_name: Option<GroupName>,
    /// Its address.
    pub ip: Option<String>,
}

impl HostInput {
    /// Checks a pre-registration: an id and a name, an optional group and address. A
    /// pre-registered host is PROVISIONED until its agent pings; another state is refused.
    pub fn check(self) -> Result<NewHost, Invalid> {
        let text = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let host_id = HostId::parse(text(self.host_id).ok_or_else(|| invalid("hostId", "is required"))?)
            .map_err(|e| invalid("hostId", e.to_string()))?;
        let host_name = HostName::parse(text(self.host_name).ok_or_else(|| invalid("hostName", "is required"))?)
            .map_err(|e| invalid("hostName", e.to_string()))?;
        let group_name =
            text(self.group_name).map(GroupName::parse).transpose().map_err(|e| invalid("groupName", e.to_string()))?;
        let ip = text(self.ip);
        if let Some(ip) = &ip {
            check_text("ip", ip, 64)?;
        }
        if let Some(account) = &self.account_id {
            check_text("accountId", account, 64)?;
        }
        match self.state {
            None | Some(HostState::Provisioned) => {}
            Some(other) => {
                return Err(invalid(
                    "state",
                    format!(
                        "a pre-registered host is PROVISIONED (its agent's first ping makes it ACTIVE), not {other}"
                    ),
                ));
            }
        }
        Ok(NewHost { host_id, host_name, group_name, ip })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<NewHost, Invalid> {
        serde_json::from_str::<HostInput>(json).unwrap().check()
    }

    #[test]
    fn a_registration_needs_an_id_and_a_name() {
        let h = check(r#"{"hostName":"web-1","hostId":"i-1","groupName":"web","ip":"10.0.0.1","state":"PROVISIONED"}"#)
            .unwrap();
        assert_eq!((h.host_id.as_str(), h.host_name.as_str()), ("i-1", "web-1"));
        assert_eq!(h.group_name.map(|g| g.into_string()), Some("web".into()));
        let cases = [
            (r#"{"hostName":"web-1"}"#, "hostId"),
            (r#"{"hostId":"i-1","hostName":" "}"#, "hostName"),
            (r#"{"hostId":"i 1","hostName":"w"}"#, "hostId"),
            (r#"{"hostId":"i-1","hostName":"w","groupName":"a b"}"#, "groupName"),
            (r#"{"hostId":"i-1","hostName":"w","ip":"1\u0000"}"#, "ip"),
            (r#"{"hostId":"i-1","hostName":"w","state":"ACTIVE"}"#, "state"),
        ];
        for (json, field) in cases {
            assert_eq!(check(json).unwrap_err().field, field, "{json}");
        }
        assert!(serde_json::from_str::<HostInput>(r#"{"hostId":"i-1","hostName":"w","colour":1}"#).is_err());
    }
}
