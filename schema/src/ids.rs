//! Identifiers and names. Each is a newtype with a private field that can only be built
//! through `parse` (or `generate` for ids the server mints), so a value in hand is valid.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier or name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of identifier.
        kind: &'static str,
    },
    /// The string was longer than the kind allows.
    #[error("{kind} is longer than {max} characters")]
    TooLong {
        /// Which kind of identifier.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// The string held a character the kind does not allow.
    #[error("{kind} may only contain {allowed}; found {found:?}")]
    BadChar {
        /// Which kind of identifier.
        kind: &'static str,
        /// Human description of the allowed set.
        allowed: &'static str,
        /// The first offending character.
        found: char,
    },
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $max:literal, $allowed_desc:literal, $allowed:expr, $pattern:literal) => {
        $(#[$meta])*
        ///
        /// Shared text: a clone is a reference count, not a copy (ids travel through every
        /// record, and the gateway holds millions of them).
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check(&s, $kind, $max, $allowed_desc, $allowed)?;
                Ok(Self(Arc::from(s)))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The identifier as an owned string.
            pub fn into_string(self) -> String {
                self.0.to_string()
            }

            /// Whether two values share one allocation (an interned value).
            pub fn same_allocation(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.to_string()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": $pattern,
                    "description": concat!("A ", $kind, ": ", $allowed_desc, ", at most ", $max, " characters."),
                })
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

fn check(s: &str, kind: &'static str, max: usize, allowed: &'static str, ok: fn(char) -> bool) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.chars().count() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if let Some(found) = s.chars().find(|c| !ok(*c)) {
        return Err(IdError::BadChar { kind, allowed, found });
    }
    Ok(())
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

fn group_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')
}

id_type!(
    /// Id of one stage (Teletraan's `env_id`).
    EnvId, "env id", 64, "letters, digits, '_' and '-'", word_char, "^[A-Za-z0-9_-]+$"
);
id_type!(
    /// Id of one deploy.
    DeployId, "deploy id", 64, "letters, digits, '_' and '-'", word_char, "^[A-Za-z0-9_-]+$"
);
id_type!(
    /// Id of one build: `<22-char id>_<first 7 chars of the commit>`.
    BuildId, "build id", 64, "letters, digits, '_' and '-'", word_char, "^[A-Za-z0-9_-]+$"
);
id_type!(
    /// Environment name (the service), e.g. `web`.
    EnvName, "environment name", 64, "letters, digits, '_' and '-'", word_char, "^[A-Za-z0-9_-]+$"
);
id_type!(
    /// Stage name within an environment, e.g. `prod`.
    StageName, "stage name", 64, "letters, digits, '_' and '-'", word_char, "^[A-Za-z0-9_-]+$"
);
id_type!(
    /// A host's stable id (a cloud instance id or any unique name).
    HostId, "host id", 128, "letters, digits, '_', '-', '.' and ':'", host_char, "^[A-Za-z0-9_.:-]+$"
);
id_type!(
    /// A host's name as shown to people.
    HostName, "host name", 128, "letters, digits, '_', '-', '.' and ':'", host_char, "^[A-Za-z0-9_.:-]+$"
);
id_type!(
    /// A host group (autoscaling group, cluster, role…): the unit of group capacity.
    GroupName, "group name", 128, "letters, digits, '_', '-', '.', ':' and '/'", group_char, "^[A-Za-z0-9_.:/-]+$"
);
id_type!(
    /// Name of a build (`build_name`): builds deployable on a stage carry the stage's build name.
    BuildName, "build name", 64, "letters, digits, '_', '-', '.', ':' and '/'", group_char, "^[A-Za-z0-9_.:/-]+$"
);

/// The group Teletraan assigns to hosts that report none.
pub const NULL_GROUP: &str = "NULL";

/// Encodes 16 random bytes the way Teletraan does: 22 chars of URL-safe base64 without padding,
/// never starting with `_` or `-` (so ids never look like flags).
pub fn base64_id(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 0x3f) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize] as char);
    }
    match out.as_bytes()[0] {
        b'_' => out.replace_range(0..1, "x"),
        b'-' => out.replace_range(0..1, "X"),
        _ => {}
    }
    out
}

fn random_id() -> String {
    base64_id(*uuid::Uuid::new_v4().as_bytes())
}

impl EnvId {
    /// A fresh random stage id.
    pub fn generate() -> Self {
        Self(Arc::from(random_id()))
    }
}

impl DeployId {
    /// A fresh random deploy id.
    pub fn generate() -> Self {
        Self(Arc::from(random_id()))
    }
}

impl BuildId {
    /// A fresh build id for a commit: `<22-char id>_<commit7>`, so on-host build directories
    /// are readable. `commit_short` must already be a valid short commit.
    pub fn generate(commit_short: &str) -> Result<Self, IdError> {
        Self::parse(format!("{}_{}", random_id(), commit_short))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_ids_are_22_url_safe_chars_not_starting_with_dash_or_underscore() {
        for first in [0u8, 0xf8, 0xfc, 0xff] {
            let id = base64_id([first; 16]);
            assert_eq!(id.len(), 22);
            assert!(!id.starts_with('_') && !id.starts_with('-'), "{id}");
            assert!(id.chars().all(word_char));
        }
        // 0xfb = 111110 11 -> first sextet 62 ('-') is replaced by 'X'.
        assert!(base64_id([0xfb; 16]).starts_with('X'));
        // 0xff = 111111 -> 63 ('_') is replaced by 'x'.
        assert!(base64_id([0xff; 16]).starts_with('x'));
    }

    #[test]
    fn generated_ids_parse() {
        let id = EnvId::generate();
        assert_eq!(EnvId::parse(id.as_str()).unwrap(), id);
        let build = BuildId::generate("abc1234").unwrap();
        assert!(build.as_str().ends_with("_abc1234"));
        assert_eq!(build.as_str().len(), 30);
    }

    #[test]
    fn names_reject_empty_long_and_odd_characters() {
        assert_eq!(EnvName::parse(""), Err(IdError::Empty { kind: "environment name" }));
        assert!(matches!(EnvName::parse("a".repeat(65)), Err(IdError::TooLong { .. })));
        assert!(matches!(EnvName::parse("web prod"), Err(IdError::BadChar { found: ' ', .. })));
        assert!(matches!(StageName::parse("../x"), Err(IdError::BadChar { found: '.', .. })));
        assert!(HostName::parse("web-1.example.com").is_ok());
        assert!(GroupName::parse("web/asg-1").is_ok());
    }

    #[test]
    fn ids_validate_when_deserialized() {
        let ok: EnvName = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(ok.as_str(), "web");
        assert!(serde_json::from_str::<EnvName>("\"w b\"").is_err());
    }
}
