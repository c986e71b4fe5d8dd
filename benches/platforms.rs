//! IM platforms benchmark (issue 11): what a Telegram bot and a OneBot v11 bot cost the
//! server at idle, and what an inbound message adds over a web chat to the same model.
//! Every figure is printed next to a baseline measured in the same run, on the same server.
//!
//! 1. **Idle RSS**: the server's `VmRSS` (`/proc/<pid>/status`) after a settling time with
//!    no bots (baseline), then after the same settling time with one Telegram bot
//!    long-polling a fake Bot API, then with one OneBot bot too, a fake implementation
//!    connected over the reverse WebSocket. Target: under 12 MB with both bots running.
//!    `RssAnon` and `RssFile` are printed beside it: most of `RssFile` is the binary's own
//!    pages (shared and reclaimable), so `anon` is what the bots really cost. Every stage is
//!    after the admin login and with the fake model connected as the provider. The fake Bot
//!    API is plain HTTP: against api.telegram.org the adapter's TLS adds to these figures.
//! 2. **Inbound latency**: with a fake OpenAI-compatible model that answers at once, rounds
//!    alternate (their order rotating) between
//!    - webchat (baseline): `POST /api/v1/chat` with `Accept: application/json` and
//!      `enable_streaming: false`, from writing the request to the end of the answer's body;
//!    - Telegram: a private message put into the fake's `getUpdates` while the bot's long
//!      poll is parked there, until its `sendMessage` has arrived at the fake (the adapter's
//!      `sendChatAction` before it is part of the time);
//!    - OneBot: a private message event written to the socket, until the
//!      `send_private_msg` call has arrived at the fake.
//!
//!    Each round uses a fresh session / chat / user id, so no history grows and no per-chat
//!    limit (the profile's rate limit, Telegram's one send a second per chat) applies; rounds
//!    are `BENCH_GAP_MS` apart so that the Telegram adapter's global pacing (25 sends a
//!    second) never delays a send. Medians, p90 and the difference inbound − webchat are
//!    printed (target: at most 5 ms).
//!
//! The fakes follow platforms reference §4: the Telegram fake is a small HTTP/1.1 server
//! (keep-alive, a thread per connection) answering `getMe`, `deleteWebhook`, `getUpdates`
//! (returns pending updates at once, else holds up to `timeout` seconds and returns `[]`),
//! `sendMessage` and `sendChatAction` (`true` for any other method, counted); the OneBot
//! fake is a tungstenite client connecting to `/ws` with `X-Self-ID`, `X-Client-Role:
//! Universal` and `Authorization: Bearer`, answering `get_login_info` and the send calls
//! with `{"status":"ok","retcode":0,"data":{"message_id":n},"echo":<echo>}`. Every wait is
//! bounded and says what it waited for when it gives up.
//!
//! Run: `cargo bench --bench platforms` (the release binary, a fresh data folder).
//! Knobs: `BENCH_ROUNDS` (rounds per path, default 50), `BENCH_WARMUP` (unrecorded rounds
//! per path, default 5), `BENCH_SETTLE_SECS` (idle time before each RSS reading, default
//! 5), `BENCH_GAP_MS` (pause between rounds, default 50), `ASTRBOT_BENCH_BIN` (another
//! build of the binary under the same load).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Error as WsError, Message};

const PASSWORD: &str = "bench-password-1";
const TG_TOKEN: &str = "123456789:AAbench-token_value";
const WS_TOKEN: &str = "bench-ws-token";
/// The OneBot account's QQ number (`X-Self-ID`).
const SELF_ID: i64 = 10001;
/// What the fake model answers; every reply checked contains it.
const ANSWER: &str = "pong from the fake model";
/// The longest any single wait of the bench may take.
const WAIT: Duration = Duration::from_secs(15);
/// Socket read/write timeout of every connection the bench or its fakes hold (beyond the
/// longest long poll the fake Telegram holds).
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Request bodies the fakes accept, and connections each fake serves at once.
const MAX_BODY: usize = 1 << 20;
const MAX_CONNS: usize = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}"))
        }
        _ => default,
    }
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 server side, shared by the fake model and the fake Bot API.

struct Request {
    method: String,
    /// Path and query, as sent.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn wants_close(&self) -> bool {
        self.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"))
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads one request (`None` at a clean end of the connection); bodies by Content-Length
/// or chunked, at most `MAX_BODY`.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad("bad request line"));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the head"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if headers.len() >= 100 {
            return Err(bad("too many headers"));
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut req = Request { method, target, headers, body: Vec::new() };
    if req.header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        req.body = read_chunked(r)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        req.body = vec![0; len];
        r.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| bad("bad chunk size"))?;
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(bad("body too large"));
        }
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        line.clear();
        r.read_line(&mut line)?; // the CRLF after the chunk
    }
}

fn write_response(w: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

/// Serves `handle` on a loopback port: a thread per connection (at most `MAX_CONNS`),
/// requests answered in turn on each keep-alive connection.
fn serve_http<S: Send + Sync + 'static>(
    name: &'static str,
    state: Arc<S>,
    handle: fn(&S, &Request, &mut TcpStream) -> std::io::Result<()>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind the {name}: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("the {name}'s address: {e}"));
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if open.load(Ordering::SeqCst) >= MAX_CONNS {
                    eprintln!("{name}: more than {MAX_CONNS} connections at once; one refused");
                    continue;
                }
                open.fetch_add(1, Ordering::SeqCst);
                let (state, open) = (state.clone(), open.clone());
                let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
                    if let Err(e) = serve_conn(conn, &*state, handle)
                        && !matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                        )
                    {
                        eprintln!("{name}: connection ended: {e}");
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(e) = spawned {
                    eprintln!("{name}: cannot start a connection thread: {e}");
                }
            }
        })
        .unwrap_or_else(|e| panic!("start the {name}: {e}"));
    addr
}

fn serve_conn<S>(
    conn: TcpStream,
    state: &S,
    handle: fn(&S, &Request, &mut TcpStream) -> std::io::Result<()>,
) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_request(&mut reader)? {
        handle(state, &req, &mut writer)?;
        if req.wants_close() {
            break;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The fake model: an OpenAI-compatible chat completion, answered at once.

fn fake_model() -> SocketAddr {
    serve_http("fake-model", Arc::new(()), |_, req, w| {
        if req.method != "POST" || !req.target.ends_with("/chat/completions") {
            let body = json!({"error": {"message": format!("no route {}", req.target)}});
            return write_response(w, 404, "application/json", body.to_string().as_bytes());
        }
        let stream = serde_json::from_slice::<Value>(&req.body).is_ok_and(|v| v["stream"] == true);
        if !stream {
            let body = json!({"id": "cmpl-bench", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}});
            return write_response(w, 200, "application/json", body.to_string().as_bytes());
        }
        // A streaming call (not expected with the settings used here): the answer in one delta.
        let mut body = String::new();
        for data in [
            json!({"choices": [{"index": 0, "delta": {"content": ANSWER}, "finish_reason": null}]})
                .to_string(),
            json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5}}).to_string(),
            "[DONE]".to_owned(),
        ] {
            body.push_str(&format!("data: {data}\n\n"));
        }
        write_response(w, 200, "text/event-stream", body.as_bytes())
    })
}

// ---------------------------------------------------------------------------------------
// The fake Telegram Bot API.

#[derive(Default)]
struct TgState {
    next_update_id: i64,
    /// Updates not yet confirmed (an offset above their id confirms them).
    pending: VecDeque<Value>,
    /// `getUpdates` calls parked, waiting for an update.
    parked: usize,
    /// `sendMessage` by chat id: when it had fully arrived, and its text.
    sent: HashMap<String, (Instant, String)>,
    /// Calls by method (lower case), unknown ones included.
    calls: BTreeMap<String, usize>,
    next_message_id: i64,
}

struct TgShared {
    state: Mutex<TgState>,
    changed: Condvar,
}

struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<TgShared>,
}

impl FakeTelegram {
    fn start() -> FakeTelegram {
        let shared = Arc::new(TgShared {
            state: Mutex::new(TgState { next_update_id: 1, next_message_id: 1, ..TgState::default() }),
            changed: Condvar::new(),
        });
        let addr = serve_http("fake-telegram", shared.clone(), tg_handle);
        FakeTelegram { addr, shared }
    }

    /// Waits until `pred` holds on the state; false after `timeout`.
    fn wait(&self, timeout: Duration, pred: impl Fn(&TgState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        while !pred(&st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.shared.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Queues a private text message from `chat` (user id = chat id) and wakes a parked poll.
    fn inject_private(&self, chat: i64, text: &str) {
        let mut st = lock(&self.shared.state);
        let id = st.next_update_id;
        st.next_update_id += 1;
        let message_id = st.next_message_id;
        st.next_message_id += 1;
        let user =
            json!({"id": chat, "is_bot": false, "first_name": "Bench", "username": format!("u{chat}")});
        st.pending.push_back(json!({"update_id": id, "message": {
            "message_id": message_id, "date": unix_now(), "text": text, "from": user,
            "chat": {"id": chat, "type": "private", "first_name": "Bench", "username": format!("u{chat}")}}}));
        self.shared.changed.notify_all();
    }

    fn sent_to(&self, chat: i64) -> Option<(Instant, String)> {
        lock(&self.shared.state).sent.get(&chat.to_string()).cloned()
    }

    fn calls(&self) -> BTreeMap<String, usize> {
        lock(&self.shared.state).calls.clone()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Bot API call's parameters: the query string, then a JSON or form body.
fn tg_params(req: &Request) -> Map<String, Value> {
    let mut params = Map::new();
    let mut form = |text: &str| {
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(percent_decode(k), Value::String(percent_decode(v)));
        }
    };
    if let Some((_, query)) = req.target.split_once('?') {
        form(query);
    }
    let content_type = req.header("content-type").unwrap_or("").to_ascii_lowercase();
    if content_type.contains("json") {
        if let Ok(Value::Object(body)) = serde_json::from_slice(&req.body) {
            params.extend(body);
        }
    } else if content_type.contains("x-www-form-urlencoded") {
        form(&String::from_utf8_lossy(&req.body));
    }
    params
}

/// A parameter as text (numbers and strings alike).
fn param_str(p: &Map<String, Value>, name: &str) -> String {
    match p.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn param_i64(p: &Map<String, Value>, name: &str) -> Option<i64> {
    match p.get(name) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

fn tg_handle(shared: &TgShared, req: &Request, w: &mut TcpStream) -> std::io::Result<()> {
    let ok = |w: &mut TcpStream, result: Value| {
        write_response(
            w,
            200,
            "application/json",
            json!({"ok": true, "result": result}).to_string().as_bytes(),
        )
    };
    let path = req.target.split('?').next().unwrap_or("");
    let Some((token, method)) = path.strip_prefix("/bot").and_then(|rest| rest.split_once('/')) else {
        let body = json!({"ok": false, "error_code": 404, "description": "Not Found"});
        return write_response(w, 404, "application/json", body.to_string().as_bytes());
    };
    if token != TG_TOKEN {
        let body = json!({"ok": false, "error_code": 401, "description": "Unauthorized"});
        return write_response(w, 401, "application/json", body.to_string().as_bytes());
    }
    let method = method.to_ascii_lowercase();
    let params = tg_params(req);
    *lock(&shared.state).calls.entry(method.clone()).or_default() += 1;
    match method.as_str() {
        "getme" => ok(
            w,
            json!({"id": 123456789, "is_bot": true, "first_name": "Bench", "username": "astr_bench_bot",
                "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false}),
        ),
        "getupdates" => {
            let offset = param_i64(&params, "offset").unwrap_or(0);
            let hold = Duration::from_secs(param_i64(&params, "timeout").unwrap_or(0).clamp(0, 50) as u64);
            let limit = param_i64(&params, "limit").unwrap_or(100).clamp(1, 100) as usize;
            let deadline = Instant::now() + hold;
            let mut st = lock(&shared.state);
            st.pending.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            let mut parked = false;
            while st.pending.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if !parked {
                    parked = true;
                    st.parked += 1;
                    shared.changed.notify_all();
                }
                st = shared.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
            }
            if parked {
                st.parked -= 1;
            }
            let batch: Vec<Value> = st.pending.iter().take(limit).cloned().collect();
            drop(st);
            ok(w, Value::Array(batch))
        }
        "sendmessage" => {
            let chat = param_str(&params, "chat_id");
            let text = param_str(&params, "text");
            let message_id = {
                let mut st = lock(&shared.state);
                st.sent.insert(chat.clone(), (Instant::now(), text.clone()));
                st.next_message_id += 1;
                shared.changed.notify_all();
                st.next_message_id
            };
            let chat_id = chat.parse::<i64>().map_or(Value::String(chat), Value::from);
            ok(
                w,
                json!({"message_id": message_id, "date": unix_now(), "text": text,
                    "chat": {"id": chat_id, "type": "private"},
                    "from": {"id": 123456789, "is_bot": true, "first_name": "Bench", "username": "astr_bench_bot"}}),
            )
        }
        // deleteWebhook, sendChatAction, setMyCommands and anything else: done.
        _ => ok(w, json!(true)),
    }
}

// ---------------------------------------------------------------------------------------
// The fake OneBot v11 implementation (NapCat's side of the reverse WebSocket).

#[derive(Default)]
struct ObState {
    /// When each private message event (by user id) was written to the socket.
    pushed: HashMap<i64, Instant>,
    /// `send_private_msg` by user id: when the call had arrived, and its text.
    sent: HashMap<i64, (Instant, String)>,
    /// Calls by action.
    calls: BTreeMap<String, usize>,
    /// Why the connection ended, once it has.
    ended: Option<String>,
}

struct ObShared {
    state: Mutex<ObState>,
    changed: Condvar,
}

struct FakeOneBot {
    shared: Arc<ObShared>,
    /// Events to write, with the user id whose push time is recorded.
    outbox: Sender<(Value, Option<i64>)>,
    next_message_id: AtomicUsize,
}

impl FakeOneBot {
    /// Connects to the server's reverse WebSocket as account `SELF_ID`, retrying until the
    /// adapter listens or `WAIT` passes.
    fn connect(port: u16) -> FakeOneBot {
        let deadline = Instant::now() + WAIT;
        let ws = loop {
            match ob_handshake(port) {
                Ok(ws) => break ws,
                // Not listening yet: the adapter starts on its own thread.
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    panic!("the fake OneBot cannot connect to 127.0.0.1:{port}/ws within {WAIT:?}: {e}")
                }
            }
        };
        let shared = Arc::new(ObShared { state: Mutex::new(ObState::default()), changed: Condvar::new() });
        let (outbox, rx) = channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("fake-onebot".into())
            .spawn(move || {
                let why = ob_serve(ws, &rx, &thread_shared);
                let mut st = lock(&thread_shared.state);
                st.ended = Some(why);
                thread_shared.changed.notify_all();
            })
            .unwrap_or_else(|e| panic!("start the fake OneBot's thread: {e}"));
        let fake = FakeOneBot { shared, outbox, next_message_id: AtomicUsize::new(5000) };
        fake.push(
            json!({"time": unix_now(), "self_id": SELF_ID, "post_type": "meta_event",
                "meta_event_type": "lifecycle", "sub_type": "connect"}),
            None,
        );
        fake
    }

    fn push(&self, event: Value, user: Option<i64>) {
        if self.outbox.send((event, user)).is_err() {
            panic!("the fake OneBot's connection has ended: {}", self.ended().unwrap_or_default());
        }
    }

    /// Pushes a private text message event from `user`.
    fn push_private(&self, user: i64, text: &str) {
        let message_id = self.next_message_id.fetch_add(1, Ordering::SeqCst);
        let event = json!({"time": unix_now(), "self_id": SELF_ID, "post_type": "message",
            "message_type": "private", "sub_type": "friend", "message_id": message_id, "user_id": user,
            "message": [{"type": "text", "data": {"text": text}}], "raw_message": text, "font": 0,
            "sender": {"user_id": user, "nickname": format!("u{user}"), "sex": "unknown", "age": 0}});
        self.push(event, Some(user));
    }

    fn wait(&self, timeout: Duration, pred: impl Fn(&ObState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        while !pred(&st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.shared.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    fn ended(&self) -> Option<String> {
        lock(&self.shared.state).ended.clone()
    }

    fn calls(&self) -> BTreeMap<String, usize> {
        lock(&self.shared.state).calls.clone()
    }
}

fn ob_handshake(port: u16) -> Result<tungstenite::WebSocket<TcpStream>, String> {
    let mut req = format!("ws://127.0.0.1:{port}/ws").into_client_request().map_err(|e| e.to_string())?;
    let headers = req.headers_mut();
    headers.insert("X-Self-ID", HeaderValue::from(SELF_ID));
    headers.insert("X-Client-Role", HeaderValue::from_static("Universal"));
    headers.insert("User-Agent", HeaderValue::from_static("OneBot/11"));
    let auth = HeaderValue::from_str(&format!("Bearer {WS_TOKEN}")).map_err(|e| e.to_string())?;
    headers.insert("Authorization", auth);
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let (ws, _) = tungstenite::client::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(WsError::Http(resp)) => {
            format!("handshake refused with HTTP {}", resp.status())
        }
        other => format!("handshake failed: {other}"),
    })?;
    // Short reads from now on, so the one thread also writes what is queued. The times
    // measured are taken when a frame is written and when one is read, not when queued.
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(5))).map_err(|e| e.to_string())?;
    Ok(ws)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// The fake's one thread: writes queued events, answers API calls; returns why it ended.
fn ob_serve(
    mut ws: tungstenite::WebSocket<TcpStream>,
    outbox: &Receiver<(Value, Option<i64>)>,
    shared: &ObShared,
) -> String {
    let mut message_id = 1_000_000i64;
    loop {
        loop {
            match outbox.try_recv() {
                Ok((event, user)) => {
                    if let Some(user) = user {
                        lock(&shared.state).pushed.insert(user, Instant::now());
                    }
                    if let Err(e) = ws.send(Message::text(event.to_string())) {
                        return format!("cannot write an event: {e}");
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return "the bench dropped the fake".into(),
            }
        }
        let frame = match ws.read() {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(c)) => return format!("the server closed the socket ({c:?})"),
            Ok(_) => {
                // A ping: tungstenite queued the pong; send it now.
                let _ = ws.flush();
                continue;
            }
            Err(WsError::Io(e)) if is_timeout(&e) => continue,
            Err(e) => return format!("read failed: {e}"),
        };
        let arrived = Instant::now();
        let Ok(call) = serde_json::from_str::<Value>(frame.as_str()) else { continue };
        let Some(action) = call["action"].as_str() else { continue };
        let params = &call["params"];
        let data = match action {
            "get_login_info" => Some(json!({"user_id": SELF_ID, "nickname": "bench"})),
            "send_private_msg" | "send_group_msg" | "send_msg" => {
                message_id += 1;
                Some(json!({"message_id": message_id}))
            }
            "get_stranger_info" => {
                let user = params["user_id"].clone();
                Some(json!({"user_id": user, "nickname": format!("u{user}"), "sex": "unknown", "age": 0}))
            }
            _ => None,
        };
        {
            let mut st = lock(&shared.state);
            *st.calls.entry(action.to_owned()).or_default() += 1;
            if action == "send_private_msg"
                && let Some(user) = param_i64(params.as_object().unwrap_or(&Map::new()), "user_id")
            {
                st.sent.insert(user, (arrived, segments_text(&params["message"])));
            }
            shared.changed.notify_all();
        }
        let mut answer = match data {
            Some(data) => json!({"status": "ok", "retcode": 0, "data": data}),
            None => json!({"status": "failed", "retcode": 1404, "data": null}),
        };
        answer["echo"] = call["echo"].clone();
        if let Err(e) = ws.send(Message::text(answer.to_string())) {
            return format!("cannot answer {action}: {e}");
        }
    }
}

/// The text of a OneBot message: a string, or the `text` segments of an array.
fn segments_text(message: &Value) -> String {
    match message {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["data"]["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
// The server under test and a small client for its API.

/// A running astrbot with a fresh data folder; killed (and the folder removed) on drop,
/// panics included.
struct Astrbot {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    data: PathBuf,
}

impl Astrbot {
    fn start(bin: &str) -> Astrbot {
        let data = std::env::temp_dir().join(format!("astrbot-bench-platforms-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn", "--data"])
            .arg(&data)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ASTRBOT_ADMIN_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut server =
            Astrbot { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), log: Arc::default(), data };
        let log = server.log.clone();
        if let Some(stderr) = stderr {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut l = lock(&log);
                    if l.len() < 10_000 {
                        l.push(line);
                    }
                }
            });
        }
        // The first stdout line, read on a thread so that a silent server cannot hang us.
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            let mut out = stdout.map(BufReader::new);
            let read = out.as_mut().map_or(Ok(0), |o| o.read_line(&mut first));
            let _ = tx.send(read.map(|_| first));
            // Keep reading, so the server never blocks on a full pipe.
            if let Some(o) = out {
                for _ in o.lines().map_while(Result::ok) {}
            }
        });
        let first = match rx.recv_timeout(WAIT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading astrbot's stdout: {e}\nlog:\n{}", server.log_text()),
            Err(_) => {
                panic!("astrbot printed no `listening on` line within {WAIT:?}\nlog:\n{}", server.log_text())
            }
        };
        let addr = first.trim().strip_prefix("listening on http://").unwrap_or_else(|| {
            panic!("unexpected first line from astrbot: {first:?}\nlog:\n{}", server.log_text())
        });
        server.addr = addr.parse().unwrap_or_else(|e| panic!("listen address {addr:?}: {e}"));
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        lock(&self.log).join("\n")
    }

    /// One API call on a fresh connection: (status, JSON body). Panics with the body when
    /// the status is not 200 or the envelope's `status` is not `ok`.
    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let (status, text, _) = http_call(self.addr, method, path, token, body.as_deref(), None)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status == 200 && v["status"] == "ok", "{method} {path}: HTTP {status}: {text}");
        v
    }
}

impl Drop for Astrbot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`); returns the status, the
/// body, and the time from writing the request to having read the whole body.
fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
    accept: Option<&str>,
) -> Result<(u16, String, Duration), String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !token.is_empty() {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(a) = accept {
        req.push_str(&format!("Accept: {a}\r\n"));
    }
    match body {
        Some(b) => {
            req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()))
        }
        None => req.push_str("\r\n"),
    }
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let start = Instant::now();
    w.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("read the status line: {e}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut len, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| format!("read the head: {e}"))? == 0 {
            return Err("connection closed inside the head".into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            line.clear();
            r.read_line(&mut line).map_err(|e| format!("read a chunk size: {e}"))?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(|e| format!("read a chunk: {e}"))?;
            line.clear();
            r.read_line(&mut line).map_err(|e| format!("read a chunk's end: {e}"))?;
        }
        body
    } else if let Some(len) = len {
        let mut body = vec![0; len];
        r.read_exact(&mut body).map_err(|e| format!("read the body: {e}"))?;
        body
    } else {
        let mut body = Vec::new();
        r.read_to_end(&mut body).map_err(|e| format!("read the body: {e}"))?;
        body
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned(), start.elapsed()))
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The server's memory at one moment, from `/proc/<pid>/status` (kB; 0 when unreadable).
/// `file` is mostly the binary's own pages (shared, clean, reclaimable), `anon` what the
/// process allocated.
#[derive(Clone, Copy)]
struct Mem {
    rss: u64,
    anon: u64,
    file: u64,
    peak: u64,
    threads: u64,
}

impl Mem {
    fn of(pid: u32) -> Mem {
        let f = |field| proc_status_kb(pid, field).unwrap_or(0);
        Mem {
            rss: f("VmRSS:"),
            anon: f("RssAnon:"),
            file: f("RssFile:"),
            peak: f("VmHWM:"),
            threads: f("Threads:"),
        }
    }

    fn row(&self, name: &str, base: Option<&Mem>) {
        let delta = base.map_or(String::new(), |b| {
            format!("{:+.2} MB ({:+.2} anon)", mb(self.rss) - mb(b.rss), mb(self.anon) - mb(b.anon))
        });
        println!(
            "  {name:<40} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>8.2}   {delta}",
            mb(self.rss),
            mb(self.anon),
            mb(self.file),
            self.threads,
            mb(self.peak)
        );
    }
}

/// Waits until every bot in `ids` reports `running` in `GET /api/v1/bots`.
fn wait_running(server: &Astrbot, token: &str, ids: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = server.call("GET", "/api/v1/bots", token, None);
        let bots = v["data"]["bots"].as_array().cloned().unwrap_or_default();
        let state =
            |id: &str| bots.iter().find(|b| b["id"] == id).map_or(json!(null), |b| b["state"].clone());
        if ids.iter().all(|id| state(id)["status"] == "running") {
            return;
        }
        if Instant::now() >= deadline {
            let states: Vec<String> = ids.iter().map(|id| format!("{id}: {}", state(id))).collect();
            panic!("bots not running within {WAIT:?}: {}\nlog:\n{}", states.join("; "), server.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// The rounds.

fn webchat_round(server: &Astrbot, token: &str, session: &str) -> Duration {
    let body =
        json!({"username": "bench", "session_id": session, "message": "hi", "enable_streaming": false})
            .to_string();
    let (status, text, took) =
        http_call(server.addr, "POST", "/api/v1/chat", token, Some(&body), Some("application/json"))
            .unwrap_or_else(|e| panic!("webchat round {session}: {e}"));
    assert!(
        status == 200 && text.contains(ANSWER),
        "webchat round {session}: HTTP {status} without the model's answer: {text}"
    );
    took
}

fn telegram_round(server: &Astrbot, tg: &FakeTelegram, chat: i64) -> Duration {
    // The steady state: the message arrives while the bot's long poll is parked.
    if !tg.wait(WAIT, |st| st.parked > 0) {
        panic!("the Telegram bot did not long-poll within {WAIT:?}\nlog:\n{}", server.log_text());
    }
    let t0 = Instant::now();
    tg.inject_private(chat, "hi");
    if !tg.wait(WAIT, |st| st.sent.contains_key(&chat.to_string())) {
        panic!(
            "no sendMessage to chat {chat} within {WAIT:?} (calls so far: {:?})\nlog:\n{}",
            tg.calls(),
            server.log_text()
        );
    }
    let (at, text) = tg.sent_to(chat).unwrap_or_else(|| (t0, String::new()));
    assert!(text.contains(ANSWER), "Telegram reply to chat {chat} is not the model's answer: {text:?}");
    at.saturating_duration_since(t0)
}

fn onebot_round(server: &Astrbot, ob: &FakeOneBot, user: i64) -> Duration {
    ob.push_private(user, "hi");
    let done = ob.wait(WAIT, |st| st.sent.contains_key(&user) || st.ended.is_some());
    let (pushed, sent) = {
        let st = lock(&ob.shared.state);
        (st.pushed.get(&user).copied(), st.sent.get(&user).cloned())
    };
    let (Some(t0), Some((at, text))) = (pushed, sent) else {
        panic!(
            "no send_private_msg to {user} within {WAIT:?} (waited: {done}; connection: {}; calls so far: {:?})\nlog:\n{}",
            ob.ended().unwrap_or_else(|| "open".into()),
            ob.calls(),
            server.log_text()
        );
    };
    assert!(text.contains(ANSWER), "OneBot reply to {user} is not the model's answer: {text:?}");
    at.saturating_duration_since(t0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p` quantile (nearest rank) of `v`, in ms.
fn pct(v: &[Duration], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    ms(v[i])
}

fn main() {
    // `cargo bench` passes `--bench`; there are no arguments to read.
    let rounds = env_num("BENCH_ROUNDS", 50).max(1) as usize;
    let warmup = env_num("BENCH_WARMUP", 5) as usize;
    let settle = Duration::from_secs(env_num("BENCH_SETTLE_SECS", 5));
    let gap = Duration::from_millis(env_num("BENCH_GAP_MS", 50));
    let bin_override = std::env::var("ASTRBOT_BENCH_BIN").ok().filter(|b| !b.is_empty());
    let bin = bin_override.as_deref().unwrap_or(env!("CARGO_BIN_EXE_astrbot"));
    println!(
        "platforms bench: {rounds} rounds per path after {warmup} warm-up, settle {settle:?}, gap {gap:?}"
    );
    println!("binary: {bin}");
    println!("load average before: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());

    let model = fake_model();
    let tg = FakeTelegram::start();
    let server = Astrbot::start(bin);
    let pid = server.pid();
    let login = json!({"username": "astrbot", "password": PASSWORD});
    let v = server.call("POST", "/api/auth/login", "", Some(login));
    let token = v["data"]["token"].as_str().unwrap_or_else(|| panic!("login gave no token: {v}")).to_owned();
    server.call(
        "POST",
        "/api/v1/provider-sources",
        &token,
        Some(json!({"id": "fake", "type": "openai_chat_completion", "key": ["sk-bench"],
            "api_base": format!("http://{model}/v1")})),
    );
    server.call(
        "POST",
        "/api/v1/providers",
        &token,
        Some(json!({"id": "fake/m", "provider_source_id": "fake", "model": "m"})),
    );

    // 1. Idle RSS: no bots, a Telegram bot, then a OneBot bot too, each after `settle`.
    std::thread::sleep(settle);
    let mem_none = Mem::of(pid);

    let tg_bot = json!({"id": "tg", "type": "telegram", "telegram_token": TG_TOKEN,
        "telegram_api_base_url": format!("http://{}/bot", tg.addr),
        "telegram_file_base_url": format!("http://{}/file/bot", tg.addr)});
    server.call("POST", "/api/v1/bots", &token, Some(tg_bot));
    wait_running(&server, &token, &["tg"]);
    if !tg.wait(WAIT, |st| st.parked > 0) {
        panic!("the Telegram bot did not long-poll within {WAIT:?}\nlog:\n{}", server.log_text());
    }
    std::thread::sleep(settle);
    let mem_tg = Mem::of(pid);

    let ws_port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("find a free port: {e}"));
        probe.local_addr().unwrap_or_else(|e| panic!("find a free port: {e}")).port()
    };
    let ob_bot = json!({"id": "qq", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1",
        "ws_reverse_port": ws_port, "ws_reverse_token": WS_TOKEN});
    server.call("POST", "/api/v1/bots", &token, Some(ob_bot));
    wait_running(&server, &token, &["tg", "qq"]);
    let ob = FakeOneBot::connect(ws_port);
    if !ob.wait(WAIT, |st| st.calls.contains_key("get_login_info") || st.ended.is_some())
        || ob.ended().is_some()
    {
        panic!(
            "the OneBot bot made no get_login_info call within {WAIT:?} (connection: {})\nlog:\n{}",
            ob.ended().unwrap_or_else(|| "open".into()),
            server.log_text()
        );
    }
    std::thread::sleep(settle);
    let mem_both = Mem::of(pid);

    // 2. Latency: webchat, Telegram and OneBot rounds, their order rotating each round.
    let mut next_id = 700_000_000i64;
    let mut fresh = || {
        next_id += 1;
        next_id
    };
    let (mut web, mut tele, mut onebot) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..warmup + rounds {
        let record = round >= warmup;
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    let d = webchat_round(&server, &token, &format!("bench-{}", fresh()));
                    if record {
                        web.push(d);
                    }
                }
                1 => {
                    let d = telegram_round(&server, &tg, fresh());
                    if record {
                        tele.push(d);
                    }
                }
                _ => {
                    let d = onebot_round(&server, &ob, fresh());
                    if record {
                        onebot.push(d);
                    }
                }
            }
            std::thread::sleep(gap);
        }
    }
    let mem_after = Mem::of(pid);

    println!();
    println!("server memory in MB (/proc/<pid>/status; idle figures after {settle:?} idle)");
    println!(
        "  {:<40} {:>8} {:>8} {:>8} {:>8} {:>8}   VmRSS over no bots",
        "", "VmRSS", "anon", "file", "threads", "peak"
    );
    mem_none.row("idle, no bots (baseline)", None);
    mem_tg.row("idle, one Telegram bot polling", Some(&mem_none));
    mem_both.row("idle, Telegram + OneBot connected", Some(&mem_none));
    mem_after.row("after the latency rounds", Some(&mem_none));
    println!("  target: VmRSS under 12 MB idle with both bots running");
    println!();
    println!(
        "inbound latency, {rounds} rounds each, fake model answering at once (target: inbound - webchat <= 5 ms at the median)"
    );
    println!("  {:<58} {:>8} {:>8} {:>8} {:>12}", "", "p50 ms", "p90 ms", "max ms", "p50 - web");
    let web_p50 = pct(&web, 0.5);
    for (name, v) in [
        ("webchat POST /api/v1/chat, JSON answer (baseline)", &web),
        ("Telegram: update in getUpdates -> sendMessage at the fake", &tele),
        ("OneBot: event on the socket -> send_private_msg at the fake", &onebot),
    ] {
        println!(
            "  {name:<58} {:>8.2} {:>8.2} {:>8.2} {:>+12.2}",
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 1.0),
            pct(v, 0.5) - web_p50
        );
    }
    println!(
        "  p90 differences: Telegram {:+.2} ms, OneBot {:+.2} ms",
        pct(&tele, 0.9) - pct(&web, 0.9),
        pct(&onebot, 0.9) - pct(&web, 0.9)
    );
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let worst = (pct(&tele, 0.5) - web_p50).max(pct(&onebot, 0.5) - web_p50);
    println!();
    println!(
        "summary: idle VmRSS with both bots {:.2} MB, {:+.2} MB over none (target under 12 MB: {}); \
         inbound over webchat at the median Telegram {:+.2} ms, OneBot {:+.2} ms (target at most 5 ms: {})",
        mb(mem_both.rss),
        mb(mem_both.rss) - mb(mem_none.rss),
        verdict(mem_both.rss > 0 && mem_both.rss < 12 * 1024),
        pct(&tele, 0.5) - web_p50,
        pct(&onebot, 0.5) - web_p50,
        verdict(worst <= 5.0)
    );
    println!();
    println!("fake Telegram calls: {:?}", tg.calls());
    println!("fake OneBot calls: {:?}", ob.calls());
    let log = server.log_text();
    let odd: Vec<&str> =
        log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panic")).collect();
    if !odd.is_empty() {
        println!("server warnings and errors ({} lines, first 20):", odd.len());
        for l in odd.iter().take(20) {
            println!("  {l}");
        }
    }
    drop(ob);
    drop(server);
}
