//! A client command's failure: one line for people, an exit status for scripts.

use std::fmt;

/// Exit statuses of the client commands.
pub mod exit {
    /// Done; a deploy that was waited for succeeded.
    pub const OK: u8 = 0;
    /// The server refused (an unknown environment, a missing role, an expired token), or a
    /// deploy that was waited for failed or was aborted.
    pub const FAILED: u8 = 1;
    /// Bad usage: a flag, an argument, no server or token configured.
    pub const USAGE: u8 = 2;
    /// `--wait` or `--watch` ran past `--timeout`.
    pub const TIMED_OUT: u8 = 3;
    /// The server could not be reached or failed (5xx) after the retries.
    pub const UNAVAILABLE: u8 = 4;
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The exit status ([`exit`]).
    pub exit: u8,
    /// One line (empty: nothing more to print, the output said it).
    pub message: String,
    /// The server's HTTP status, when the server answered with an error.
    pub status: Option<u16>,
}

impl CliError {
    /// Bad usage.
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError { exit: exit::USAGE, message: message.into(), status: None }
    }

    /// A failure of the operation.
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError { exit: exit::FAILED, message: message.into(), status: None }
    }

    /// The server is unreachable or broken.
    pub fn unavailable(message: impl Into<String>) -> CliError {
        CliError { exit: exit::UNAVAILABLE, message: message.into(), status: None }
    }

    /// A wait that ran out.
    pub fn timed_out(message: impl Into<String>) -> CliError {
        CliError { exit: exit::TIMED_OUT, message: message.into(), status: None }
    }

    /// The server's error answer: its code and message on one line.
    pub fn api(status: u16, code: &str, message: &str) -> CliError {
        let hint = match status {
            401 => " (log in again: teletraan login)",
            _ => "",
        };
        let line = format!("{code}: {} (HTTP {status}){hint}", message.trim());
        let e = if status >= 500 { CliError::unavailable(line) } else { CliError::failed(line) };
        CliError { status: Some(status), ..e }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_one_line_with_their_code() {
        let e = CliError::api(404, "not_found", "Stage web/nope does not exist.\n");
        assert_eq!(
            (e.exit, e.message.as_str()),
            (exit::FAILED, "not_found: Stage web/nope does not exist. (HTTP 404)")
        );
        let e = CliError::api(401, "unauthorized", "expired token");
        assert!(e.message.ends_with("(log in again: teletraan login)"), "{e}");
        assert_eq!(CliError::api(503, "unavailable", "broker away").exit, exit::UNAVAILABLE);
    }
}
