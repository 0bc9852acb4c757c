//! The one error type of the agent library.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the agent, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the agent was doing.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another agent holds the lock on the base directory.
    #[error("another teletraan-agent already uses {0} (lock held)")]
    Locked(PathBuf),
    /// The gateway could not be reached or answered badly.
    #[error("ping failed: {0}")]
    Ping(String),
    /// The gateway refused a request on its merits (a bad token or credential, a group out of
    /// scope, a host that already enrolled, bad input): asking again at once will not help.
    #[error("{what} refused by the gateway (HTTP {status}): {message}")]
    Rejected {
        /// What was refused (`ping`, `enrollment`).
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The gateway's message.
        message: String,
        /// The gateway's error code (`credential_retired`…), when it sent one.
        code: Option<String>,
    },
    /// Enrollment could not be done now (gateway unreachable, loading or failing).
    #[error("enrollment failed: {0}")]
    Enroll(String),
    /// The artifact could not be fetched (worth retrying).
    #[error("download of {url} failed: {message}")]
    Download {
        /// The artifact URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The artifact URL cannot be handled (not worth retrying).
    #[error("artifact URL {0:?} is not supported (use http://, https:// or file://)")]
    UnsupportedUrl(String),
    /// The artifact URL, or a redirect, is outside what the agent may fetch (not worth retrying).
    #[error("artifact URL {url} refused: {reason}")]
    Refused {
        /// The artifact URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No digest to verify the artifact with, and unverified artifacts are not allowed.
    #[error("artifact {url} cannot be verified: {reason}")]
    Unverified {
        /// The artifact URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The artifact does not have the published digest.
    #[error("checksum mismatch for {url}: expected sha256 {expected}, got sha256 {actual}")]
    Checksum {
        /// The artifact URL.
        url: String,
        /// Published digest (hex).
        expected: String,
        /// Digest of what was downloaded (hex).
        actual: String,
    },
    /// A published digest is not a hex SHA-256.
    #[error("{0}")]
    BadDigest(String),
    /// An archive entry was refused.
    #[error("refused archive entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as written in the archive.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// STAGING asked for a build that is not extracted.
    #[error("build {0} is not downloaded (DOWNLOADING must succeed before STAGING)")]
    NotDownloaded(String),
    /// The archive could not be read.
    #[error("bad archive: {0}")]
    Archive(String),
    /// The archive is in a format (or uses a feature) the agent does not read.
    #[error("unsupported archive: {0}")]
    UnsupportedFormat(String),
    /// The archive goes past a configured limit (entries or expanded bytes).
    #[error("archive refused: {0}")]
    ArchiveLimit(String),
    /// The work was stopped because the server changed the goal.
    #[error("stopped: the server changed the goal")]
    Aborted,
    /// The agent's metrics could not be set up (a bug: their names are fixed).
    #[error("metrics: {0}")]
    Metrics(String),
    /// A `set-status` request that cannot be applied.
    #[error("{0}")]
    Admin(String),
    /// A template of the build could not be rendered safely.
    #[error("template {path}: {reason}")]
    Template {
        /// The template (or output) path, relative to the build dir when inside it.
        path: String,
        /// Why it was refused or failed.
        reason: String,
    },
}

impl Error {
    /// Wraps an IO error with what was being done and where.
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io { what, path: path.to_path_buf(), source }
    }

    /// True when repeating the same step cannot succeed (the artifact itself is at fault).
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::UnsupportedUrl(_)
            | Error::Refused { .. }
            | Error::Unverified { .. }
            | Error::Checksum { .. }
            | Error::BadDigest(_)
            | Error::UnsafeEntry { .. }
            | Error::ArchiveLimit(_)
            | Error::UnsupportedFormat(_)
            | Error::Template { .. }
            | Error::Admin(_)
            | Error::Metrics(_)
            | Error::Rejected { .. }
            | Error::Config(_) => true,
            Error::Io { .. }
            | Error::Locked(_)
            | Error::Ping(_)
            | Error::Enroll(_)
            | Error::Download { .. }
            | Error::NotDownloaded(_)
            | Error::Aborted
            | Error::Archive(_) => false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
