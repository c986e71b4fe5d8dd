//! (being written: the MCP API helper) The stored MCP servers started, restarted with
//! backoff when they die, and stopped.
