//! One plugin's process (INTERFACE: the helper owning this file replaces the bodies).
//!
//! Protocol: newline-delimited JSON-RPC 2.0, UTF-8, one message per line on stdin/stdout;
//! stderr is the plugin's log (captured, capped, to our debug log).
//! - long-lived: `initialize` (params: [`Runtime::call`]'s `init()` value) → any object
//!   (a `protocol_version` other than 1 is refused), then the notification `initialized`;
//!   then calls; `notifications/cancelled {requestId, reason}` when a call times out;
//!   `shutdown` (notification) then close stdin, SIGTERM, SIGKILL to stop.
//! - one-shot: one request line on stdin (its params carry the `init()` value under
//!   `"init"`), stdin closed; the answer is the JSON-RPC response with the same id on
//!   stdout; a stdout that is not JSON-RPC is the result as text (`{"text": stdout}`), a
//!   non-zero exit an error with the stderr tail. The call's arguments are also in the
//!   environment (`ASTRBOT_CALL`, `ASTRBOT_CALL_NAME`, `ASTRBOT_ARG_<NAME>`) for shell.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::manifest::Exec;

/// What the process is started with.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The plugin's name (for logs and errors).
    pub name: String,
    pub exec: Exec,
    /// Working directory and HOME: the plugin's data folder (created if missing).
    pub cwd: PathBuf,
    /// The plugin folder (`ASTRBOT_PLUGIN_DIR`).
    pub plugin_dir: PathBuf,
}

/// Why a call failed; `Display` is the text the chat shows.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// No answer within the timeout (the process was cancelled, then killed).
    Timeout(Duration),
    /// The process could not start, or died, or broke the protocol.
    Failed(String),
    /// The plugin answered with a JSON-RPC error.
    Remote(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout(d) => write!(f, "no answer within {:.1} s", d.as_secs_f64()),
            CallError::Failed(e) | CallError::Remote(e) => f.write_str(e),
        }
    }
}

/// What GET /api/v1/plugins may show of a process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub running: bool,
    pub pid: Option<u32>,
    pub calls: u64,
    pub errors: u64,
    pub restarts: u64,
    pub last_error: Option<String>,
}

/// One plugin's process handle; shared by every chat that calls the plugin.
pub struct Runtime {
    spec: Spec,
}

impl Runtime {
    pub fn new(spec: Spec) -> Runtime {
        Runtime { spec }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Calls `method` with `params` and waits at most `timeout`. `init` makes the
    /// `initialize` params (read when the process starts, so a new config is seen at the
    /// next start). Never blocks a caller beyond `timeout` (plus a few ms), whatever the
    /// child does; a call of another chat is never delayed by this one.
    pub fn call(
        &self,
        method: &str,
        params: Value,
        init: &dyn Fn() -> Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let _ = (method, params, init, timeout);
        Err(CallError::Failed("plugin processes are not implemented yet".into()))
    }

    /// Stops the process if it runs (shutdown, close stdin, SIGTERM, SIGKILL to the group).
    /// Waits at most a few seconds; later calls start a new one.
    pub fn stop(&self) {}

    /// Stops the process if it has been idle for `exec.idle_stop_s` with no call in flight.
    pub fn stop_if_idle(&self) {}

    pub fn status(&self) -> Status {
        Status::default()
    }
}
