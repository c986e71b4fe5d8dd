//! The stored MCP servers started, restarted with backoff when they die, and stopped.
//!
//! Each active server has one supervisor thread ([`spawn`]) that connects
//! ([`Client::connect`], bounded by the runtime's timeout), watches the session once a
//! second (`alive()`), and after a failed attempt or a dead session closes what is left
//! and tries again after a backoff (1 s doubling to 60 s; a session that lasted a minute
//! starts the count again). Its state is in the runtime (`registry`): what
//! `GET /api/v1/mcp/servers` and `GET /api/v1/stats` show, every change logged.
//!
//! [`apply`] makes the running set follow the stored servers (a created, changed or
//! enabled server starts, a disabled or deleted one stops) without waiting for the
//! connection: a request that wants AstrBot's answer waits on the new runtime's first
//! attempt ([`Runtime::first_attempt`]) for at most AstrBot's 30 s. Adding a server tests
//! the connection before anything is stored: the request starts a runtime that is not
//! registered yet, waits for its first attempt, and on success stores the server and hands
//! the connected runtime over ([`adopt`]), so a server is spawned once, not twice.
//! Stopping asks the supervisor to stop (it closes the client: stdio's stdin, SIGTERM,
//! SIGKILL; HTTP's DELETE) and waits up to AstrBot's 10 s for it; a supervisor still inside
//! a connection attempt then ends when the attempt does, closing what it got.

use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::Client;
use super::config;
use super::registry::{Runtime, Status};
use crate::app::App;

/// How long an API request waits for a server it enabled (AstrBot's dashboard passes 30 s).
pub const ENABLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stop waits for the supervisor (AstrBot's dashboard: 10 s).
const STOP_WAIT: Duration = Duration::from_secs(10);

/// How long the shutdown waits for every supervisor at once.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// How often a connected session is checked.
const WATCH: Duration = Duration::from_secs(1);

/// The bound on each connection attempt of the servers started at boot: AstrBot's
/// `ASTRBOT_MCP_INIT_TIMEOUT` (seconds, default 180, at most 300).
pub fn init_timeout() -> Duration {
    let secs = std::env::var("ASTRBOT_MCP_INIT_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(180.0)
        .min(300.0);
    Duration::from_secs_f64(secs)
}

/// Starts every active stored server (at server start), without waiting for any.
pub fn start_all(app: &Arc<App>) {
    let servers = match app.db.conn().and_then(|c| crate::db::mcp::servers(&c)) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot read the MCP servers: {e}");
            return;
        }
    };
    let _changing = app.mcp.changing();
    let timeout = init_timeout();
    let mut started = 0;
    for server in &servers {
        if config::active(&server.config) {
            app.mcp.insert(spawn(&server.name, &server.config, timeout));
            started += 1;
        }
    }
    if started > 0 {
        log::info!("MCP: starting {started} of {} servers", servers.len());
    }
}

/// Stops every server (server shutdown), all at once.
pub fn stop_all(app: &App) {
    let _changing = app.mcp.changing();
    let all = app.mcp.drain();
    all.iter().for_each(|r| r.request_stop());
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    for runtime in all {
        finish(&runtime, deadline);
    }
}

/// Makes server `name` run as it is stored now (a deleted or inactive server stops):
/// whatever runs is stopped, then the stored server started when it is active, with
/// `timeout` on each attempt. Returns the new runtime, whose first attempt a request may
/// wait for. Done under the registry's change lock, so concurrent saves of one server end
/// with the runtime of the last one.
pub fn apply(app: &Arc<App>, name: &str, timeout: Duration) -> Option<Arc<Runtime>> {
    let _changing = app.mcp.changing();
    let stored = match app.db.conn().and_then(|c| crate::db::mcp::server(&c, name)) {
        Ok(s) => s,
        Err(e) => {
            log::error!("MCP server {name}: cannot read its config: {e}");
            return None;
        }
    };
    if let Some(old) = app.mcp.remove(name) {
        stop(&old);
    }
    let started = stored.filter(|s| config::active(&s.config)).map(|s| spawn(name, &s.config, timeout));
    if let Some(runtime) = &started {
        app.mcp.insert(runtime.clone());
        reorder(app);
    }
    started
}

/// Registers a runtime started before its server was stored (an add whose first attempt
/// succeeded), if the stored server is still what it runs; otherwise stops it and makes
/// the server run as stored.
pub fn adopt(app: &Arc<App>, runtime: Arc<Runtime>, timeout: Duration) {
    let name = runtime.name.clone();
    {
        let _changing = app.mcp.changing();
        let stored = app.db.conn().and_then(|c| crate::db::mcp::server(&c, &name)).ok().flatten();
        if stored.is_some_and(|s| s.config == runtime.config && config::active(&s.config)) {
            if let Some(old) = app.mcp.remove(&name) {
                stop(&old);
            }
            app.mcp.insert(runtime);
            reorder(app);
            return;
        }
        stop(&runtime);
    }
    apply(app, &name, timeout);
}

/// Puts the registry in the stored order.
fn reorder(app: &App) {
    if let Ok(servers) = app.db.conn().and_then(|c| crate::db::mcp::servers(&c)) {
        let names: Vec<String> = servers.into_iter().map(|s| s.name).collect();
        app.mcp.order(&names);
    }
}

/// Stops a runtime, waiting up to 10 s for its supervisor.
pub fn stop(runtime: &Runtime) {
    runtime.request_stop();
    finish(runtime, Instant::now() + STOP_WAIT);
}

fn finish(runtime: &Runtime, deadline: Instant) {
    if !runtime.wait_done(deadline) {
        log::warn!(
            "MCP server {}: still busy connecting or closing; it ends when that returns",
            runtime.name
        );
    }
    runtime.set(Status::Stopped, None);
}

/// A thread name's part for a server name (Linux keeps 15 bytes of a name).
fn short(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(10).collect()
}

/// Starts a runtime for `config` with its supervisor thread; not registered.
pub fn spawn(name: &str, config: &Value, timeout: Duration) -> Arc<Runtime> {
    let runtime = Runtime::new(name, config, timeout);
    runtime.set(Status::Connecting, None);
    let (done_tx, done_rx) = channel::<()>();
    let supervised = runtime.clone();
    let spawned = std::thread::Builder::new().name(format!("mcp-{}", short(name))).spawn(move || {
        supervise(&supervised);
        drop(done_tx);
    });
    match spawned {
        Ok(_) => runtime.set_done(done_rx),
        Err(e) => {
            runtime.set(Status::Error, Some(format!("cannot start the server's supervisor thread: {e}")));
            runtime.attempted();
        }
    }
    runtime
}

/// The text of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Connects, watches, and reconnects with backoff until stopped.
fn supervise(rt: &Runtime) {
    let mut failures: u32 = 0;
    while !rt.stopping() {
        rt.set(Status::Connecting, rt.state().error);
        let connected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Client::connect(&rt.name, &rt.config, rt.timeout)
        }))
        .map_err(|p| panic_text(&*p));
        let problem = match connected {
            Ok(Ok(client)) => {
                let client = Arc::new(client);
                if rt.stopping() {
                    client.close();
                    break;
                }
                let since = Instant::now();
                rt.set_client(Some(client.clone()));
                rt.set(Status::Connected, None);
                rt.attempted();
                log::info!("MCP server {}: {} tools", rt.name, client.tools().len());
                let mut stopped = false;
                loop {
                    if rt.sleep(WATCH) {
                        stopped = true;
                        break;
                    }
                    if !client.alive() {
                        break;
                    }
                }
                rt.set_client(None);
                let last = client.errlogs().pop();
                client.close();
                if stopped || rt.stopping() {
                    break;
                }
                if since.elapsed() >= Duration::from_secs(60) {
                    failures = 0;
                }
                match last {
                    Some(line) => format!("the session ended; last server log: {line}"),
                    None => "the session ended".to_owned(),
                }
            }
            Ok(Err(e)) => e,
            Err(panic) => format!("the client crashed: {panic}"),
        };
        if rt.stopping() {
            break;
        }
        rt.set(Status::Error, Some(problem));
        rt.attempted();
        rt.restarted();
        let wait = Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60));
        failures = failures.saturating_add(1);
        if rt.sleep(wait) {
            break;
        }
    }
    rt.set(Status::Stopped, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failed_attempt_is_reported_retried_and_stopped_at_once() {
        // A stdio config for an allowed launcher that does not exist here: whatever the
        // client is, the attempt fails.
        let rt = spawn("t", &json!({"command": "npx-not-installed-here"}), Duration::from_secs(5));
        let state = rt.first_attempt(Duration::from_secs(10)).expect("an attempt within its timeout");
        assert_eq!(state.status, Status::Error, "{state:?}");
        assert!(state.error.is_some());
        let started = Instant::now();
        stop(&rt);
        assert!(started.elapsed() < Duration::from_secs(3), "the backoff sleep wakes on stop");
        assert_eq!(rt.state().status, Status::Stopped);
    }

    #[test]
    fn boot_timeout_is_bounded() {
        assert!(init_timeout() <= Duration::from_secs(300));
    }
}
