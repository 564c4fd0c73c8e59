//! Errors: the typed [`HostError`] the test API returns, and the internal status codes hostcalls
//! answer the guest with (ABI 0.2.1 `WasmResult`).

use std::path::PathBuf;

use super::types::{format_logs, LogEntry};

/// Everything that can go wrong driving a module.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The file could not be read, compiled or linked, or does not look like a proxy-wasm module.
    #[error("cannot load wasm module `{}`: {message}", path.display())]
    Load {
        /// The module path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `proxy_on_vm_start` returned false.
    #[error("proxy_on_vm_start returned false{}", format_logs(logs))]
    VmStart {
        /// Every log line captured so far.
        logs: Vec<LogEntry>,
    },
    /// `proxy_on_configure` returned false (a bad plugin configuration).
    #[error(
        "plugin configuration rejected: proxy_on_configure returned false{}",
        format_logs(logs)
    )]
    Configure {
        /// Every log line captured so far (the filter's reason is among them).
        logs: Vec<LogEntry>,
    },
    /// The guest trapped (panic, abort, `unreachable`, out-of-bounds, `proc_exit`, unknown import).
    /// The VM is dead afterwards.
    #[error("wasm trapped in {callback}: {message}{}", format_logs(logs))]
    Trap {
        /// The callback the host was running (`proxy_on_request_headers`, ...).
        callback: String,
        /// The trap, with its wasm backtrace.
        message: String,
        /// Every log line captured so far (a Rust panic message arrives on stderr).
        logs: Vec<LogEntry>,
    },
    /// A call after an earlier trap (Envoy would answer 503 with the default failure policy).
    #[error("the VM is dead: it trapped earlier in {callback}: {message}")]
    Dead {
        /// The callback that trapped.
        callback: String,
        /// The trap message.
        message: String,
    },
    /// `reply_call`/`fail_call` with a token that is not pending.
    #[error("no pending http call with token {0}")]
    UnknownCall(u32),
    /// The stream was already finished (`proxy_on_delete` ran).
    #[error("stream {0} is finished")]
    StreamFinished(u32),
}

impl HostError {
    /// The log lines carried by this error (empty for errors without logs).
    pub fn logs(&self) -> &[LogEntry] {
        match self {
            Self::VmStart { logs } | Self::Configure { logs } | Self::Trap { logs, .. } => logs,
            _ => &[],
        }
    }

    /// Whether any carried log line contains `needle`.
    pub fn logs_contain(&self, needle: &str) -> bool {
        self.logs()
            .iter()
            .any(|entry| entry.message.contains(needle))
    }
}

/// ABI 0.2.1 `WasmResult` values the host answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code, reason = "the full ABI table, not every value is produced")]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// Why a hostcall did not succeed: a status for the guest, or a trap (e.g. the guest allocator
/// trapped while the host returned a buffer).
#[derive(Debug)]
pub(crate) enum Fail {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fail {
    fn from(status: Status) -> Self {
        Self::Status(status)
    }
}

impl From<wasmtime::Error> for Fail {
    fn from(error: wasmtime::Error) -> Self {
        Self::Trap(error)
    }
}

/// Turns a hostcall body's result into what the import returns: a status code, or a trap.
pub(crate) fn to_abi(result: Result<(), Fail>) -> wasmtime::Result<u32> {
    match result {
        Ok(()) => Ok(Status::Ok as u32),
        Err(Fail::Status(status)) => Ok(status as u32),
        Err(Fail::Trap(error)) => Err(error),
    }
}
