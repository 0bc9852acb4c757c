//! The host's own identity: enrolling with an enrollment token (`POST /v1/system/enroll`) for
//! a credential bound to this host, keeping that credential in a private file, and telling a
//! ping refused because the credential was retired (so the host enrolls again) from one
//! refused for any other reason.
//!
//! Neither the credential nor a token is ever logged or put in an error message.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use schema::rules::identity::RETIRED_CODE;
use serde::{Deserialize, Serialize};

use crate::client::error_chain;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::layout::write_private;

/// Longest credential accepted from the gateway or the file (real ones are a few hundred bytes).
const MAX_CREDENTIAL_LEN: usize = 8192;
/// Suffix of a retired credential file.
pub const RETIRED_SUFFIX: &str = ".retired";

/// A host credential. Its `Debug` does not show it; [`Credential::expose`] is the only way to
/// the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    /// A credential as the gateway issues it: one line of visible ASCII, surrounding
    /// whitespace removed.
    pub fn parse(text: &str) -> Result<Credential, &'static str> {
        let text = text.trim();
        if text.is_empty() {
            return Err("it is empty");
        }
        if text.len() > MAX_CREDENTIAL_LEN {
            return Err("it is too long");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("it holds characters a credential never has");
        }
        Ok(Credential(text.to_string()))
    }

    /// The text to send as `Authorization: token <credential>`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(not shown)")
    }
}

/// The file the credential lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFile {
    path: PathBuf,
}

impl CredentialFile {
    /// The credential file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> CredentialFile {
        CredentialFile { path: path.into() }
    }

    /// Where the credential is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a retired credential is moved (`<file>.retired`).
    pub fn retired_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(RETIRED_SUFFIX);
        PathBuf::from(name)
    }

    /// The credential, or `None` when the file does not exist. A file that cannot be read or
    /// does not hold a credential is an error naming the file (never its content).
    pub fn load(&self) -> Result<Option<Credential>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot read the credential file", &self.path, e)),
        };
        Credential::parse(&text).map(Some).map_err(|why| {
            Error::Config(format!(
                "credential file {} is not a credential ({why}); move it away to enroll again",
                self.path.display()
            ))
        })
    }

    /// Writes the credential atomically, readable by its owner only (mode 0600 from creation).
    pub fn save(&self, credential: &Credential) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create directory", dir, e))?;
        }
        write_private(&self.path, format!("{}\n", credential.expose()).as_bytes())
    }

    /// Moves the credential aside to `<file>.retired` (replacing an older retired one).
    pub fn retire(&self) -> Result<()> {
        let to = self.retired_path();
        match std::fs::rename(&self.path, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("cannot move the retired credential to", &to, e))
            }
            _ => Ok(()),
        }
    }
}

/// What the agent does after the gateway refused a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRefusal {
    /// The credential was retired (revoked, replaced, or no longer recognised) and an
    /// enrollment token is at hand: move the credential aside and enroll again.
    ReEnroll,
    /// Anything else: log it and retry the ping later, as for any failed round.
    KeepTrying,
}

/// The decision after a ping answered `status` with error `code`. Only a ping sent with a
/// host credential can have been refused for a retired credential: a 401 (the gateway does
/// not know it) or a 403 with code [`RETIRED_CODE`] (revoked or replaced). Other 403s (a
/// group outside the scope, another host's id) would be refused for the new credential too.
pub fn after_refusal(status: u16, code: Option<&str>, sent_credential: bool, can_enroll: bool) -> AfterRefusal {
    let retired = sent_credential
        && match status {
            401 => true,
            403 => code == Some(RETIRED_CODE),
            _ => false,
        };
    if retired && can_enroll { AfterRefusal::ReEnroll } else { AfterRefusal::KeepTrying }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnrollRequest<'a> {
    host_id: &'a str,
    host_name: &'a str,
    groups: &'a [String],
}

#[derive(Deserialize)]
struct EnrollAnswer {
    credential: String,
}

/// The API error shape `{"code", "message"}`.
#[derive(Deserialize)]
struct ApiError {
    code: Option<String>,
    message: String,
}

/// Enrolls this host with the gateway.
#[derive(Clone)]
pub struct Enroller {
    http: reqwest::Client,
    url: String,
    token: String,
    host_id: String,
    host_name: String,
    groups: Vec<String>,
}

impl fmt::Debug for Enroller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enroller").field("url", &self.url).field("host_id", &self.host_id).finish_non_exhaustive()
    }
}

impl Enroller {
    /// An enroller for the configured gateway and host; `None` without an enrollment token.
    pub fn new(config: &Config) -> Result<Option<Enroller>> {
        let Some(token) = config.enroll_token.clone() else {
            return Ok(None);
        };
        // The pings' client: the same CA, the same bounds.
        let http = crate::client::gateway_client(config)?;
        Ok(Some(Enroller {
            http,
            url: format!("{}/v1/system/enroll", config.server),
            token,
            host_id: config.host_id.clone(),
            host_name: config.host_name.clone(),
            groups: config.groups.clone(),
        }))
    }

    /// One enrollment request. [`Error::Rejected`] when the gateway refuses it (bad token,
    /// groups out of scope, already enrolled, bad input): asking again soon will not help.
    /// [`Error::Enroll`] when it could not be done now (unreachable, loading, failing).
    pub async fn enroll(&self) -> Result<Credential> {
        let body = EnrollRequest { host_id: &self.host_id, host_name: &self.host_name, groups: &self.groups };
        let resp = self
            .http
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, format!("token {}", self.token))
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Enroll(format!("{}: {}", self.url, error_chain(&e))))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| Error::Enroll(format!("reading the answer: {}", error_chain(&e))))?;
        if status == 200 || status == 201 {
            let answer: EnrollAnswer = serde_json::from_str(&text)
                .map_err(|e| Error::Enroll(format!("cannot decode the gateway's answer: {e}")))?;
            return Credential::parse(&answer.credential)
                .map_err(|why| Error::Enroll(format!("the gateway answered no usable credential: {why}")));
        }
        let (code, message) = answer_error(&text);
        if is_transient(status) {
            Err(Error::Enroll(format!("gateway answered HTTP {status}: {message}")))
        } else {
            Err(Error::Rejected { what: "enrollment", status, message, code })
        }
    }
}

/// Statuses worth asking again soon: the gateway is loading (503), a proxy in front of it
/// failed, or the request was throttled.
fn is_transient(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// The `code` and `message` of an API error body; else no code, and the start of the body.
pub fn answer_error(body: &str) -> (Option<String>, String) {
    match serde_json::from_str::<ApiError>(body) {
        Ok(e) => (e.code, e.message),
        Err(_) => (None, body.chars().take(300).collect()),
    }
}

/// How many times a one-shot enrollment (`once`) tries again after a transient failure.
const ONE_SHOT_RETRIES: usize = 4;

/// Backoff between attempts that failed for a transient reason: 1 s doubling to 1 minute.
pub fn transient_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// Backoff after the gateway refused the enrollment: 1 minute doubling to 15 minutes, so a
/// host with a wrong token asks rarely until an operator fixes it.
pub fn rejected_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(60))
        .with_max_delay(Duration::from_secs(900))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// Enrolls and saves the credential, trying until it succeeds: transient failures back off
/// quickly, refusals slowly; every failure is logged once, with what to do about it.
pub async fn enroll_until_done(enroller: &Enroller, file: &CredentialFile) -> Credential {
    let mut transient = transient_backoff().build();
    let mut rejected = rejected_backoff().build();
    loop {
        let wait = match enroll_once(enroller, file).await {
            Ok(c) => return c,
            Err(e @ Error::Rejected { .. }) => {
                transient = transient_backoff().build();
                let wait = rejected.next().unwrap_or(Duration::from_secs(900));
                tracing::error!(error = %e, retry_in_s = wait.as_secs(), "enrollment refused; {}", advice(&e));
                wait
            }
            Err(e) => {
                let wait = transient.next().unwrap_or(Duration::from_secs(60));
                tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "enrollment failed; retrying");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Enrolls and saves the credential for a one-shot run: transient failures are retried a few
/// times, a refusal fails at once.
pub async fn enroll_briefly(enroller: &Enroller, file: &CredentialFile) -> Result<Credential> {
    let mut transient = transient_backoff().with_max_times(ONE_SHOT_RETRIES).build();
    loop {
        match enroll_once(enroller, file).await {
            Ok(c) => return Ok(c),
            Err(e @ Error::Rejected { .. }) => {
                tracing::error!(error = %e, "enrollment refused; {}", advice(&e));
                return Err(e);
            }
            Err(e) => match transient.next() {
                Some(wait) => {
                    tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "enrollment failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
        }
    }
}

/// One enrollment, then the credential written to its file.
async fn enroll_once(enroller: &Enroller, file: &CredentialFile) -> Result<Credential> {
    let credential = enroller.enroll().await?;
    if let Err(e) = file.save(&credential) {
        // The host holds a credential now: use it, but say loudly that a restart will lose it.
        tracing::error!(error = %e, "cannot save the credential; it is used until the agent stops, \
            and an admin must revoke it before this host can enroll again");
    } else {
        tracing::info!(file = %file.path().display(), "enrolled; credential saved");
    }
    Ok(credential)
}

/// What an operator can do about a refused enrollment.
fn advice(e: &Error) -> &'static str {
    match e {
        Error::Rejected { status: 401, .. } => "the enrollment token is unknown, revoked or expired: set a live one",
        Error::Rejected { status: 403, .. } => "the host's groups are outside the enrollment token's scope",
        Error::Rejected { status: 409, .. } => {
            "the host already enrolled: an admin must revoke its credential, or use a token that may re-enroll"
        }
        Error::Rejected { .. } => "check the host id, host name and groups",
        _ => "retrying",
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use schema::rules::identity::Refusal;

    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn only_a_retired_credential_with_an_enroll_token_re_enrolls() {
        use AfterRefusal::*;
        let retired = Some(RETIRED_CODE);
        let other = Some(Refusal::OtherHost.code());
        // (status, code, sent a credential, can enroll) -> decision
        let table: &[(u16, Option<&str>, bool, bool, AfterRefusal)] = &[
            (403, retired, true, true, ReEnroll),
            (401, Some("unauthorized"), true, true, ReEnroll),
            (401, None, true, true, ReEnroll),
            (403, retired, true, false, KeepTrying),
            (401, Some("unauthorized"), true, false, KeepTrying),
            (403, other, true, true, KeepTrying),
            (403, None, true, true, KeepTrying),
            (401, Some("unauthorized"), false, true, KeepTrying),
            (403, retired, false, true, KeepTrying),
            (503, Some("unavailable"), true, true, KeepTrying),
            (400, retired, true, true, KeepTrying),
        ];
        for (status, code, sent, can, want) in table {
            assert_eq!(after_refusal(*status, *code, *sent, *can), *want, "{status} {code:?} {sent} {can}");
        }
    }

    #[test]
    fn the_credential_is_written_atomically_with_mode_0600() {
        let dir = TempDir::new("cred");
        let file = CredentialFile::new(dir.path().join("sub/credential"));
        assert_eq!(file.load().unwrap(), None, "a missing file is no credential");
        let first = Credential::parse("thc1~1~h~h~*~ab").unwrap();
        file.save(&first).unwrap();
        let meta = std::fs::metadata(file.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(file.load().unwrap(), Some(first));
        let second = Credential::parse("thc1~2~h~h~*~cd\n").unwrap();
        file.save(&second).unwrap();
        assert_eq!(file.load().unwrap(), Some(second));
        assert_eq!(std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<String> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["credential"], "no temp file is left behind");
    }

    #[test]
    fn a_retired_credential_is_moved_aside() {
        let dir = TempDir::new("retire");
        let file = CredentialFile::new(dir.path().join("credential"));
        file.retire().unwrap();
        file.save(&Credential::parse("thc1~1~h~h~*~ab").unwrap()).unwrap();
        file.retire().unwrap();
        assert_eq!(file.load().unwrap(), None);
        assert_eq!(std::fs::read_to_string(dir.path().join("credential.retired")).unwrap(), "thc1~1~h~h~*~ab\n");
    }

    #[test]
    fn a_file_that_is_no_credential_is_refused_without_showing_it() {
        let dir = TempDir::new("badcred");
        let file = CredentialFile::new(dir.path().join("credential"));
        std::fs::write(file.path(), "two words\n").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("is not a credential") && !err.contains("two words"), "{err}");
        std::fs::write(file.path(), "\n").unwrap();
        assert!(file.load().unwrap_err().to_string().contains("empty"));
        assert_eq!(format!("{:?}", Credential::parse("secret").unwrap()), "Credential(not shown)");
    }

    #[test]
    fn transient_failures_back_off_fast_and_refusals_slowly() {
        let secs = |b: ExponentialBuilder| -> Vec<u64> { b.build().take(8).map(|d| d.as_secs()).collect() };
        let fast = secs(transient_backoff());
        assert!((1..=2).contains(&fast[0]) && fast.iter().all(|s| *s <= 120), "{fast:?}");
        let slow = secs(rejected_backoff());
        assert!((60..=120).contains(&slow[0]) && slow.iter().all(|s| (60..=1800).contains(s)), "{slow:?}");
        assert!(slow[7] >= 900, "{slow:?}");
    }

    #[test]
    fn error_bodies_give_their_message() {
        let (code, message) = answer_error(r#"{"code":"conflict","message":"already enrolled"}"#);
        assert_eq!((code.as_deref(), message.as_str()), (Some("conflict"), "already enrolled"));
        assert_eq!(answer_error("plain text"), (None, "plain text".to_string()));
        assert!(is_transient(503) && is_transient(502) && !is_transient(409) && !is_transient(401));
    }
}
