//! The OneBot v11 adapter (AstrBot type `aiocqhttp`), in AstrBot's only mode: reverse
//! WebSocket. We listen on `ws_reverse_host:ws_reverse_port` (a port of its own, path
//! `/ws`), and NapCat, Lagrange or LLOneBot connect to us as the bot's QQ account
//! (`X-Self-ID`); events come in and API calls go out on the same socket, an answer
//! matched to its call by `echo` (platforms reference §2.7).
//!
//! - [`conn`]: one connection's handshake and its send/receive loop (tungstenite);
//! - [`convert`]: events into [`Inbound`]s and [`OutPart`]s into segments, without sockets.
//!
//! Threads: `run` accepts (polling, so a stop is noticed within 100 ms); each connection
//! has a thread (at most [`MAX_CONNECTIONS`]); each message event is converted on a worker
//! thread (at most [`MAX_WORKERS`] at once), because converting may call the API (an `at`'s
//! name, a replied-to message) and the answer arrives on the connection's own thread. All
//! of them are scoped to `run`, so when `run` returns nothing of this bot runs any more.
//!
//! An API call goes to the connection of the account that received the message being
//! answered; a proactive message (no account) to the only connected account; with none or
//! several, it fails as aiocqhttp's `ApiNotAvailable` does. Calls time out (30 s for sends,
//! 5 s for lookups) and fail at once when their connection drops.
//!
//! Media are sent inline (`base64://`, at most 10 MiB each): images, voice and video as
//! segments of the one `send_*_msg`, files each as a message of its own with one `file`
//! segment `{name, file}`. Received media with an http(s) URL are downloaded (at most
//! 20 MiB) into attachments. The token (`ws_reverse_token`) is never logged or shown.

mod conn;
mod convert;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Adapter, Hub, OutPart, RunError, SendError, Target};
use conn::{Handshake, Peer, Role};

/// Connections at once (handshaking ones included); beyond, 503.
pub const MAX_CONNECTIONS: usize = 16;
/// Message events being converted at once; beyond, an event is dropped with a warning.
pub const MAX_WORKERS: usize = 32;
/// API calls waiting for their result, over all connections.
const MAX_PENDING: usize = 256;
/// Frames queued for one connection's thread.
const OUTBOX: usize = 64;
/// A send's timeout (AstrBot waits 180 s; a reply that late helps nobody).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// A lookup's timeout (names, replied-to messages, the login info).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Received media are downloaded up to this size (QQ's own cap on images is smaller).
const MAX_DOWNLOAD: u64 = 20 * 1024 * 1024;

/// Why an API call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// No connection to send it on (aiocqhttp's `ApiNotAvailable`).
    NotAvailable(String),
    /// Sent, but failed, timed out, or its connection dropped.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotAvailable(s) | CallError::Failed(s) => f.write_str(s),
        }
    }
}

/// A connection as the rest of the adapter sees it.
struct Conn {
    /// A clone of the socket, to shut it down from `stop`.
    stream: TcpStream,
    /// Set once the handshake made it an API (or Universal) connection.
    api: Option<Api>,
    peer: Option<Peer>,
}

struct Api {
    outbox: SyncSender<String>,
    waker: UnixStream,
}

/// A call waiting for its result.
struct Pending {
    conn: u64,
    reply: SyncSender<Value>,
}

/// What the adapter's threads share.
struct Shared {
    bot_id: String,
    stopped: AtomicBool,
    conns: Mutex<HashMap<u64, Conn>>,
    pending: Mutex<HashMap<u64, Pending>>,
    seq: AtomicU64,
    conn_ids: AtomicU64,
    workers: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Picks the connection of a call among the API connections `(id, self_id)`: the newest
/// one of `self_id`, else the newest of the only account connected (§2.7).
fn choose(conns: &[(u64, &str)], self_id: Option<&str>) -> Result<u64, CallError> {
    let newest = |id: &str| conns.iter().filter(|(_, s)| *s == id).map(|(c, _)| *c).max();
    if let Some(c) = self_id.and_then(newest) {
        return Ok(c);
    }
    let mut accounts: Vec<&str> = conns.iter().map(|(_, s)| *s).collect();
    accounts.sort_unstable();
    accounts.dedup();
    match accounts.as_slice() {
        [] => Err(CallError::NotAvailable("no OneBot connection".into())),
        [one] => newest(one).ok_or_else(|| CallError::NotAvailable("no OneBot connection".into())),
        _ => Err(CallError::NotAvailable("several OneBot connections; cannot choose".into())),
    }
}

/// A result envelope's `data`, or the failure it reports.
fn result_data(result: &Value) -> Result<Value, CallError> {
    let failed = match result["status"].as_str() {
        Some("ok" | "async") => false,
        Some(_) => true,
        None => result["retcode"].as_i64().is_some_and(|c| c != 0 && c != 1),
    };
    if failed {
        let field = |k: &str| match &result[k] {
            Value::Null => "None".to_owned(),
            Value::String(s) => s.chars().take(300).collect(),
            v => v.to_string().chars().take(300).collect(),
        };
        return Err(CallError::Failed(format!(
            "ActionFailed: retcode={}, message={}, wording={}",
            field("retcode"),
            field("message"),
            field("wording")
        )));
    }
    Ok(result["data"].clone())
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Calls `action` on the connection of `self_id` (or the only one) and waits for its
    /// result's `data`.
    fn call(
        &self,
        self_id: Option<&str>,
        action: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        if self.stopping() {
            return Err(CallError::NotAvailable("the bot is stopping".into()));
        }
        let seq = self.seq.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        let frame = json!({"action": action, "params": params, "echo": {"seq": seq}}).to_string();
        let (tx, rx) = sync_channel::<Value>(1);
        {
            // conns before pending, here and in `forget`: a connection that drops after
            // being chosen fails this call at once rather than at its timeout.
            let conns = lock(&self.conns);
            let api: Vec<(u64, &str)> = conns
                .iter()
                .filter(|(_, c)| c.api.is_some())
                .filter_map(|(id, c)| c.peer.as_ref().map(|p| (*id, p.self_id.as_str())))
                .collect();
            let chosen = choose(&api, self_id)?;
            let Some(out) = conns.get(&chosen).and_then(|c| c.api.as_ref()) else {
                return Err(CallError::NotAvailable("no OneBot connection".into()));
            };
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                return Err(CallError::Failed("too many OneBot calls waiting for results".into()));
            }
            match out.outbox.try_send(frame) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    return Err(CallError::Failed("the OneBot connection is congested".into()));
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(CallError::Failed("the OneBot connection closed".into()));
                }
            }
            pending.insert(seq, Pending { conn: chosen, reply: tx });
            // Wake the connection's thread so the call goes out now, not at its next tick.
            let _ = (&out.waker).write(&[1]);
        }
        let answer = rx.recv_timeout(timeout);
        lock(&self.pending).remove(&seq);
        match answer {
            Ok(result) => result_data(&result),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(CallError::Failed(format!("{action} timed out after {} s", timeout.as_secs())))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(CallError::Failed("the OneBot connection closed".into()))
            }
        }
    }

    /// A result arrived on connection `conn`: hand it to its caller.
    fn resolve(&self, conn: u64, result: Value) {
        let Some(seq) = result["echo"]["seq"].as_u64() else {
            log::debug!("bot {}: a OneBot result with a foreign echo was dropped", self.bot_id);
            return;
        };
        let mut pending = lock(&self.pending);
        match pending.get(&seq) {
            Some(p) if p.conn == conn => {
                if let Some(p) = pending.remove(&seq) {
                    let _ = p.reply.try_send(result);
                }
            }
            _ => log::debug!("bot {}: a OneBot result nobody waits for (seq {seq}) was dropped", self.bot_id),
        }
    }

    /// A connection ended: forget it and fail its calls.
    fn forget(&self, conn: u64) {
        let mut conns = lock(&self.conns);
        conns.remove(&conn);
        lock(&self.pending).retain(|_, p| p.conn != conn);
    }

    /// The accounts connected for API calls, sorted, each once.
    fn accounts(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.conns)
            .values()
            .filter(|c| c.api.is_some())
            .filter_map(|c| c.peer.as_ref().map(|p| p.self_id.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// One configured OneBot bot.
pub struct OneBot {
    host: String,
    port: u16,
    /// `ws_reverse_token`; empty: no check. Never logged.
    token: String,
    shared: Arc<Shared>,
}

impl OneBot {
    pub fn new(bot_id: &str, config: &Value) -> Result<OneBot, String> {
        let host =
            config["ws_reverse_host"].as_str().map(str::trim).filter(|h| !h.is_empty()).unwrap_or("0.0.0.0");
        let port = match &config["ws_reverse_port"] {
            Value::Null => 6199,
            v => v
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or("ws_reverse_port must be between 1 and 65535")?,
        };
        Ok(OneBot {
            host: host.to_owned(),
            port,
            token: config["ws_reverse_token"].as_str().unwrap_or_default().to_owned(),
            shared: Arc::new(Shared {
                bot_id: bot_id.to_owned(),
                stopped: AtomicBool::new(false),
                conns: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                seq: AtomicU64::new(0),
                conn_ids: AtomicU64::new(0),
                workers: AtomicUsize::new(0),
            }),
        })
    }

    /// `host:port` as a socket address (an IPv6 host in brackets).
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Admits an accepted socket: registered (for `stop`) and served on a thread of its
    /// own, or refused with 503 past the cap.
    fn admit<'s>(&'s self, scope: &'s std::thread::Scope<'s, '_>, hub: &'s Hub, stream: TcpStream) {
        let id = self.shared.conn_ids.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        let registered = {
            let mut conns = lock(&self.shared.conns);
            if conns.len() >= MAX_CONNECTIONS {
                None
            } else {
                stream
                    .try_clone()
                    .ok()
                    .map(|clone| conns.insert(id, Conn { stream: clone, api: None, peer: None }))
            }
        };
        if registered.is_none() {
            log::warn!(
                "bot {}: a OneBot connection was refused: {MAX_CONNECTIONS} are open",
                self.shared.bot_id
            );
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        let spawned = std::thread::Builder::new()
            .name(format!("onebot-conn-{id}"))
            .spawn_scoped(scope, move || self.connection(scope, hub, id, stream));
        if let Err(e) = spawned {
            log::error!("bot {}: cannot start a OneBot connection's thread: {e}", self.shared.bot_id);
            self.shared.forget(id);
        }
    }

    /// One connection, from its handshake to its end.
    fn connection<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
        hub: &'s Hub,
        id: u64,
        stream: TcpStream,
    ) {
        let bot = &self.shared.bot_id;
        let from = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let (ws, peer) = match conn::handshake(stream, &self.token) {
            Handshake::Open(ws, peer) => (ws, peer),
            Handshake::Refused(why) => {
                log::info!("bot {bot}: a OneBot connection from {from} was refused: {why}");
                self.shared.forget(id);
                return;
            }
            Handshake::Broken(why) => {
                log::debug!("bot {bot}: a connection from {from} was not a OneBot handshake: {why}");
                self.shared.forget(id);
                return;
            }
        };
        let (outbox_tx, outbox_rx) = sync_channel::<String>(OUTBOX);
        let wakers = UnixStream::pair();
        let (waker_tx, waker_rx) = match wakers {
            Ok(pair) => pair,
            Err(e) => {
                log::error!("bot {bot}: cannot make a OneBot connection's waker: {e}");
                self.shared.forget(id);
                return;
            }
        };
        let _ = waker_tx.set_nonblocking(true);
        {
            let mut conns = lock(&self.shared.conns);
            match conns.get_mut(&id) {
                Some(c) => {
                    if peer.role != Role::Event {
                        c.api = Some(Api { outbox: outbox_tx, waker: waker_tx });
                    }
                    c.peer = Some(peer.clone());
                }
                // Stopped during the handshake.
                None => return,
            }
        }
        log::info!("bot {bot}: OneBot {} connected from {from} ({:?})", peer.self_id, peer.role);
        if peer.role != Role::Event {
            let self_id = peer.self_id.clone();
            self.spawn_worker(scope, move || {
                match self.shared.call(Some(&self_id), "get_login_info", json!({}), LOOKUP_TIMEOUT) {
                    Ok(info) => {
                        let nickname = info["nickname"].as_str().unwrap_or_default();
                        log::info!("bot {bot}: OneBot {self_id} ({nickname}) connected");
                    }
                    Err(e) => log::warn!("bot {bot}: OneBot {self_id}: get_login_info failed: {e}"),
                }
            });
        }
        let handler = Events { adapter: self, scope, hub, conn: id, self_id: peer.self_id.clone() };
        let why = conn::serve(ws, waker_rx, outbox_rx, &handler);
        self.shared.forget(id);
        log::info!("bot {bot}: OneBot {} disconnected: {why}", peer.self_id);
    }

    /// Runs `work` on a worker thread of `run`'s scope, if fewer than [`MAX_WORKERS`] run.
    fn spawn_worker<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
        work: impl FnOnce() + Send + 's,
    ) -> bool {
        let workers = &self.shared.workers;
        if workers.fetch_add(1, Ordering::SeqCst) >= MAX_WORKERS {
            workers.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        let spawned =
            std::thread::Builder::new().name("onebot-event".into()).spawn_scoped(scope, move || {
                struct Done<'a>(&'a AtomicUsize);
                impl Drop for Done<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let _done = Done(workers);
                work();
            });
        if spawned.is_err() {
            workers.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Converts a message event (on a worker thread) and delivers it.
    fn message(&self, hub: &Hub, self_id: &str, event: &Value) {
        let bot = &self.shared.bot_id;
        let mut lookup = |action: &str, params: Value| {
            self.shared.call(Some(self_id), action, params, LOOKUP_TIMEOUT).map_err(|e| e.to_string())
        };
        let (mut msg, media) = match convert::message_event(event, &mut lookup) {
            Ok(m) => m,
            Err(convert::Skip::StringFormat) => {
                log::warn!(
                    "bot {bot}: a OneBot message in string (CQ code) format was dropped: set the implementation's message format to array"
                );
                return;
            }
            Err(convert::Skip::Butler) => return,
            Err(convert::Skip::Malformed(why)) => {
                log::debug!("bot {bot}: a OneBot message event was dropped: {why}");
                return;
            }
        };
        for m in media {
            if hub.stopping() {
                return;
            }
            match download(hub, &m) {
                Ok(stored) => msg.media.push(stored),
                Err(e) => log::warn!("bot {bot}: a received {} was not kept: {e}", m.kind),
            }
        }
        hub.deliver(msg);
    }
}

/// Downloads a received medium into an attachment. The URL (QQ's CDN, with a one-time
/// key in its query) is not logged.
fn download(hub: &Hub, m: &convert::MediaRef) -> Result<super::Media, String> {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    let agent = AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            .max_redirects(3)
            .http_status_as_error(true)
            .build()
            .into()
    });
    let answer =
        agent.get(&m.url).call().map_err(|e| format!("download failed: {}", scrub(&e.to_string())))?;
    let mime = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .filter(|v| !v.is_empty() && v != "application/octet-stream");
    let mut body = Stoppable { inner: answer.into_body().into_reader(), hub };
    hub.store_media(&m.kind, m.name.as_deref(), mime.as_deref(), &mut body, MAX_DOWNLOAD)
}

/// An error text without any URL in it (a media URL carries a one-time key).
fn scrub(text: &str) -> String {
    text.split_whitespace()
        .map(|w| if w.contains("://") { "<url>" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect()
}

/// A download that ends when the bot stops.
struct Stoppable<'a, R> {
    inner: R,
    hub: &'a Hub,
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.hub.stopping() {
            return Err(std::io::Error::other("the bot is stopping"));
        }
        self.inner.read(buf)
    }
}

/// A connection's incoming frames, as its loop hands them over.
struct Events<'s, 'e> {
    adapter: &'s OneBot,
    scope: &'s std::thread::Scope<'s, 'e>,
    hub: &'s Hub,
    conn: u64,
    self_id: String,
}

impl conn::Handler for Events<'_, '_> {
    fn on_event(&self, event: Value) {
        let bot = &self.adapter.shared.bot_id;
        match event["post_type"].as_str().unwrap_or_default() {
            "message" => {
                let (adapter, hub) = (self.adapter, self.hub);
                // Lookups go to the account that received the event.
                let self_id = convert::id_str(&event["self_id"]).unwrap_or_else(|| self.self_id.clone());
                let message_id = convert::id_str(&event["message_id"]).unwrap_or_default();
                if !adapter.spawn_worker(self.scope, move || adapter.message(hub, &self_id, &event)) {
                    log::warn!(
                        "bot {bot}: OneBot message {message_id} dropped: {MAX_WORKERS} are being handled"
                    );
                }
            }
            "meta_event" => {
                // Every frame already counts as a sign of life.
                if event["meta_event_type"] == "lifecycle" {
                    log::debug!("bot {bot}: OneBot {} lifecycle {}", self.self_id, event["sub_type"]);
                }
            }
            other => log::debug!("bot {bot}: OneBot {other} event ignored"),
        }
    }

    fn on_result(&self, result: Value) {
        self.adapter.shared.resolve(self.conn, result);
    }

    fn stopping(&self) -> bool {
        self.adapter.shared.stopping() || self.hub.stopping()
    }
}

impl Adapter for OneBot {
    fn run(&self, hub: &Hub) -> Result<(), RunError> {
        let addr = self.addr();
        let listener =
            TcpListener::bind(&addr).map_err(|e| RunError::Fatal(format!("cannot listen on {addr}: {e}")))?;
        listener.set_nonblocking(true).map_err(|e| RunError::Retry(format!("cannot set up {addr}: {e}")))?;
        hub.running();
        log::info!("bot {}: OneBot reverse WebSocket listening on ws://{addr}/ws", hub.bot_id);
        let mut last_error = String::new();
        std::thread::scope(|scope| {
            while !hub.stopping() && !self.shared.stopping() {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        self.admit(scope, hub, stream);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        hub.sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        // EMFILE and the like: log once, retry after a pause.
                        if e.to_string() != last_error {
                            log::warn!("bot {}: accepting a OneBot connection failed: {e}", hub.bot_id);
                            last_error = e.to_string();
                        }
                        hub.sleep(Duration::from_millis(500));
                    }
                }
            }
            // Free the port before waiting for the connections' threads.
            drop(listener);
            self.close_all();
        });
        Ok(())
    }

    fn send(&self, target: &Target, parts: &[OutPart]) -> Result<(), SendError> {
        let Some(id) = convert::target_id(target.group, &target.chat) else {
            return Err(SendError::Invalid(format!(
                "无法发送消息：缺少有效的数字 session_id({}) 或 event(None)",
                target.chat
            )));
        };
        let out = convert::outgoing(parts).map_err(SendError::Failed)?;
        let (action, key) =
            if target.group { ("send_group_msg", "group_id") } else { ("send_private_msg", "user_id") };
        let mut messages = Vec::new();
        if !out.segments.is_empty() {
            messages.push(Value::Array(out.segments));
        }
        messages.extend(out.files);
        for message in messages {
            let params = json!({ key: id, "message": message });
            self.shared.call(target.self_id.as_deref(), action, params, SEND_TIMEOUT).map_err(
                |e| match e {
                    CallError::NotAvailable(t) => SendError::Failed(format!("ApiNotAvailable: {t}")),
                    CallError::Failed(t) => SendError::Failed(t),
                },
            )?;
        }
        Ok(())
    }

    fn test(&self) -> Value {
        let connected = self.shared.accounts();
        let addr = self.addr();
        if connected.is_empty() {
            json!({"status": "error", "connected": connected,
                "message": format!("no OneBot implementation is connected to ws://{addr}/ws")})
        } else {
            json!({"status": "ok", "connected": connected,
                "message": format!("connected: {}", connected.join(", "))})
        }
    }

    fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.close_all();
    }
}

impl OneBot {
    /// Shuts every connection's socket (their threads then end within a tick) and fails
    /// every waiting call.
    fn close_all(&self) {
        for c in lock(&self.shared.conns).values() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        lock(&self.shared.pending).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_go_to_the_account_then_the_only_one() {
        let conns = [(1, "10001"), (2, "20002"), (3, "10001")];
        assert_eq!(choose(&conns, Some("10001")), Ok(3));
        assert_eq!(choose(&conns, Some("20002")), Ok(2));
        assert!(matches!(choose(&conns, None), Err(CallError::NotAvailable(t)) if t.contains("several")));
        assert!(matches!(choose(&conns, Some("99")), Err(CallError::NotAvailable(_))));
        assert_eq!(choose(&[(4, "1"), (5, "1")], None), Ok(5));
        assert_eq!(choose(&[(4, "1")], Some("2")), Ok(4));
        assert_eq!(choose(&[], None), Err(CallError::NotAvailable("no OneBot connection".into())));
    }

    #[test]
    fn failed_results_carry_retcode_and_message() {
        assert_eq!(
            result_data(&json!({"status": "ok", "retcode": 0, "data": {"message_id": 1}})),
            Ok(json!({"message_id": 1}))
        );
        let e = result_data(
            &json!({"status": "failed", "retcode": 100, "message": "no such group", "wording": "x"}),
        );
        assert_eq!(
            e,
            Err(CallError::Failed("ActionFailed: retcode=100, message=no such group, wording=x".into()))
        );
        assert!(result_data(&json!({"retcode": 1404})).is_err());
    }

    #[test]
    fn config_defaults_and_send_targets() {
        let bot = OneBot::new("qq", &json!({"ws_reverse_token": "secret"})).unwrap();
        assert_eq!(bot.addr(), "0.0.0.0:6199");
        assert!(OneBot::new("qq", &json!({"ws_reverse_port": 70000})).is_err());
        let v6 = OneBot::new("qq", &json!({"ws_reverse_host": "::1", "ws_reverse_port": 7000})).unwrap();
        assert_eq!(v6.addr(), "[::1]:7000");
        let bad = bot
            .send(&Target { group: false, chat: "abc".into(), self_id: None }, &[OutPart::Text("x".into())]);
        assert_eq!(
            bad,
            Err(SendError::Invalid("无法发送消息：缺少有效的数字 session_id(abc) 或 event(None)".into()))
        );
        let none = bot
            .send(&Target { group: true, chat: "1_2".into(), self_id: None }, &[OutPart::Text("x".into())]);
        assert_eq!(none, Err(SendError::Failed("ApiNotAvailable: no OneBot connection".into())));
        assert_eq!(bot.test()["status"], "error");
        assert!(!bot.test().to_string().contains("secret"));
        assert_eq!(scrub("error for http://h/x?k=1 here"), "error for <url> here");
    }
}

/// The fake OneBot of the integration tests, shared with the loopback tests below.
#[cfg(test)]
#[path = "../../../tests/it/fake_onebot.rs"]
#[allow(dead_code)]
mod fake_onebot;

/// The adapter against the fake OneBot of the integration tests, with a hub whose sink is
/// a channel: the wire, the routing and the stop, without the server around them.
#[cfg(test)]
mod loopback {
    use std::sync::mpsc::{Receiver, channel};
    use std::time::Instant;

    use super::super::adapter::StateCell;
    use super::super::{Inbound, Media};
    use super::fake_onebot::{self, connect};
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    struct Running {
        adapter: Arc<OneBot>,
        stop: Arc<AtomicBool>,
        inbound: Receiver<Inbound>,
        thread: std::thread::JoinHandle<Result<(), RunError>>,
        port: u16,
    }

    fn start(token: &str) -> Running {
        let port = free_port();
        let config =
            json!({"ws_reverse_host": "127.0.0.1", "ws_reverse_port": port, "ws_reverse_token": token});
        let adapter = Arc::new(OneBot::new("qq", &config).unwrap());
        let (tx, inbound) = channel();
        let tx = Mutex::new(tx);
        let stop = Arc::new(AtomicBool::new(false));
        let hub = Hub {
            bot_id: "qq".into(),
            adapter: adapter.clone(),
            stop: stop.clone(),
            state: Arc::new(StateCell::new("qq")),
            sink: Arc::new(move |m| {
                let _ = lock(&tx).send(m);
            }),
            media: Arc::new(
                |kind: &str, name: Option<&str>, mime: Option<&str>, data: &mut dyn Read, max: u64| {
                    let mut bytes = Vec::new();
                    data.take(max + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
                    Ok(Media {
                        kind: kind.into(),
                        attachment_id: format!("{}", bytes.len()),
                        path: std::path::PathBuf::new(),
                        filename: name.unwrap_or_default().into(),
                        mime: mime.unwrap_or_default().into(),
                    })
                },
            ),
        };
        let runner = adapter.clone();
        let thread = std::thread::spawn(move || runner.run(&hub));
        Running { adapter, stop, inbound, thread, port }
    }

    fn wait_listening(port: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the adapter never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_connection_is_checked_answered_routed_and_stopped() {
        let r = start("secret-t");
        wait_listening(r.port);
        assert_eq!(connect(r.port, "10001", None).err(), Some(401));
        assert_eq!(connect(r.port, "10001", Some("nope")).err(), Some(403));
        assert_eq!(
            fake_onebot::connect_with(r.port, "/other", "10001", Some("Bearer secret-t")).err(),
            Some(404)
        );
        let fake = connect(r.port, "10001", Some("secret-t")).expect("the right token opens");
        assert!(fake.wait_call("get_login_info", 0, Duration::from_secs(5)).is_some());
        assert_eq!(r.adapter.test()["connected"], json!(["10001"]));

        // A private message is delivered; the reply goes out as one call whose echo matches.
        fake.push_event(fake.private_message(30003, 7, json!([{"type": "text", "data": {"text": "hello"}}])));
        let m = r.inbound.recv_timeout(Duration::from_secs(5)).expect("delivered");
        assert_eq!((m.session_id.as_str(), m.text.as_str(), m.self_id.as_str()), ("30003", "hello", "10001"));
        let target = Target { group: false, chat: m.reply_to.clone(), self_id: Some(m.self_id.clone()) };
        // Each call goes out at once, not at the loop's next tick (200 ms): five in a row,
        // each right after the loop went back to waiting, take far less than five ticks.
        let started = Instant::now();
        for _ in 0..5 {
            r.adapter.send(&target, &[OutPart::Text("hi there".into())]).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "calls wait for a tick: {:?}",
            started.elapsed()
        );
        let sent = fake.calls_of("send_private_msg");
        assert_eq!(sent.len(), 5);
        assert_eq!(
            sent[0].params,
            json!({"user_id": 30003, "message": [{"type": "text", "data": {"text": "hi there"}}]})
        );
        assert!(sent[0].echo["seq"].is_u64());

        // A group message's mentions are looked up on the same connection.
        fake.push_event(fake.group_message(
            20002,
            30003,
            8,
            json!([{"type": "at", "data": {"qq": "40004"}},
            {"type": "at", "data": {"qq": "10001"}}, {"type": "text", "data": {"text": " yo"}}]),
        ));
        let m = r.inbound.recv_timeout(Duration::from_secs(5)).expect("delivered");
        assert!(m.mentions_bot && m.first_mention_other && m.group);
        assert_eq!(m.text, "@card40004(40004) yo");
        assert_eq!(fake.calls_of("get_group_member_info")[0].params["user_id"], 40004);

        // A failed call is an error with its retcode; an unknown echo is ignored.
        fake.set_responder(|action, _| {
            (action == "send_group_msg")
                .then(|| json!({"status": "failed", "retcode": 100, "data": null, "message": "no group"}))
        });
        fake.push_raw(r#"{"status":"ok","retcode":0,"data":null,"echo":{"seq":999999}}"#);
        let e = r.adapter.send(
            &Target { group: true, chat: "1_20002".into(), self_id: None },
            &[OutPart::Text("x".into())],
        );
        assert_eq!(
            e,
            Err(SendError::Failed("ActionFailed: retcode=100, message=no group, wording=None".into()))
        );
        assert_eq!(fake.calls_of("send_group_msg")[0].params["group_id"], 20002);

        // Two accounts: a proactive send cannot choose; a reply goes to its account.
        let other = connect(r.port, "10002", Some("secret-t")).unwrap();
        assert!(other.wait_call("get_login_info", 0, Duration::from_secs(5)).is_some());
        let proactive = r
            .adapter
            .send(&Target { group: false, chat: "5".into(), self_id: None }, &[OutPart::Text("x".into())]);
        assert_eq!(
            proactive,
            Err(SendError::Failed("ApiNotAvailable: several OneBot connections; cannot choose".into()))
        );
        r.adapter
            .send(
                &Target { group: false, chat: "5".into(), self_id: Some("10002".into()) },
                &[OutPart::Text("x".into())],
            )
            .unwrap();
        assert_eq!(other.calls_of("send_private_msg").len(), 1);
        other.close();
        assert!(fake_onebot_eventually(|| r.adapter.test()["connected"] == json!(["10001"])));

        // Stopping closes the socket within a second and frees the port.
        let started = Instant::now();
        r.stop.store(true, Ordering::SeqCst);
        r.adapter.stop();
        assert!(fake.wait_closed(Duration::from_secs(1)), "the socket dropped");
        assert_eq!(r.thread.join().unwrap(), Ok(()));
        assert!(started.elapsed() < Duration::from_secs(1), "stopped in {:?}", started.elapsed());
        assert!(TcpStream::connect(("127.0.0.1", r.port)).is_err(), "nothing listens any more");
    }

    #[test]
    fn a_dropped_connection_fails_its_calls_at_once_and_a_reconnect_works() {
        let r = start("");
        wait_listening(r.port);
        let fake = connect(r.port, "10001", None).unwrap();
        assert!(fake.wait_call("get_login_info", 0, Duration::from_secs(5)).is_some(), "registered");
        fake.set_responder(|action, _| {
            if action == "send_private_msg" {
                std::thread::sleep(Duration::from_secs(2));
            }
            None
        });
        let sender = {
            let adapter = r.adapter.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let result = adapter.send(
                    &Target { group: false, chat: "5".into(), self_id: None },
                    &[OutPart::Text("x".into())],
                );
                (result, started.elapsed())
            })
        };
        assert!(fake_onebot_eventually(|| !lock(&r.adapter.shared.pending).is_empty()));
        fake.abort();
        let (result, took) = sender.join().unwrap();
        assert!(matches!(result, Err(SendError::Failed(_))), "{result:?}");
        assert!(took < Duration::from_secs(1), "failed after {took:?}");
        let again = connect(r.port, "10001", None).expect("a reconnect opens");
        again.push_event(again.private_message(
            30003,
            9,
            json!([{"type": "text", "data": {"text": "back"}}]),
        ));
        assert_eq!(r.inbound.recv_timeout(Duration::from_secs(5)).unwrap().text, "back");
        r.stop.store(true, Ordering::SeqCst);
        r.adapter.stop();
        assert_eq!(r.thread.join().unwrap(), Ok(()));
    }

    #[test]
    fn connections_past_the_cap_get_503() {
        let r = start("");
        wait_listening(r.port);
        let deadline = Instant::now() + Duration::from_secs(5);
        // wait_listening's probe takes a slot once accepted: wait until it came and went.
        while r.adapter.shared.conn_ids.load(Ordering::SeqCst) == 0
            || !lock(&r.adapter.shared.conns).is_empty()
        {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        let open: Vec<TcpStream> =
            (0..MAX_CONNECTIONS).map(|_| TcpStream::connect(("127.0.0.1", r.port)).unwrap()).collect();
        while lock(&r.adapter.shared.conns).len() < MAX_CONNECTIONS {
            assert!(
                Instant::now() < deadline,
                "{} connections accepted",
                lock(&r.adapter.shared.conns).len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut extra = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        let _ = extra.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        drop(open);
        r.stop.store(true, Ordering::SeqCst);
        r.adapter.stop();
        assert_eq!(r.thread.join().unwrap(), Ok(()));
    }

    #[test]
    fn a_port_in_use_is_fatal() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let adapter =
            OneBot::new("qq", &json!({"ws_reverse_host": "127.0.0.1", "ws_reverse_port": port})).unwrap();
        let hub = Hub {
            bot_id: "qq".into(),
            adapter: Arc::new(OneBot::new("qq", &json!({})).unwrap()),
            stop: Arc::new(AtomicBool::new(false)),
            state: Arc::new(StateCell::new("qq")),
            sink: Arc::new(|_| {}),
            media: Arc::new(|_: &str, _: Option<&str>, _: Option<&str>, _: &mut dyn Read, _: u64| {
                Err("no".to_string())
            }),
        };
        match adapter.run(&hub) {
            Err(RunError::Fatal(e)) => {
                assert!(e.starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    fn fake_onebot_eventually(f: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}
