//! (being written: the MCP client helper) One connection to one MCP server.
//!
//! The interface the registry and manager use is fixed here; the transports (stdio,
//! Streamable HTTP, legacy HTTP+SSE) fill it in.

use std::time::Duration;

use serde_json::Value;

use super::{CallResult, Tool};

/// A live session with one MCP server.
pub struct Client {
    name: String,
}

impl Client {
    /// Starts (stdio) or reaches (HTTP) the server `name` described by `config` (AstrBot's
    /// stored shape, `active` ignored), completes `initialize` and lists its tools, all
    /// within `timeout`.
    pub fn connect(name: &str, _config: &Value, _timeout: Duration) -> Result<Client, String> {
        Err(format!("MCP server {name}: the client is not built yet"))
    }

    /// The tools the server offered at the last listing (refreshed when it says they changed).
    pub fn tools(&self) -> Vec<Tool> {
        Vec::new()
    }

    /// Calls tool `mcp_name` with `args`; a call not answered within `timeout` is cancelled.
    pub fn call(&self, mcp_name: &str, _args: &Value, _timeout: Duration) -> Result<CallResult, String> {
        Err(format!("MCP server {}: no tool {mcp_name}", self.name))
    }

    /// Whether the session still works (the child runs, the HTTP session is not gone).
    pub fn alive(&self) -> bool {
        false
    }

    /// The server's recent log lines of level warning or above (stdio: its stderr).
    pub fn errlogs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Ends the session: stdio closes stdin, then SIGTERM, then SIGKILL; HTTP sends DELETE.
    pub fn close(&self) {}
}
