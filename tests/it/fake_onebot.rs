//! A fake OneBot v11 implementation (the NapCat side, platforms reference §4.2 A): a
//! tungstenite client that connects to the server's reverse WebSocket as a QQ account,
//! pushes events, and answers the API calls the server makes with NapCat's shapes.
//!
//! One thread per fake owns the socket (tungstenite reads and writes through `&mut`): it
//! sends what `push_event` queued, reads frames with a short timeout, answers calls (a
//! programmable responder first, then defaults) and records each `(action, params, echo)`
//! under a mutex with a condvar, so tests wait for conditions, never for fixed times.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::{Error as WsError, Message};

/// One API call the server made.
#[derive(Debug, Clone)]
pub struct Call {
    pub action: String,
    pub params: Value,
    pub echo: Value,
}

/// Answers a call instead of the defaults: `Some(envelope)` (without `echo`), or `None`
/// for the default answer.
pub type Responder = Box<dyn FnMut(&str, &Value) -> Option<Value> + Send>;

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Message events pushed, by message id, for `get_msg`.
    messages: HashMap<i64, Value>,
    responder: Option<Responder>,
    /// The connection ended (closed by either side, or broken).
    closed: bool,
    next_message_id: i64,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.0.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FakeOneBot {
    pub self_id: String,
    state: Shared,
    outbox: Sender<Message>,
    thread: Option<JoinHandle<()>>,
    /// The socket, to break it without a close handshake.
    raw: Option<TcpStream>,
}

/// How a connection attempt ended when it did not open: the HTTP status, or 0 when no
/// HTTP answer came (connection refused or reset).
pub type Refused = u16;

/// Connects as `self_id` to `ws://127.0.0.1:<port>/ws`, with `Authorization: Bearer
/// <token>` when a token is given.
pub fn connect(port: u16, self_id: &str, token: Option<&str>) -> Result<FakeOneBot, Refused> {
    let auth = token.map(|t| format!("Bearer {t}"));
    connect_with(port, "/ws", self_id, auth.as_deref())
}

/// Connects with a given path and `Authorization` header.
pub fn connect_with(port: u16, path: &str, self_id: &str, auth: Option<&str>) -> Result<FakeOneBot, Refused> {
    let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request().map_err(|_| 0u16)?;
    let headers = req.headers_mut();
    headers.insert("X-Self-ID", HeaderValue::from_str(self_id).map_err(|_| 0u16)?);
    headers.insert("X-Client-Role", HeaderValue::from_static("Universal"));
    headers.insert("User-Agent", HeaderValue::from_static("OneBot/11"));
    if let Some(a) = auth {
        headers.insert("Authorization", HeaderValue::from_str(a).map_err(|_| 0u16)?);
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|_| 0u16)?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|_| 0u16)?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).map_err(|_| 0u16)?;
    let ws = match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => ws,
        Err(HandshakeError::Failure(WsError::Http(resp))) => return Err(resp.status().as_u16()),
        Err(_) => return Err(0),
    };
    // Short reads from now on, so the thread can also send what tests queue.
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(10))).map_err(|_| 0u16)?;
    let state: Shared =
        Arc::new((Mutex::new(State { next_message_id: 1000, ..State::default() }), Condvar::new()));
    let raw = ws.get_ref().try_clone().ok();
    let (outbox, rx) = channel();
    let thread = {
        let state = state.clone();
        let self_id = self_id.to_owned();
        std::thread::spawn(move || serve(ws, rx, &state, &self_id))
    };
    let fake = FakeOneBot { self_id: self_id.to_owned(), state, outbox, thread: Some(thread), raw };
    fake.push_event(json!({"time": now(), "self_id": fake.id(), "post_type": "meta_event",
        "meta_event_type": "lifecycle", "sub_type": "connect"}));
    Ok(fake)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl FakeOneBot {
    fn id(&self) -> i64 {
        self.self_id.parse().unwrap_or(0)
    }

    /// Sends an event; a message event is also kept for `get_msg`.
    pub fn push_event(&self, event: Value) {
        if event["post_type"] == "message"
            && let Some(id) = event["message_id"].as_i64()
        {
            lock(&self.state).messages.insert(id, event.clone());
        }
        let _ = self.outbox.send(Message::text(event.to_string()));
    }

    /// Sends a raw text frame (to test what the server drops).
    pub fn push_raw(&self, text: &str) {
        let _ = self.outbox.send(Message::text(text.to_owned()));
    }

    /// A private message event from `user_id`.
    pub fn private_message(&self, user_id: i64, message_id: i64, message: Value) -> Value {
        json!({"time": now(), "self_id": self.id(), "post_type": "message", "message_type": "private",
            "sub_type": "friend", "message_id": message_id, "user_id": user_id, "message": message,
            "raw_message": "", "font": 0, "sender": {"user_id": user_id, "nickname": format!("nick{user_id}")}})
    }

    /// A group message event from `user_id` in `group_id`.
    pub fn group_message(&self, group_id: i64, user_id: i64, message_id: i64, message: Value) -> Value {
        json!({"time": now(), "self_id": self.id(), "post_type": "message", "message_type": "group",
            "sub_type": "normal", "message_id": message_id, "group_id": group_id, "user_id": user_id,
            "anonymous": null, "message": message, "raw_message": "", "font": 0,
            "sender": {"user_id": user_id, "nickname": format!("nick{user_id}"), "card": "", "role": "member"}})
    }

    /// Answers calls with `f` first (`None`: the default answer).
    pub fn set_responder(&self, f: impl FnMut(&str, &Value) -> Option<Value> + Send + 'static) {
        lock(&self.state).responder = Some(Box::new(f));
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// The calls of one action so far.
    pub fn calls_of(&self, action: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.action == action).collect()
    }

    /// Waits until `pred` holds for the calls so far (true) or `timeout` passes (false).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Call]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.state);
        loop {
            if pred(&st.calls) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.state.1.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Waits for the first call of `action` (after `skip` of them) and returns it.
    pub fn wait_call(&self, action: &str, skip: usize, timeout: Duration) -> Option<Call> {
        let ok = self.wait_for(timeout, |calls| calls.iter().filter(|c| c.action == action).count() > skip);
        ok.then(|| self.calls_of(action).into_iter().nth(skip)).flatten()
    }

    /// Waits until the connection has ended (the server closed it).
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.state);
        while !st.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.state.1.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Breaks the connection at once (an abrupt TCP close, as a crashed implementation).
    pub fn abort(&self) {
        if let Some(raw) = &self.raw {
            let _ = raw.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Closes the connection (a Close frame, as NapCat does on shutdown) and waits for
    /// the thread.
    pub fn close(mut self) {
        let _ = self.outbox.send(Message::Close(None));
        self.wait_closed(Duration::from_secs(5));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeOneBot {
    fn drop(&mut self) {
        let _ = self.outbox.send(Message::Close(None));
    }
}

/// The fake's thread: sends what is queued, answers calls, until the connection ends.
fn serve(
    mut ws: tungstenite::WebSocket<TcpStream>,
    outbox: Receiver<Message>,
    state: &Shared,
    self_id: &str,
) {
    'conn: loop {
        loop {
            match outbox.try_recv() {
                Ok(Message::Close(_)) => {
                    let _ = ws.close(None);
                    // Drive the close handshake until the server closes the socket.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < deadline {
                        match ws.read() {
                            Err(WsError::Io(e)) if is_timeout(&e) => {}
                            Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    break 'conn;
                }
                Ok(m) => {
                    if ws.send(m).is_err() {
                        break 'conn;
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break 'conn,
            }
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                let Some(action) = v["action"].as_str() else { continue };
                let call =
                    Call { action: action.to_owned(), params: v["params"].clone(), echo: v["echo"].clone() };
                let mut answer = answer(state, self_id, &call);
                answer["echo"] = call.echo.clone();
                {
                    let mut st = lock(state);
                    st.calls.push(call);
                    state.1.notify_all();
                }
                if ws.send(Message::text(answer.to_string())).is_err() {
                    break;
                }
            }
            Ok(Message::Ping(_)) => {
                // tungstenite queued the Pong; send it now.
                let _ = ws.flush();
            }
            Ok(_) => {}
            Err(WsError::Io(e)) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    let mut st = lock(state);
    st.closed = true;
    state.1.notify_all();
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

fn ok(data: Value) -> Value {
    json!({"status": "ok", "retcode": 0, "data": data, "message": "", "wording": ""})
}

fn failed(retcode: i64, message: &str) -> Value {
    json!({"status": "failed", "retcode": retcode, "data": null, "message": message, "wording": message})
}

/// The responder's answer, else NapCat's default shapes.
fn answer(state: &Shared, self_id: &str, call: &Call) -> Value {
    let mut responder = lock(state).responder.take();
    let custom = responder.as_mut().and_then(|f| f(&call.action, &call.params));
    let mut st = lock(state);
    if st.responder.is_none() {
        st.responder = responder;
    }
    if let Some(a) = custom {
        return a;
    }
    let p = &call.params;
    let user = p["user_id"].as_i64().unwrap_or(0);
    match call.action.as_str() {
        "send_private_msg"
        | "send_group_msg"
        | "send_msg"
        | "send_group_forward_msg"
        | "send_private_forward_msg" => {
            st.next_message_id += 1;
            ok(json!({"message_id": st.next_message_id}))
        }
        "get_msg" => match p["message_id"].as_i64().and_then(|id| st.messages.get(&id)) {
            Some(e) => ok(
                json!({"time": e["time"], "message_type": e["message_type"], "message_id": e["message_id"],
                "real_id": e["message_id"], "sender": e["sender"], "message": e["message"]}),
            ),
            None => failed(100, "消息不存在"),
        },
        "get_group_member_info" => ok(json!({"group_id": p["group_id"], "user_id": user,
            "nickname": format!("nick{user}"), "card": format!("card{user}"), "role": "member"})),
        "get_stranger_info" => {
            ok(json!({"user_id": user, "nickname": format!("nick{user}"), "sex": "unknown", "age": 0}))
        }
        "get_login_info" => ok(json!({"user_id": self_id.parse::<i64>().unwrap_or(0), "nickname": "bot"})),
        _ => failed(1404, "不支持的Api"),
    }
}
