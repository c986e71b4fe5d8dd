//! The stdio transport: the server is a child process, one JSON-RPC message per line.
//!
//! The child runs in its own process group (so that `npx`/`uvx` and their grandchildren
//! are stopped together) with a cleared environment: only `PATH` and `HOME` of ours (PATH
//! so that `node`, `npx`, `python` resolve; HOME because npm, npx and uv keep their caches
//! there) plus the config's `env`, as AstrBot's SDK passes only a short safe list. The
//! process and its threads are `plugins::runtime::child::Process`, shared with the plugins'
//! processes; the session core is its [`Peer`]. Three threads serve it: a writer (fed by a bounded queue, so a caller never blocks on a child
//! that stopped reading), a reader of stdout (lines of at most 16 MiB; a longer one breaks
//! the connection; lines that are not JSON are logged as noise), and a drain of stderr (to
//! the debug log, and lines that look like warnings or errors to `errlogs`). All end when
//! the child's pipes close, which `close` ensures: stdin closed, 2 s, SIGTERM to the group,
//! 2 s, SIGKILL, then the child is reaped.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::jsonrpc::{Core, cut, messages};
use super::{Link, SendError, StdioConfig};
use crate::plugins::runtime::child::{End, Names, Peer, Process};
use crate::plugins::runtime::ndjson::line_of;

/// How long the child gets after stdin closes, and after SIGTERM.
const GRACE: Duration = Duration::from_secs(2);

pub(super) struct Stdio {
    process: Process,
}

impl Stdio {
    pub fn start(core: &Arc<Core>, config: &StdioConfig) -> Result<Stdio, String> {
        let mut cmd = Command::new(&config.command);
        cmd.args(&config.args).env_clear();
        for key in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(&config.env);
        if let Some(dir) = &config.cwd {
            cmd.current_dir(dir);
        }
        let program = format!("{:?}", cut(&config.command, 200));
        let names = Names { threads: "mcp", name: &core.name, who: "server", program: &program };
        let process = Process::spawn(&mut cmd, Arc::clone(core) as Arc<dyn Peer>, &names)?;
        log::debug!("MCP server {}: started pid {}", core.name, process.pid());
        Ok(Stdio { process })
    }
}

/// The session core reads the child's output: messages routed (replies sent back), lines
/// that are not JSON logged as noise, stderr to the debug log and lines that look like
/// warnings or errors to `errlogs`.
impl Peer for Core {
    fn line(&self, line: &[u8]) -> Vec<Value> {
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            return Vec::new();
        }
        match messages(&text) {
            Ok(msgs) => msgs.into_iter().filter_map(|msg| self.handle(msg)).collect(),
            Err(_) => {
                log::debug!("MCP server {}: noise on stdout: {}", self.name, cut(&text, 200));
                Vec::new()
            }
        }
    }

    fn stderr(&self, line: Option<&[u8]>) {
        let Some(line) = line else {
            log::debug!("[MCPServer-{}] (a stderr line over 64 KiB was dropped)", self.name);
            return;
        };
        let text = String::from_utf8_lossy(line);
        log::debug!("[MCPServer-{}] {}", self.name, cut(&text, 1000));
        if looks_like_a_warning(&text) {
            self.errlog(&text);
        }
    }

    fn broken(&self, _end: End, why: &str) {
        self.fail_all(why);
    }
}

/// Whether a stderr line reads like a warning or an error (stderr also carries info and
/// debug output, so not every line is one).
pub(super) fn looks_like_a_warning(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    ["warn", "error", "exception", "traceback", "fatal", "critical", "panic"]
        .iter()
        .any(|w| lower.contains(w))
}

impl Link for Stdio {
    #[cfg(test)]
    fn pid(&self) -> Option<u32> {
        Some(self.process.pid())
    }

    fn send(&self, _core: &Core, msg: &Value, _deadline: Instant) -> Result<(), SendError> {
        self.process.send(line_of(msg)).map_err(SendError::Failed)
    }

    fn alive(&self) -> bool {
        self.process.alive()
    }

    fn close(&self) {
        self.process.stop(GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_told_from_other_stderr() {
        assert!(looks_like_a_warning("WARNING: deprecated"));
        assert!(looks_like_a_warning("Traceback (most recent call last):"));
        assert!(!looks_like_a_warning("Starting default (STDIO) server..."));
    }
}
