//! Failures and their exit codes: 2 for usage or input errors, 3 for cluster or API errors.
//! Every error prints as one line on stderr; the outcome codes 0 and 1 are not errors.

use std::fmt;

/// Exit code: allowed, or the check passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: denied, or findings.
pub const EXIT_DENIED: u8 = 1;
/// Exit code: usage or input error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: cluster or API error.
pub const EXIT_CLUSTER: u8 = 3;

/// What kind of failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad flags, files, YAML, paths: exit 2.
    Usage,
    /// The cluster could not be reached or answered an error: exit 3.
    Cluster,
}

/// An error with its exit code.
#[derive(Debug)]
pub struct CliError {
    /// Usage or cluster.
    pub kind: Kind,
    /// What happened (with context).
    pub error: anyhow::Error,
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Usage => EXIT_USAGE,
            Kind::Cluster => EXIT_CLUSTER,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line: the context chain joined with ": ", newlines folded.
        let text = format!("{:#}", self.error);
        f.write_str(&text.replace('\n', " "))
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        CliError {
            kind: Kind::Usage,
            error,
        }
    }
}

/// Result of a command: the exit code on success.
pub type CmdResult = Result<u8, CliError>;

/// A usage or input error.
pub fn usage(msg: impl fmt::Display) -> CliError {
    CliError {
        kind: Kind::Usage,
        error: anyhow::anyhow!("{msg}"),
    }
}

/// A cluster or API error.
pub fn cluster(error: anyhow::Error) -> CliError {
    CliError {
        kind: Kind::Cluster,
        error,
    }
}
