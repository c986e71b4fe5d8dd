//! HTTP benchmark: the real `astrbot serve` binary against a bare tiny_http server that
//! answers the same JSON, both driven by the same keep-alive client in the same run.
//!
//! Measures authenticated throughput and latency of `GET /api/v1/im/bots` (16 connections,
//! one per client thread, requests back to back), the same for the bare baseline, the
//! startup time on a fresh data folder (median of 5), and the server's RSS before and after
//! load. Run with `cargo bench --bench http`; `BENCH_SECS` overrides the 5 s measurement.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_astrbot");
const PASSWORD: &str = "bench-password-1";
const BODY: &[u8] = br#"{"status":"ok","message":null,"data":{"bot_ids":[]}}"#;
const CONNS: usize = 16;
const BARE_WORKERS: usize = 8;
const WARMUP: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

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
}
