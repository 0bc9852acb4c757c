//! Who pings, held in memory so the ping path never asks Postgres: token hashes (static agent
//! tokens, with their group scope), the signing key of host credentials, and every host's
//! enrollment (which credential generation is good, which name it holds). The rule itself is
//! `schema::rules::identity`.
//!
//! A host credential is `thc1~<generation>~<host id>~<host name>~<groups or *>~<mac>`: the
//! fields say what it may claim, and the HMAC-SHA256 of everything before the last `~` under
//! the shared key proves the gateway issued it. `~` and `,` appear in no host id, host name
//! or group name, so the fields need no escaping. Nothing per host is stored but the binding.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use schema::ping::PingHost;
use schema::rules::identity::{Binding, Caller, Refusal, admit_ping};
use schema::time::EpochMs;
use schema::{GroupName, HostId, HostName};
use sha2::Sha256;
use store::{GatewayToken, HostCredential, TokenKind};

use super::fasthash::FastMap;

/// First field of every host credential (its format version).
pub const CREDENTIAL_PREFIX: &str = "thc1";
const SEP: char = '~';

/// What a host credential says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The host it was issued to.
    pub host_id: HostId,
    /// The name it enrolled with.
    pub host_name: HostName,
    /// The enrollment's generation.
    pub generation: u32,
    /// The groups it may claim (`None`: any).
    pub groups: Option<Vec<GroupName>>,
}

fn mac(key: &[u8], body: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(body.as_bytes());
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

impl Credential {
    fn body(&self) -> String {
        let groups = match &self.groups {
            None => "*".to_string(),
            Some(g) => g.iter().map(GroupName::as_str).collect::<Vec<_>>().join(","),
        };
        format!("{CREDENTIAL_PREFIX}{SEP}{}{SEP}{}{SEP}{}{SEP}{groups}", self.generation, self.host_id, self.host_name)
    }

    /// The credential's text, signed with `key`.
    pub fn sign(&self, key: &[u8]) -> String {
        let body = self.body();
        let tag = mac(key, &body).finalize().into_bytes();
        format!("{body}{SEP}{}", hex(&tag))
    }

    /// Reads a credential whose signature under `key` holds (compared in constant time).
    pub fn verify(text: &str, key: &[u8]) -> Option<Credential> {
        let (body, tag) = text.rsplit_once(SEP)?;
        mac(key, body).verify_slice(&unhex(tag)?).ok()?;
        let mut fields = body.splitn(5, SEP);
        if fields.next()? != CREDENTIAL_PREFIX {
            return None;
        }
        let generation = fields.next()?.parse().ok()?;
        let host_id = HostId::parse(fields.next()?).ok()?;
        let host_name = HostName::parse(fields.next()?).ok()?;
        let groups = match fields.next()? {
            "*" => None,
            "" => Some(Vec::new()),
            list => Some(list.split(',').map(GroupName::parse).collect::<Result<Vec<_>, _>>().ok()?),
        };
        Some(Credential { host_id, host_name, generation, groups })
    }
}

/// What a token in the gateway's memory may do.
#[derive(Debug, Clone)]
enum TokenEntry {
    /// A REST API token: not for pings.
    Api,
    /// A static agent token and its scope.
    Agent(Option<Arc<[GroupName]>>),
    /// An enrollment token: enrolls only.
    Enroll,
}

/// Who sent a ping.
#[derive(Debug, Clone)]
pub enum Sender {
    /// A static agent token (scope: `None` for any group).
    Static(Option<Arc<[GroupName]>>),
    /// A host with its credential.
    Host(Credential),
}

/// Why a ping's credential is not accepted at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotASender {
    /// Unknown, revoked, expired or forged (401).
    Unknown,
    /// A valid token that is not for pings (403), with why.
    NotForPings(&'static str),
}

#[derive(Debug, Clone)]
struct Bound {
    generation: u32,
    revoked: bool,
    host_name: HostName,
}

/// Raw tokens remembered at most (a known token is remembered; unknown ones never are).
const RECENT_TOKENS: usize = 1024;

/// The gateway's view of who may ping as whom.
#[derive(Default)]
pub struct Identity {
    tokens: RwLock<HashMap<[u8; 32], TokenEntry>>,
    recent: RwLock<FastMap<String, TokenEntry>>,
    key: RwLock<Option<Arc<[u8]>>>,
    bindings: RwLock<HashMap<HostId, Bound>>,
    names: RwLock<HashMap<HostName, HostId>>,
    /// When the enrollments were last read from Postgres (the next read starts a little before).
    pub(crate) synced_at: AtomicI64,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Identity {
    /// Replaces the valid tokens.
    pub fn replace_tokens(&self, tokens: Vec<GatewayToken>) {
        let map = tokens
            .into_iter()
            .map(|t| {
                let entry = match t.kind {
                    TokenKind::Api => TokenEntry::Api,
                    TokenKind::Agent => TokenEntry::Agent(t.groups.map(Arc::from)),
                    TokenKind::Enroll => TokenEntry::Enroll,
                };
                (t.hash, entry)
            })
            .collect();
        *write(&self.tokens) = map;
        write(&self.recent).clear();
    }

    fn token(&self, raw: &str) -> Option<TokenEntry> {
        if let Some(e) = read(&self.recent).get(raw) {
            return Some(e.clone());
        }
        let entry = read(&self.tokens).get(&store::hash_token(raw)).cloned()?;
        let mut recent = write(&self.recent);
        if recent.len() >= RECENT_TOKENS {
            recent.clear();
        }
        recent.insert(raw.to_string(), entry.clone());
        Some(entry)
    }

    /// Sets the key host credentials are signed with.
    pub fn set_key(&self, key: Vec<u8>) {
        *write(&self.key) = Some(Arc::from(key));
    }

    /// The key, once loaded.
    pub fn key(&self) -> Option<Arc<[u8]>> {
        read(&self.key).clone()
    }

    /// Who a ping's `Authorization` token stands for.
    pub fn sender(&self, raw: &str) -> Result<Sender, NotASender> {
        if raw.starts_with(CREDENTIAL_PREFIX) && raw[CREDENTIAL_PREFIX.len()..].starts_with(SEP) {
            let key = self.key().ok_or(NotASender::Unknown)?;
            return Credential::verify(raw, &key).map(Sender::Host).ok_or(NotASender::Unknown);
        }
        match self.token(raw).ok_or(NotASender::Unknown)? {
            TokenEntry::Agent(scope) => Ok(Sender::Static(scope)),
            TokenEntry::Api => {
                Err(NotASender::NotForPings("API tokens cannot ping; use an agent token or a host credential"))
            }
            TokenEntry::Enroll => {
                Err(NotASender::NotForPings("enrollment tokens only enroll hosts (POST /v1/system/enroll)"))
            }
        }
    }

    /// Whether `sender` may ping as `host` (the rule, with what this gateway knows of the
    /// host's enrollment).
    pub fn check(&self, sender: &Sender, host: &PingHost) -> Result<(), Refusal> {
        let bindings = read(&self.bindings);
        let bound = bindings.get(&host.host_id);
        let binding = bound.map(|b| Binding { generation: b.generation, revoked: b.revoked, host_name: &b.host_name });
        let name_taken = read(&self.names).contains_key(&host.host_name);
        let caller = match sender {
            Sender::Static(scope) => Caller::Static { groups: scope.as_deref() },
            Sender::Host(c) => Caller::Host {
                host_id: &c.host_id,
                host_name: &c.host_name,
                generation: c.generation,
                groups: c.groups.as_deref(),
            },
        };
        admit_ping(caller, &host.host_id, &host.host_name, &host.groups, binding, name_taken)
    }

    /// Learns of an enrollment or a revocation; an older generation than known changes nothing.
    pub fn apply_binding(&self, host_id: &HostId, host_name: &HostName, generation: u32, revoked: bool) {
        let mut bindings = write(&self.bindings);
        let previous = bindings.get(host_id).cloned();
        if previous.as_ref().is_some_and(|p| p.generation >= generation) {
            return;
        }
        bindings.insert(host_id.clone(), Bound { generation, revoked, host_name: host_name.clone() });
        drop(bindings);
        let mut names = write(&self.names);
        if let Some(p) = previous.filter(|p| &p.host_name != host_name && names.get(&p.host_name) == Some(host_id)) {
            names.remove(&p.host_name);
        }
        names.insert(host_name.clone(), host_id.clone());
    }

    /// Learns of enrollments read from Postgres (merged: nothing known is ever lowered).
    pub fn merge_bindings(&self, credentials: &[HostCredential]) {
        for c in credentials {
            self.apply_binding(&c.host_id, &c.host_name, c.generation, c.revoked_at.is_some());
        }
    }

    /// Hosts known to have enrolled.
    pub fn enrolled_count(&self) -> usize {
        read(&self.bindings).len()
    }

    /// Moves the enrollment watermark to `now` and answers where the next read starts.
    pub(crate) fn sync_from(&self, now: EpochMs) -> EpochMs {
        // Rows committed late carry an earlier time: read a minute back.
        self.synced_at.swap(now, Ordering::AcqRel).saturating_sub(60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, name: &str, groups: &[&str]) -> PingHost {
        let request: schema::ping::PingRequest =
            serde_json::from_value(serde_json::json!({"hostId": id, "hostName": name, "groups": groups})).unwrap();
        request.normalize().unwrap().0
    }

    fn credential(generation: u32, groups: Option<&[&str]>) -> Credential {
        Credential {
            host_id: HostId::parse("web-1").unwrap(),
            host_name: HostName::parse("web-1.example.com").unwrap(),
            generation,
            groups: groups.map(|g| g.iter().map(|g| GroupName::parse(*g).unwrap()).collect()),
        }
    }

    #[test]
    fn a_credential_reads_back_only_under_its_key_and_unaltered() {
        let c = credential(3, Some(&["web", "web/canary"]));
        let text = c.sign(b"key-1");
        assert!(text.starts_with("thc1~3~web-1~web-1.example.com~web,web/canary~"), "{text}");
        assert_eq!(Credential::verify(&text, b"key-1"), Some(c.clone()));
        assert_eq!(Credential::verify(&text, b"key-2"), None);
        let forged = text.replace("~3~", "~4~");
        assert_eq!(Credential::verify(&forged, b"key-1"), None);
        let widened = text.replace("web,web/canary", "*");
        assert_eq!(Credential::verify(&widened, b"key-1"), None);
        assert_eq!(Credential::verify("thc1~garbage", b"key-1"), None);
        assert_eq!(Credential::verify("", b"key-1"), None);
        let any = credential(1, None);
        assert_eq!(Credential::verify(&any.sign(b"k"), b"k"), Some(any));
    }

    #[test]
    fn senders_come_from_tokens_and_credentials() {
        let id = Identity::default();
        id.set_key(b"k".to_vec());
        id.replace_tokens(vec![
            GatewayToken { hash: store::hash_token("agent"), kind: TokenKind::Agent, groups: None },
            GatewayToken { hash: store::hash_token("api"), kind: TokenKind::Api, groups: None },
            GatewayToken { hash: store::hash_token("enroll"), kind: TokenKind::Enroll, groups: None },
        ]);
        assert!(matches!(id.sender("agent"), Ok(Sender::Static(None))));
        assert!(matches!(id.sender("agent"), Ok(Sender::Static(None))), "from the remembered tokens");
        assert!(matches!(id.sender("api"), Err(NotASender::NotForPings(_))));
        assert!(matches!(id.sender("enroll"), Err(NotASender::NotForPings(_))));
        assert_eq!(id.sender("nope").err(), Some(NotASender::Unknown));
        let signed = credential(1, None).sign(b"k");
        assert!(matches!(id.sender(&signed), Ok(Sender::Host(c)) if c.generation == 1));
        assert_eq!(id.sender(&credential(1, None).sign(b"other")).err(), Some(NotASender::Unknown));
        id.replace_tokens(vec![]);
        assert_eq!(id.sender("agent").err(), Some(NotASender::Unknown), "a revoked token is not remembered");
    }

    #[test]
    fn enrollments_only_move_forward_and_bind_names() {
        let id = Identity::default();
        let (h, n) = (HostId::parse("web-1").unwrap(), HostName::parse("web-1.example.com").unwrap());
        let agent = Sender::Static(None);
        let me = host("web-1", "web-1.example.com", &["web"]);
        assert_eq!(id.check(&agent, &me), Ok(()));
        id.apply_binding(&h, &n, 2, false);
        assert_eq!(id.check(&agent, &me), Err(Refusal::EnrolledHost));
        assert_eq!(id.check(&agent, &host("other", "web-1.example.com", &[])), Err(Refusal::EnrolledName));
        assert_eq!(id.check(&Sender::Host(credential(2, Some(&["web"]))), &me), Ok(()));
        assert_eq!(id.check(&Sender::Host(credential(1, None)), &me), Err(Refusal::Retired));
        id.apply_binding(&h, &n, 1, false);
        assert_eq!(id.check(&Sender::Host(credential(2, None)), &me), Ok(()), "an older generation changes nothing");
        id.apply_binding(&h, &n, 3, true);
        assert_eq!(id.check(&Sender::Host(credential(2, None)), &me), Err(Refusal::Retired), "revoked");
        assert_eq!(id.enrolled_count(), 1);
    }
}
