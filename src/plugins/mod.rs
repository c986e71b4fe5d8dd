//! Executable plugins: a folder under `DIR/plugins/<name>/` with AstrBot's `metadata.yaml`,
//! our manifest `plugin.json` (what runs and what it offers: commands, LLM tools) and
//! optionally AstrBot's `_conf_schema.json`, `README.md` and `logo.png`. The program, in
//! any language, speaks newline-delimited JSON-RPC 2.0 on stdin/stdout (plugins-skills §4.7).
//!
//! - [`manifest`]: reading and checking `metadata.yaml` and `plugin.json` of one folder;
//! - [`schema`]: `_conf_schema.json`: defaults, the saved config's repair, validation;
//! - [`runtime`]: one plugin's process: long-lived (started on first use, stopped when
//!   idle, per-call timeout, cancel then kill) or one process per call;
//! - [`registry`]: the installed plugins ([`registry::Registry`] in `App`), their enabled
//!   state, and the calls the chat makes (commands, tools);
//! - [`commands`]: AstrBot's command matching (wake prefix, groups, aliases, typed
//!   parameters) against the enabled plugins' declared commands;
//! - [`install`]: installing from a URL or an upload (archives through `archive`);
//! - [`market`]: plugin sources and the marketplace registry with its cache.
//!
//! Everything the management API shows comes from files, never from a running process:
//! listing plugins starts nothing. A process starts only when one of its commands or
//! tools is called.

pub mod commands;
pub mod install;
pub mod manifest;
pub mod market;
pub mod registry;
pub mod runtime;
pub mod schema;

use std::path::{Path, PathBuf};

/// The folder of all plugins.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("plugins")
}

/// A plugin's own data folder (its working directory and HOME): `DIR/plugin_data/<name>`.
pub fn data_dir_of(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("plugin_data").join(name)
}

/// A plugin's saved config: `DIR/config/<name>_config.json` (AstrBot's place).
pub fn config_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("config").join(format!("{name}_config.json"))
}

/// A plugin name as a folder name and an id in paths: AstrBot wants a Python identifier
/// (`[A-Za-z_][A-Za-z0-9_]*`, not a keyword); we take its ASCII form, at most 64 bytes.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 64
        && !PYTHON_KEYWORDS.contains(&name)
}

const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def",
    "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is",
    "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_identifiers() {
        assert!(valid_name("astrbot_plugin_dice"));
        assert!(valid_name("_x1"));
        for bad in ["", "1abc", "a-b", "a/b", "..", "a.b", "class", "é", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
