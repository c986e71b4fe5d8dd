//! One plugin's process: started when a call needs it, shared by every chat that calls the
//! plugin, stopped when idle, on a new config, or at shutdown.
//!
//! Protocol: newline-delimited JSON-RPC 2.0, UTF-8, one message per line on stdin/stdout;
//! stderr is the plugin's log (kept as a short tail for error texts, and rate-limited to our
//! debug log).
//! - long-lived: `initialize` (params: [`Runtime::call`]'s `init()` value) → any object
//!   (a `protocol_version` other than 1 is refused), then the notification `initialized`;
//!   then calls, several in flight at once, answered in any order; a call not answered in
//!   time returns its timeout error at once and is followed by `notifications/cancelled
//!   {requestId, reason}`, and by SIGKILL to the process group if no answer comes 2 s
//!   later; `shutdown` (notification), then stdin closed, SIGTERM, SIGKILL to stop.
//! - one-shot: a process per call; one request line on stdin (its params carry the
//!   `init()` value under `"init"`), stdin closed; the answer is the JSON-RPC response with
//!   id 1 on stdout; a stdout that is not JSON-RPC is the result as text (`{"text": stdout}`),
//!   a non-zero exit an error with the stderr tail. The call's arguments are also in the
//!   environment (`ASTRBOT_CALL`, `ASTRBOT_CALL_NAME`, `ASTRBOT_ARG_<NAME>`) for shell.
//!
//! Every process gets a cleared environment (`PATH`, `LANG`, `HOME`=`TMPDIR`=its data
//! folder, `ASTRBOT_PLUGIN_*`), its own process group, and limits set before `exec`
//! (address space, open files, file size, no core dumps, a lower priority). What it can
//! cost us is bounded: stdout lines of 16 MiB, a stderr tail of 4 KiB, 64 calls in flight;
//! a flooding, hanging or crashing plugin slows only its own calls. A process that keeps
//! crashing (3 times within a minute) makes its calls fail fast for a while.
//!
//! The process and its threads are [`child::Process`] and the routing by id
//! [`ndjson::Calls`], which MCP's stdio transport shares.

pub(crate) mod child;
pub(crate) mod ndjson;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::manifest::{Exec, Mode};
use child::{End, Names, Peer, Process};
use ndjson::{Calls, Kind, Refused, cut, kind, line_of, lock, messages};

/// Calls in flight per plugin at most (one-shot: processes at once).
pub const MAX_IN_FLIGHT: usize = 64;
/// How long a process gets after a cancelled call before its group is killed; and after
/// stdin closes, and after SIGTERM, when it is stopped.
const GRACE: Duration = Duration::from_secs(2);
/// Crashes within this window...
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// ...this many times make calls fail fast, first for `BACKOFF`, doubling to `MAX_BACKOFF`.
const CRASHES: usize = 3;
const BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The stderr tail kept for error texts: lines, and bytes in all.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 4096;
/// How long a one-shot process that answered gets to exit before it is killed.
const ANSWERED_EXIT: Duration = Duration::from_millis(500);
/// A one-shot's stdout taken as its text result, at most.
const MAX_TEXT: usize = 64 * 1024;
/// One-shot arguments passed as `ASTRBOT_ARG_*`: how many, and the longest value.
const MAX_ENV_ARGS: usize = 64;
const MAX_ENV_ARG: usize = 4096;
/// How long an error text waits for a dying process's last stderr lines.
const STDERR_LAG: Duration = Duration::from_millis(200);
/// Debug log lines per second a plugin's stderr or stdout noise may cause.
const LOG_PER_SECOND: u32 = 20;

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
    state: Mutex<State>,
    /// Signalled when a start ends (callers that waited for it go on).
    started: Condvar,
    /// One-shot processes running now.
    oneshots: AtomicUsize,
    calls: AtomicU64,
    errors: AtomicU64,
    restarts: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The long-lived process and what decides when the next one may start.
#[derive(Default)]
struct State {
    session: Option<Arc<Session>>,
    /// A caller is starting a process (the others wait for it).
    starting: bool,
    /// Counts `stop()`s: a start that began before one is stale (its config may be old).
    generation: u64,
    started_once: bool,
    /// When the recent crashes happened (within `CRASH_WINDOW`).
    crashes: VecDeque<Instant>,
}

impl State {
    /// How long calls still fail fast after repeated crashes, if they do.
    fn backoff(&mut self, now: Instant) -> Option<Duration> {
        while self.crashes.front().is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW) {
            self.crashes.pop_front();
        }
        let n = self.crashes.len();
        let last = *self.crashes.back()?;
        if n < CRASHES {
            return None;
        }
        let exp = u32::try_from(n - CRASHES).unwrap_or(u32::MAX).min(8);
        let wait = BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF);
        (last + wait).checked_duration_since(now).filter(|d| !d.is_zero())
    }
}

/// A running long-lived process.
struct Session {
    process: Process,
    link: Arc<Link>,
    last_used: Mutex<Instant>,
    /// We stopped or killed it: its end is no crash.
    ended_by_us: AtomicBool,
}

impl Session {
    fn usable(&self) -> bool {
        self.link.calls.broken().is_none() && self.process.alive()
    }

    /// Kills the group now (a call got no answer, or the start failed).
    fn kill(&self, why: &str) {
        self.ended_by_us.store(true, Ordering::Release);
        self.link.calls.fail_all(why);
        self.process.kill();
    }

    /// `shutdown`, stdin closed, SIGTERM, SIGKILL; calls still waiting then fail.
    fn shutdown(&self) {
        self.ended_by_us.store(true, Ordering::Release);
        let _ = self.process.send(line_of(&json!({"jsonrpc": "2.0", "method": "shutdown"})));
        self.process.stop(GRACE);
        self.link.calls.fail_all("the plugin was stopped");
    }
}

/// What the plugin's process sends, as this side sees it: the calls waiting for answers,
/// the cancelled calls still watched, the stderr tail, the noise counter.
struct Link {
    name: String,
    calls: Calls,
    /// Cancelled call id → the watchdog that kills the group if no answer comes.
    cancelled: Mutex<std::collections::HashMap<u64, Sender<()>>>,
    log: Mutex<Log>,
    /// Set (and signalled) when stderr closes: an error text waits for the last lines.
    stderr_closed: (Mutex<bool>, Condvar),
    /// The long-lived session this link serves, to kill when the connection breaks.
    session: std::sync::OnceLock<std::sync::Weak<Session>>,
}

/// The stderr tail and the rate limit of debug lines.
#[derive(Default)]
struct Log {
    tail: VecDeque<String>,
    tail_bytes: usize,
    noise: u64,
    window: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl Log {
    fn keep(&mut self, line: &str) {
        let line = cut(line, 1000).to_owned();
        self.tail_bytes += line.len();
        self.tail.push_back(line);
        while self.tail.len() > TAIL_LINES || (self.tail_bytes > TAIL_BYTES && self.tail.len() > 1) {
            if let Some(old) = self.tail.pop_front() {
                self.tail_bytes -= old.len();
            }
        }
    }

    /// The tail, its last `max` bytes at most.
    fn tail(&self, max: usize) -> String {
        let text = self.tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n");
        let mut start = text.len().saturating_sub(max);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }

    /// Whether a debug line may be logged now (at most `LOG_PER_SECOND`).
    fn allow(&mut self, name: &str) -> bool {
        let now = Instant::now();
        if self.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1)) {
            if self.suppressed > 0 {
                log::debug!("plugin {name}: {} log lines not shown", self.suppressed);
            }
            self.window = Some(now);
            self.in_window = 0;
            self.suppressed = 0;
        }
        self.in_window += 1;
        if self.in_window > LOG_PER_SECOND {
            self.suppressed += 1;
            return false;
        }
        true
    }
}

impl Link {
    fn new(name: &str) -> Link {
        Link {
            name: name.to_owned(),
            calls: Calls::new(MAX_IN_FLIGHT),
            cancelled: Mutex::new(Default::default()),
            log: Mutex::new(Log::default()),
            stderr_closed: (Mutex::new(false), Condvar::new()),
            session: std::sync::OnceLock::new(),
        }
    }

    fn noise(&self, text: &str) {
        let mut log = lock(&self.log);
        log.noise += 1;
        if log.allow(&self.name) {
            log::debug!("plugin {}: not JSON-RPC on stdout: {}", self.name, cut(text, 200));
        }
    }

    /// The last `max` bytes of stderr; when the process is dying, its last lines are
    /// waited for a moment (stderr may lag behind stdout's end).
    fn tail(&self, max: usize) -> String {
        let (closed, signal) = &self.stderr_closed;
        let end = Instant::now() + STDERR_LAG;
        let mut done = lock(closed);
        while !*done && self.calls.broken().is_some() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            done = signal.wait_timeout(done, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        drop(done);
        lock(&self.log).tail(max)
    }
}

impl Peer for Link {
    fn line(&self, line: &[u8]) -> Vec<Value> {
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            return Vec::new();
        }
        let Ok(msgs) = messages(&text) else {
            self.noise(&text);
            return Vec::new();
        };
        let mut replies = Vec::new();
        for msg in msgs {
            match kind(&msg) {
                Kind::Response { id } => {
                    let id = id.clone();
                    if !self.calls.answer(&id, msg) {
                        // A late answer to a cancelled call: its watchdog stands down.
                        let watchdog = id.as_u64().and_then(|id| lock(&self.cancelled).remove(&id));
                        if let Some(w) = watchdog {
                            let _ = w.send(());
                        }
                    }
                }
                Kind::Request { id, .. } => replies.push(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
                ),
                Kind::Notification { .. } => {}
                Kind::Invalid => self.noise(&text),
            }
        }
        replies
    }

    fn stderr(&self, line: Option<&[u8]>) {
        let text = line.map_or_else(|| "(a line over 64 KiB)".into(), String::from_utf8_lossy);
        let mut log = lock(&self.log);
        log.keep(&text);
        if log.allow(&self.name) {
            log::debug!("[plugin {}] {}", self.name, cut(&text, 1000));
        }
    }

    fn stderr_end(&self) {
        *lock(&self.stderr_closed.0) = true;
        self.stderr_closed.1.notify_all();
    }

    fn broken(&self, _end: End, why: &str) {
        self.calls.fail_all(why);
        lock(&self.cancelled).clear();
        // The connection is of no more use: the group goes now (the child is reaped by the
        // next call or the idle reaper).
        if let Some(s) = self.session.get().and_then(std::sync::Weak::upgrade) {
            s.process.signal(libc::SIGKILL);
        }
    }
}

/// What a start that failed means for the next one.
enum StartError {
    /// The process died or broke the protocol: counts towards the crash backoff.
    Crash(String),
    Other(CallError),
}

impl Runtime {
    pub fn new(spec: Spec) -> Runtime {
        Runtime {
            spec,
            state: Mutex::new(State::default()),
            started: Condvar::new(),
            oneshots: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
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
        self.calls.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now().checked_add(timeout).unwrap_or_else(far_future);
        let result = match self.spec.exec.mode {
            Mode::LongLived => self.call_long_lived(method, params, init, deadline, timeout),
            Mode::OneShot => self.call_oneshot(method, params, init, deadline, timeout),
        };
        if let Err(e) = &result {
            self.errors.fetch_add(1, Ordering::Relaxed);
            *lock(&self.last_error) = Some(cut(&e.to_string(), 2000).to_owned());
        }
        result
    }

    /// Stops the process if it runs (shutdown, close stdin, SIGTERM, SIGKILL to the group).
    /// Waits at most a few seconds; later calls start a new one.
    pub fn stop(&self) {
        let session = {
            let mut st = lock(&self.state);
            st.generation += 1;
            st.session.take()
        };
        if let Some(s) = session {
            log::debug!("plugin {}: stopping pid {}", self.spec.name, s.process.pid());
            s.shutdown();
        }
    }

    /// Stops the process if it has been idle for `exec.idle_stop_s` with no call in flight
    /// (and reaps one that died).
    pub fn stop_if_idle(&self) {
        let idle = Duration::from_secs(self.spec.exec.idle_stop_s);
        let (session, dead) = {
            let mut st = lock(&self.state);
            let Some(s) = &st.session else { return };
            let dead = !s.usable();
            let idle_long = s.link.calls.in_flight() == 0 && lock(&s.last_used).elapsed() >= idle;
            if !dead && !idle_long {
                return;
            }
            let s = st.session.take();
            if dead {
                self.note_death(&mut st, s.as_deref());
            }
            (s, dead)
        };
        match session {
            Some(s) if dead => {
                s.process.kill();
            }
            Some(s) => {
                log::debug!("plugin {}: idle, stopping pid {}", self.spec.name, s.process.pid());
                s.shutdown();
            }
            None => {}
        }
    }

    pub fn status(&self) -> Status {
        let session = lock(&self.state).session.clone();
        let live = session.filter(|s| s.usable());
        Status {
            running: live.is_some(),
            pid: live.map(|s| s.process.pid()),
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// Records the end of a session that died on its own as a crash.
    fn note_death(&self, st: &mut State, dead: Option<&Session>) {
        if let Some(s) = dead
            && !s.ended_by_us.load(Ordering::Acquire)
        {
            log::debug!("plugin {}: pid {} died", self.spec.name, s.process.pid());
            st.crashes.push_back(Instant::now());
        }
    }

    fn call_long_lived(
        &self,
        method: &str,
        params: Value,
        init: &dyn Fn() -> Value,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let session = self.session(init, deadline, timeout)?;
        let link = &session.link;
        let (tx, rx) = channel();
        let id = match link.calls.register(tx) {
            Ok(id) => id,
            Err(Refused::Full) => return Err(self.busy()),
            Err(Refused::Broken(why)) => return Err(self.failed(&session.link, &why)),
        };
        *lock(&session.last_used) = Instant::now();
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(why) = session.process.send(line_of(&msg)) {
            link.calls.forget(id);
            return Err(self.failed(link, &why));
        }
        let waited = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        *lock(&session.last_used) = Instant::now();
        let answer = match waited {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => {
                if link.calls.forget(id) {
                    self.cancel(&session, id);
                    return Err(CallError::Timeout(timeout));
                }
                // Answered (or failed) just now, between the timeout and the forgetting.
                rx.try_recv().unwrap_or_else(|_| Err("the plugin's connection ended".into()))
            }
            Err(RecvTimeoutError::Disconnected) => Err("the plugin's connection ended".into()),
        };
        match answer {
            Ok(msg) => response(msg),
            Err(why) => Err(self.failed(link, &why)),
        }
    }

    /// The running process, or a new one (one caller starts it; the others wait for it).
    fn session(
        &self,
        init: &dyn Fn() -> Value,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<Session>, CallError> {
        let mut st = lock(&self.state);
        loop {
            if let Some(s) = &st.session {
                if s.usable() {
                    return Ok(Arc::clone(s));
                }
                let dead = st.session.take();
                self.note_death(&mut st, dead.as_deref());
                drop(st);
                if let Some(dead) = dead {
                    dead.process.kill();
                }
                st = lock(&self.state);
                continue;
            }
            if st.starting {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(CallError::Timeout(timeout));
                }
                st = self.started.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
                continue;
            }
            if let Some(wait) = st.backoff(Instant::now()) {
                return Err(CallError::Failed(format!(
                    "plugin {} keeps crashing; retrying in {} s",
                    self.spec.name,
                    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
                )));
            }
            st.starting = true;
            let generation = st.generation;
            drop(st);
            let started = self.start(init, deadline, timeout);
            st = lock(&self.state);
            st.starting = false;
            self.started.notify_all();
            match started {
                Ok(s) if st.generation == generation => {
                    if st.started_once {
                        self.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    st.started_once = true;
                    st.session = Some(Arc::clone(&s));
                    return Ok(s);
                }
                Ok(stale) => {
                    // Stopped while starting (a new config): start again.
                    drop(st);
                    stale.kill("the plugin was stopped");
                    st = lock(&self.state);
                }
                Err(StartError::Crash(why)) => {
                    st.crashes.push_back(Instant::now());
                    return Err(CallError::Failed(why));
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
    }

    /// Starts the process and completes the handshake before `deadline`.
    fn start(
        &self,
        init: &dyn Fn() -> Value,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<Session>, StartError> {
        let name = &self.spec.name;
        let mut cmd = self.command().map_err(StartError::Other)?;
        let link = Arc::new(Link::new(name));
        let process = self.spawn(&mut cmd, Arc::clone(&link) as Arc<dyn Peer>).map_err(StartError::Other)?;
        log::debug!("plugin {name}: started pid {}", process.pid());
        let session = Arc::new(Session {
            process,
            link,
            last_used: Mutex::new(Instant::now()),
            ended_by_us: AtomicBool::new(false),
        });
        let _ = session.link.session.set(Arc::downgrade(&session));
        if session.link.calls.broken().is_some() {
            // It broke before the link knew its session: the group goes now all the same.
            session.process.signal(libc::SIGKILL);
        }
        let fail = |e: StartError| {
            session.kill("the plugin did not start");
            Err(e)
        };
        let (tx, rx) = channel();
        let Ok(id) = session.link.calls.register(tx) else {
            return fail(StartError::Crash(
                self.failed(&session.link, "the plugin exited at once").to_string(),
            ));
        };
        let hello = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": init()});
        if let Err(why) = session.process.send(line_of(&hello)) {
            return fail(StartError::Crash(self.failed(&session.link, &why).to_string()));
        }
        let answer = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(msg)) => msg,
            Ok(Err(why)) => {
                let why = format!("initialize failed: {why}");
                return fail(StartError::Crash(self.failed(&session.link, &why).to_string()));
            }
            Err(_) => return fail(StartError::Other(CallError::Timeout(timeout))),
        };
        match response(answer) {
            Ok(result) => match result.get("protocol_version") {
                None | Some(Value::Null) => {}
                Some(v) if v.as_u64() == Some(1) => {}
                Some(v) => {
                    return fail(StartError::Crash(format!(
                        "plugin {name} speaks protocol version {}, this host speaks 1",
                        cut(&v.to_string(), 40)
                    )));
                }
            },
            Err(e) => return fail(StartError::Crash(format!("plugin {name}: initialize failed: {e}"))),
        }
        let ready = json!({"jsonrpc": "2.0", "method": "initialized"});
        if let Err(why) = session.process.send(line_of(&ready)) {
            return fail(StartError::Crash(self.failed(&session.link, &why).to_string()));
        }
        Ok(session)
    }

    /// Tells the plugin a call timed out; if no answer comes within `GRACE`, the group is
    /// killed (the next call starts a new process).
    fn cancel(&self, session: &Arc<Session>, id: u64) {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": "timeout"}});
        let _ = session.process.send(line_of(&note));
        let (tx, rx) = channel();
        lock(&session.link.cancelled).insert(id, tx);
        let s = Arc::clone(session);
        let name = self.spec.name.clone();
        let watchdog = move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(GRACE) {
                log::debug!("plugin {name}: no answer to a cancelled call; killing pid {}", s.process.pid());
                s.kill("the plugin was killed: a call got no answer within its timeout");
            }
        };
        let spawned = thread::Builder::new().name(format!("plg-cancel-{}", self.spec.name)).spawn(watchdog);
        if spawned.is_err() {
            session.kill("the plugin was killed: a call got no answer within its timeout");
        }
    }

    fn busy(&self) -> CallError {
        CallError::Failed(format!("plugin {} is busy: {MAX_IN_FLIGHT} calls in flight", self.spec.name))
    }

    /// A failure with the plugin's last stderr lines.
    fn failed(&self, link: &Link, why: &str) -> CallError {
        let tail = link.tail(TAIL_BYTES);
        let name = &self.spec.name;
        CallError::Failed(if tail.is_empty() {
            format!("plugin {name}: {why}")
        } else {
            format!("plugin {name}: {why}; its last log lines:\n{tail}")
        })
    }

    /// The process to start: the program checked, the data folder made, the environment
    /// cleared, the limits set before `exec`.
    fn command(&self) -> Result<Command, CallError> {
        let spec = &self.spec;
        let program = &spec.exec.command;
        let executable =
            std::fs::metadata(program).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).map_err(
                |e| CallError::Failed(format!("plugin {}: cannot run {}: {e}", spec.name, program.display())),
            )?;
        if !executable {
            return Err(CallError::Failed(format!(
                "plugin {}: {} is not executable (set its execute bit: chmod +x)",
                spec.name,
                program.display()
            )));
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&spec.cwd).map_err(|e| {
            CallError::Failed(format!("plugin {}: cannot create {}: {e}", spec.name, spec.cwd.display()))
        })?;
        let mut cmd = Command::new(program);
        cmd.args(&spec.exec.args).env_clear().current_dir(&spec.cwd);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("LANG", "C.UTF-8")
            .env("HOME", &spec.cwd)
            .env("TMPDIR", &spec.cwd)
            .env("ASTRBOT_PLUGIN_NAME", &spec.name)
            .env("ASTRBOT_PLUGIN_DIR", &spec.plugin_dir)
            .env("ASTRBOT_PLUGIN_DATA_DIR", &spec.cwd);
        let memory = spec.exec.memory_mb.map(|mb| mb.saturating_mul(1 << 20));
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // system calls (getrlimit, setrlimit, setpriority), which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || limit_child(memory));
        }
        Ok(cmd)
    }

    fn spawn(&self, cmd: &mut Command, peer: Arc<dyn Peer>) -> Result<Process, CallError> {
        let program = self.spec.exec.command.display().to_string();
        let names = Names { threads: "plg", name: &self.spec.name, who: "plugin", program: &program };
        Process::spawn(cmd, peer, &names)
            .map_err(|e| CallError::Failed(format!("plugin {}: {e}", self.spec.name)))
    }

    fn call_oneshot(
        &self,
        method: &str,
        params: Value,
        init: &dyn Fn() -> Value,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let _slot = match Slot::take(&self.oneshots) {
            Some(slot) => slot,
            None => return Err(self.busy()),
        };
        let mut cmd = self.command()?;
        let mut params = match params {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => Map::from_iter([("value".to_owned(), other)]),
        };
        cmd.envs(call_env(method, &params));
        params.insert("init".into(), init());
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let out = Arc::new(OneShot::new(&self.spec.name));
        let process = self.spawn(&mut cmd, Arc::clone(&out) as Arc<dyn Peer>)?;
        // A program that never reads stdin is fine: its writer just fails quietly.
        let _ = process.send(line_of(&request));
        process.close_stdin();
        let left = || deadline.saturating_duration_since(Instant::now());
        // Until stdout ends or the answer comes; then until the process exits (a short
        // while only once it answered).
        let ended = lock(&out.ended.1).recv_timeout(left());
        let end = lock(&out.end).clone();
        let answered = lock(&out.answer).is_some();
        let exited = match (&ended, &end) {
            (Err(RecvTimeoutError::Timeout), _) => false,
            (_, Some((End::TooLong, _))) => false,
            _ if answered => process.wait_exit(left().min(ANSWERED_EXIT)),
            _ => process.wait_exit(left()),
        };
        let status = process.kill();
        if let Some(msg) = lock(&out.answer).take() {
            return response(msg);
        }
        if let Some((End::TooLong, why)) = end {
            return Err(self.failed(&out.link, &why));
        }
        if !exited {
            return Err(CallError::Timeout(timeout));
        }
        match status {
            Some(s) if s.success() => {
                let text = String::from_utf8_lossy(&lock(&out.text)).trim().to_owned();
                Ok(json!({"text": text}))
            }
            other => {
                let tail = out.link.tail(1024);
                Err(CallError::Failed(if tail.is_empty() {
                    exit_text(other)
                } else {
                    format!("{}: {tail}", exit_text(other))
                }))
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// A response message as a call's outcome.
fn response(msg: Value) -> Result<Value, CallError> {
    if let Some(err) = msg.get("error").filter(|e| !e.is_null()) {
        let message = match err.get("message").and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None => err.to_string(),
        };
        return Err(CallError::Remote(cut(&message, 2000).to_owned()));
    }
    Ok(msg.get("result").cloned().unwrap_or(Value::Null))
}

/// "exit status 3", "killed by signal 9".
fn exit_text(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "exited".to_owned(),
        },
        None => "its exit status is unknown".to_owned(),
    }
}

/// setrlimit's resource type: glibc names it, musl takes an int.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// Lowers the child's limits (in the child, before `exec`).
fn limit_child(memory: Option<u64>) -> std::io::Result<()> {
    fn lower(resource: Resource, value: u64) -> std::io::Result<()> {
        // A limit past what rlim_t holds (32-bit systems) is no limit.
        let value = libc::rlim_t::try_from(value).unwrap_or(libc::RLIM_INFINITY);
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(resource, &mut old) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let value = value.min(old.rlim_max);
            let new = libc::rlimit { rlim_cur: value, rlim_max: value };
            if libc::setrlimit(resource, &new) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
    if let Some(bytes) = memory {
        lower(libc::RLIMIT_AS, bytes)?;
    }
    lower(libc::RLIMIT_NOFILE, 256)?;
    lower(libc::RLIMIT_FSIZE, 256 << 20)?;
    lower(libc::RLIMIT_CORE, 0)?;
    // A lower priority, so a busy plugin yields to the server (failure is harmless).
    // SAFETY: setpriority has no memory effects.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
    Ok(())
}

/// `ASTRBOT_CALL`, `ASTRBOT_CALL_NAME` and `ASTRBOT_ARG_<NAME>` of a one-shot call (values
/// over 4 KiB, with a NUL, or past the 64th are left out: the request line has them all).
fn call_env(method: &str, params: &Map<String, Value>) -> Vec<(String, String)> {
    let (call, name, args) = match method {
        "command/invoke" => ("command", params.get("handler"), params.get("args")),
        "tools/call" => ("tool", params.get("name"), params.get("arguments")),
        other => (other, None, None),
    };
    let mut env = vec![
        ("ASTRBOT_CALL".to_owned(), call.to_owned()),
        ("ASTRBOT_CALL_NAME".to_owned(), name.and_then(Value::as_str).unwrap_or_default().to_owned()),
    ];
    for (key, value) in args.and_then(Value::as_object).into_iter().flatten().take(MAX_ENV_ARGS) {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if value.len() > MAX_ENV_ARG || value.contains('\0') {
            continue;
        }
        let key: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
            .collect();
        env.push((format!("ASTRBOT_ARG_{key}"), value));
    }
    env.retain(|(k, v)| !k.contains('=') && !k.contains('\0') && !v.contains('\0'));
    env
}

/// A place among the one-shot processes running at once; given back on drop.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(count: &'a AtomicUsize) -> Option<Slot<'a>> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_IN_FLIGHT).then_some(n + 1))
            .ok()?;
        Some(Slot(count))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a one-shot process sends: the answer (the response with id 1), the rest of stdout
/// as text (capped), its stderr tail, and the end of its output.
struct OneShot {
    link: Link,
    answer: Mutex<Option<Value>>,
    text: Mutex<Vec<u8>>,
    end: Mutex<Option<(End, String)>>,
    ended: (Mutex<Option<Sender<()>>>, Mutex<std::sync::mpsc::Receiver<()>>),
}

impl OneShot {
    fn new(name: &str) -> OneShot {
        let (tx, rx) = channel();
        OneShot {
            link: Link::new(name),
            answer: Mutex::new(None),
            text: Mutex::new(Vec::new()),
            end: Mutex::new(None),
            ended: (Mutex::new(Some(tx)), Mutex::new(rx)),
        }
    }
}

impl Peer for OneShot {
    fn line(&self, line: &[u8]) -> Vec<Value> {
        let msg = serde_json::from_slice::<Value>(line).ok();
        let is_answer = msg.as_ref().is_some_and(|m| {
            matches!(kind(m), Kind::Response { id } if id.as_u64() == Some(1))
                && (m.get("result").is_some() || m.get("error").is_some())
        });
        if is_answer {
            let mut answer = lock(&self.answer);
            if answer.is_none() {
                *answer = msg;
            }
            lock(&self.ended.0).take();
            return Vec::new();
        }
        let mut text = lock(&self.text);
        let room = MAX_TEXT.saturating_sub(text.len());
        if room > 0 {
            let take = line.len().min(room);
            text.extend_from_slice(&line[..take]);
            if text.len() < MAX_TEXT {
                text.push(b'\n');
            }
        } else {
            drop(text);
            self.link.noise("(stdout past 64 KiB)");
        }
        Vec::new()
    }

    fn stderr(&self, line: Option<&[u8]>) {
        self.link.stderr(line);
    }

    fn stderr_end(&self) {
        self.link.stderr_end();
    }

    fn broken(&self, end: End, why: &str) {
        if end == End::Write {
            return;
        }
        self.link.calls.fail_all(why);
        *lock(&self.end) = Some((end, why.to_owned()));
        lock(&self.ended.0).take();
    }
}
