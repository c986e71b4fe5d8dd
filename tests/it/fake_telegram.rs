//! A fake Telegram Bot API server for the Telegram adapter's tests: a threaded HTTP/1.1
//! server on `127.0.0.1:0` (one thread per connection, `Connection: close`), routes
//! `/bot<TOKEN>/<method>` and `/file/bot<TOKEN>/<file_path>` as Telegram does (a wrong
//! token is a 401, an unknown method a 404), and reads parameters from the query string,
//! an urlencoded or JSON body, or a multipart upload (whose file parts it keeps).
//!
//! The test drives it through plain calls: [`FakeTelegram::push`] queues an update that the
//! next `getUpdates` returns (until an offset confirms it), [`FakeTelegram::script`] makes
//! a method answer with an error or close the connection unanswered, [`FakeTelegram::add_file`]
//! registers a file for `getFile` and its download, and [`FakeTelegram::go_away`] /
//! [`FakeTelegram::come_back`] close the port (connections are refused) and open it again.
//! Every call is recorded; [`FakeTelegram::wait_for`] waits on a condvar for a condition on
//! the record, so tests never sleep. A long poll with nothing to give waits up to 2 s.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TOKEN: &str = "123456:ABC-def_ghiJKL";
pub const BOT_ID: i64 = 123456;
pub const BOT_NAME: &str = "astr_test_bot";

/// The longest a `getUpdates` waits for an update.
const POLL_CAP: Duration = Duration::from_secs(2);
const MAX_BODY: usize = 60 * 1024 * 1024;

/// A file part of a multipart call.
#[derive(Debug, Clone)]
pub struct FilePart {
    pub field: String,
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// One call as the fake received it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method as sent (Telegram's are case-insensitive; compare with `is`).
    pub method: String,
    pub params: Value,
    pub files: Vec<FilePart>,
    /// Answered with `ok: true`.
    pub ok: bool,
    /// When the request arrived (calls are recorded when answered).
    pub at: Instant,
}

impl Call {
    pub fn is(&self, method: &str) -> bool {
        self.method.eq_ignore_ascii_case(method)
    }

    /// `chat_id` as a string (a number or `@name`).
    pub fn chat(&self) -> String {
        match &self.params["chat_id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    pub fn text(&self) -> &str {
        self.params["text"].as_str().unwrap_or_default()
    }
}

/// A scripted answer, used once instead of the method's own.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// `{"ok": false, "error_code", "description", "parameters"?: {"retry_after"}}`.
    Error { code: u16, description: String, retry_after: Option<u64> },
    /// The connection is closed without an answer.
    Close,
}

impl Scripted {
    pub fn error(code: u16, description: &str) -> Scripted {
        Scripted::Error { code, description: description.into(), retry_after: None }
    }

    pub fn retry_after(secs: u64) -> Scripted {
        Scripted::Error {
            code: 429,
            description: format!("Too Many Requests: retry after {secs}"),
            retry_after: Some(secs),
        }
    }
}

#[derive(Default)]
struct State {
    /// Updates not yet confirmed, in order.
    updates: VecDeque<Value>,
    next_update_id: i64,
    next_message_id: i64,
    calls: Vec<Call>,
    scripts: HashMap<String, VecDeque<Scripted>>,
    /// file_id → (file_path, bytes).
    files: HashMap<String, (String, Vec<u8>)>,
    downloads: Vec<String>,
    webhook_set: bool,
    /// Incremented when the fake goes away: connections of an older generation are
    /// dropped unanswered.
    generation: u64,
    away: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake; closes its port when dropped.
pub struct FakeTelegram {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl FakeTelegram {
    pub fn start() -> FakeTelegram {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Telegram");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State { next_update_id: 1000, next_message_id: 1, ..State::default() }),
            changed: Condvar::new(),
        });
        let acceptor = spawn_acceptor(shared.clone(), listener, 0);
        FakeTelegram { addr, shared, acceptor: Mutex::new(Some(acceptor)) }
    }

    /// `telegram_api_base_url` for the bot's config.
    pub fn api_base(&self) -> String {
        format!("http://{}/bot", self.addr)
    }

    /// `telegram_file_base_url` for the bot's config.
    pub fn file_base(&self) -> String {
        format!("http://{}/file/bot", self.addr)
    }

    /// Queues an update holding `message`; returns its `update_id`.
    pub fn push(&self, message: Value) -> i64 {
        let mut s = self.shared.lock();
        let id = s.next_update_id;
        s.next_update_id += 1;
        s.updates.push_back(json!({"update_id": id, "message": message}));
        self.shared.changed.notify_all();
        id
    }

    /// Queues a whole update (for ones without a `message`); returns its `update_id`.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let mut s = self.shared.lock();
        let id = s.next_update_id;
        s.next_update_id += 1;
        update["update_id"] = json!(id);
        s.updates.push_back(update);
        self.shared.changed.notify_all();
        id
    }

    /// Makes the next call of `method` answer `answer` (scripts queue up per method).
    pub fn script(&self, method: &str, answer: Scripted) {
        self.shared.lock().scripts.entry(method.to_ascii_lowercase()).or_default().push_back(answer);
    }

    /// Registers a file for `getFile(file_id)` and its download at `file_path`.
    pub fn add_file(&self, file_id: &str, file_path: &str, data: &[u8]) {
        self.shared.lock().files.insert(file_id.into(), (file_path.into(), data.to_vec()));
    }

    /// Sets a webhook: `getUpdates` answers 409 until `deleteWebhook`.
    pub fn set_webhook(&self) {
        self.shared.lock().webhook_set = true;
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The calls of `method`.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.is(method)).collect()
    }

    /// What the bot sent successfully (`send*` except chat actions), in order.
    pub fn sent(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.ok && c.method.to_ascii_lowercase().starts_with("send") && !c.is("sendChatAction"))
            .collect()
    }

    /// File paths downloaded.
    pub fn downloads(&self) -> Vec<String> {
        self.shared.lock().downloads.clone()
    }

    /// Whether unconfirmed updates remain.
    pub fn pending(&self) -> usize {
        self.shared.lock().updates.len()
    }

    /// Waits until `pred` holds for the calls so far, up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Call]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.lock();
        loop {
            if pred(&s.calls) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.shared.changed.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Waits for `n` successful sends; returns them (panics with what came otherwise).
    pub fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<Call> {
        let ok =
            self.wait_for(timeout, |calls| calls.iter().filter(|c| c.ok && is_send(&c.method)).count() >= n);
        let sent = self.sent();
        assert!(ok, "expected {n} sends, got {}: {sent:#?}", sent.len());
        sent
    }

    /// Closes the port: connections are refused, and calls in flight are dropped
    /// unanswered, until [`FakeTelegram::come_back`].
    pub fn go_away(&self) {
        {
            let mut s = self.shared.lock();
            s.away = true;
            s.generation += 1;
            self.shared.changed.notify_all();
        }
        // Wake `accept` so that the loop sees the new generation and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.acceptor.lock().unwrap().take() {
            let _ = handle.join();
        }
    }

    /// Opens the same port again.
    pub fn come_back(&self) {
        let listener = TcpListener::bind(self.addr).expect("bind the fake Telegram's port again");
        let generation = {
            let mut s = self.shared.lock();
            s.away = false;
            s.generation
        };
        *self.acceptor.lock().unwrap() = Some(spawn_acceptor(self.shared.clone(), listener, generation));
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        if !self.shared.lock().away {
            self.go_away();
        }
    }
}

fn is_send(method: &str) -> bool {
    let m = method.to_ascii_lowercase();
    m.starts_with("send") && m != "sendchataction"
}

fn spawn_acceptor(shared: Arc<Shared>, listener: TcpListener, generation: u64) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if shared.lock().generation != generation {
                break; // dropping the listener closes the port
            }
            let Ok(conn) = conn else { continue };
            let shared = shared.clone();
            std::thread::spawn(move || {
                let _ = serve(&shared, conn, generation);
            });
        }
    })
}

/// A parsed request.
struct Request {
    path: String,
    query: String,
    content_type: String,
    body: Vec<u8>,
}

fn read_request(conn: &TcpStream) -> std::io::Result<Option<Request>> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let target = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target, String::new()),
    };
    let (mut length, mut chunked, mut content_type) = (0usize, false, String::new());
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        let Some((name, value)) = line.trim_end().split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-type" => content_type = value.to_owned(),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 || body.len() + size > MAX_BODY {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else {
        body.resize(length.min(MAX_BODY), 0);
        reader.read_exact(&mut body)?;
    }
    Ok(Some(Request { path, query, content_type, body }))
}

fn serve(shared: &Shared, mut conn: TcpStream, generation: u64) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let Some(req) = read_request(&conn)? else { return Ok(()) };
    let arrived = Instant::now();
    if let Some(rest) = req.path.strip_prefix("/file/bot") {
        let (token, file_path) = rest.split_once('/').unwrap_or((rest, ""));
        let found = {
            let mut s = shared.lock();
            let found = s.files.values().find(|(p, _)| p == file_path).map(|(_, d)| d.clone());
            if token == TOKEN && found.is_some() {
                s.downloads.push(file_path.to_owned());
            }
            found
        };
        return match found {
            Some(data) if token == TOKEN => respond(&mut conn, 200, "application/octet-stream", &data),
            _ => respond(&mut conn, 404, "text/plain", b"Not Found"),
        };
    }
    let Some(rest) = req.path.strip_prefix("/bot") else {
        return respond(&mut conn, 404, "text/plain", b"Not Found");
    };
    let (token, method) = rest.rsplit_once('/').unwrap_or((rest, ""));
    if token != TOKEN {
        let body = json!({"ok": false, "error_code": 401, "description": "Unauthorized"});
        let mut s = shared.lock();
        let call =
            Call { method: method.to_owned(), params: json!({}), files: vec![], ok: false, at: arrived };
        s.calls.push(call);
        shared.changed.notify_all();
        drop(s);
        return respond(&mut conn, 401, "application/json", body.to_string().as_bytes());
    }
    let (params, files) = parameters(&req);
    let answer = answer(shared, method, &params, &files, generation);
    let ok = matches!(&answer, Some((200, _)));
    {
        let mut s = shared.lock();
        s.calls.push(Call { method: method.to_owned(), params, files, ok, at: arrived });
        shared.changed.notify_all();
    }
    match answer {
        Some((status, body)) => respond(&mut conn, status, "application/json", body.to_string().as_bytes()),
        None => Ok(()), // dropped unanswered
    }
}

fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn error(code: u16, description: &str) -> Option<(u16, Value)> {
    Some((code, json!({"ok": false, "error_code": code, "description": description})))
}

fn ok(result: Value) -> Option<(u16, Value)> {
    Some((200, json!({"ok": true, "result": result})))
}

/// The answer to a call, `None` to close the connection unanswered.
fn answer(
    shared: &Shared,
    method: &str,
    p: &Value,
    files: &[FilePart],
    generation: u64,
) -> Option<(u16, Value)> {
    let lower = method.to_ascii_lowercase();
    let mut s = shared.lock();
    if let Some(scripted) = s.scripts.get_mut(&lower).and_then(VecDeque::pop_front) {
        return match scripted {
            Scripted::Close => None,
            Scripted::Error { code, description, retry_after } => {
                let mut body = json!({"ok": false, "error_code": code, "description": description});
                if let Some(r) = retry_after {
                    body["parameters"] = json!({"retry_after": r});
                }
                Some((code, body))
            }
        };
    }
    let message = |s: &mut State, extra: Value| {
        let id = s.next_message_id;
        s.next_message_id += 1;
        let mut m = json!({"message_id": id, "date": 1_735_689_600, "chat": {"id": p["chat_id"]},
            "from": {"id": BOT_ID, "is_bot": true, "first_name": "Test", "username": BOT_NAME}});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        m
    };
    match lower.as_str() {
        "getme" => ok(json!({"id": BOT_ID, "is_bot": true, "first_name": "Test", "username": BOT_NAME})),
        "deletewebhook" => {
            s.webhook_set = false;
            ok(json!(true))
        }
        "getupdates" => {
            if s.webhook_set {
                return error(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                );
            }
            let offset = p["offset"].as_i64().unwrap_or(0);
            if offset > 0 {
                s.updates.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            }
            let wait = Duration::from_secs(p["timeout"].as_u64().unwrap_or(0)).min(POLL_CAP);
            let deadline = Instant::now() + wait;
            while s.updates.is_empty() && !s.away {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                s = shared.changed.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
            }
            if s.generation != generation {
                return None; // went away meanwhile: the connection just drops
            }
            let limit = p["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
            ok(Value::Array(s.updates.iter().take(limit).cloned().collect()))
        }
        "sendmessage" => {
            let text = p["text"].as_str().unwrap_or_default();
            if p["chat_id"].is_null() {
                return error(400, "Bad Request: chat_id is empty");
            }
            if text.trim().is_empty() {
                return error(400, "Bad Request: message text is empty");
            }
            if text.encode_utf16().count() > 4096 {
                return error(400, "Bad Request: message is too long");
            }
            ok(message(&mut s, json!({"text": text})))
        }
        "sendchataction" | "setmycommands" | "deletemycommands" | "setmessagereaction"
        | "sendmessagedraft" => ok(json!(true)),
        "getmycommands" => ok(json!([])),
        "sendphoto" | "senddocument" | "sendvoice" | "sendvideo" | "sendanimation" => {
            let field = &lower["send".len()..];
            let uploaded = files.iter().any(|f| f.field == field);
            if !uploaded && !p[field].is_string() {
                return error(400, &format!("Bad Request: there is no {field} in the request"));
            }
            let file_id = format!("sent-{}", s.next_message_id);
            ok(message(&mut s, json!({field: {"file_id": file_id}})))
        }
        "getfile" => {
            let id = p["file_id"].as_str().unwrap_or_default();
            match s.files.get(id) {
                Some((path, data)) => ok(json!({"file_id": id, "file_unique_id": format!("u-{id}"),
                    "file_size": data.len(), "file_path": path})),
                None => error(400, "Bad Request: invalid file_id"),
            }
        }
        _ => error(404, "Not Found: method not found"),
    }
}

/// Fields that are JSON in a form encoding, and fields that are integers.
const JSON_FIELDS: [&str; 4] = ["reply_parameters", "allowed_updates", "commands", "entities"];
const INT_FIELDS: [&str; 6] = ["chat_id", "message_thread_id", "offset", "timeout", "limit", "message_id"];

/// The call's parameters from the query and the body, in whatever encoding.
fn parameters(req: &Request) -> (Value, Vec<FilePart>) {
    let mut params = serde_json::Map::new();
    let mut files = Vec::new();
    let mut form = url_pairs(&req.query);
    let ct = req.content_type.to_ascii_lowercase();
    if ct.starts_with("application/json") {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&req.body) {
            params.extend(m);
        }
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        form.extend(url_pairs(&String::from_utf8_lossy(&req.body)));
    } else if ct.starts_with("multipart/form-data") {
        let boundary = req.content_type.split("boundary=").nth(1).unwrap_or_default().trim_matches('"');
        for part in multipart_parts(&req.body, boundary) {
            match part.filename {
                Some(filename) => files.push(FilePart {
                    field: part.name,
                    filename,
                    content_type: part.content_type,
                    data: part.data,
                }),
                None => form.push((part.name, String::from_utf8_lossy(&part.data).into_owned())),
            }
        }
    }
    for (k, v) in form {
        let value = if JSON_FIELDS.contains(&k.as_str()) {
            serde_json::from_str(&v).unwrap_or(Value::String(v))
        } else if INT_FIELDS.contains(&k.as_str()) {
            v.parse::<i64>().map(Value::from).unwrap_or(Value::String(v))
        } else {
            Value::String(v)
        };
        params.insert(k, value);
    }
    (Value::Object(params), files)
}

fn url_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Part {
    name: String,
    filename: Option<String>,
    content_type: String,
    data: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let Some(mut pos) = find(body, &delimiter, 0) else { return parts };
    loop {
        pos += delimiter.len();
        if body[pos..].starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(body, b"\r\n\r\n", pos) else { break };
        let head = String::from_utf8_lossy(&body[pos..head_end]).into_owned();
        let data_start = head_end + 4;
        let mut end_marker = b"\r\n".to_vec();
        end_marker.extend_from_slice(&delimiter);
        let Some(data_end) = find(body, &end_marker, data_start) else { break };
        // `Content-Disposition: form-data; name="photo"; filename="x.png"`
        let param = |name: &str| {
            let disposition =
                head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
            disposition.split(';').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_owned())
            })
        };
        let content_type = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-type")))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        parts.push(Part {
            name: param("name").unwrap_or_default(),
            filename: param("filename"),
            content_type,
            data: body[data_start..data_end].to_vec(),
        });
        pos = data_end + 2;
    }
    parts
}
