//! The stdio transport: the server is a child process, one JSON-RPC message per line.
//!
//! The child runs in its own process group (so that `npx`/`uvx` and their grandchildren
//! are stopped together) with a cleared environment: only `PATH` and `HOME` of ours (PATH
//! so that `node`, `npx`, `python` resolve; HOME because npm, npx and uv keep their caches
//! there) plus the config's `env`, as AstrBot's SDK passes only a short safe list. Three
//! threads serve it: a writer (fed by a bounded queue, so a caller never blocks on a child
//! that stopped reading), a reader of stdout (lines of at most 16 MiB; a longer one breaks
//! the connection; lines that are not JSON are logged as noise), and a drain of stderr (to
//! the debug log, and lines that look like warnings or errors to `errlogs`). All end when
//! the child's pipes close, which `close` ensures: stdin closed, 2 s, SIGTERM to the group,
//! 2 s, SIGKILL, then the child is reaped.

use std::io::{BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio as Pipe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::jsonrpc::{Core, Line, MAX_MESSAGE, cut, lock, messages, read_line};
use super::{Link, SendError, StdioConfig};

/// Messages queued for the child's stdin at most.
const QUEUE: usize = 64;
/// A stderr line is kept (for the log) up to this many bytes.
const STDERR_LINE: usize = 64 * 1024;
/// How long the child gets after stdin closes, and after SIGTERM.
const GRACE: Duration = Duration::from_secs(2);

type Writer = Arc<Mutex<Option<SyncSender<Vec<u8>>>>>;

pub(super) struct Stdio {
    child: Mutex<Child>,
    pgid: libc::pid_t,
    writer: Writer,
    reading: Arc<AtomicBool>,
    closed: AtomicBool,
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
        cmd.stdin(Pipe::piped()).stdout(Pipe::piped()).stderr(Pipe::piped()).process_group(0);
        let mut child =
            cmd.spawn().map_err(|e| format!("cannot start {:?}: {e}", cut(&config.command, 200)))?;
        let pgid = libc::pid_t::try_from(child.id()).unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Cannot happen with three piped streams; stop the child rather than leak it.
            let _ = child.kill();
            let _ = child.wait();
            return Err("the child's pipes were not opened".into());
        };
        log::debug!("MCP server {}: started pid {}", core.name, child.id());
        let (tx, rx) = sync_channel(QUEUE);
        let writer: Writer = Arc::new(Mutex::new(Some(tx)));
        let reading = Arc::new(AtomicBool::new(true));
        let spawned = spawn_threads(core, stdin, rx, stdout, stderr, &writer, &reading);
        let link = Stdio { child: Mutex::new(child), pgid, writer, reading, closed: AtomicBool::new(false) };
        if let Err(e) = spawned {
            link.close();
            return Err(format!("cannot start a thread: {e}"));
        }
        Ok(link)
    }

    /// Waits until the child exits or `limit` passes; true when it exited (and is reaped).
    fn wait_exit(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            match lock(&self.child).try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) => {}
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal_group(&self, sig: libc::c_int) {
        if self.pgid > 1 {
            // SAFETY: killpg has no memory effects; a group that is gone gives ESRCH.
            unsafe {
                libc::killpg(self.pgid, sig);
            }
        }
    }
}

fn spawn_threads(
    core: &Arc<Core>,
    stdin: ChildStdin,
    rx: Receiver<Vec<u8>>,
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
    writer: &Writer,
    reading: &Arc<AtomicBool>,
) -> std::io::Result<()> {
    let name = &core.name;
    let c = Arc::clone(core);
    thread::Builder::new().name(format!("mcp-in-{name}")).spawn(move || write_loop(&c, stdin, rx))?;
    let (c, w, r) = (Arc::clone(core), Arc::clone(writer), Arc::clone(reading));
    thread::Builder::new().name(format!("mcp-out-{name}")).spawn(move || {
        let why = read_loop(&c, stdout, &w);
        r.store(false, Ordering::Release);
        c.fail_all(&why);
    })?;
    let c = Arc::clone(core);
    thread::Builder::new().name(format!("mcp-err-{name}")).spawn(move || drain_stderr(&c, stderr))?;
    Ok(())
}

/// Writes queued messages to the child's stdin; stdin closes when the queue's sender is
/// dropped (by `close`) and this thread ends.
fn write_loop(core: &Core, mut stdin: ChildStdin, rx: Receiver<Vec<u8>>) {
    for line in rx {
        if let Err(e) = stdin.write_all(&line).and_then(|()| stdin.flush()) {
            core.fail_all(&format!("cannot write to the server: {e}"));
            return;
        }
    }
}

/// Reads stdout until it ends; returns why it ended.
fn read_loop(core: &Core, stdout: impl Read, writer: &Writer) -> String {
    let mut r = BufReader::with_capacity(64 * 1024, stdout);
    loop {
        let line = match read_line(&mut r, MAX_MESSAGE) {
            Ok(Line::Text(t)) => t,
            Ok(Line::Eof) => return "the server closed its output (it exited?)".into(),
            Ok(Line::TooLong) => return format!("the server sent a line over {} MiB", MAX_MESSAGE >> 20),
            Err(e) => return format!("reading from the server failed: {e}"),
        };
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        match messages(&text) {
            Ok(msgs) => {
                for msg in msgs {
                    if let Some(reply) = core.handle(msg) {
                        let tx = lock(writer).clone();
                        if let Some(tx) = tx {
                            let _ = tx.try_send(line_of(&reply));
                        }
                    }
                }
            }
            Err(_) => log::debug!("MCP server {}: noise on stdout: {}", core.name, cut(&text, 200)),
        }
    }
}

/// Logs stderr at debug, keeping lines that look like warnings or errors for `errlogs`.
fn drain_stderr(core: &Core, stderr: impl Read) {
    let mut r = BufReader::new(stderr);
    loop {
        let line = match read_line(&mut r, STDERR_LINE) {
            Ok(Line::Text(t)) => t,
            Ok(Line::TooLong) => {
                log::debug!(
                    "[MCPServer-{}] (a stderr line over {} KiB was dropped)",
                    core.name,
                    STDERR_LINE >> 10
                );
                continue;
            }
            Ok(Line::Eof) | Err(_) => return,
        };
        let text = String::from_utf8_lossy(&line);
        log::debug!("[MCPServer-{}] {}", core.name, cut(&text, 1000));
        if looks_like_a_warning(&text) {
            core.errlog(&text);
        }
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

fn line_of(msg: &Value) -> Vec<u8> {
    let mut line = msg.to_string().into_bytes();
    line.push(b'\n');
    line
}

impl Link for Stdio {
    #[cfg(test)]
    fn pid(&self) -> Option<u32> {
        Some(lock(&self.child).id())
    }

    fn send(&self, _core: &Core, msg: &Value, _deadline: Instant) -> Result<(), SendError> {
        let tx = lock(&self.writer)
            .clone()
            .ok_or_else(|| SendError::Failed("the connection was closed".into()))?;
        tx.try_send(line_of(msg)).map_err(|e| {
            SendError::Failed(match e {
                TrySendError::Full(_) => "the server is not reading its input".into(),
                TrySendError::Disconnected(_) => "the server's input is closed".into(),
            })
        })
    }

    fn alive(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && self.reading.load(Ordering::Acquire)
            && matches!(lock(&self.child).try_wait(), Ok(None))
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Dropping the only sender ends the writer thread, which closes the child's stdin.
        lock(&self.writer).take();
        if self.wait_exit(GRACE) {
            return;
        }
        self.signal_group(libc::SIGTERM);
        if self.wait_exit(GRACE) {
            return;
        }
        self.signal_group(libc::SIGKILL);
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
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
