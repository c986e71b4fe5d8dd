//! Abuse bench: the real `astrbot serve` binary under a low open-files limit, attacked for
//! `ABUSE_SECS` (default 600) by a mix of what the transport is hardened against, while a
//! prober asks `/healthz` once a second on a new connection and a sampler reads the
//! server's RSS.
//!
//! The server runs under `prlimit --nofile=256:256`, so it caps connections at 192 (64
//! descriptors stay free). The attackers, each looping until the deadline against
//! 127.0.0.1 only:
//!
//! 1. slow loris: 40 connections dribbling a request head a byte every 1-2 s (408 at 10 s);
//! 2. endless header lines: 2 connections writing `X-A: aaaa...` without end (431, cut);
//! 3. huge heads: 150 header fields, or 200 lines of 800 bytes (431);
//! 4. slow bodies: 40 logins announcing 2000 bytes and sending one every ~5 s (408);
//! 5. framing tricks: conflicting, unparseable (with a smuggled request), signed and huge
//!    `Content-Length`s, `Transfer-Encoding` other than `chunked`, both headers, a signed
//!    chunk size (400, 413, 501), each on a new connection;
//! 6. TLS bytes: the start of a ClientHello on the plain port (400 at once);
//! 7. fd exhaustion: up to 400 keep-alive connections, each served one `/healthz` and then
//!    held idle for 15 s, beyond the cap: new connections close the longest-idle ones.
//!
//! The non-idle connections (loris, slow bodies and the rest, about 85) stay well under the
//! cap: when every connection holds a request in progress, new ones get 503 by design.
//!
//! Requirements, checked at the end (exit status 1 when one fails): every probe answered 200
//! within 100 ms (connect to full response), RSS under 64 MB throughout (sampled each second,
//! and the kernel's high-water mark), every attacker saw the answers it expects and no other
//! status, and the process alive and serving at the end. Run with `cargo bench --bench abuse`;
//! `ABUSE_SECS` sets the duration, `ABUSE_PAUSE_MS` a pause between the attempts of the
//! attackers that open a connection per attempt (none by default: back to back).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_astrbot");
const PASSWORD: &str = "abuse-bench-password-1";
const NOFILE: u64 = 256;
const EXPECTED_CAP: u64 = NOFILE - 64;
const PROBE_LIMIT: Duration = Duration::from_millis(100);
const RSS_LIMIT_KB: u64 = 64 * 1024;
const LORIS_CONNS: usize = 40;
const SLOW_BODY_CONNS: usize = 40;
const ENDLESS_CONNS: usize = 2;
const HOLDERS_MAX: usize = 400;
const HOLD: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause in ms between two attempts of the attackers that open a connection per attempt
/// (`ABUSE_PAUSE_MS`); 0, back to back, by default.
static PAUSE_MS: AtomicU64 = AtomicU64::new(0);
const LOG_TAIL: usize = 200;

// ---------------------------------------------------------------------------------------
// The server

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("astrbot-abuse-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server's stderr: the last lines, and counts.
#[derive(Default)]
struct Log {
    tail: VecDeque<String>,
    lines: u64,
    warn: u64,
    error: u64,
    /// The first few warning and error lines, for the summary.
    notable: Vec<String>,
    cap_line: Option<String>,
}

impl Log {
    fn push(&mut self, line: String) {
        self.lines += 1;
        let warn = line.contains("[WARN]");
        let error = line.contains("[ERROR]") || line.contains("panic");
        self.warn += u64::from(warn);
        self.error += u64::from(error);
        if line.contains("open-files limit allows") && self.cap_line.is_none() {
            self.cap_line = Some(line.clone());
        }
        if (warn || error) && self.notable.len() < 10 {
            self.notable.push(line.clone());
        }
        if self.tail.len() == LOG_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// A running astrbot under `prlimit`; killed (and its data folder removed) on drop.
struct Astrbot {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    _data: TempDir,
}

impl Astrbot {
    fn start() -> Astrbot {
        let data = TempDir::new();
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={NOFILE}:{NOFILE}")).arg("--").arg(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"]).arg(&data.0);
        cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.env("ASTRBOT_ADMIN_PASSWORD", PASSWORD);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn prlimit astrbot (is util-linux's prlimit installed?)");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        // Build the guard before reading, so a failed read still kills the child.
        let mut server = Astrbot { child, addr: "0.0.0.0:0".parse().unwrap(), log, _data: data };
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read astrbot stdout");
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest);
        });
        let Some(addr) = first.trim().strip_prefix("listening on http://") else {
            std::thread::sleep(Duration::from_millis(200));
            panic!("unexpected first line from astrbot: {first:?}\nlog:\n{}", server.log_tail(50));
        };
        server.addr = addr.parse().expect("listen address");
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let skip = log.tail.len().saturating_sub(n);
        log.tail.iter().skip(skip).map(|l| format!("  {l}\n")).collect()
    }
}

impl Drop for Astrbot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// User plus system CPU time of a process, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

// ---------------------------------------------------------------------------------------
// HTTP bits

/// The length of a complete response at the start of `buf` (head plus Content-Length body).
fn response_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let body = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + body).then_some(head_end + body)
}

/// The status code of the response at the start of `buf`, once its status line is in.
fn status_of(buf: &[u8]) -> Option<u16> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return Some(0);
    }
    Some(parts.next()?.parse().unwrap_or(0))
}

/// What an I/O error on an attack connection means, as a short label.
fn io_label(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "no answer in time".into(),
        ErrorKind::ConnectionReset => "reset".into(),
        ErrorKind::BrokenPipe => "broken pipe".into(),
        ErrorKind::UnexpectedEof => "closed without an answer".into(),
        _ => format!("error: {e}"),
    }
}

/// Reads one complete response into `buf` (cleared first). Ok(status).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16, String> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(len) = response_len(buf) {
            let status = status_of(buf).unwrap_or(0);
            buf.truncate(len);
            return Ok(status);
        }
        match s.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err("closed without an answer".into()),
            Ok(0) => return Err("truncated answer".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_label(&e)),
        }
    }
}

/// Reads what the peer still sends until it closes; Err when it does not close in `within`.
fn read_to_close(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    let until = Instant::now() + within;
    let mut rest = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("not closed".into());
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            Ok(0) => return Ok(rest),
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(rest),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("not closed".into());
            }
            Err(e) => return Err(io_label(&e)),
        }
    }
}

fn pause() {
    let ms = PAUSE_MS.load(Ordering::Relaxed);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// xorshift64*, for jitter.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng((nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from + 1))
    }
}

// ---------------------------------------------------------------------------------------
// Attackers

/// What one attacker did.
#[derive(Default)]
struct Tally {
    opened: u64,
    connect_errors: u64,
    bytes: u64,
    /// Outcome (an HTTP status or an I/O label, per case where there are cases) to count.
    seen: BTreeMap<String, u64>,
    expected: u64,
    /// Answers with a status the attacker does not expect (a failure).
    wrong: u64,
    wrong_samples: Vec<String>,
    /// Outcomes that are not answers (resets, connection refused): noted, not failures.
    other: u64,
    /// Seconds from connect to the answer: min and max.
    answer_secs: Option<(f64, f64)>,
    /// Attacker-specific counters.
    extra: BTreeMap<&'static str, u64>,
}

struct Attacker {
    name: &'static str,
    expects: &'static str,
    tally: Mutex<Tally>,
}

/// Where a result came in, relative to the start of the run, for the wrong-answer samples.
static T0: Mutex<Option<Instant>> = Mutex::new(None);

fn at() -> f64 {
    T0.lock().unwrap().map_or(0.0, |t| t.elapsed().as_secs_f64())
}

impl Attacker {
    fn new(name: &'static str, expects: &'static str) -> Arc<Attacker> {
        Arc::new(Attacker { name, expects, tally: Mutex::new(Tally::default()) })
    }

    fn t(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn opened(&self) {
        self.t().opened += 1;
    }

    fn connect_failed(&self, e: &std::io::Error) {
        let mut t = self.t();
        t.connect_errors += 1;
        *t.seen.entry(format!("connect: {}", e.kind())).or_default() += 1;
    }

    fn sent(&self, n: usize) {
        self.t().bytes += n as u64;
    }

    fn add(&self, key: &'static str, n: u64) {
        *self.t().extra.entry(key).or_default() += n;
    }

    fn max(&self, key: &'static str, n: u64) {
        let mut t = self.t();
        let e = t.extra.entry(key).or_default();
        *e = (*e).max(n);
    }

    /// An HTTP answer with `status` for `case` (empty when the attacker has one case),
    /// `opened` ago; `ok` when it is the status the attacker expects.
    fn answer(&self, case: &str, status: u16, ok: bool, since_open: Duration) {
        let mut t = self.t();
        let key = if case.is_empty() { status.to_string() } else { format!("{case}: {status}") };
        *t.seen.entry(key.clone()).or_default() += 1;
        if ok {
            t.expected += 1;
        } else {
            t.wrong += 1;
            if t.wrong_samples.len() < 5 {
                t.wrong_samples.push(format!("{key} @{:.1} s", at()));
            }
        }
        let s = since_open.as_secs_f64();
        t.answer_secs = Some(t.answer_secs.map_or((s, s), |(lo, hi)| (lo.min(s), hi.max(s))));
    }

    /// An outcome that is no answer (reset, closed silently, timed out).
    fn other(&self, case: &str, what: &str) {
        let mut t = self.t();
        let key = if case.is_empty() { what.to_owned() } else { format!("{case}: {what}") };
        *t.seen.entry(key).or_default() += 1;
        t.other += 1;
    }

    /// A finding that is a failure whatever the status (a smuggled request answered).
    fn wrong(&self, what: String) {
        let mut t = self.t();
        *t.seen.entry(what.clone()).or_default() += 1;
        t.wrong += 1;
        if t.wrong_samples.len() < 5 {
            t.wrong_samples.push(format!("{what} @{:.1} s", at()));
        }
    }
}

/// A connection that sends a prefix at once and then one byte at a time, never finishing.
struct Drip {
    s: TcpStream,
    opened: Instant,
    next: Instant,
    sent: u64,
    rx: Vec<u8>,
}

/// Keeps `n` connections dripping: `prefix` at once, then a byte of `filler` every
/// `every_ms` (jittered); each answer is read, tallied (`want` is the expected status) and
/// the connection replaced by a new one.
#[allow(clippy::too_many_arguments)]
fn drip(
    a: &Attacker,
    addr: SocketAddr,
    n: usize,
    prefix: &'static [u8],
    filler: &'static [u8],
    every_ms: (u64, u64),
    want: u16,
    stop: &AtomicBool,
) {
    let mut rng = Rng::new(n as u64 + want as u64 + every_ms.0);
    let mut conns: Vec<Option<Drip>> = (0..n).map(|_| None).collect();
    // Spread the first connections over one interval, so replacements are spread too.
    let mut not_before: Vec<Instant> = (0..n).map(|_| Instant::now() + rng.millis(0, every_ms.1)).collect();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (i, slot) in conns.iter_mut().enumerate() {
            if slot.is_none() {
                if now < not_before[i] {
                    continue;
                }
                match connect(addr).and_then(|s| s.set_nonblocking(true).map(|_| s)) {
                    Ok(mut s) => {
                        a.opened();
                        if !prefix.is_empty() {
                            // A few hundred bytes into an empty socket buffer: never blocks.
                            let _ = s.set_nonblocking(false);
                            if s.write_all(prefix).is_err() {
                                a.other("", "write failed");
                                continue;
                            }
                            let _ = s.set_nonblocking(true);
                            a.sent(prefix.len());
                        }
                        *slot = Some(Drip { s, opened: now, next: now, sent: 0, rx: Vec::new() });
                    }
                    Err(e) => {
                        a.connect_failed(&e);
                        not_before[i] = now + Duration::from_millis(200);
                        continue;
                    }
                }
            }
            let c = slot.as_mut().unwrap();
            let mut done = false;
            match c.s.read(&mut chunk) {
                Ok(0) => {
                    match status_of(&c.rx) {
                        Some(st) => a.answer("", st, st == want, c.opened.elapsed()),
                        None => a.other("", "closed without an answer"),
                    }
                    done = true;
                }
                Ok(k) => {
                    c.rx.extend_from_slice(&chunk[..k]);
                    if let Some(st) = status_of(&c.rx) {
                        a.answer("", st, st == want, c.opened.elapsed());
                        done = true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    match status_of(&c.rx) {
                        Some(st) => a.answer("", st, st == want, c.opened.elapsed()),
                        None => a.other("", &io_label(&e)),
                    }
                    done = true;
                }
            }
            if !done && now >= c.next {
                let b = filler[(c.sent % filler.len() as u64) as usize];
                match c.s.write(&[b]) {
                    Ok(1) => {
                        c.sent += 1;
                        a.sent(1);
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => {
                        // The answer may already be in: the next read picks it up.
                        if c.rx.is_empty() && !matches!(e.kind(), ErrorKind::BrokenPipe) {
                            a.other("", &io_label(&e));
                            done = true;
                        }
                    }
                }
                c.next = now + rng.millis(every_ms.0, every_ms.1);
            }
            if done {
                *slot = None;
                not_before[i] = now;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A head without end: the request line, then `X-A: aaaa...` in 64 KiB writes until the
/// server cuts the connection (a write fails). Expects a 431 first; after it the server
/// reads and drops what still comes for a while (its lingering close), then closes.
fn endless(a: &Attacker, addr: SocketAddr, stop: &AtomicBool) {
    let block = vec![b'a'; 64 << 10];
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut s = match connect(addr) {
            Ok(s) => s,
            Err(e) => {
                a.connect_failed(&e);
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        a.opened();
        let opened = Instant::now();
        if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ").is_err()
            || s.set_nonblocking(true).is_err()
        {
            a.other("", "write failed");
            continue;
        }
        let mut rx = Vec::new();
        let mut answered: Option<(Instant, u64)> = None;
        let (mut sent, mut eof, mut cut) = (0u64, false, false);
        // Bounded: a server that never cuts the line is a finding, not a hang.
        while opened.elapsed() < Duration::from_secs(30) && !stop.load(Ordering::Relaxed) {
            if !eof {
                match s.read(&mut chunk) {
                    Ok(0) => eof = true,
                    Ok(k) => rx.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        cut = true;
                        break;
                    }
                }
                if answered.is_none()
                    && let Some(st) = status_of(&rx)
                {
                    a.answer("", st, st == 431, opened.elapsed());
                    a.max("most bytes sent before the answer", sent);
                    answered = Some((Instant::now(), sent));
                }
            }
            match s.write(&block) {
                Ok(k) => {
                    sent += k as u64;
                    a.sent(k);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
        if !cut && stop.load(Ordering::Relaxed) {
            break;
        }
        match answered {
            Some((when, before)) => {
                a.max("most bytes sent after the answer", sent - before);
                a.max("most ms from the answer to the cut", when.elapsed().as_millis() as u64);
            }
            None => match status_of(&rx) {
                Some(st) => a.answer("", st, st == 431, opened.elapsed()),
                None if cut => a.other("", "cut without an answer"),
                None => a.other("", "not cut within 30 s"),
            },
        }
        if cut {
            a.add("connections cut", 1);
        } else if answered.is_some() {
            a.other("", "answered but not cut within 30 s");
        }
        pause();
    }
}

/// Sends `req` on a new connection, reads the answer, checks that the connection closes
/// after it (unless `keep` is set) and that nothing else is answered.
fn one_shot(a: &Attacker, addr: SocketAddr, case: &str, req: &[u8], want: u16, keep: bool) {
    let mut s = match connect(addr) {
        Ok(s) => s,
        Err(e) => {
            a.connect_failed(&e);
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
    };
    a.opened();
    let opened = Instant::now();
    // The server may answer and stop reading before all is sent: the answer still counts.
    let write = s.write_all(req);
    if write.is_ok() {
        a.sent(req.len());
    }
    let mut buf = Vec::new();
    match read_response(&mut s, &mut buf) {
        Ok(st) => {
            a.answer(case, st, st == want, opened.elapsed());
            if !keep {
                match read_to_close(&mut s, Duration::from_secs(5)) {
                    Ok(rest) if rest.windows(9).any(|w| w == b"HTTP/1.1 ") => {
                        a.wrong(format!("{case}: a second answer (smuggled request served)"));
                    }
                    Ok(_) => {}
                    Err(e) => a.other(case, &e),
                }
            }
        }
        Err(e) => match write {
            Err(we) => a.other(case, &format!("{e} (write: {})", io_label(&we))),
            Ok(()) => a.other(case, &e),
        },
    }
}

fn huge_heads(a: &Attacker, addr: SocketAddr, stop: &AtomicBool) {
    let mut fields = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        fields.push_str(&format!("X-H{i}: v\r\n"));
    }
    fields.push_str("\r\n");
    let mut lines = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        lines.push_str(&format!("X-L{i:03}: {}\r\n", "b".repeat(800 - 10)));
    }
    lines.push_str("\r\n");
    let cases = [("150 fields", fields), ("200 lines of 800 bytes", lines)];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let (case, req) = &cases[i % cases.len()];
        one_shot(a, addr, case, req.as_bytes(), 431, false);
        i += 1;
        pause();
    }
}

const FRAMING: &[(&str, &str, u16)] = &[
    (
        "two Content-Lengths",
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
        400,
    ),
    (
        "Content-Length: abc + smuggled GET",
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "Content-Length: +5",
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        400,
    ),
    (
        "Content-Length: 2^64-1",
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nab",
        400,
    ),
    (
        "Content-Length: 10^12 on login",
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n{",
        413,
    ),
    (
        "Transfer-Encoding: gzip",
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "Transfer-Encoding + Content-Length",
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk size +5",
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
];

fn framing(a: &Attacker, addr: SocketAddr, stop: &AtomicBool) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let (case, req, want) = FRAMING[i % FRAMING.len()];
        one_shot(a, addr, case, req.as_bytes(), want, false);
        i += 1;
        pause();
    }
}

/// The first bytes of a TLS 1.2/1.3 ClientHello, as `curl https://` sends them.
const HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x9a\x1e\x8b\x01\x02\x03\x04\x05\x06\x07";

fn tls(a: &Attacker, addr: SocketAddr, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        one_shot(a, addr, "", HELLO, 400, false);
        pause();
    }
}

/// Cycles of: open up to `HOLDERS_MAX` connections, each served one keep-alive `/healthz`,
/// hold them idle until `HOLD` has passed since the cycle began, count how many the server
/// closed (evicted for newer connections beyond its cap), drop them all.
fn holders(a: &Attacker, addr: SocketAddr, stop: &AtomicBool) {
    let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let mut held: Vec<TcpStream> = Vec::with_capacity(HOLDERS_MAX);
        while held.len() < HOLDERS_MAX && !stop.load(Ordering::Relaxed) && began.elapsed() < HOLD {
            let mut s = match connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    a.connect_failed(&e);
                    break;
                }
            };
            a.opened();
            let opened = Instant::now();
            if let Err(e) = s.write_all(req) {
                a.other("", &io_label(&e));
                continue;
            }
            a.sent(req.len());
            match read_response(&mut s, &mut buf) {
                Ok(200) => {
                    a.answer("", 200, true, opened.elapsed());
                    held.push(s);
                }
                Ok(503) => {
                    a.answer("", 503, true, opened.elapsed());
                    a.add("503 (every slot busy)", 1);
                }
                Ok(st) => a.answer("", st, false, opened.elapsed()),
                Err(e) => a.other("", &e),
            }
        }
        a.add("cycles", 1);
        a.max("most held at once (opened in a cycle)", held.len() as u64);
        while began.elapsed() < HOLD && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let (mut evicted, mut alive) = (0u64, 0u64);
        let mut chunk = [0u8; 512];
        for s in &mut held {
            let _ = s.set_nonblocking(true);
            match s.read(&mut chunk) {
                Ok(0) => evicted += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => alive += 1,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => evicted += 1,
                Ok(_) => a.other("", "unexpected bytes on an idle connection"),
                Err(e) => a.other("", &io_label(&e)),
            }
        }
        a.add("held connections closed by the server (evicted)", evicted);
        a.add("held connections still open after the hold", alive);
        drop(held);
    }
}

// ---------------------------------------------------------------------------------------
// Prober

struct Probe {
    at: f64,
    /// Connect to full response.
    ms: f64,
    /// Of which the TCP connect.
    connect_ms: f64,
    result: Result<u16, String>,
}

impl Probe {
    fn ok(&self) -> bool {
        self.result == Ok(200) && self.ms <= PROBE_LIMIT.as_secs_f64() * 1e3
    }
    fn describe(&self) -> String {
        let what = match &self.result {
            Ok(st) => st.to_string(),
            Err(e) => e.clone(),
        };
        format!("@{:.1} s: {what} in {:.1} ms (connect {:.1})", self.at, self.ms, self.connect_ms)
    }
}

/// One `GET /healthz` on a new connection; `connected` is set when the TCP connect is done.
fn probe(addr: SocketAddr, connected: &mut Option<Instant>) -> Result<u16, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    *connected = Some(Instant::now());
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let status = read_response(&mut s, &mut buf)?;
    if status == 200 && !buf.windows(13).any(|w| w == b"\"status\":\"ok\"") {
        return Err("200 without \"status\":\"ok\"".into());
    }
    Ok(status)
}

fn prober(addr: SocketAddr, t0: Instant, end: Instant) -> Vec<Probe> {
    let mut probes = Vec::new();
    let mut k = 1u32;
    loop {
        let when = t0 + Duration::from_secs(k.into());
        if when > end {
            break;
        }
        std::thread::sleep(when.saturating_duration_since(Instant::now()));
        let started = Instant::now();
        let mut connected = None;
        let result = probe(addr, &mut connected);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let connect_ms = connected.map_or(ms, |c| (c - started).as_secs_f64() * 1e3);
        probes.push(Probe { at: (started - t0).as_secs_f64(), ms, connect_ms, result });
        k += 1;
    }
    probes
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

// ---------------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore libtest-style arguments.
    let secs: f64 = std::env::var("ABUSE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600.0);
    assert!((5.0..=86400.0).contains(&secs), "ABUSE_SECS must be between 5 and 86400");
    let dur = Duration::from_secs_f64(secs);
    if let Some(ms) = std::env::var("ABUSE_PAUSE_MS").ok().and_then(|s| s.parse().ok()) {
        PAUSE_MS.store(ms, Ordering::Relaxed);
    }
    let pause_ms = PAUSE_MS.load(Ordering::Relaxed);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "astrbot abuse bench: {secs} s of mixed abuse, {cpus} CPUs, server under prlimit --nofile={NOFILE}"
    );
    println!("binary: {BIN}");
    println!("pause between one-connection attempts: {pause_ms} ms (ABUSE_PAUSE_MS)");
    println!("load average before: {}", loadavg());

    let mut server = Astrbot::start();
    let addr = server.addr;
    let pid = server.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    println!("server pid {pid} ({}) on {addr}", comm.trim());
    let rss_start = proc_status(pid, "VmRSS:").unwrap_or(0);
    let cpu_start = cpu_secs(pid).unwrap_or(0.0);
    let own_cpu_start = cpu_secs(std::process::id()).unwrap_or(0.0);

    let stop = Arc::new(AtomicBool::new(false));
    let loris = Attacker::new("slow loris", "408");
    let endless_a = Attacker::new("endless header line", "431, then cut");
    let huge = Attacker::new("huge heads", "431");
    let slow = Attacker::new("slow bodies", "408");
    let frame = Attacker::new("framing tricks", "400 / 413 / 501");
    let tls_a = Attacker::new("TLS bytes", "400 at once");
    let hold = Attacker::new("fd exhaustion (idle holders)", "200, then evicted");
    let attackers = [&loris, &endless_a, &huge, &slow, &frame, &tls_a, &hold];

    let t0 = Instant::now();
    *T0.lock().unwrap() = Some(t0);
    let end = t0 + dur;
    let mut threads = Vec::new();
    {
        let (a, st) = (loris.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            // The request line and headers a byte at a time, then an endless header value.
            let mut bytes =
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: loris\r\nX-Loris: ".to_vec();
            bytes.extend(std::iter::repeat_n(b'a', 1 << 16));
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            drip(&a, addr, LORIS_CONNS, b"", bytes, (1000, 2000), 408, &st)
        }));
    }
    for _ in 0..ENDLESS_CONNS {
        let (a, st) = (endless_a.clone(), stop.clone());
        threads.push(std::thread::spawn(move || endless(&a, addr, &st)));
    }
    {
        let (a, st) = (huge.clone(), stop.clone());
        threads.push(std::thread::spawn(move || huge_heads(&a, addr, &st)));
    }
    {
        let (a, st) = (slow.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let head: &[u8] = b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n{\"username\":\"astrbot\",\"password\":\"";
            drip(&a, addr, SLOW_BODY_CONNS, head, b"a", (4000, 6000), 408, &st)
        }));
    }
    {
        let (a, st) = (frame.clone(), stop.clone());
        threads.push(std::thread::spawn(move || framing(&a, addr, &st)));
    }
    {
        let (a, st) = (tls_a.clone(), stop.clone());
        threads.push(std::thread::spawn(move || tls(&a, addr, &st)));
    }
    {
        let (a, st) = (hold.clone(), stop.clone());
        threads.push(std::thread::spawn(move || holders(&a, addr, &st)));
    }
    let probe_thread = std::thread::spawn(move || prober(addr, t0, end));

    // Sampler: once a second, until the end or the server's death.
    let (mut rss_max, mut rss_max_at, mut threads_max, mut fds_max) = (0u64, 0.0f64, 0u64, 0u64);
    let mut samples = 0u64;
    let mut died: Option<String> = None;
    let mut next_report = t0 + Duration::from_secs(60);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())));
        if let Ok(Some(status)) = server.child.try_wait() {
            died = Some(format!("exited with {status} at {:.1} s", t0.elapsed().as_secs_f64()));
            break;
        }
        if let Some(rss) = proc_status(pid, "VmRSS:") {
            samples += 1;
            if rss > rss_max {
                rss_max = rss;
                rss_max_at = t0.elapsed().as_secs_f64();
            }
        }
        threads_max = threads_max.max(proc_status(pid, "Threads:").unwrap_or(0));
        fds_max = fds_max.max(open_fds(pid).unwrap_or(0));
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            println!(
                "  {:>4.0} s: RSS max {}  threads max {threads_max}  fds max {fds_max}  load {}",
                t0.elapsed().as_secs_f64(),
                mb(rss_max),
                loadavg()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let probes = probe_thread.join().expect("prober panicked");
    for t in threads {
        t.join().expect("attacker panicked");
    }
    let attack_secs = t0.elapsed().as_secs_f64();
    let load_after = loadavg();

    // The end: a moment for lingering connections, then alive and serving?
    std::thread::sleep(Duration::from_secs(2));
    let hwm = proc_status(pid, "VmHWM:").unwrap_or(0);
    let rss_end = proc_status(pid, "VmRSS:").unwrap_or(0);
    let threads_end = proc_status(pid, "Threads:").unwrap_or(0);
    let fds_end = open_fds(pid).unwrap_or(0);
    let cpu_used = cpu_secs(pid).unwrap_or(0.0) - cpu_start;
    let own_cpu = cpu_secs(std::process::id()).unwrap_or(0.0) - own_cpu_start;
    let running = died.is_none() && matches!(server.child.try_wait(), Ok(None));
    let final_probe = if running { Some(probe(addr, &mut None)) } else { None };
    let alive = running && matches!(final_probe, Some(Ok(200)));

    // SIGTERM, and how long the process takes to leave.
    let mut term = String::from("not running");
    if running {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        let t = Instant::now();
        term = loop {
            match server.child.try_wait() {
                Ok(Some(status)) => {
                    break format!(
                        "exited ({status}) {:.0} ms after SIGTERM",
                        t.elapsed().as_secs_f64() * 1e3
                    );
                }
                Ok(None) if t.elapsed() > Duration::from_secs(10) => {
                    let _ = server.child.kill();
                    break "still running 10 s after SIGTERM: killed".into();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => break format!("wait failed: {e}"),
            }
        };
    }
    std::thread::sleep(Duration::from_millis(100)); // the last log lines

    // Summary.
    let failed_probes: Vec<&Probe> = probes.iter().filter(|p| !p.ok()).collect();
    let mut lat: Vec<f64> = probes.iter().filter(|p| p.result.is_ok()).map(|p| p.ms).collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut worst: Vec<&Probe> = probes.iter().collect();
    worst.sort_by(|a, b| b.ms.total_cmp(&a.ms));

    println!();
    println!("duration: {attack_secs:.1} s of attack ({secs} s asked); load average after: {load_after}");
    println!(
        "probes: {} (GET /healthz on a new connection each second, connect to full response)",
        probes.len()
    );
    println!(
        "probe latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (limit {} ms)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        PROBE_LIMIT.as_millis()
    );
    println!("probe failures (not 200, or over {} ms): {}", PROBE_LIMIT.as_millis(), failed_probes.len());
    for p in failed_probes.iter().take(10) {
        println!("  {}", p.describe());
    }
    println!("slowest probes: {}", worst.iter().take(5).map(|p| p.describe()).collect::<Vec<_>>().join(", "));
    println!(
        "RSS: at start {}  max sampled {} (at {rss_max_at:.0} s, {} samples)  high-water mark {}  at end {}  (limit {})",
        mb(rss_start),
        mb(rss_max),
        samples,
        mb(hwm),
        mb(rss_end),
        mb(RSS_LIMIT_KB)
    );
    println!(
        "server: threads max {threads_max} (at end {threads_end})  open fds max {fds_max} of {NOFILE} (at end {fds_end})"
    );
    println!(
        "CPU: server {cpu_used:.1} s, this bench (attackers, prober) {own_cpu:.1} s, of {:.0} s on {cpus} CPUs",
        attack_secs * cpus as f64
    );
    println!();
    let mut attack_failures = Vec::new();
    for a in attackers {
        let t = a.t();
        let (lo, hi) = t.answer_secs.unwrap_or((f64::NAN, f64::NAN));
        println!(
            "{:<30} connections {:>7} ({:>5.1}/s)  bytes {:>13}  expected answers {:>7}  wrong {:>3}  other {:>5}  connect errors {:>3}  answer after {:.2}-{:.2} s  (expects {})",
            a.name,
            t.opened,
            t.opened as f64 / attack_secs,
            t.bytes,
            t.expected,
            t.wrong,
            t.other,
            t.connect_errors,
            lo,
            hi,
            a.expects
        );
        let seen: Vec<String> = t.seen.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        println!("    seen: {}", seen.join(", "));
        if !t.extra.is_empty() {
            let extra: Vec<String> = t.extra.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("    {}", extra.join(", "));
        }
        if !t.wrong_samples.is_empty() {
            println!("    wrong: {}", t.wrong_samples.join("; "));
        }
        if t.expected == 0 || t.wrong > 0 {
            attack_failures.push(a.name);
        }
    }
    {
        let t = hold.t();
        let evicted = t.extra.get("held connections closed by the server (evicted)").copied().unwrap_or(0);
        if evicted == 0 {
            attack_failures.push("fd exhaustion: no evictions");
        }
    }
    let log = server.log.lock().unwrap_or_else(|e| e.into_inner());
    println!();
    println!(
        "server stderr: {} lines, {} warn, {} error; cap: {}",
        log.lines,
        log.warn,
        log.error,
        log.cap_line.as_deref().unwrap_or("(no \"open-files limit allows\" line)")
    );
    for l in &log.notable {
        println!("  {l}");
    }
    let cap_ok =
        log.cap_line.as_deref().is_some_and(|l| l.contains(&format!("allows {EXPECTED_CAP} connections")));
    drop(log);
    println!(
        "alive at end: {}  (final /healthz: {}); {term}",
        if alive { "yes" } else { "NO" },
        match &final_probe {
            Some(Ok(st)) => st.to_string(),
            Some(Err(e)) => e.clone(),
            None => died.clone().unwrap_or_else(|| "process not running".into()),
        }
    );

    let mut failures = Vec::new();
    if probes.is_empty() || !failed_probes.is_empty() {
        failures.push(format!("{} of {} probes failed", failed_probes.len(), probes.len()));
    }
    if rss_max >= RSS_LIMIT_KB || hwm >= RSS_LIMIT_KB {
        failures.push(format!("RSS reached {} (high-water mark {})", mb(rss_max), mb(hwm)));
    }
    if !alive {
        failures.push(format!("not alive and serving at the end ({})", died.unwrap_or_default()));
    }
    if !attack_failures.is_empty() {
        failures.push(format!("attackers without their expected answers: {}", attack_failures.join(", ")));
    }
    if !cap_ok {
        failures.push(format!("the server did not cap connections at {EXPECTED_CAP}"));
    }
    println!();
    if failures.is_empty() {
        println!(
            "PASS: {} probes all 200 within {} ms (max {:.1} ms), RSS max {} (< {}), alive and serving at the end",
            probes.len(),
            PROBE_LIMIT.as_millis(),
            lat.last().copied().unwrap_or(f64::NAN),
            mb(rss_max.max(hwm)),
            mb(RSS_LIMIT_KB)
        );
    } else {
        println!("FAIL: {}", failures.join("; "));
        println!("server log tail:");
        print!("{}", server.log_tail(40));
        drop(server);
        std::process::exit(1);
    }
}
