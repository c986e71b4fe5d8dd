//! The running MCP servers by name, in `App`, and the tools they offer to the chat's tool
//! loop. No import of `app` here (it holds this).
//!
//! Each active stored server has a [`Runtime`]: the config it runs, its state (connecting,
//! connected, error with the last error and since when, restarts), the live [`Client`]
//! while connected, and its tool-call counters. `manager` creates, supervises and stops
//! runtimes; this module only keeps them, in the servers' configuration order, and answers
//! [`Registry::tools`] and [`Registry::call`] from the connected ones.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::Client;
use super::{CallResult, Tool};

/// Where a server's runtime is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Connecting, or waiting to reconnect after a failure.
    Connecting,
    Connected,
    /// The last attempt failed or the session died; a retry is scheduled.
    Error,
    Stopped,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Connected => "connected",
            Status::Error => "error",
            Status::Stopped => "stopped",
        }
    }
}

/// A snapshot of a runtime's state.
#[derive(Debug, Clone)]
pub struct State {
    pub status: Status,
    pub error: Option<String>,
    /// When `status` last changed (microseconds since the epoch).
    pub since: i64,
    /// Reconnections after a failure or a dead session.
    pub restarts: u32,
    /// Connection attempts finished (successful or not).
    pub attempts: u64,
}

impl State {
    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status.name(),
            "error": self.error,
            "since": crate::timefmt::iso(self.since),
            "restarts": self.restarts,
        })
    }

    fn stopped() -> State {
        State {
            status: Status::Stopped,
            error: None,
            since: crate::timefmt::now_micros(),
            restarts: 0,
            attempts: 0,
        }
    }
}

/// Tool calls counted: how many, how many failed (an error or a result flagged as one),
/// and their total duration.
#[derive(Default)]
pub struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    total_ms: AtomicU64,
}

impl Counters {
    fn count(&self, failed: bool, ms: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.total_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "calls": self.calls.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "total_ms": self.total_ms.load(Ordering::Relaxed),
        })
    }
}

/// One started server.
pub struct Runtime {
    pub name: String,
    /// The stored config it runs (with `active`).
    pub config: Value,
    /// The bound on each connection attempt.
    pub timeout: Duration,
    state: Mutex<State>,
    /// Signalled on every state change and on stop: wakes sleeps and first-attempt waits.
    wake: Condvar,
    client: Mutex<Option<Arc<Client>>>,
    stop: AtomicBool,
    /// Disconnected when the supervisor thread ends.
    done: Mutex<Option<Receiver<()>>>,
    pub counters: Counters,
}

impl Runtime {
    pub fn new(name: &str, config: &Value, timeout: Duration) -> Arc<Runtime> {
        Arc::new(Runtime {
            name: name.to_owned(),
            config: config.clone(),
            timeout,
            state: Mutex::new(State::stopped()),
            wake: Condvar::new(),
            client: Mutex::new(None),
            stop: AtomicBool::new(false),
            done: Mutex::new(None),
            counters: Counters::default(),
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock_state().clone()
    }

    /// Sets the status (and its error); logs a change.
    pub fn set(&self, status: Status, error: Option<String>) {
        let mut s = self.lock_state();
        // A retry's `connecting` is not news; a new error, a connection or a stop is.
        if s.status != status || s.error != error {
            match (&error, status) {
                (_, Status::Connecting) => log::debug!("MCP server {}: connecting", self.name),
                (Some(e), _) if s.error.as_ref() != Some(e) => {
                    log::warn!("MCP server {}: {} ({e})", self.name, status.name())
                }
                (Some(_), _) => log::debug!("MCP server {}: {} again", self.name, status.name()),
                (None, _) => log::info!("MCP server {}: {}", self.name, status.name()),
            }
        }
        if s.status != status {
            s.since = crate::timefmt::now_micros();
        }
        s.status = status;
        s.error = error;
        drop(s);
        self.wake.notify_all();
    }

    /// Records a finished connection attempt (after `set`).
    pub fn attempted(&self) {
        let mut s = self.lock_state();
        s.attempts = s.attempts.saturating_add(1);
        drop(s);
        self.wake.notify_all();
    }

    pub fn restarted(&self) {
        let mut s = self.lock_state();
        s.restarts = s.restarts.saturating_add(1);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Asks the supervisor to stop (it closes the client itself) and wakes every wait.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _s = self.lock_state();
        self.wake.notify_all();
    }

    /// Sleeps up to `d`; true when woken by a stop.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.lock_state();
        while !self.stopping() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.wake.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Waits up to `d` for the first connection attempt to finish (or a stop); the state
    /// then, `None` on timeout.
    pub fn first_attempt(&self, d: Duration) -> Option<State> {
        let deadline = Instant::now() + d;
        let mut s = self.lock_state();
        while s.attempts == 0 && !self.stopping() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s = self.wake.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        Some(s.clone())
    }

    /// Sets the live client, returning the one it replaces.
    pub fn set_client(&self, client: Option<Arc<Client>>) -> Option<Arc<Client>> {
        std::mem::replace(&mut *self.client.lock().unwrap_or_else(|e| e.into_inner()), client)
    }

    /// The live client while connected.
    pub fn client(&self) -> Option<Arc<Client>> {
        self.client.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_done(&self, done: Receiver<()>) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(done);
    }

    /// Waits until `deadline` for the supervisor thread to end; false if it is still busy.
    pub fn wait_done(&self, deadline: Instant) -> bool {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        match done {
            None => true,
            Some(rx) => {
                let wait = deadline.saturating_duration_since(Instant::now());
                !matches!(rx.recv_timeout(wait), Err(std::sync::mpsc::RecvTimeoutError::Timeout))
            }
        }
    }

    /// The tools of the live client (none while not connected).
    pub fn tools(&self) -> Vec<Tool> {
        match self.client() {
            Some(c) if self.state().status == Status::Connected => c.tools(),
            _ => Vec::new(),
        }
    }
}

/// The running servers, in configuration order.
#[derive(Default)]
pub struct Registry {
    servers: Mutex<Vec<Arc<Runtime>>>,
    /// Held while a server is stopped and started, so two changes of one server never
    /// leave two runtimes, or one the database no longer describes.
    changing: Mutex<()>,
    /// Every tool call since the server started.
    pub counters: Counters,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Runtime>>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken by whoever starts or stops servers, for the whole change.
    pub fn changing(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a runtime (after any other), replacing one of the same name in place.
    pub fn insert(&self, runtime: Arc<Runtime>) {
        let mut servers = self.lock();
        match servers.iter_mut().find(|r| r.name == runtime.name) {
            Some(slot) => *slot = runtime,
            None => servers.push(runtime),
        }
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Runtime>> {
        let mut servers = self.lock();
        let i = servers.iter().position(|r| r.name == name)?;
        Some(servers.remove(i))
    }

    pub fn drain(&self) -> Vec<Arc<Runtime>> {
        std::mem::take(&mut *self.lock())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Runtime>> {
        self.lock().iter().find(|r| r.name == name).cloned()
    }

    /// Puts the runtimes in the order of `names` (the stored order); others go last.
    pub fn order(&self, names: &[String]) {
        self.lock().sort_by_key(|r| names.iter().position(|n| *n == r.name).unwrap_or(usize::MAX));
    }

    /// Every runtime, in order.
    pub fn runtimes(&self) -> Vec<Arc<Runtime>> {
        self.lock().clone()
    }

    /// The tools of every connected, active server, in the servers' order; a name two
    /// servers offer is offered once (the first server's).
    pub fn tools(&self) -> Vec<Tool> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for runtime in self.runtimes() {
            for tool in runtime.tools() {
                if seen.insert(tool.name.clone()) {
                    out.push(tool);
                }
            }
        }
        out
    }

    /// Calls the tool the model knows as `llm_name` on the server that offers it.
    pub fn call(&self, llm_name: &str, args: &Value, timeout: Duration) -> Result<CallResult, String> {
        let found = self.runtimes().into_iter().find_map(|runtime| {
            let tool = runtime.tools().into_iter().find(|t| t.name == llm_name)?;
            let client = runtime.client()?;
            Some((runtime, client, tool))
        });
        let Some((runtime, client, tool)) = found else { return Err(format!("no tool named {llm_name}")) };
        let started = Instant::now();
        let result = client.call(&tool.mcp_name, args, timeout);
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let failed = result.as_ref().map_or(true, |r| r.is_error);
        runtime.counters.count(failed, ms);
        self.counters.count(failed, ms);
        // Never the arguments at info: they may hold secrets.
        log::info!("tool {llm_name} on {}: {ms} ms{}", runtime.name, if failed { " (failed)" } else { "" });
        log::debug!("tool {llm_name} on {}: arguments {}", runtime.name, short(args));
        result
    }
}

/// A value's JSON cut to 200 characters, for a debug line.
fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_registry_offers_nothing_and_names_the_missing_tool() {
        let r = Registry::default();
        assert!(r.tools().is_empty());
        assert_eq!(
            r.call("get-sum", &json!({}), Duration::from_secs(1)).unwrap_err(),
            "no tool named get-sum"
        );
        let a = Runtime::new("a", &json!({}), Duration::from_secs(1));
        let b = Runtime::new("b", &json!({}), Duration::from_secs(1));
        r.insert(a.clone());
        r.insert(b);
        r.order(&["b".into(), "a".into()]);
        let names: Vec<String> = r.runtimes().iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, ["b", "a"]);
        assert!(a.tools().is_empty(), "not connected");
        // A stop wakes a sleeper and a first-attempt wait at once.
        a.request_stop();
        assert!(a.sleep(Duration::from_secs(30)));
        assert_eq!(a.first_attempt(Duration::from_secs(30)).unwrap().attempts, 0);
        assert_eq!(r.remove("a").map(|r| r.name.clone()).as_deref(), Some("a"));
        assert!(r.get("a").is_none());
    }
}
