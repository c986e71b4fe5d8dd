//! MCP (Model Context Protocol) servers: the tools an agent can call.
//!
//! - [`client`]: one connection to one MCP server (stdio child process, Streamable HTTP,
//!   or the legacy HTTP+SSE transport): the `initialize` handshake, `tools/list`,
//!   `tools/call` with a timeout and cancellation, the server's stderr and liveness;
//! - [`registry`]: the running servers by name ([`registry::Registry`] in `App`) and the
//!   tools they offer, as the chat's tool loop asks for them;
//! - [`manager`]: the stored servers started, restarted with backoff when they die, and
//!   stopped, as the MCP servers API changes them;
//! - [`config`]: AstrBot's server configs: stdio / remote, the stdio safety rules.
//!
//! The layer sits below `chat` and `api` (it uses `db` and `app` only in `manager`);
//! `chat::tools` turns the registry's tools into what a model is offered.

pub mod client;
pub mod config;
pub mod manager;
pub mod registry;

use serde_json::Value;

/// A tool an MCP server offers, as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The name offered to the model: the MCP name with every run of characters outside
    /// `[A-Za-z0-9_-]` made `_` (AstrBot's rule; no server prefix).
    pub name: String,
    /// The name the server knows it by (for `tools/call`).
    pub mcp_name: String,
    pub description: String,
    /// The JSON schema of its arguments (`inputSchema`).
    pub input_schema: Value,
    /// The server that offers it.
    pub server: String,
}

/// What a tool call returned, flattened as AstrBot flattens it: text parts joined with
/// blank lines (other parts described), and whether the server flagged it as an error.
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub text: String,
    pub is_error: bool,
}

/// AstrBot's tool name for the model: runs of characters outside `[A-Za-z0-9_-]` become `_`.
pub fn llm_name(mcp_name: &str) -> String {
    let mut out = String::new();
    let mut in_run = false;
    for c in mcp_name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_for_the_model() {
        assert_eq!(llm_name("get-sum"), "get-sum");
        assert_eq!(llm_name("fs.read file"), "fs_read_file");
        assert_eq!(llm_name("a..b"), "a_b");
    }
}
