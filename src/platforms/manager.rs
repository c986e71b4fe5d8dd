//! The running adapters, by bot id.
//!
//! Each enabled bot has one supervisor thread that runs its adapter
//! ([`Adapter::run`]) and runs it again after a passing failure or a panic, with a backoff
//! (1 s doubling to 60 s; a run that lasted a minute starts the count again), and stops for
//! good on a fatal error (a bad token, a port in use) until the bot is changed. Its state
//! (starting, running, stopped, error with the last error and when) is what
//! `GET /api/v1/bots` and `GET /api/v1/stats` show, and every change of it is logged.
//!
//! [`apply`] makes the running set follow the stored bots: a created or
//! enabled bot starts, a changed one restarts, a disabled or deleted one stops. Stopping
//! sets the bot's flag, calls [`Adapter::stop`] to wake whatever it blocks on, and waits
//! up to two seconds for the thread (so that a OneBot port is free again before the new
//! adapter binds it); a thread still blocked then (a long poll in flight) is left to end
//! on its own, and what it receives after the stop is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::adapter::{Hub, Media, RunError, StateCell, Status};
use super::registry::Running;
use super::{Adapter, inbound, onebot, telegram, types};
use crate::app::App;
use crate::timefmt::now_micros;

/// How long a stop waits for the adapter's thread.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Starts every enabled stored bot (at server start).
pub fn start_all(app: &Arc<App>) {
    let ids = match app.db.conn().and_then(|c| crate::db::resources::bot_ids(&c)) {
        Ok(ids) => ids,
        Err(e) => {
            log::error!("cannot read the bots: {e}");
            return;
        }
    };
    for id in ids {
        apply(app, &id);
    }
}

/// Stops every bot (server shutdown).
pub fn stop_all(app: &App) {
    let _changing = app.platforms.changing();
    for (id, running) in app.platforms.drain() {
        stop(&id, running);
    }
}

/// Makes bot `id` run as it is stored now (a deleted bot stops): whatever runs is stopped,
/// then the stored bot's adapter started when it is enabled. Read under the registry's
/// change lock, so concurrent saves of one bot end with the adapter of the last one.
pub fn apply(app: &Arc<App>, id: &str) {
    let _changing = app.platforms.changing();
    let stored = match app.db.conn().and_then(|c| crate::db::resources::bot(&c, id)) {
        Ok(bot) => bot.map(|b| b.config),
        Err(e) => {
            log::error!("bot {id}: cannot read its config: {e}");
            return;
        }
    };
    if let Some(old) = app.platforms.remove(id) {
        stop(id, old);
    }
    if let Some(config) = stored {
        start(app, id, &config);
    }
}

/// Starts bot `id` as `config` says (nothing runs for it now).
fn start(app: &Arc<App>, id: &str, config: &Value) {
    let kind = config["type"].as_str().unwrap_or_default().to_owned();
    let state = Arc::new(StateCell::new(id));
    let stop_flag = Arc::new(AtomicBool::new(false));
    let idle = |state: Arc<StateCell>, stop: Arc<AtomicBool>| Running {
        kind: kind.clone(),
        adapter: None,
        stop,
        state,
        done: None,
    };
    if !types::enabled(config) {
        state.set(Status::Stopped, None);
        app.platforms.insert(id, idle(state, Arc::new(AtomicBool::new(true))));
        return;
    }
    let adapter = match build(id, config) {
        Ok(Some(adapter)) => adapter,
        Ok(None) => {
            // webchat: served by the chat routes, nothing to run.
            state.set(Status::Running, None);
            app.platforms.insert(id, idle(state, stop_flag));
            return;
        }
        Err(e) => {
            state.set(Status::Error, Some(e));
            app.platforms.insert(id, idle(state, stop_flag));
            return;
        }
    };
    let sink_app = app.clone();
    let sink_adapter = adapter.clone();
    let sink_id = id.to_owned();
    let sink_config = types::with_defaults(config);
    let media_app = app.clone();
    let hub = Hub {
        bot_id: id.to_owned(),
        adapter: adapter.clone(),
        stop: stop_flag.clone(),
        state: state.clone(),
        sink: Arc::new(move |msg| inbound::dispatch(&sink_app, &sink_id, &sink_config, &sink_adapter, msg)),
        media: Arc::new(move |kind, name, mime, data, max| {
            store_media(&media_app, kind, name, mime, data, max)
        }),
    };
    let (done_tx, done_rx) = channel::<()>();
    let spawned = std::thread::Builder::new().name(format!("bot-{}", short(id))).spawn(move || {
        supervise(&hub);
        drop(done_tx);
    });
    let done = match spawned {
        Ok(_) => Some(done_rx),
        Err(e) => {
            state.set(Status::Error, Some(format!("cannot start the adapter's thread: {e}")));
            None
        }
    };
    app.platforms.insert(id, Running { kind, adapter: Some(adapter), stop: stop_flag, state, done });
}

/// The adapter of a bot: `None` for webchat (served by the chat routes).
pub fn build(id: &str, config: &Value) -> Result<Option<Arc<dyn Adapter>>, String> {
    let config = types::with_defaults(config);
    match config["type"].as_str().unwrap_or_default() {
        "webchat" => Ok(None),
        "telegram" => Ok(Some(Arc::new(telegram::Telegram::new(id, &config)?))),
        "aiocqhttp" => Ok(Some(Arc::new(onebot::OneBot::new(id, &config)?))),
        other => Err(format!("Unsupported bot type: {other}")),
    }
}

/// A thread name's part for a bot id (Linux keeps 15 bytes of a name).
fn short(id: &str) -> String {
    id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(10).collect()
}

fn stop(id: &str, running: Running) {
    running.stop.store(true, Ordering::SeqCst);
    if let Some(adapter) = &running.adapter {
        adapter.stop();
    }
    if let Some(done) = running.done {
        let started = Instant::now();
        // Disconnected when the thread ends; nothing is ever sent.
        let _ = done.recv_timeout(STOP_WAIT);
        if started.elapsed() >= STOP_WAIT {
            log::warn!("bot {id}: the adapter is still busy; it ends when its current call returns");
        }
    }
    running.state.set(Status::Stopped, None);
}

/// Runs the adapter until it is stopped or fails for good, again after passing failures
/// and panics, with backoff.
fn supervise(hub: &Hub) {
    let mut failures: u32 = 0;
    while !hub.stopping() {
        hub.state.set(Status::Starting, None);
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hub.adapter.run(hub)));
        if hub.stopping() {
            break;
        }
        let problem = match result {
            Ok(Ok(())) => break,
            Ok(Err(RunError::Fatal(e))) => {
                log::error!("bot {}: stopped: {e}", hub.bot_id);
                hub.state.set(Status::Error, Some(e));
                return;
            }
            Ok(Err(RunError::Retry(e))) => e,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                log::error!("bot {}: the adapter crashed: {what}", hub.bot_id);
                format!("the adapter crashed: {what}")
            }
        };
        if started.elapsed() >= Duration::from_secs(60) {
            failures = 0;
        }
        let wait = Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60));
        failures = failures.saturating_add(1);
        hub.state.set(Status::Error, Some(problem));
        hub.state.restarted();
        if hub.sleep(wait) {
            break;
        }
    }
    hub.state.set(Status::Stopped, None);
}

/// Stores received bytes as an attachment of kind `kind`.
pub fn store_media(
    app: &App,
    kind: &str,
    filename: Option<&str>,
    mime: Option<&str>,
    data: &mut dyn std::io::Read,
    max: u64,
) -> Result<Media, String> {
    let now = now_micros();
    let about = crate::attachments::Described { kind: Some(kind), name: filename, mime };
    let a = crate::attachments::store(&app.settings.data_dir, &app.db, about, data, max, now)?;
    Ok(Media {
        kind: a.kind,
        path: app.settings.data_dir.join("attachments").join(&a.attachment_id),
        attachment_id: a.attachment_id,
        filename: a.filename,
        mime: a.mime_type,
    })
}
