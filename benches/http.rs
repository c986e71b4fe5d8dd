//! HTTP benchmark: the real `astrbot serve` binary against a bare tiny_http server that
//! answers the same JSON, both driven by the same keep-alive client in the same run.
//!
//! Measures authenticated throughput and latency of `GET /api/v1/im/bots` (16 connections,
//! one per client thread, requests back to back), the same for the bare baseline, the
//! startup time on a fresh data folder (median of 5), and the server's RSS before and after
//! load. Run with `cargo bench --bench http`; `BENCH_SECS` overrides the 5 s measurement.
//!
//! Then the webhook mirror (issue 9), on the same server, against a local receiver the bench
//! runs (std `TcpListener`, a thread per keep-alive connection, 200 with an empty body to
//! every request, each `webhook-id` recorded per request path, so each key has its own log):
//!
//! - "webhook key vs plain key": the same load with a plain key and with a key that has a
//!   `webhook_url`, alternating plain and webhook for `HOOK_ROUNDS` rounds of half the
//!   measurement time each, so that drift and a noisy neighbour show; after each
//!   webhook round the bench waits (bounded) for the receiver to catch up, so a plain round
//!   never shares the machine with a deliverer still draining. It prints req/s per round, the
//!   ratio webhook/plain of each pair and their median (target >= 0.90; the ratio of the
//!   summed rates is printed beside it), the events received during and after each webhook
//!   round, and the outbox's `pending` and `dropped` from the deliveries route;
//! - "webhook delivery rate": with the load stopped, `RATE_EVENTS` requests with a third
//!   webhook key as fast as the client goes, then events a second delivered from the first to
//!   the last distinct `webhook-id` received (target >= 1,000/s) and the time to drain.
//!
//! Then gzip (AstrBot 4.29's compression of answers of 1 KiB or more): a JSON answer of
//! about 4 KiB (`GET /api/v1/api-keys` with enough keys) with and without
//! `Accept-Encoding: gzip`, alternating for `GZIP_ROUNDS` pairs of half the measurement time,
//! req/s and bytes on the wire of each, and their ratio.
//!
//! Every wait for events is bounded and says how it ended ("timed out after ..."), so a slow
//! or missing engine gives figures, not a hang.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_astrbot");
const PASSWORD: &str = "bench-password-1";
const BODY: &[u8] = br#"{"status":"ok","message":null,"data":{"bot_ids":[]}}"#;
const CONNS: usize = 16;
/// Pairs of rounds with and without gzip.
const GZIP_ROUNDS: usize = 3;
const BARE_WORKERS: usize = 8;
const WARMUP: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Receiver paths: one per webhook key, so each key's events are counted apart.
const ROUNDS_PATH: &str = "/hooks/rounds";
/// Pairs of plain and webhook rounds: this machine's throughput drifts by a quarter from one
/// run of seconds to the next, so one pair decides nothing.
const HOOK_ROUNDS: usize = 5;
const RATE_PATH: &str = "/hooks/rate";
/// Requests (so events) of the delivery-rate phase.
const RATE_EVENTS: usize = 5_000;
/// A wait for events ends when none arrived for `EVENTS_QUIET`, or at its limit.
const EVENTS_QUIET: Duration = Duration::from_secs(5);
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
const RATE_LIMIT: Duration = Duration::from_secs(120);

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("astrbot-bench-{}-{n}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running astrbot; killed (and its data folder removed) on drop, panics included.
struct Astrbot {
    child: Child,
    addr: SocketAddr,
    spawn_to_ready: Duration,
    log: Arc<Mutex<String>>,
    _stdout: BufReader<ChildStdout>,
    // Declared last: dropped after the fields above, and Drop kills the child first anyway.
    _data: TempDir,
}

impl Astrbot {
    fn start() -> Astrbot {
        let data = TempDir::new();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"]).arg(&data.0);
        cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.env("ASTRBOT_ADMIN_PASSWORD", PASSWORD);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let t0 = Instant::now();
        let mut child = cmd.spawn().expect("spawn astrbot");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        // Build the guard before reading, so a failed read still kills the child.
        let mut server = Astrbot {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            spawn_to_ready: Duration::ZERO,
            log: Arc::new(Mutex::new(String::new())),
            _stdout: BufReader::new(stdout),
            _data: data,
        };
        let mut first = String::new();
        server._stdout.read_line(&mut first).expect("read astrbot stdout");
        server.spawn_to_ready = t0.elapsed();
        let sink = server.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = first.trim().strip_prefix("listening on http://").unwrap_or_else(|| {
            panic!("unexpected first line from astrbot: {first:?}\nlog:\n{}", server.log_text())
        });
        server.addr = addr.parse().expect("listen address");
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Astrbot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare tiny_http server answering every request with `BODY`; stopped on drop.
struct Bare {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Bare {
    fn start() -> Bare {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind bare tiny_http"));
        let addr = server.server_addr().to_ip().expect("ip listen address");
        let stop = Arc::new(AtomicBool::new(false));
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap();
        let workers = (0..BARE_WORKERS)
            .map(|_| {
                let (server, stop, header) = (server.clone(), stop.clone(), header.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match server.recv_timeout(Duration::from_millis(100)) {
                            Ok(Some(req)) => {
                                let resp = tiny_http::Response::from_data(BODY).with_header(header.clone());
                                let _ = req.respond(resp);
                            }
                            Ok(None) => {}
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        Bare { addr, stop, workers }
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A minimal HTTP/1.1 keep-alive client connection.
struct Conn {
    r: BufReader<TcpStream>,
    head: Vec<u8>,
    line: String,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    head_len: usize,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn { r: BufReader::with_capacity(16 * 1024, s), head: Vec::new(), line: String::new() })
    }

    /// Sends `req` (a complete request) and reads one response with a Content-Length.
    fn roundtrip(&mut self, req: &[u8], body: &mut Vec<u8>) -> std::io::Result<(u16, usize)> {
        self.r.get_mut().write_all(req)?;
        let mut status = 0u16;
        let mut len: Option<usize> = None;
        let mut head_len = 0;
        self.head.clear();
        loop {
            self.line.clear();
            let n = self.r.read_line(&mut self.line)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            head_len += n;
            let l = self.line.trim_end();
            if status == 0 {
                status = l
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| std::io::Error::other(format!("bad status line {l:?}")))?;
                continue;
            }
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().ok();
            }
        }
        let len = len.ok_or_else(|| std::io::Error::other("response without Content-Length"))?;
        body.resize(len, 0);
        self.r.read_exact(body)?;
        Ok((status, head_len))
    }

    fn call(&mut self, req: &[u8]) -> Reply {
        let mut body = Vec::new();
        let (status, head_len) = self.roundtrip(req, &mut body).expect("request");
        Reply { status, body, head_len }
    }
}

fn request(method: &str, path: &str, auth: Option<&str>, body: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(token) = auth {
        r.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        r.push_str("\r\n");
    }
    r.into_bytes()
}

fn json_field(reply: &Reply, what: &str, field: &str) -> String {
    let text = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, 200, "{what} failed: {text}");
    let v: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON reply");
    v["data"][field].as_str().unwrap_or_else(|| panic!("{what}: no data.{field} in {text}")).to_owned()
}

struct LoadResult {
    requests: usize,
    /// Every answered request, warm-up included: with a webhook key, the events made.
    sent: usize,
    secs: f64,
    lat_ns: Vec<u64>,
    non200: usize,
    bad_body: usize,
    io_errors: usize,
    reconnects: usize,
    slow_over_10ms: usize,
    /// (start offset into the measured window in ms, latency in ms) of requests over 10 ms.
    slow: Vec<(f64, f64)>,
}

impl LoadResult {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_ns.len() as f64 * p).ceil() as usize).clamp(1, self.lat_ns.len()) - 1;
        self.lat_ns[i] as f64 / 1e6
    }
    fn max(&self) -> f64 {
        self.lat_ns.last().map_or(f64::NAN, |&n| n as f64 / 1e6)
    }
    fn mean(&self) -> f64 {
        if self.lat_ns.is_empty() {
            return f64::NAN;
        }
        self.lat_ns.iter().sum::<u64>() as f64 / self.lat_ns.len() as f64 / 1e6
    }
    fn errors(&self) -> usize {
        self.non200 + self.bad_body + self.io_errors
    }
}

#[derive(Default)]
struct ThreadStats {
    lat_ns: Vec<u64>,
    sent: usize,
    non200: usize,
    bad_body: usize,
    io_errors: usize,
    reconnects: usize,
    slow: Vec<(f64, f64)>,
}

/// `CONNS` threads, one keep-alive connection each, back-to-back requests: `WARMUP`
/// unrecorded, then `dur` recorded (requests started inside the window).
fn load(addr: SocketAddr, req: Arc<Vec<u8>>, dur: Duration) -> LoadResult {
    let barrier = Arc::new(Barrier::new(CONNS + 1));
    let start = Arc::new(Mutex::new(None::<Instant>));
    let handles: Vec<_> = (0..CONNS)
        .map(|_| {
            let (barrier, start, req) = (barrier.clone(), start.clone(), req.clone());
            std::thread::spawn(move || {
                let mut st = ThreadStats { lat_ns: Vec::with_capacity(1 << 16), ..Default::default() };
                // No panic before the barrier: a failed connect is retried in the loop.
                let mut conn = Conn::open(addr).ok();
                barrier.wait();
                let t0 = start.lock().unwrap().expect("start time");
                let (measure_from, end) = (t0 + WARMUP, t0 + WARMUP + dur);
                let mut body = Vec::with_capacity(256);
                loop {
                    let before = Instant::now();
                    if before >= end {
                        break;
                    }
                    let recording = before >= measure_from;
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match Conn::open(addr) {
                            Ok(c) => {
                                st.reconnects += 1;
                                conn.insert(c)
                            }
                            Err(_) => {
                                st.io_errors += 1;
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        },
                    };
                    match c.roundtrip(&req, &mut body) {
                        Ok((status, _)) => {
                            st.sent += 1;
                            let ns = before.elapsed().as_nanos() as u64;
                            if recording {
                                st.lat_ns.push(ns);
                                if ns > 10_000_000 {
                                    let at = (before - measure_from).as_secs_f64() * 1e3;
                                    st.slow.push((at, ns as f64 / 1e6));
                                }
                                if status != 200 {
                                    st.non200 += 1;
                                } else if body != BODY {
                                    st.bad_body += 1;
                                }
                            }
                        }
                        Err(_) => {
                            if recording {
                                st.io_errors += 1;
                            }
                            conn = None;
                        }
                    }
                }
                st
            })
        })
        .collect();
    *start.lock().unwrap() = Some(Instant::now());
    barrier.wait();
    let mut all = LoadResult {
        requests: 0,
        sent: 0,
        secs: dur.as_secs_f64(),
        lat_ns: Vec::new(),
        non200: 0,
        bad_body: 0,
        io_errors: 0,
        reconnects: 0,
        slow_over_10ms: 0,
        slow: Vec::new(),
    };
    for h in handles {
        let st = h.join().expect("client thread panicked");
        all.lat_ns.extend(st.lat_ns);
        all.sent += st.sent;
        all.non200 += st.non200;
        all.bad_body += st.bad_body;
        all.io_errors += st.io_errors;
        all.reconnects += st.reconnects;
        all.slow.extend(st.slow);
    }
    all.slow.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.lat_ns.sort_unstable();
    all.requests = all.lat_ns.len();
    all.slow_over_10ms = all.lat_ns.iter().filter(|&&n| n > 10_000_000).count();
    all
}

/// What the receiver saw at one request path, that is from one webhook key.
#[derive(Default)]
struct HookLog {
    /// Requests received, repeated deliveries included.
    requests: usize,
    /// Distinct `webhook-id`s, and when each was first seen, in arrival order.
    ids: HashSet<String>,
    firsts: Vec<Instant>,
    /// Requests without all three Standard Webhooks headers (`webhook-signature` as `v1,...`).
    unsigned: usize,
}

/// Counts of one path at one moment.
#[derive(Clone, Copy, Default)]
struct HookCounts {
    requests: usize,
    distinct: usize,
    unsigned: usize,
}

type HookLogs = Arc<Mutex<HashMap<String, HookLog>>>;

/// The local webhook receiver: 127.0.0.1:0, a thread per connection, HTTP/1.1 keep-alive,
/// 200 with an empty body to every request. Its threads end with the process.
struct Receiver {
    addr: SocketAddr,
    logs: HookLogs,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook receiver");
        let addr = listener.local_addr().expect("receiver address");
        let logs = HookLogs::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let sink = sink.clone();
                        std::thread::spawn(move || {
                            let _ = serve_hooks(stream, &sink);
                        });
                    }
                    // Out of descriptors, say: back off rather than spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver { addr, logs }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn counts(&self, path: &str) -> HookCounts {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.get(path).map_or(HookCounts::default(), |l| HookCounts {
            requests: l.requests,
            distinct: l.ids.len(),
            unsigned: l.unsigned,
        })
    }

    /// When each distinct `webhook-id` at `path` was first seen, in arrival order.
    fn firsts(&self, path: &str) -> Vec<Instant> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.get(path).map_or(Vec::new(), |l| l.firsts.clone())
    }
}

/// One receiver connection: reads requests until the peer closes (or asks to), logs each
/// and answers 200 with an empty body.
fn serve_hooks(stream: TcpStream, logs: &Mutex<HashMap<String, HookLog>>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let at = Instant::now();
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let (mut len, mut chunked, mut close) = (0usize, false, false);
        let (mut id, mut timestamp, mut signature) = (None, false, false);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else { continue };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "webhook-id" => id = Some(value.to_owned()),
                "webhook-timestamp" => timestamp = !value.is_empty(),
                "webhook-signature" => signature = value.starts_with("v1,"),
                _ => {}
            }
        }
        if chunked {
            skip_chunked(&mut r, &mut line)?;
        } else {
            body.resize(len, 0);
            r.read_exact(&mut body)?;
        }
        {
            let mut logs = logs.lock().unwrap_or_else(|e| e.into_inner());
            let log = logs.entry(path).or_default();
            log.requests += 1;
            if !(timestamp && signature && id.is_some()) {
                log.unsigned += 1;
            }
            if let Some(id) = id
                && log.ids.insert(id)
            {
                log.firsts.push(at);
            }
        }
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
        if close {
            return Ok(());
        }
    }
}

/// Reads and discards a chunked body and its trailers.
fn skip_chunked(r: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<()> {
    loop {
        line.clear();
        r.read_line(line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
        if size == 0 {
            loop {
                line.clear();
                if r.read_line(line)? == 0 || line.trim_end().is_empty() {
                    return Ok(());
                }
            }
        }
        std::io::copy(&mut r.by_ref().take(size as u64), &mut std::io::sink())?;
        line.clear();
        r.read_line(line)?;
    }
}

/// Waits until the receiver holds `expected` distinct events at `path`, no new one came
/// for `EVENTS_QUIET`, or `limit` passed; says which, with the time waited.
fn wait_for_events(rx: &Receiver, path: &str, expected: usize, limit: Duration) -> String {
    let t0 = Instant::now();
    let (mut last, mut last_change) = (rx.counts(path).distinct, t0);
    loop {
        let now = Instant::now();
        let distinct = rx.counts(path).distinct;
        if distinct >= expected {
            return format!("all {expected} arrived {:.2} s later", (now - t0).as_secs_f64());
        }
        if distinct != last {
            (last, last_change) = (distinct, now);
        }
        if now - last_change >= EVENTS_QUIET {
            return format!(
                "stopped waiting after {:.1} s: no new event for {} s, {} of {expected} arrived",
                (now - t0).as_secs_f64(),
                EVENTS_QUIET.as_secs(),
                distinct
            );
        }
        if now - t0 >= limit {
            return format!("timed out after {} s: {distinct} of {expected} arrived", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates an API key with the `im` scope (and a `webhook_url`, if given) with the admin
/// token; returns the raw key and its id.
fn create_key(c: &mut Conn, token: &str, name: &str, webhook_url: Option<&str>) -> (String, String) {
    let mut body = serde_json::json!({"name": name, "scopes": ["im"]});
    if let Some(url) = webhook_url {
        body["webhook_url"] = url.into();
    }
    let reply = c.call(&request("POST", "/api/v1/api-keys", Some(token), Some(&body.to_string())));
    let what = format!("create key {name}");
    let key = json_field(&reply, &what, "api_key");
    let key_id = json_field(&reply, &what, "key_id");
    if webhook_url.is_some() {
        json_field(&reply, &what, "webhook_secret");
    }
    (key, key_id)
}

/// `pending` and `dropped` of a key's outbox, from the deliveries route, as a phrase.
fn outbox_state(addr: SocketAddr, token: &str, key_id: &str) -> String {
    let path = format!("/api/v1/api-keys/{key_id}/webhook/deliveries?limit=1");
    let mut body = Vec::new();
    let answer =
        Conn::open(addr).and_then(|mut c| c.roundtrip(&request("GET", &path, Some(token), None), &mut body));
    let text = String::from_utf8_lossy(&body);
    match answer {
        Ok((200, _)) => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match (v["data"]["pending"].as_i64(), v["data"]["dropped"].as_i64()) {
                (Some(pending), Some(dropped)) => format!("outbox pending {pending}, dropped {dropped}"),
                _ => format!("deliveries route: no pending/dropped in {text}"),
            }
        }
        Ok((status, _)) => format!("deliveries route answered {status}: {text}"),
        Err(e) => format!("deliveries route failed: {e}"),
    }
}

/// `n` requests over `CONNS` keep-alive connections, back to back, as fast as they go.
struct Burst {
    elapsed: Duration,
    ok: usize,
    failed: usize,
}

fn burst(addr: SocketAddr, req: Arc<Vec<u8>>, n: usize) -> Burst {
    let barrier = Arc::new(Barrier::new(CONNS + 1));
    let handles: Vec<_> = (0..CONNS)
        .map(|i| {
            let share = n / CONNS + usize::from(i < n % CONNS);
            let (barrier, req) = (barrier.clone(), req.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).ok();
                barrier.wait();
                let (mut ok, mut failed) = (0, 0);
                let mut body = Vec::with_capacity(256);
                for _ in 0..share {
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match Conn::open(addr) {
                            Ok(c) => conn.insert(c),
                            Err(_) => {
                                failed += 1;
                                continue;
                            }
                        },
                    };
                    match c.roundtrip(&req, &mut body) {
                        Ok((200, _)) => ok += 1,
                        Ok(_) => failed += 1,
                        Err(_) => {
                            failed += 1;
                            conn = None;
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    let mut out = Burst { elapsed: Duration::ZERO, ok: 0, failed: 0 };
    for h in handles {
        let (ok, failed) = h.join().expect("burst thread panicked");
        out.ok += ok;
        out.failed += failed;
    }
    out.elapsed = t0.elapsed();
    out
}

/// One webhook round of the "webhook key vs plain key" phase, as seen by the receiver.
struct HookRound {
    /// Events the key made up to the end of this round (requests answered, probe included).
    expected: usize,
    during: usize,
    after: usize,
    drain: String,
    outbox: String,
}

/// req/s of several rounds taken together.
fn rps_of(rounds: &[&LoadResult]) -> f64 {
    let requests: usize = rounds.iter().map(|r| r.requests).sum();
    let secs: f64 = rounds.iter().map(|r| r.secs).sum();
    requests as f64 / secs
}

fn rss_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn threads(pid: u32) -> Option<u64> {
    rss_kb(pid, "Threads:")
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn row(name: &str, r: &LoadResult) {
    println!(
        "{name:<34} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>6}",
        r.rps(),
        r.mean(),
        r.pct(0.50),
        r.pct(0.99),
        r.max(),
        r.errors(),
        r.reconnects
    );
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore libtest-style arguments.
    let secs: f64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    assert!(secs > 0.0 && secs <= 600.0, "BENCH_SECS must be in (0, 600]");
    let dur = Duration::from_secs_f64(secs);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "astrbot HTTP bench: {CONNS} keep-alive connections, {secs} s measured after {WARMUP:?} warm-up, {cpus} CPUs"
    );
    println!("binary: {BIN}");
    let loadavg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned();
    println!("load average before: {}", loadavg());

    // 3. Startup: spawn to the `listening on` line, fresh data folder each time.
    let mut starts = Vec::new();
    for _ in 0..5 {
        let s = Astrbot::start();
        starts.push(s.spawn_to_ready.as_secs_f64() * 1e3);
        drop(s);
    }
    let startup_ms = median(starts.clone());
    println!(
        "startup (fresh data folder: creates the database, argon2-hashes the admin password): {} ms",
        starts.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(", ")
    );

    // 1. The real server: log in, create a key, measure.
    let server = Astrbot::start();
    let pid = server.pid();
    let rss_started = rss_kb(pid, "VmRSS:");
    let mut c = Conn::open(server.addr).expect("connect astrbot");
    let login = format!(r#"{{"username":"astrbot","password":"{PASSWORD}"}}"#);
    let t = Instant::now();
    let token =
        json_field(&c.call(&request("POST", "/api/auth/login", None, Some(&login))), "login", "token");
    let login_ms = t.elapsed().as_secs_f64() * 1e3;
    let key_body = r#"{"name":"bench","scopes":["im"]}"#;
    let key_req = request("POST", "/api/v1/api-keys", Some(&token), Some(key_body));
    let api_key = json_field(&c.call(&key_req), "create api key", "api_key");
    let probe = request("GET", "/api/v1/im/bots", Some(&api_key), None);
    let first = c.call(&probe);
    assert_eq!(first.status, 200, "GET /api/v1/im/bots: {}", String::from_utf8_lossy(&first.body));
    assert_eq!(first.body, BODY, "unexpected body: {}", String::from_utf8_lossy(&first.body));
    let astrbot_head = first.head_len;
    drop(c);
    let rss_idle = rss_kb(pid, "VmRSS:");
    let threads_idle = threads(pid);

    let astrbot = load(server.addr, Arc::new(probe), dur);
    let rss_after = rss_kb(pid, "VmRSS:");
    let hwm_after = rss_kb(pid, "VmHWM:");
    let threads_after = threads(pid);

    // 2. Baseline: bare tiny_http, same JSON, same client, same duration.
    let bare_server = Bare::start();
    let bare_req = request("GET", "/api/v1/im/bots", Some(&api_key), None);
    let mut c = Conn::open(bare_server.addr).expect("connect bare");
    let bare_first = c.call(&bare_req);
    assert_eq!(bare_first.status, 200);
    assert_eq!(bare_first.body, BODY);
    let bare_head = bare_first.head_len;
    drop(c);
    let bare = load(bare_server.addr, Arc::new(bare_req), dur);
    drop(bare_server);

    // 4. Webhook key vs plain key: same server, same load, rounds alternating.
    let receiver = Receiver::start();
    let mut c = Conn::open(server.addr).expect("connect astrbot");
    let (plain_key, _) = create_key(&mut c, &token, "bench-plain", None);
    let (hook_key, hook_key_id) =
        create_key(&mut c, &token, "bench-webhook", Some(&receiver.url(ROUNDS_PATH)));
    let (rate_key, rate_key_id) = create_key(&mut c, &token, "bench-rate", Some(&receiver.url(RATE_PATH)));
    let plain_req = Arc::new(request("GET", "/api/v1/im/bots", Some(&plain_key), None));
    let hook_req = Arc::new(request("GET", "/api/v1/im/bots", Some(&hook_key), None));
    for (name, req) in [("plain key", &plain_req), ("webhook key", &hook_req)] {
        let r = c.call(req);
        assert!(
            r.status == 200 && r.body == BODY,
            "{name}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    drop(c);
    let mut hook_expected = 1; // the probe above
    let mut plain_rounds = Vec::new();
    let mut hook_rounds = Vec::new();
    let mut hook_seen = Vec::new();
    let round_dur = dur / 2;
    for _ in 0..HOOK_ROUNDS {
        plain_rounds.push(load(server.addr, plain_req.clone(), round_dur));
        let before = receiver.counts(ROUNDS_PATH).distinct;
        let hook = load(server.addr, hook_req.clone(), round_dur);
        let at_end = receiver.counts(ROUNDS_PATH).distinct;
        hook_expected += hook.sent;
        // The next plain round must not share the machine with a deliverer still draining.
        let drain = wait_for_events(&receiver, ROUNDS_PATH, hook_expected, DRAIN_LIMIT);
        hook_seen.push(HookRound {
            expected: hook_expected,
            during: at_end - before,
            after: receiver.counts(ROUNDS_PATH).distinct - at_end,
            drain,
            outbox: outbox_state(server.addr, &token, &hook_key_id),
        });
        hook_rounds.push(hook);
    }
    let rounds_final = receiver.counts(ROUNDS_PATH);
    let rounds_outbox = outbox_state(server.addr, &token, &hook_key_id);

    // 5. Delivery rate: with the load stopped, RATE_EVENTS requests with a fresh webhook key
    // as fast as the client goes; events a second from the first to the last one received.
    let rate_req = Arc::new(request("GET", "/api/v1/im/bots", Some(&rate_key), None));
    let rate_t0 = Instant::now();
    let rate_burst = burst(server.addr, rate_req, RATE_EVENTS);
    let rate_sent_at = Instant::now();
    let rate_wait = wait_for_events(&receiver, RATE_PATH, RATE_EVENTS, RATE_LIMIT);
    let rate_firsts = receiver.firsts(RATE_PATH);
    let rate_counts = receiver.counts(RATE_PATH);
    let rate_outbox = outbox_state(server.addr, &token, &rate_key_id);
    let rss_webhooks = rss_kb(pid, "VmRSS:");
    let threads_webhooks = threads(pid);

    // 6. gzip: a JSON answer of about 4 KiB with and without compression, alternating.
    let mut c = Conn::open(server.addr).expect("connect astrbot");
    let list = request("GET", "/api/v1/api-keys", Some(&token), None);
    let mut n = 0;
    while c.call(&list).body.len() < 4096 && n < 100 {
        create_key(&mut c, &token, &format!("bench-gzip-{n}"), None);
        n += 1;
    }
    let plain_list = c.call(&list);
    let mut gz_list = list.clone();
    gz_list.truncate(gz_list.len() - 2);
    gz_list.extend_from_slice(b"Accept-Encoding: gzip\r\n\r\n");
    let packed_list = c.call(&gz_list);
    assert!(packed_list.status == 200 && packed_list.body.len() < plain_list.body.len(), "gzip answer");
    drop(c);
    let (gz_plain, gz_packed) = (Arc::new(list), Arc::new(gz_list));
    let mut identity_rounds = Vec::new();
    let mut gzip_rounds = Vec::new();
    for _ in 0..GZIP_ROUNDS {
        identity_rounds.push(load(server.addr, gz_plain.clone(), round_dur));
        gzip_rounds.push(load(server.addr, gz_packed.clone(), round_dur));
    }

    println!("load average after load runs: {}", loadavg());
    let log = server.log_text();
    drop(server); // kills astrbot and removes its data folder

    println!();
    println!(
        "{:<34} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6}",
        "target (GET /api/v1/im/bots)", "req/s", "mean ms", "p50 ms", "p99 ms", "max ms", "errors", "reconn"
    );
    row("astrbot (Bearer API key)", &astrbot);
    row("bare tiny_http 0.12, 8 workers", &bare);
    println!();
    for (name, r) in [("astrbot", &astrbot), ("bare", &bare)] {
        println!(
            "{name:<8} in flight {:.1} (req/s x mean; {CONNS} = client not starved)  requests {:>7}  non-200 {}  wrong body {}  I/O errors {}  reconnects {}  >10 ms {}  p99.9 {:.3} ms",
            r.rps() * r.mean() / 1e3,
            r.requests,
            r.non200,
            r.bad_body,
            r.io_errors,
            r.reconnects,
            r.slow_over_10ms,
            r.pct(0.999)
        );
    }
    for (name, r) in [("astrbot", &astrbot), ("bare", &bare)] {
        if !r.slow.is_empty() {
            let shown: Vec<String> =
                r.slow.iter().take(20).map(|(at, l)| format!("{l:.1} ms @{:.2} s", at / 1e3)).collect();
            println!("{name} requests over 10 ms (latency @ start in window): {}", shown.join(", "));
        }
    }
    println!("response head bytes: astrbot {astrbot_head}, bare {bare_head}; body {} bytes", BODY.len());
    println!("login (argon2 verify) {login_ms:.1} ms");
    println!(
        "astrbot RSS: after start {}  idle after login+key {}  after load {}  (peak {})  threads idle {} / after load {}",
        mb(rss_started),
        mb(rss_idle),
        mb(rss_after),
        mb(hwm_after),
        threads_idle.map_or("n/a".into(), |t| t.to_string()),
        threads_after.map_or("n/a".into(), |t| t.to_string())
    );
    let odd: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[WARN]") || l.contains("[ERROR]") || l.contains("panic"))
        .collect();
    println!("astrbot stderr: {} lines, {} warn/error lines", log.lines().count(), odd.len());
    for l in odd.iter().take(10) {
        println!("  {l}");
    }

    let ratio = astrbot.rps() / bare.rps();
    println!();
    println!("summary");
    println!(
        "astrbot  GET /api/v1/im/bots (auth)  {CONNS} conns: {:.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
        astrbot.rps(),
        astrbot.pct(0.5),
        astrbot.pct(0.99)
    );
    println!(
        "bare tiny_http same JSON             {CONNS} conns: {:.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
        bare.rps(),
        bare.pct(0.5),
        bare.pct(0.99)
    );
    println!(
        "ratio {ratio:.2}   p99 diff {:+.2} ms   startup {startup_ms:.1} ms (median of 5)   idle RSS {}",
        astrbot.pct(0.99) - bare.pct(0.99),
        mb(rss_idle)
    );
    if ratio < 0.5 {
        println!("NOTE: astrbot throughput is below half of the bare tiny_http baseline");
    }
    if astrbot.pct(0.99) > 10.0 {
        println!("NOTE: astrbot p99 latency is above 10 ms");
    }
    if astrbot.errors() + bare.errors() > 0 {
        println!("NOTE: errors occurred (see counts above)");
    }

    println!();
    println!(
        "webhook key vs plain key (same server, same load; a webhook round waits for the receiver before the next plain round)"
    );
    println!(
        "{:<34} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6}",
        "key (GET /api/v1/im/bots)", "req/s", "mean ms", "p50 ms", "p99 ms", "max ms", "errors", "reconn"
    );
    for (i, (plain, hook)) in plain_rounds.iter().zip(&hook_rounds).enumerate() {
        row(&format!("plain key, round {}", i + 1), plain);
        row(&format!("webhook key, round {}", i + 1), hook);
    }
    for (i, (hook, seen)) in hook_rounds.iter().zip(&hook_seen).enumerate() {
        println!(
            "webhook round {}: {} requests with the key (warm-up included; {} events made so far); receiver got {} during the round, {} after it ({}); {}",
            i + 1,
            hook.sent,
            seen.expected,
            seen.during,
            seen.after,
            seen.drain,
            seen.outbox
        );
    }
    println!(
        "receiver at the end (webhook key): {} requests, {} distinct webhook-ids of {} events made, {} repeats, {} without webhook-id/-timestamp/-signature v1; {}",
        rounds_final.requests,
        rounds_final.distinct,
        hook_expected,
        rounds_final.requests.saturating_sub(rounds_final.distinct),
        rounds_final.unsigned,
        rounds_outbox
    );
    let plain_refs: Vec<&LoadResult> = plain_rounds.iter().collect();
    let hook_refs: Vec<&LoadResult> = hook_rounds.iter().collect();
    let (plain_rps, hook_rps) = (rps_of(&plain_refs), rps_of(&hook_refs));
    let summed_ratio = hook_rps / plain_rps;
    let hook_ratio = median(plain_rounds.iter().zip(&hook_rounds).map(|(p, h)| h.rps() / p.rps()).collect());
    let per_round: Vec<String> = plain_rounds
        .iter()
        .zip(&hook_rounds)
        .enumerate()
        .map(|(i, (p, h))| format!("round {} {:.2}", i + 1, h.rps() / p.rps()))
        .collect();

    println!();
    println!(
        "webhook delivery rate (load stopped; {RATE_EVENTS} requests with a third webhook key, as fast as the client goes)"
    );
    println!(
        "requests: {} answered 200, {} failed, in {:.2} s ({:.0} req/s)",
        rate_burst.ok,
        rate_burst.failed,
        rate_burst.elapsed.as_secs_f64(),
        rate_burst.ok as f64 / rate_burst.elapsed.as_secs_f64()
    );
    println!("wait for the events after the last request: {rate_wait}");
    let got = rate_firsts.len().min(RATE_EVENTS);
    let delivery_rate = if got >= 2 {
        let span = (rate_firsts[got - 1] - rate_firsts[0]).as_secs_f64();
        let rate = (got - 1) as f64 / span;
        println!(
            "delivered: {got} of {RATE_EVENTS} distinct webhook-ids; first {:.3} s after the first request, last {:.3} s after it ({:.3} s after the last request); {:.2} s from the first to the last: {rate:.0} events/s",
            (rate_firsts[0] - rate_t0).as_secs_f64(),
            (rate_firsts[got - 1] - rate_t0).as_secs_f64(),
            rate_firsts[got - 1].saturating_duration_since(rate_sent_at).as_secs_f64(),
            span
        );
        Some(rate)
    } else {
        println!("delivered: {got} of {RATE_EVENTS} distinct webhook-ids: no rate to measure");
        None
    };
    println!(
        "receiver (third key): {} requests, {} repeats, {} without webhook-id/-timestamp/-signature v1; {}",
        rate_counts.requests,
        rate_counts.requests.saturating_sub(rate_counts.distinct),
        rate_counts.unsigned,
        rate_outbox
    );
    println!(
        "astrbot RSS after the webhook phases {}  threads {}",
        mb(rss_webhooks),
        threads_webhooks.map_or("n/a".into(), |t| t.to_string())
    );

    println!();
    println!("webhook summary");
    println!(
        "plain key {plain_rps:.0} req/s, webhook key {hook_rps:.0} req/s ({HOOK_ROUNDS} rounds each): ratio webhook/plain {hook_ratio:.2} (median of {}; summed {summed_ratio:.2}; target >= 0.90)",
        per_round.join(", ")
    );
    match delivery_rate {
        Some(rate) => println!(
            "delivery to the local receiver: {rate:.0} events/s from the first to the {}th distinct webhook-id (target >= 1000)",
            got
        ),
        None => println!(
            "delivery to the local receiver: not measured, {got} of {RATE_EVENTS} events arrived (target >= 1000 events/s)"
        ),
    }

    println!();
    println!(
        "gzip (GET /api/v1/api-keys as the admin: {} bytes of JSON, {} gzipped)",
        plain_list.body.len(),
        packed_list.body.len()
    );
    for (i, (plain, packed)) in identity_rounds.iter().zip(&gzip_rounds).enumerate() {
        row(&format!("identity, round {}", i + 1), plain);
        row(&format!("gzip, round {}", i + 1), packed);
    }
    let identity_refs: Vec<&LoadResult> = identity_rounds.iter().collect();
    let gzip_refs: Vec<&LoadResult> = gzip_rounds.iter().collect();
    let (identity_rps, gzip_rps) = (rps_of(&identity_refs), rps_of(&gzip_refs));
    println!(
        "gzip summary: identity {identity_rps:.0} req/s, gzip {gzip_rps:.0} req/s: ratio {:.2}; bytes per answer {:.2} of identity",
        gzip_rps / identity_rps,
        packed_list.body.len() as f64 / plain_list.body.len() as f64
    );

    if hook_ratio < 0.9 {
        println!("NOTE: webhook key throughput is below 90 % of the plain key's");
    }
    if delivery_rate.is_none_or(|r| r < 1000.0) || got < RATE_EVENTS {
        println!("NOTE: delivery below 1,000 events/s, or not all {RATE_EVENTS} events arrived");
    }
}
