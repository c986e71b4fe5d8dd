//! The WebSocket chat (`/api/v1/chat/ws`, AstrBot's appendix A) and the resume of a chat
//! run (`GET /api/v1/chat/runs/{run_id}/stream`, appendix B).
//!
//! The transport hands an `Upgrade: websocket` request for [`PATH`] to the server
//! (`server.rs`), which checks the handshake with [`accept_key`], answers `101` and runs
//! [`session`] on the connection's worker thread; the connection stays counted against
//! the connection cap until it closes. Other requests for the path get 426 from
//! [`upgrade_required`].
//!
//! A session accepts first, then authenticates (AstrBot's order): the key from `?api_key=`,
//! `?key=`, `X-API-Key`, `Authorization: Bearer|ApiKey` (or the admin token), holding `*`
//! or `chat`; else `{"type":"error","code":"UNAUTHORIZED",...}` and close 1008. Client
//! frames are JSON objects: `{"t":"ping"}` → `{"type":"pong"}`; `{"t":"send", ...}` (the
//! default `t`) takes the fields of `POST /api/v1/chat` and starts a run, whose events
//! come from the same run log as the SSE chat's (`chat::runs`): `session_id` (with the
//! run id as `message_id`), then the run's events, `message_saved` in AstrBot's WebSocket
//! shape. One run at a time per connection; a client that drops mid-run resumes it with
//! the resume route (the k-th run event, `run_started` being the first, has id k).
//!
//! Bounds: messages and frames of at most [`MAX_MESSAGE`] bytes (else close 1009), a
//! connection silent for [`idle_timeout`] with no run going is closed (1000, `idle
//! timeout`), a WebSocket ping every 30 s of silence from our side, writes bounded by the
//! transport's write timeout, close 1001 when the server stops.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::app::{App, Ctx};
use crate::auth::{ActiveKey, Credential, Identity};
use crate::chat::events;
use crate::chat::run::{self, RunSlot};
use crate::chat::runs::Framing;
use crate::db;
use crate::error::ApiError;
use crate::http::{MAX_JSON_BODY, Request, Response};
use crate::quota::Verdict;
use crate::sse::python_json;
use crate::timefmt::now_micros;

pub const PATH: &str = "/api/v1/chat/ws";
/// The cap of a client message and of a frame.
pub const MAX_MESSAGE: usize = MAX_JSON_BODY;
/// How long a read waits while a run streams, and while nothing happens.
pub const BUSY_WAIT: Duration = Duration::from_millis(20);
pub const IDLE_WAIT: Duration = Duration::from_millis(500);
/// A ping after this long without anything sent.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long a closing handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// How long a connection may stay silent with no run going: 60 s, or
/// `ASTRBOT_WS_IDLE_SECS` (1 to 3600).
pub fn idle_timeout() -> Duration {
    std::env::var("ASTRBOT_WS_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| (1..=3600).contains(n))
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// The upgraded connection as the server hands it over.
pub trait Conn: Read + Write {
    /// How long the next reads wait for data before failing with `WouldBlock`.
    fn set_read_wait(&self, wait: Duration);
}

/// The `Sec-WebSocket-Accept` of a valid WebSocket handshake request, or the answer to a
/// request that is none: 426 without a usable version 13, 400 otherwise.
pub fn accept_key(req: &Request<'_>) -> Result<String, Response> {
    let refuse = |status: u16, message: &str| {
        let mut r = Response::json(status, &json!({"status": "error", "message": message}));
        if status == 426 {
            r.header("Sec-WebSocket-Version", "13".into());
        }
        r
    };
    if req.method != "GET" {
        return Err(refuse(400, "A WebSocket handshake must be a GET"));
    }
    if !req.header("upgrade").is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket")) {
        return Err(refuse(426, "Upgrade Required: this route is a WebSocket (Upgrade: websocket)"));
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(refuse(426, "Unsupported WebSocket version (13 is supported)"));
    }
    let key = req.header("sec-websocket-key").map(str::trim).unwrap_or("");
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(tungstenite::handshake::derive_accept_key(key.as_bytes())),
        _ => Err(refuse(400, "Invalid Sec-WebSocket-Key")),
    }
}

/// The `101` head for an accepted handshake.
pub fn switching_head(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// `GET /api/v1/chat/ws` without `Upgrade: websocket`: 426.
pub fn upgrade_required(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let no_body: &mut &[u8] = &mut &[][..];
    let probe = Request::new("GET".into(), PATH, ctx.req.headers.clone(), None, Some(0), no_body);
    match accept_key(&probe) {
        Err(r) => Ok(r),
        // A valid handshake that the transport did not hand over (no `Connection: upgrade`).
        Ok(_) => Ok(accept_key(&Request::new("GET".into(), PATH, Vec::new(), None, Some(0), &mut &[][..]))
            .err()
            .unwrap_or_else(|| {
                Response::json(426, &json!({"status": "error", "message": "Upgrade Required"}))
            })),
    }
}

/// A write that times out is a dead peer, not a "try again" (tungstenite would retry it
/// for ever).
struct Sock<C>(C);

impl<C: Conn> Read for Sock<C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<C: Conn> Write for Sock<C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock { io::ErrorKind::TimedOut.into() } else { e }
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock { io::ErrorKind::TimedOut.into() } else { e }
        })
    }
}

fn error_frame(code: &str, data: &str) -> String {
    python_json(&json!({"type": "error", "code": code, "data": data}))
}

/// The caller of a session, checked as AstrBot's `authenticate_api_key`: a key with `*`
/// or `chat` (includes not consulted), or the admin token.
fn authenticate(app: &App, credential: Credential, now: i64) -> Result<Identity, String> {
    let raw = match credential {
        Credential::None | Credential::Cookie(_) => return Err("Missing API key".into()),
        Credential::Bearer(token) => {
            if let Ok(Some(name)) = app.verify_admin_token(&token, now) {
                return Ok(Identity::Admin(name));
            }
            token
        }
        Credential::ApiKey(key) => key,
    };
    let key = app.verify_api_key(&raw, now).map_err(|_| "Invalid API key".to_owned())?;
    if !key.scopes.iter().any(|s| s == "*" || s == "chat") {
        return Err("Insufficient API key scope".into());
    }
    Ok(Identity::Key(key))
}

/// AstrBot's error code for a refused `send`.
fn error_code(e: &ApiError) -> (&'static str, String) {
    match e {
        ApiError::Internal(cause) => ("PROCESSING_ERROR", format!("Failed to process message: {cause}")),
        ApiError::Busy { message, .. } | ApiError::TooManyRequests { message, .. } => {
            ("PROCESSING_ERROR", message.clone())
        }
        other => {
            let m = other.message();
            let code = if m.starts_with("config_") || m.contains("config route") {
                "CONFIG_ERROR"
            } else if m.contains("session") {
                "SESSION_ERROR"
            } else if m.contains("username") {
                "BAD_USER"
            } else {
                "INVALID_MESSAGE"
            };
            (code, m)
        }
    }
}

/// What a session does with one client message: frames to send, maybe a run to follow.
fn handle_text(
    app: &Arc<App>,
    who: &Identity,
    text: &str,
    running: bool,
    remote: Option<std::net::SocketAddr>,
) -> (Vec<String>, Option<Receiver<String>>) {
    let frame: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return (vec![error_frame("INVALID_MESSAGE", "message must be valid JSON")], None),
    };
    let Value::Object(body) = frame else {
        return (vec![error_frame("INVALID_MESSAGE", "message must be an object")], None);
    };
    let t = match body.get("t") {
        None | Some(Value::Null) => "send".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    match t.as_str() {
        "ping" => return (vec![python_json(&json!({"type": "pong"}))], None),
        "send" => {}
        other => {
            let shown: String = other.chars().take(64).collect();
            return (
                vec![error_frame("INVALID_MESSAGE", &format!("Unsupported message type: {shown}"))],
                None,
            );
        }
    }
    if running {
        return (
            vec![error_frame("INVALID_MESSAGE", "A message is already running on this connection")],
            None,
        );
    }
    match start(app, who, Value::Object(body), remote) {
        Ok(rx) => (Vec::new(), Some(rx)),
        Err(e) => {
            let (code, data) = error_code(&e);
            (vec![error_frame(code, &data)], None)
        }
    }
}

/// Counts a `send` against the key's daily quota, as the pipeline counts a request.
fn charge_quota(app: &App, key: &ActiveKey, now: i64) -> Result<(), ApiError> {
    let limit = key.effective_limit(app.settings.default_daily_limit);
    let verdict = app.quota.lock().unwrap_or_else(|e| e.into_inner()).check(&key.key_id, limit, now, |day| {
        app.db.conn().and_then(|c| db::usage_count(&c, &key.key_id, day)).unwrap_or_else(|e| {
            log::error!("cannot read usage of key {}: {e}", key.key_id);
            0
        })
    });
    match verdict {
        Verdict::Exceeded { retry_after, .. } => {
            Err(ApiError::TooManyRequests { message: "Daily request limit exceeded".into(), retry_after })
        }
        Verdict::Allowed { .. } => Ok(()),
    }
}

/// Checks a `send` as `POST /api/v1/chat` does, stores the message and starts its run.
fn start(
    app: &Arc<App>,
    who: &Identity,
    body: Value,
    remote: Option<std::net::SocketAddr>,
) -> Result<Receiver<String>, ApiError> {
    let now = now_micros();
    if let Identity::Key(key) = who {
        charge_quota(app, key, now)?;
    }
    let slot = RunSlot::take()?;
    let mut no_body: &[u8] = &[];
    let mut req = Request::new("POST".into(), "/api/v1/chat", Vec::new(), remote, Some(0), &mut no_body);
    req.json = Some(body);
    let ctx = Ctx { app, req: &mut req, who: Some(who.clone()), now, mirror: None };
    let (message, profile) = crate::api::chat::prepare_message(&ctx)?;
    let checkpoint = uuid::Uuid::new_v4().to_string();
    run::save_user_message(&mut *app.db.conn()?, &message, profile.as_deref(), &checkpoint, now)?;
    let log = app.runs.create(&who.username(), &message.session_id, &checkpoint);
    let mut first = events::session_id(&message.session_id);
    first["message_id"] = json!(log.run_id);
    let rx = log.subscribe(Framing::Json, vec![python_json(&first)], false, None);
    run::start_logged(app.clone(), slot, message, log, None)?;
    Ok(rx)
}

/// Runs one WebSocket chat connection until it closes.
pub fn session<C: Conn>(
    app: &Arc<App>,
    conn: C,
    credential: Credential,
    remote: Option<std::net::SocketAddr>,
    stop: &AtomicBool,
) {
    conn.set_read_wait(IDLE_WAIT);
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(8 << 20)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut ws = WebSocket::from_raw_socket(Sock(conn), Role::Server, Some(config));
    let who = match authenticate(app, credential, now_micros()) {
        Ok(who) => who,
        Err(why) => {
            let _ = ws.send(Message::text(error_frame("UNAUTHORIZED", &why)));
            close(&mut ws, CloseCode::Policy, &why);
            return;
        }
    };
    let idle = idle_timeout();
    let mut run: Option<Receiver<String>> = None;
    let mut heard = Instant::now();
    let mut sent = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            close(&mut ws, CloseCode::Away, "server shutting down");
            return;
        }
        if let Some(rx) = &run {
            let mut ended = false;
            loop {
                match rx.try_recv() {
                    Ok(frame) => {
                        if ws.write(Message::text(frame)).is_err() {
                            return;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        ended = true;
                        break;
                    }
                }
            }
            if ws.flush().is_err() {
                return;
            }
            sent = Instant::now();
            if ended {
                run = None;
                ws.get_ref().0.set_read_wait(IDLE_WAIT);
                heard = Instant::now();
            }
        }
        match ws.read() {
            Ok(Message::Text(text)) => {
                heard = Instant::now();
                let (frames, started) = handle_text(app, &who, text.as_str(), run.is_some(), remote);
                for frame in frames {
                    if ws.send(Message::text(frame)).is_err() {
                        return;
                    }
                }
                if started.is_some() {
                    run = started;
                    ws.get_ref().0.set_read_wait(BUSY_WAIT);
                }
            }
            Ok(Message::Binary(_)) => {
                heard = Instant::now();
                if ws
                    .send(Message::text(error_frame("INVALID_MESSAGE", "message must be an object")))
                    .is_err()
                {
                    return;
                }
            }
            Ok(Message::Ping(_)) => heard = Instant::now(),
            Ok(Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Close(_)) => {
                // tungstenite answers the close; flushing sends it.
                let _ = ws.flush();
                return;
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                // Pongs to the client's pings are queued by tungstenite.
                if ws.flush().is_err() {
                    return;
                }
            }
            Err(WsError::Capacity(_)) => return close_broken(&mut ws, CloseCode::Size, "message too big"),
            Err(WsError::Utf8(_)) => return close_broken(&mut ws, CloseCode::Invalid, "invalid UTF-8"),
            Err(WsError::Protocol(_)) => return close_broken(&mut ws, CloseCode::Protocol, "protocol error"),
            Err(_) => return,
        }
        if run.is_none() && heard.elapsed() >= idle {
            close(&mut ws, CloseCode::Normal, "idle timeout");
            return;
        }
        if sent.elapsed() >= PING_EVERY {
            if ws.send(Message::Ping(Vec::new().into())).is_err() {
                return;
            }
            sent = Instant::now();
        }
    }
}

/// Sends a close frame and waits briefly for the peer's, so the close reaches it whole.
fn close<C: Conn>(ws: &mut WebSocket<Sock<C>>, code: CloseCode, reason: &str) {
    let _ = ws.close(Some(CloseFrame { code, reason: reason.to_owned().into() }));
    let until = Instant::now() + CLOSE_WAIT;
    while Instant::now() < until {
        match ws.read() {
            Ok(_) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = ws.flush();
            }
            Err(_) => return,
        }
    }
}

/// Closes after a read error, which tungstenite cannot read on after: the close goes out,
/// the rest of what the peer sends is read raw and dropped.
fn close_broken<C: Conn>(ws: &mut WebSocket<Sock<C>>, code: CloseCode, reason: &str) {
    let _ = ws.close(Some(CloseFrame { code, reason: reason.to_owned().into() }));
    let _ = ws.flush();
    drain(ws.get_mut());
}

/// Reads and drops what a peer still sends (at most 16 MiB, [`CLOSE_WAIT`]), so that the
/// close does not reset the connection under our last frame.
fn drain<C: Conn>(sock: &mut Sock<C>) {
    let until = Instant::now() + CLOSE_WAIT;
    let mut buf = [0u8; 8192];
    let mut total = 0usize;
    while Instant::now() < until && total < 16 << 20 {
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// `GET /api/v1/chat/runs/{run_id}/stream`: the run's events again, as SSE with ids, for
/// the caller that started it. Without `Last-Event-ID` (or `?last_event_id=`): AstrBot's
/// `run_snapshot` (revision 0, empty content) and every event kept; with it, the events
/// after that id. Then the live ones until the run ends.
pub fn resume(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let owner = ctx.caller()?.username();
    let run_id = ctx.param(0).to_owned();
    let last = ctx.req.header("last-event-id").or_else(|| ctx.req.query_param("last_event_id"));
    let after = match last.map(str::trim) {
        None | Some("") => None,
        Some(v) if v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
            Some(v.parse::<u64>().map_err(|_| ApiError::Soft("Invalid Last-Event-ID".into()))?)
        }
        Some(_) => return Err(ApiError::Soft("Invalid Last-Event-ID".into())),
    };
    let Some(log) = ctx.app.runs.find(&run_id, &owner) else {
        return Err(ApiError::Soft("Chat run is unavailable".into()));
    };
    let rx = log.subscribe(Framing::SseWithIds, Vec::new(), after.is_none(), after);
    Ok(Response::events(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(headers: &[(&str, &str)], body: &'a mut &'a [u8]) -> Request<'a> {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Request::new("GET".into(), PATH, headers, None, Some(0), body)
    }

    #[test]
    fn the_handshake_is_checked() {
        let mut b: &[u8] = &[];
        let good = [
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(accept_key(&req(&good, &mut b)).ok().as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        let mut b: &[u8] = &[];
        assert_eq!(accept_key(&req(&good[..2], &mut b)).unwrap_err().status, 400);
        let mut b: &[u8] = &[];
        let old = [good[0], ("sec-websocket-version", "8"), good[2]];
        assert_eq!(accept_key(&req(&old, &mut b)).unwrap_err().status, 426);
        let mut b: &[u8] = &[];
        assert_eq!(accept_key(&req(&[], &mut b)).unwrap_err().status, 426);
        let mut b: &[u8] = &[];
        let short = [good[0], good[1], ("sec-websocket-key", "c2hvcnQ=")];
        assert_eq!(accept_key(&req(&short, &mut b)).unwrap_err().status, 400);
    }

    #[test]
    fn refusals_get_astrbots_codes() {
        let code = |e: ApiError| error_code(&e).0;
        assert_eq!(code(ApiError::Soft("Missing key: username".into())), "BAD_USER");
        assert_eq!(code(ApiError::Soft("session_id belongs to another username".into())), "SESSION_ERROR");
        assert_eq!(code(ApiError::Soft("config_id not found: x".into())), "CONFIG_ERROR");
        assert_eq!(code(ApiError::Soft("Missing key: message or files".into())), "INVALID_MESSAGE");
        assert_eq!(code(ApiError::internal("db")), "PROCESSING_ERROR");
    }
}
