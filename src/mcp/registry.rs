//! (being written: the MCP API helper) The running MCP servers by name, in `App`, and the
//! tools they offer to the chat's tool loop. No import of `app` here (it holds this).

use std::time::Duration;

use serde_json::Value;

use super::{CallResult, Tool};

#[derive(Default)]
pub struct Registry {}

impl Registry {
    /// The tools of every connected, active server, in the servers' order; a name two
    /// servers offer is offered once (the first server's).
    pub fn tools(&self) -> Vec<Tool> {
        Vec::new()
    }

    /// Calls the tool the model knows as `llm_name` on the server that offers it.
    pub fn call(&self, llm_name: &str, _args: &Value, _timeout: Duration) -> Result<CallResult, String> {
        Err(format!("no tool named {llm_name}"))
    }
}
