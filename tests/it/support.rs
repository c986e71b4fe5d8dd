//! The harness: starts the real binary on `127.0.0.1:0` with a fresh data folder, reads
//! the bound address from its first line, speaks HTTP/1.1 to it over plain sockets, and
//! prints the server's log when a test fails. Nothing here sleeps to wait for readiness.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const ADMIN_PASSWORD: &str = "test-admin-password";
pub const BIN: &str = env!("CARGO_BIN_EXE_astrbot");

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("astrbot-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    pub data: Arc<TempDir>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Arc::new(TempDir::new()), &[])
    }

    /// Starts the binary on `data` with extra `serve` arguments.
    pub fn start_with(data: Arc<TempDir>, extra: &[&str]) -> Server {
        Server::start_with_env(data, extra, &[])
    }

    /// Starts the binary with extra environment variables (after the harness's own).
    pub fn start_with_env(data: Arc<TempDir>, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_under(data, &[], None, extra, env)
    }

    /// Starts the binary through `wrapper` (e.g. `prlimit --nofile=100:100 --`), as `uid`
    /// when given (the data folder must then belong to it).
    pub fn start_under(
        data: Arc<TempDir>,
        wrapper: &[&str],
        uid: Option<u32>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        if let Some(uid) = uid {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, uid);
        }
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data").arg(data.path()).args(extra);
        cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.env("ASTRBOT_ADMIN_PASSWORD", ADMIN_PASSWORD);
        cmd.envs(env.iter().copied());
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start astrbot");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
        });
        let addr = match first.trim().strip_prefix("listening on http://") {
            Some(a) => a.parse().unwrap(),
            None => {
                let _ = child.wait();
                panic!("server did not start: {first:?}\n{}", log.lock().unwrap());
            }
        };
        Server { addr, child, log, data }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        http(self.addr, method, path, headers, body.map(str::as_bytes))
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", path, headers, None)
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        self.request("POST", path, &[headers, &[("Content-Type", "application/json")]].concat(), Some(body))
    }

    /// A request with an API key (or admin token) as bearer and an optional JSON body.
    pub fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {key}");
        let body = body.map(|b| b.to_string());
        self.request(
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            body.as_deref(),
        )
    }

    /// Logs in as the administrator and returns the admin token.
    pub fn admin_token(&self) -> String {
        let r = self.post(
            "/api/auth/login",
            &[],
            &format!(r#"{{"username":"astrbot","password":"{ADMIN_PASSWORD}"}}"#),
        );
        self.expect(&r, 200);
        r.json()["data"]["token"].as_str().unwrap().to_owned()
    }

    /// Creates a key with the given create body; returns (raw key, key_id).
    pub fn create_key(&self, admin: &str, body: &str) -> (String, String) {
        let r = self.post("/api/v1/api-keys", &[("Authorization", &format!("Bearer {admin}"))], body);
        self.expect(&r, 200);
        let data = &r.json()["data"];
        (data["api_key"].as_str().unwrap().to_owned(), data["key_id"].as_str().unwrap().to_owned())
    }

    /// Asserts a status; on failure prints the response and the server log.
    pub fn expect(&self, r: &Resp, status: u16) {
        assert_eq!(
            r.status,
            status,
            "unexpected status\nresponse: {}\n--- server log ---\n{}",
            r.text(),
            self.log()
        );
    }

    /// Asserts a status and an error envelope with exactly this message.
    pub fn expect_error(&self, r: &Resp, status: u16, message: &str) {
        self.expect(r, status);
        assert_eq!(
            r.json(),
            serde_json::json!({"status": "error", "message": message}),
            "unexpected body\n--- server log ---\n{}",
            self.log()
        );
    }

    /// One row of a table of cases: sends `body` as JSON to `method path` with `key` as
    /// bearer (no credentials when `key` is empty), and asserts the status and that
    /// `expected` is contained in the answer (see [`contains`]). On failure it prints the
    /// request, the status, the whole body and the server log. Returns the response so a
    /// row can assert a header or keep an id.
    #[track_caller]
    pub fn check(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
        status: u16,
        expected: Value,
    ) -> Resp {
        let r = self.send(method, path, key, body.as_ref());
        let matched = serde_json::from_slice(&r.body).is_ok_and(|got: Value| contains(&expected, &got));
        self.assert_answer(&describe(method, path, body.as_ref()), &r, status, &expected, matched);
        r
    }

    /// [`Server::check`] for a refusal: the status and exactly the error envelope
    /// `{"status": "error", "message": message}`, nothing more (a stray `data` fails).
    #[track_caller]
    pub fn check_error(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
        status: u16,
        message: &str,
    ) -> Resp {
        let r = self.send(method, path, key, body.as_ref());
        let expected = serde_json::json!({"status": "error", "message": message});
        let matched = serde_json::from_slice(&r.body).is_ok_and(|got: Value| got == expected);
        self.assert_answer(&describe(method, path, body.as_ref()), &r, status, &expected, matched);
        r
    }

    /// The request of a table row: a bearer only when there is a key, JSON only when there
    /// is a body.
    fn send(&self, method: &str, path: &str, key: &str, body: Option<&Value>) -> Resp {
        let auth = bearer(key);
        let mut headers = Vec::new();
        if !key.is_empty() {
            headers.push(("Authorization", auth.as_str()));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let body = body.map(Value::to_string);
        self.request(method, path, &headers, body.as_deref())
    }

    /// Fails loudly with everything a reader needs to see why a row did not hold.
    #[track_caller]
    fn assert_answer(&self, request: &str, r: &Resp, status: u16, expected: &Value, matched: bool) {
        if r.status == status && matched {
            return;
        }
        panic!(
            "request: {request}\nexpected: {status} {expected}\ngot:      {} {}\n--- server log ---\n{}",
            r.status,
            r.text(),
            self.log()
        );
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log ({}) ---\n{}", self.addr, self.log());
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One request on a new connection, `Connection: close`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        stream.write_all(b).unwrap();
    }
    let mut reader = BufReader::new(stream);
    if method == "HEAD" {
        return read_head(&mut reader);
    }
    read_response(&mut reader)
}

/// Reads a response to HEAD: the head only.
fn read_head<R: BufRead>(r: &mut R) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        match line.trim_end().split_once(':') {
            Some((n, v)) => headers.push((n.trim().to_owned(), v.trim().to_owned())),
            None => break,
        }
    }
    Resp { status, headers, body: Vec::new() }
}

/// Reads one response (Content-Length or chunked) from a buffered stream.
pub fn read_response<R: BufRead>(r: &mut R) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 =
        line.split_whitespace().nth(1).unwrap_or_else(|| panic!("bad status line {line:?}")).parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    let find =
        |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = find("content-length") {
        body.resize(len.parse().unwrap(), 0);
        r.read_exact(&mut body).unwrap();
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Resp { status, headers, body }
}

/// Runs the CLI on a data folder with optional stdin; returns (status, stdout, stderr).
pub fn cli(data: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--data").arg(data);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` every 20 ms for up to `secs` seconds until it returns true.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A request as a failure message shows it: method, path and the JSON body if any.
fn describe(method: &str, path: &str, body: Option<&Value>) -> String {
    match body {
        Some(b) => format!("{method} {path} {b}"),
        None => format!("{method} {path}"),
    }
}

/// Whether `expected` is contained in `actual`: an object needs at least the expected
/// keys, each containing the expected value; an array needs the same length, element by
/// element; anything else must be equal. Tables then state only what a case is about.
pub fn contains(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            e.iter().all(|(k, v)| a.get(k).is_some_and(|got| contains(v, got)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| contains(e, a))
        }
        _ => expected == actual,
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A tiny PNG (1x1) for upload tests.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// A multipart part: field name, file name, content type, bytes.
pub type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// A `multipart/form-data` body of `parts`: (content type header, body).
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "----astrbot-test-boundary";
    let mut body = Vec::new();
    for (field, filename, ctype, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match filename {
            Some(f) => format!("Content-Disposition: form-data; name=\"{field}\"; filename=\"{f}\"\r\n"),
            None => format!("Content-Disposition: form-data; name=\"{field}\"\r\n"),
        };
        body.extend_from_slice(disposition.as_bytes());
        if let Some(ct) = ctype {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Uploads multipart `parts` to `path` with `key` (on a new connection).
pub fn upload(s: &Server, key: &str, path: &str, parts: &[Part<'_>]) -> Resp {
    let (ct, body) = multipart(parts);
    http(s.addr, "POST", path, &[("Authorization", &bearer(key)), ("Content-Type", &ct)], Some(&body))
}

/// Uploads one file to `POST /api/v1/file`; returns its attachment id.
pub fn upload_file(s: &Server, key: &str, name: &str, ctype: Option<&str>, bytes: &[u8]) -> String {
    let r = upload(s, key, "/api/v1/file", &[("file", Some(name), ctype, bytes)]);
    s.expect(&r, 200);
    r.json()["data"]["attachment_id"].as_str().unwrap().to_owned()
}
