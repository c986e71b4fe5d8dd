//! One reverse-WebSocket connection from a OneBot implementation, on a thread of its own:
//! the handshake (path, token, `X-Self-ID`, `X-Client-Role`, checked as aiocqhttp does
//! before the upgrade), then one loop that both sends and receives.
//!
//! tungstenite needs `&mut` to read and to write, so this thread owns the socket and is
//! the only writer: API calls from other threads are queued ([`Outbox`]) and a byte on the
//! connection's waker (a socket pair) interrupts the wait for incoming data, so a queued
//! call goes out at once rather than after a read timeout. Results (frames with our
//! `echo`) go back to their caller through the pending map; events go to `on_event`,
//! which hands them to a worker thread, because converting one may need API calls whose
//! answers arrive on this very thread.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, Message};

/// The whole handshake (request head in, answer out) must finish within this.
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// How long one wait for data lasts before the loop checks the stop flag and its timers.
const TICK: Duration = Duration::from_millis(200);
/// A connection silent this long (no event, heartbeat, result or Pong) is dead; sooner
/// when the implementation announces heartbeats: three missed ones, but at least
/// [`MIN_DEAD_AFTER`]. We ping three times within it (every 30 s at most), so a live peer
/// always answers in time even if its heartbeats stop.
const DEAD_AFTER: Duration = Duration::from_secs(90);
const MIN_DEAD_AFTER: Duration = Duration::from_secs(15);

/// How long silence means death after a heartbeat announcing `interval_ms`.
pub fn dead_after(interval_ms: u64) -> Duration {
    Duration::from_millis(interval_ms.saturating_mul(3)).clamp(MIN_DEAD_AFTER, DEAD_AFTER)
}
/// A write that cannot finish within this means a peer that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frame and message cap (a `get_msg` result or a forwarded message can be large).
const MAX_MESSAGE: usize = 16 << 20;

/// The connection's role (`X-Client-Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Universal,
    Api,
    Event,
}

/// Who connected, as the handshake established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub self_id: String,
    pub role: Role,
}

/// A refused handshake: status and plain-text body.
pub type Refusal = (u16, &'static str);

/// Checks an upgrade request as aiocqhttp does: the path (404), then the token when one is
/// set (401 missing, 403 wrong), then `X-Self-ID` (digits, else 400) and `X-Client-Role`
/// (`Universal` when absent).
pub fn check_request(req: &Request, token: &str) -> Result<Peer, Refusal> {
    let path = req.uri().path();
    let path = path.strip_suffix('/').unwrap_or(path);
    if !matches!(path, "/ws" | "/ws/api" | "/ws/event") {
        return Err((404, "Not Found"));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if !token.is_empty() {
        let given = match header("authorization") {
            Some(h) => Some(bearer(h).unwrap_or_default()),
            None => query_param(req.uri().query().unwrap_or_default(), "access_token"),
        };
        match given {
            None => return Err((401, "Unauthorized")),
            Some(t) if !same(t.as_bytes(), token.as_bytes()) => return Err((403, "Forbidden")),
            Some(_) => {}
        }
    }
    let self_id = match header("x-self-id") {
        Some(id) if super::convert::is_id(id) => id.to_owned(),
        _ => return Err((400, "X-Self-ID must be the bot's QQ number")),
    };
    let role = match header("x-client-role").map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "universal") => Role::Universal,
        Some("api") => Role::Api,
        Some("event") => Role::Event,
        Some(_) => return Err((400, "X-Client-Role must be Universal, API or Event")),
    };
    Ok(Peer { self_id, role })
}

/// The token of `Authorization: (Token|token|Bearer|bearer) <token>`.
pub fn bearer(header: &str) -> Option<String> {
    let (scheme, rest) = header.split_once(' ')?;
    matches!(scheme, "Token" | "token" | "Bearer" | "bearer").then(|| rest.trim().to_owned())
}

/// A query parameter, percent-decoded (NapCat may send the token as `?access_token=`).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) =
                (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares a given token with ours in time independent of where they differ.
fn same(given: &[u8], ours: &[u8]) -> bool {
    let d1 = ring::digest::digest(&ring::digest::SHA256, given);
    let d2 = ring::digest::digest(&ring::digest::SHA256, ours);
    d1.as_ref().iter().zip(d2.as_ref()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn refusal(status: u16, body: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(body.to_owned()));
    *r.status_mut() =
        tungstenite::http::StatusCode::from_u16(status).unwrap_or(tungstenite::http::StatusCode::BAD_REQUEST);
    let headers = r.headers_mut();
    headers.insert("content-type", tungstenite::http::HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert("connection", tungstenite::http::HeaderValue::from_static("close"));
    if let Ok(len) = tungstenite::http::HeaderValue::from_str(&body.len().to_string()) {
        headers.insert("content-length", len);
    }
    r
}

/// The socket as tungstenite sees it. During the handshake a read waits for data up to
/// the handshake's deadline; afterwards a read waits at most one [`TICK`] for data or for
/// the waker, then reports `WouldBlock` so the loop can send what is queued.
pub struct Sock {
    tcp: TcpStream,
    waker: Option<UnixStream>,
    deadline: Option<Instant>,
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            loop {
                match self.tcp.read(buf) {
                    Err(e) if would_block(&e) => {
                        if Instant::now() >= deadline {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the handshake took too long",
                            ));
                        }
                    }
                    r => return r,
                }
            }
        }
        match wait_readable(&self.tcp, self.waker.as_ref(), TICK) {
            Ready::Socket => match self.tcp.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(io::ErrorKind::WouldBlock.into()),
                r => r,
            },
            Ready::Waker => {
                if let Some(w) = &mut self.waker {
                    let mut sink = [0u8; 64];
                    loop {
                        match w.read(&mut sink) {
                            Ok(0) => {
                                // The adapter let go of this connection: end it rather
                                // than wake up for ever.
                                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the waker closed"));
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
                Err(io::ErrorKind::WouldBlock.into())
            }
            Ready::Nothing => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A write timeout is a dead peer, not a "try again": report it as an error.
        self.tcp.write(buf).map_err(|e| if would_block(&e) { io::ErrorKind::TimedOut.into() } else { e })
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

enum Ready {
    Socket,
    Waker,
    Nothing,
}

/// Waits until the socket (or the waker) has something to read, at most `timeout`.
fn wait_readable(tcp: &TcpStream, waker: Option<&UnixStream>, timeout: Duration) -> Ready {
    let mut fds = [
        libc::pollfd { fd: tcp.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: waker.map_or(-1, |w| w.as_raw_fd()), events: libc::POLLIN, revents: 0 },
    ];
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: poll(2) on two pollfd structs we own, for descriptors that live as long as
    // the borrows above; a negative fd is ignored by the kernel.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return Ready::Nothing;
    }
    if fds[0].revents != 0 {
        Ready::Socket
    } else if fds[1].revents != 0 {
        Ready::Waker
    } else {
        Ready::Nothing
    }
}

/// How the handshake ended.
pub enum Handshake {
    Open(Box<tungstenite::WebSocket<Sock>>, Peer),
    /// Refused with an HTTP answer; the text says why, for the log.
    Refused(String),
    /// Not a WebSocket request, or the peer went before finishing it (a port probe).
    Broken(String),
}

/// Performs the server handshake on an accepted socket.
pub fn handshake(tcp: TcpStream, token: &str) -> Handshake {
    let raw = tcp.try_clone();
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
    let sock = Sock { tcp, waker: None, deadline: Some(Instant::now() + HANDSHAKE_TIME) };
    let mut peer = None;
    let mut why = String::new();
    // tungstenite's callback type fixes the large error variant.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| match check_request(req, token) {
        Ok(p) => {
            peer = Some(p);
            Ok(resp)
        }
        Err((status, text)) => {
            why = format!("{status} {text} (path {})", req.uri().path());
            Err(refusal(status, text))
        }
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 << 20)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    match tungstenite::accept_hdr_with_config(sock, callback, Some(config)) {
        Ok(ws) => match peer {
            Some(p) => Handshake::Open(Box::new(ws), p),
            None => Handshake::Broken("no peer".into()),
        },
        Err(HandshakeError::Failure(WsError::Http(_))) => Handshake::Refused(why),
        Err(HandshakeError::Failure(e)) => {
            // Not a WebSocket upgrade: answer it as plain HTTP rather than hang up.
            let status = match &e {
                WsError::Protocol(tungstenite::error::ProtocolError::MissingSecWebSocketVersionHeader) => {
                    Some("426 Upgrade Required\r\nSec-WebSocket-Version: 13")
                }
                WsError::Protocol(_) | WsError::HttpFormat(_) => Some("400 Bad Request"),
                WsError::AttackAttempt | WsError::Capacity(_) => Some("431 Request Header Fields Too Large"),
                _ => None,
            };
            if let (Some(status), Ok(mut raw)) = (status, raw) {
                let _ = write!(raw, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
            Handshake::Broken(e.to_string())
        }
        Err(HandshakeError::Interrupted(_)) => Handshake::Broken("the handshake was interrupted".into()),
    }
}

/// What the loop does with an incoming text frame.
pub trait Handler {
    /// A frame with `post_type`.
    fn on_event(&self, event: Value);
    /// A frame with an `echo`: the result of one of our calls.
    fn on_result(&self, result: Value);
    /// The bot or this connection is being stopped.
    fn stopping(&self) -> bool;
}

/// Runs an open connection until the peer goes, it goes silent, or the bot stops.
/// Returns why it ended, for the log.
pub fn serve(
    mut ws: Box<tungstenite::WebSocket<Sock>>,
    waker: UnixStream,
    outbox: Receiver<String>,
    handler: &dyn Handler,
) -> String {
    {
        let sock = ws.get_mut();
        sock.deadline = None;
        let _ = waker.set_nonblocking(true);
        sock.waker = Some(waker);
        // The wait happens in poll(2); the read timeout only guards against a spurious
        // wake-up turning into a blocking read.
        let _ = sock.tcp.set_read_timeout(Some(TICK));
    }
    let mut last_frame = Instant::now();
    let mut last_ping = Instant::now();
    let mut silence = DEAD_AFTER;
    loop {
        if handler.stopping() {
            let _ = ws.close(None);
            let _ = ws.flush();
            return "the bot is stopping".into();
        }
        let mut wrote = false;
        while let Ok(text) = outbox.try_recv() {
            if let Err(e) = ws.write(Message::text(text)) {
                return format!("cannot send: {e}");
            }
            wrote = true;
        }
        if last_ping.elapsed() >= silence / 3 {
            last_ping = Instant::now();
            if let Err(e) = ws.write(Message::Ping(Default::default())) {
                return format!("cannot send a ping: {e}");
            }
            wrote = true;
        }
        if wrote && let Err(e) = ws.flush() {
            return format!("cannot send: {e}");
        }
        if last_frame.elapsed() >= silence {
            return format!("nothing received for {} s", silence.as_secs());
        }
        match ws.read() {
            Ok(msg) => {
                last_frame = Instant::now();
                let heartbeat = match &msg {
                    Message::Text(t) => dispatch(t.as_bytes(), handler),
                    Message::Binary(b) => dispatch(b, handler),
                    // Pings are answered by tungstenite; a Close is answered by it too, and
                    // the next read reports the end.
                    _ => None,
                };
                if let Some(interval) = heartbeat {
                    silence = dead_after(interval);
                }
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return "closed by the peer".into(),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return "closed by the peer".into();
            }
            Err(e) => return e.to_string(),
        }
    }
}

/// Routes one text frame: an event, a result, or nothing we know. Returns the interval
/// (ms) a heartbeat announces.
fn dispatch(frame: &[u8], handler: &dyn Handler) -> Option<u64> {
    let Ok(v) = serde_json::from_slice::<Value>(frame) else {
        log::debug!("a OneBot frame that is not JSON was dropped");
        return None;
    };
    if v.get("post_type").is_some() {
        let heartbeat = (v["meta_event_type"] == "heartbeat").then(|| v["interval"].as_u64()).flatten();
        handler.on_event(v);
        heartbeat
    } else if v.get("echo").is_some() {
        handler.on_result(v);
        None
    } else {
        log::debug!("a OneBot frame without post_type or echo was dropped");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = tungstenite::http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn paths_tokens_and_ids_are_checked_in_aiocqhttp_order() {
        let id = ("X-Self-ID", "10001");
        let ok = Peer { self_id: "10001".into(), role: Role::Universal };
        assert_eq!(check_request(&req("/ws", &[id]), ""), Ok(ok.clone()));
        assert_eq!(check_request(&req("/ws/", &[id]), ""), Ok(ok.clone()));
        assert_eq!(check_request(&req("/other", &[id]), "t").unwrap_err().0, 404);
        assert_eq!(check_request(&req("/ws", &[id]), "t").unwrap_err().0, 401);
        assert_eq!(check_request(&req("/ws", &[id, ("Authorization", "Bearer x")]), "t").unwrap_err().0, 403);
        assert_eq!(check_request(&req("/ws", &[id, ("Authorization", "t")]), "t").unwrap_err().0, 403);
        for scheme in ["Token", "token", "Bearer", "bearer"] {
            let auth = format!("{scheme} t");
            assert_eq!(check_request(&req("/ws/api", &[id, ("Authorization", &auth)]), "t"), Ok(ok.clone()));
        }
        assert_eq!(check_request(&req("/ws?access_token=a%2Fb", &[id]), "a/b"), Ok(ok.clone()));
        assert_eq!(check_request(&req("/ws?access_token=x", &[id]), "a/b").unwrap_err().0, 403);
        assert_eq!(check_request(&req("/ws", &[]), "").unwrap_err().0, 400);
        assert_eq!(check_request(&req("/ws", &[("X-Self-ID", "abc")]), "").unwrap_err().0, 400);
        let event = check_request(&req("/ws/event", &[id, ("X-Client-Role", "EVENT")]), "").unwrap();
        assert_eq!(event.role, Role::Event);
        assert_eq!(check_request(&req("/ws", &[id, ("X-Client-Role", "API")]), "").unwrap().role, Role::Api);
        assert_eq!(check_request(&req("/ws", &[id, ("X-Client-Role", "x")]), "").unwrap_err().0, 400);
    }

    #[test]
    fn heartbeats_shorten_the_silence_allowed_within_bounds() {
        assert_eq!(dead_after(5_000), Duration::from_secs(15));
        assert_eq!(dead_after(10_000), Duration::from_secs(30));
        assert_eq!(dead_after(1), MIN_DEAD_AFTER);
        assert_eq!(dead_after(u64::MAX), DEAD_AFTER);
    }

    #[test]
    fn bearer_schemes_and_decoding() {
        assert_eq!(bearer("Bearer abc"), Some("abc".into()));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"", b"a"));
    }
}
