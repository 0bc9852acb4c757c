//! Builds (Teletraan's `BuildBean`): what CI publishes, checked against the artifact policy.

use serde::{Deserialize, Serialize};

use super::{Invalid, invalid, optional_text, required};
use crate::artifact::{ArtifactPolicy, ChecksumPolicy, parse_sha256};
use crate::time::EpochMs;
use crate::{BuildId, BuildName};

/// An immutable artifact record published by CI (Teletraan's `BuildBean`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    /// `<22-char id>_<commit7>`.
    pub id: BuildId,
    /// Build name; must equal a stage's `buildName` to deploy there.
    pub name: BuildName,
    /// Where the agent downloads the artifact (http or https; file when the server allows it).
    pub artifact_url: String,
    /// SCM type.
    #[serde(rename = "type")]
    pub scm: Option<String>,
    /// Repository.
    pub repo: String,
    /// Branch.
    pub branch: String,
    /// Full commit.
    pub commit: String,
    /// First 7 characters of the commit.
    pub commit_short: String,
    /// Link to the commit.
    pub commit_info: Option<String>,
    /// Commit time.
    pub commit_date: EpochMs,
    /// Link to the CI job.
    pub publish_info: Option<String>,
    /// Who published.
    pub publisher: String,
    /// When.
    pub publish_date: EpochMs,
    /// Hex SHA-256 of the artifact; the agent refuses an artifact that does not match.
    pub artifact_sha256: Option<String>,
}

/// A build as CI publishes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct BuildInput {
    pub name: Option<String>,
    pub artifact_url: Option<String>,
    #[serde(rename = "type")]
    pub scm: Option<String>,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub commit_short: Option<String>,
    pub commit_info: Option<String>,
    #[serde(default, deserialize_with = "crate::model::lenient::opt_i64")]
    pub commit_date: Option<EpochMs>,
    pub publish_info: Option<String>,
    pub artifact_sha256: Option<String>,
}

impl Build {
    /// Validates a publish request and fills Teletraan's defaults. The artifact URL must pass
    /// `policy` (see [`ArtifactPolicy::check_url`]); `artifactSha256` must be 64 hex digits,
    /// and is required unless the policy takes a published sidecar instead.
    pub fn publish(
        input: BuildInput,
        policy: &ArtifactPolicy,
        publisher: &str,
        now: EpochMs,
    ) -> Result<Build, Invalid> {
        let name = BuildName::parse(input.name.unwrap_or_default()).map_err(|e| invalid("name", e.to_string()))?;
        let artifact_url = required("artifactUrl", input.artifact_url, 2048)?;
        policy.check_url(&artifact_url).map_err(|e| invalid("artifactUrl", e.to_string()))?;
        let repo = required("repo", input.repo, 256)?;
        let branch = required("branch", input.branch, 256)?;
        let commit = required("commit", input.commit, 64)?;
        if !commit.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid("commit", "may only contain letters and digits"));
        }
        let commit_short = match input.commit_short {
            Some(s) if !s.is_empty() => {
                if s.len() > 16 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(invalid("commitShort", "must be up to 16 letters and digits"));
                }
                s
            }
            _ => commit.chars().take(7).collect(),
        };
        let artifact_sha256 = match (input.artifact_sha256, policy.checksum) {
            (Some(s), _) => {
                Some(parse_sha256(&s).ok_or_else(|| invalid("artifactSha256", "must be 64 hexadecimal characters"))?)
            }
            (None, ChecksumPolicy::Required) => {
                return Err(invalid(
                    "artifactSha256",
                    "is required: the SHA-256 of the artifact, 64 hexadecimal characters",
                ));
            }
            (None, ChecksumPolicy::Sidecar) => None,
        };
        // Year 3000: far enough, and well inside what Postgres and every client can represent.
        const LATEST: EpochMs = 32_503_680_000_000;
        if let Some(d) = input.commit_date
            && !(0..=LATEST).contains(&d)
        {
            return Err(invalid("commitDate", "must be epoch milliseconds between 1970 and 3000"));
        }
        let id = BuildId::generate(&commit_short).map_err(|e| invalid("commitShort", e.to_string()))?;
        Ok(Build {
            id,
            name,
            artifact_url,
            scm: optional_text("type", input.scm, 64)?,
            repo,
            branch,
            commit,
            commit_short,
            commit_info: optional_text("commitInfo", input.commit_info, 2048)?,
            commit_date: input.commit_date.unwrap_or(now),
            publish_info: Some(
                optional_text("publishInfo", input.publish_info, 2048)?.unwrap_or_else(|| "UNKNOWN".into()),
            ),
            publisher: publisher.to_string(),
            publish_date: now,
            artifact_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::AllowedLocation;

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn publish(json: &str, policy: &ArtifactPolicy) -> Result<Build, Invalid> {
        Build::publish(serde_json::from_str(json).unwrap(), policy, "ci", 7)
    }

    fn build(json: &str) -> Result<Build, Invalid> {
        publish(json, &ArtifactPolicy::permissive())
    }

    #[test]
    fn publish_fills_defaults_and_mints_the_id() {
        let b = build(r#"{"name":"web","artifactUrl":"https://a/web.tgz","repo":"org/web","branch":"main","commit":"fabe9af6ac4c"}"#).unwrap();
        assert_eq!(b.commit_short, "fabe9af");
        assert!(b.id.as_str().ends_with("_fabe9af"));
        assert_eq!((b.commit_date, b.publish_date), (7, 7));
        assert_eq!(b.publisher, "ci");
        assert_eq!(b.artifact_sha256, None);
    }

    #[test]
    fn publish_rejects_bad_urls_and_checksums() {
        let base = r#""name":"web","repo":"r","branch":"b","commit":"abc""#;
        assert_eq!(build(&format!(r#"{{{base},"artifactUrl":"ftp://x"}}"#)).unwrap_err().field, "artifactUrl");
        assert_eq!(build(&format!(r#"{{{base}}}"#)).unwrap_err().field, "artifactUrl");
        assert_eq!(
            build(&format!(r#"{{{base},"artifactUrl":"file:///a.tgz","artifactSha256":"xyz"}}"#)).unwrap_err().field,
            "artifactSha256"
        );
        assert_eq!(
            build(&format!(r#"{{{base},"artifactUrl":"file:///a.tgz","commitInfo":"x\u0000"}}"#)).unwrap_err().field,
            "commitInfo"
        );
        assert_eq!(
            build(&format!(r#"{{{base},"artifactUrl":"file:///a.tgz","commitDate":100000000000000000}}"#))
                .unwrap_err()
                .field,
            "commitDate"
        );
    }

    #[test]
    fn the_default_policy_requires_a_valid_sha256() {
        let strict = ArtifactPolicy::default();
        let base = r#""name":"web","repo":"r","branch":"b","commit":"abc","artifactUrl":"https://a.example.com/w.tgz""#;
        let err = publish(&format!("{{{base}}}"), &strict).unwrap_err();
        assert_eq!(err.field, "artifactSha256");
        assert!(err.message.contains("required"), "{err}");
        for bad in ["", "xyz", &SHA[1..], &format!("{SHA}0"), &"g".repeat(64)] {
            let err = publish(&format!(r#"{{{base},"artifactSha256":"{bad}"}}"#), &strict).unwrap_err();
            assert_eq!(err.field, "artifactSha256", "{bad:?}");
        }
        let b = publish(&format!(r#"{{{base},"artifactSha256":" {} "}}"#, SHA.to_uppercase()), &strict).unwrap();
        assert_eq!(b.artifact_sha256.as_deref(), Some(SHA), "trimmed and lower-cased");
    }

    #[test]
    fn the_sidecar_policy_lets_the_sha256_be_omitted_but_still_checks_one_given() {
        let sidecar = ArtifactPolicy { checksum: ChecksumPolicy::Sidecar, ..ArtifactPolicy::default() };
        let base = r#""name":"web","repo":"r","branch":"b","commit":"abc","artifactUrl":"https://a.example.com/w.tgz""#;
        assert_eq!(publish(&format!("{{{base}}}"), &sidecar).unwrap().artifact_sha256, None);
        let err = publish(&format!(r#"{{{base},"artifactSha256":"nope"}}"#), &sidecar).unwrap_err();
        assert_eq!(err.field, "artifactSha256");
        // file:// stays refused: the sidecar setting changes nothing else.
        let file = r#""name":"web","repo":"r","branch":"b","commit":"abc","artifactUrl":"file:///a.tgz""#;
        assert_eq!(publish(&format!("{{{file}}}"), &sidecar).unwrap_err().field, "artifactUrl");
    }

    #[test]
    fn the_url_is_checked_against_the_allow_list_before_anything_else() {
        let policy = ArtifactPolicy {
            allowed: vec![AllowedLocation::parse("https://artifacts.example.com/web/").unwrap()],
            ..ArtifactPolicy::default()
        };
        let base = format!(r#""name":"web","repo":"r","branch":"b","commit":"abc","artifactSha256":"{SHA}""#);
        for url in [
            "https://artifacts.example.com/webby/a.tgz",
            "https://artifacts.example.com.evil.org/web/a.tgz",
            "https://artifacts.example.com@evil.org/web/a.tgz",
            "http://artifacts.example.com/web/a.tgz",
            "file:///web/a.tgz",
        ] {
            let err = publish(&format!(r#"{{{base},"artifactUrl":"{url}"}}"#), &policy).unwrap_err();
            assert_eq!(err.field, "artifactUrl", "{url}");
        }
        let ok = publish(&format!(r#"{{{base},"artifactUrl":"https://artifacts.example.com/web/a.tgz"}}"#), &policy);
        assert_eq!(ok.unwrap().artifact_url, "https://artifacts.example.com/web/a.tgz");
        // Without the sha256 but off the list: the URL is named first.
        let err = publish(
            r#"{"name":"web","repo":"r","branch":"b","commit":"abc","artifactUrl":"https://x.org/a"}"#,
            &policy,
        )
        .unwrap_err();
        assert_eq!(err.field, "artifactUrl");
    }
}
