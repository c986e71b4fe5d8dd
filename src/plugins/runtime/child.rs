//! A child process that speaks one JSON message per line on stdin/stdout: started in its
//! own process group, served by three threads, stopped with the whole group.
//!
//! Shared by the plugin runtime and MCP's stdio transport (`mcp::client::stdio`). The caller
//! builds the [`Command`] (program, arguments, environment, limits); [`Process::spawn`]
//! pipes the three streams, puts the child in a new process group (so that grandchildren,
//! `npx`'s or a shell's, are signalled together) and starts:
//! - a writer, fed by a bounded queue, so a caller never blocks on a child that stopped
//!   reading ([`Process::send`] fails instead);
//! - a reader of stdout, lines of at most [`MAX_LINE`] bytes, each handed to the
//!   [`Peer`] (whose replies are queued back); a longer line, the end of the output or a
//!   read error ends it and tells the peer;
//! - a drain of stderr, lines of at most 64 KiB, each handed to the peer.
//!
//! All three end when the child's pipes close. The child is only reaped by
//! [`Process::stop`] or [`Process::kill`], which first SIGKILL what is left of its group: until
//! then its pid (the group's id) stays reserved, so a signal never reaches a stranger.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::ndjson::{Line, MAX_LINE, line_of, lock, read_line};

/// Messages queued for the child's stdin at most.
const QUEUE: usize = 64;
/// A stderr line is passed on up to this many bytes; a longer one is dropped.
const STDERR_LINE: usize = 64 * 1024;

/// What the child's output goes to. Called from the child's reader threads: it must not
/// block for long (a slow peer slows only its own child).
pub(crate) trait Peer: Send + Sync + 'static {
    /// One stdout line (without its end, possibly empty or not JSON); returns the
    /// messages to send back.
    fn line(&self, line: &[u8]) -> Vec<serde_json::Value>;
    /// One stderr line (`None`: a line over 64 KiB, dropped).
    fn stderr(&self, line: Option<&[u8]>);
    /// Stderr closed (every process of the group that held it is gone).
    fn stderr_end(&self) {}
    /// The connection broke: `end` says how, `why` in words.
    fn broken(&self, end: End, why: &str);
}

/// How a connection to a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The child closed its stdout (it exited, most likely).
    Eof,
    /// A stdout line over [`MAX_LINE`].
    TooLong,
    /// Reading stdout failed.
    Read,
    /// Writing to stdin failed (the child closed it or exited).
    Write,
}

/// Names for messages and threads.
pub(crate) struct Names<'a> {
    /// Thread name prefix (`mcp`, `plg`): threads are `<prefix>-in-<name>`, `-out-`, `-err-`.
    pub threads: &'a str,
    pub name: &'a str,
    /// The child as messages call it: "server", "plugin".
    pub who: &'a str,
    /// The program as messages show it.
    pub program: &'a str,
}

type Writer = Arc<Mutex<Option<SyncSender<Vec<u8>>>>>;

pub(crate) struct Process {
    child: Mutex<Child>,
    pid: u32,
    pgid: libc::pid_t,
    writer: Writer,
    reading: Arc<AtomicBool>,
    /// Set once the child is reaped: its pid may belong to someone else from then on.
    reaped: AtomicBool,
    stopping: AtomicBool,
    who: String,
}

impl Process {
    /// Starts `cmd` (its streams piped, in a new process group) and its threads.
    pub fn spawn(cmd: &mut Command, peer: Arc<dyn Peer>, names: &Names) -> Result<Process, String> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", names.program))?;
        let pid = child.id();
        let pgid = libc::pid_t::try_from(pid).unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Cannot happen with three piped streams; stop the child rather than leak it.
            let _ = child.kill();
            let _ = child.wait();
            return Err("the child's pipes were not opened".into());
        };
        let (tx, rx) = sync_channel(QUEUE);
        let process = Process {
            child: Mutex::new(child),
            pid,
            pgid,
            writer: Arc::new(Mutex::new(Some(tx))),
            reading: Arc::new(AtomicBool::new(true)),
            reaped: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            who: names.who.to_owned(),
        };
        if let Err(e) = process.spawn_threads(names, peer, stdin, rx, stdout, stderr) {
            process.kill();
            return Err(format!("cannot start a thread: {e}"));
        }
        Ok(process)
    }

    fn spawn_threads(
        &self,
        names: &Names,
        peer: Arc<dyn Peer>,
        stdin: ChildStdin,
        rx: Receiver<Vec<u8>>,
        stdout: impl Read + Send + 'static,
        stderr: impl Read + Send + 'static,
    ) -> io::Result<()> {
        let (prefix, name) = (names.threads, names.name);
        let (p, who) = (Arc::clone(&peer), self.who.clone());
        thread::Builder::new()
            .name(format!("{prefix}-in-{name}"))
            .spawn(move || write_loop(&*p, &who, stdin, rx))?;
        let (p, w, r, who) =
            (Arc::clone(&peer), Arc::clone(&self.writer), Arc::clone(&self.reading), self.who.clone());
        thread::Builder::new().name(format!("{prefix}-out-{name}")).spawn(move || {
            let (end, why) = read_loop(&*p, &who, stdout, &w);
            r.store(false, Ordering::Release);
            p.broken(end, &why);
        })?;
        thread::Builder::new()
            .name(format!("{prefix}-err-{name}"))
            .spawn(move || drain_stderr(&*peer, stderr))?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues one line for the child's stdin; fails at once when the child is not reading.
    pub fn send(&self, line: Vec<u8>) -> Result<(), String> {
        send_to(&self.writer, &self.who, line)
    }

    /// Closes the child's stdin (once the queued lines are written).
    pub fn close_stdin(&self) {
        // Dropping the only sender ends the writer thread, which closes the child's stdin.
        lock(&self.writer).take();
    }

    /// Whether the child runs and its output is still read.
    pub fn alive(&self) -> bool {
        !self.stopping.load(Ordering::Acquire) && self.reading.load(Ordering::Acquire) && !self.exited()
    }

    /// Whether the child has exited, without reaping it.
    pub fn exited(&self) -> bool {
        if self.reaped.load(Ordering::Acquire) {
            return true;
        }
        // SAFETY: waitid writes only into `info`, which we own; WNOWAIT leaves the child
        // waitable, so `Child::wait` still reaps it.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            let rc = libc::waitid(libc::P_PID, self.pid, &mut info, flags);
            rc != 0 || info.si_pid() != 0
        }
    }

    /// Waits until the child exits or `limit` passes (not reaping it); true when it exited.
    pub fn wait_exit(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut pause = Duration::from_millis(1);
        loop {
            if self.exited() {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            thread::sleep(pause.min(end - now));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the group, unless the child is reaped already.
    pub fn signal(&self, sig: libc::c_int) {
        let _child = lock(&self.child);
        self.signal_group(sig);
    }

    /// Sends `sig` to the group; the caller holds the child's lock (or nobody reaps it
    /// concurrently).
    fn signal_group(&self, sig: libc::c_int) {
        if self.pgid > 1 && !self.reaped.load(Ordering::Acquire) {
            // SAFETY: killpg has no memory effects; the group's id is our unreaped child's
            // pid, so it cannot name anyone else's group.
            unsafe {
                libc::killpg(self.pgid, sig);
            }
        }
    }

    /// SIGKILLs the whole group now and reaps the child; its exit status. Idempotent.
    pub fn kill(&self) -> Option<ExitStatus> {
        self.stopping.store(true, Ordering::Release);
        lock(&self.writer).take();
        let mut child = lock(&self.child);
        self.signal_group(libc::SIGKILL);
        let status = child.wait().ok();
        self.reaped.store(true, Ordering::Release);
        status
    }

    /// Stops the child: stdin closed, `grace` to exit, SIGTERM to the group, `grace`,
    /// SIGKILL; then what is left of the group is killed and the child reaped. Idempotent.
    pub fn stop(&self, grace: Duration) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        self.close_stdin();
        if !self.wait_exit(grace) {
            self.signal(libc::SIGTERM);
            self.wait_exit(grace);
        }
        self.kill();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::Acquire) {
            self.kill();
        }
    }
}

fn send_to(writer: &Writer, who: &str, line: Vec<u8>) -> Result<(), String> {
    let tx = lock(writer).clone().ok_or_else(|| format!("the connection to the {who} was closed"))?;
    tx.try_send(line).map_err(|e| match e {
        TrySendError::Full(_) => format!("the {who} is not reading its input"),
        TrySendError::Disconnected(_) => format!("the {who}'s input is closed"),
    })
}

/// Writes queued lines to the child's stdin; stdin closes when the queue's sender is
/// dropped and this thread ends.
fn write_loop(peer: &dyn Peer, who: &str, mut stdin: ChildStdin, rx: Receiver<Vec<u8>>) {
    for line in rx {
        if let Err(e) = stdin.write_all(&line).and_then(|()| stdin.flush()) {
            peer.broken(End::Write, &format!("cannot write to the {who}: {e}"));
            return;
        }
    }
}

/// Reads stdout until it ends; returns how and why it ended.
fn read_loop(peer: &dyn Peer, who: &str, stdout: impl Read, writer: &Writer) -> (End, String) {
    let mut r = BufReader::with_capacity(64 * 1024, stdout);
    loop {
        let line = match read_line(&mut r, MAX_LINE) {
            Ok(Line::Text(t)) => t,
            Ok(Line::Eof) => return (End::Eof, format!("the {who} closed its output (it exited?)")),
            Ok(Line::TooLong) => {
                return (End::TooLong, format!("the {who} sent a line over {} MiB", MAX_LINE >> 20));
            }
            Err(e) => return (End::Read, format!("reading from the {who} failed: {e}")),
        };
        for reply in peer.line(&line) {
            let _ = send_to(writer, who, line_of(&reply));
        }
    }
}

/// Hands stderr to the peer line by line until it closes.
fn drain_stderr(peer: &dyn Peer, stderr: impl Read) {
    let mut r = BufReader::new(stderr);
    loop {
        match read_line(&mut r, STDERR_LINE) {
            Ok(Line::Text(t)) => peer.stderr(Some(&t)),
            Ok(Line::TooLong) => peer.stderr(None),
            Ok(Line::Eof) | Err(_) => return peer.stderr_end(),
        }
    }
}

/// Helpers for tests that start children (the plugin runtime's, MCP's).
#[cfg(test)]
pub(crate) mod testing {
    use std::time::{Duration, Instant};

    /// Polls `cond` every 20 ms until it holds or `limit` passes; its last value.
    pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cond()
    }

    /// Whether process `pid` exists and is not a zombie.
    pub fn running(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name in parentheses.
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        assert!(wait_for(Duration::from_secs(5), || !running(pid)), "exited but unreaped: a zombie");
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "still waitable");
        child.wait().unwrap();
        assert!(running(std::process::id()));
    }
}
