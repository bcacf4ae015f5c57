//! kiln's error type and the exit codes it maps to.
//!
//! Exit codes (documented in `kiln --help` and the README):
//! 0 ok, 1 build failed, 2 usage or configuration error, 3 verification failure.

use std::fmt;

/// What kind of failure happened; decides the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything that went wrong while doing the work (I/O, network, tools). Exit 1.
    Build,
    /// The command line or a profile/overlay is wrong. Exit 2.
    Config,
    /// A downloaded byte did not match its pin. Exit 3.
    Verify,
}

impl Kind {
    /// The kind of two failures reported as one: a verification failure
    /// wins (exit 3), then a configuration error, then a build failure.
    pub fn max_severity(self, other: Kind) -> Kind {
        let rank = |k: Kind| match k {
            Kind::Verify => 2,
            Kind::Config => 1,
            Kind::Build => 0,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
    /// The process exit code for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Build => 1,
            Kind::Config => 2,
            Kind::Verify => 3,
        }
    }
}

/// An error with a kind and a one-line message that names what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The failure class.
    pub kind: Kind,
    /// Human-readable message; the first line is the summary.
    pub message: String,
}

impl Error {
    /// A build failure (exit 1).
    pub fn build(message: impl Into<String>) -> Self {
        Error { kind: Kind::Build, message: message.into() }
    }
    /// A configuration or usage error (exit 2).
    pub fn config(message: impl Into<String>) -> Self {
        Error { kind: Kind::Config, message: message.into() }
    }
    /// A verification failure (exit 3).
    pub fn verify(message: impl Into<String>) -> Self {
        Error { kind: Kind::Verify, message: message.into() }
    }
    /// Prefixes the message with context, keeping the kind.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        Error { kind: self.kind, message: format!("{ctx}: {}", self.message) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result alias used across the builder.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a path to an I/O error and turns it into a build error.
pub trait IoContext<T> {
    /// Maps an `io::Error` to a build [`Error`] naming `what` (usually a path).
    fn io_ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::build(format!("{what}: {e}")))
    }
}
