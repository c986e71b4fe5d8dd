//! (being written: the MCP API helper) AstrBot's MCP server configs and their checks.
