//! Chat benchmark: time to the first `plain` event and total time of `POST /api/v1/chat`
//! through astrbot to a fake OpenAI-compatible upstream, next to calling the same fake
//! upstream directly in the same run; then chats per second with 8 concurrent clients; then
//! 100 streams open at once against an upstream that paces its deltas 300 ms apart: the
//! server's resident memory and the gaps between events each client sees.
//!
//! Run: `cargo bench --bench chat` (BENCH_SECS sets the concurrent phase, default 5;
//! ASTRBOT_BENCH_BIN runs another build of the binary under the same load).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DELTAS: usize = 20;
/// Upstream pacing of the open-streams phase.
const PACE: Duration = Duration::from_millis(300);
const STREAMS: usize = 100;

/// A fake OpenAI-compatible upstream streaming DELTAS deltas, at once or `pace` apart.
fn fake_upstream(stop: Arc<AtomicBool>, pace: Option<Duration>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || serve_upstream(conn, pace));
        }
    });
    addr
}

fn serve_upstream(conn: TcpStream, pace: Option<Duration>) {
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut out = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let chunk = |out: &mut String, data: String| out.push_str(&format!("{:x}\r\n{data}\r\n", data.len()));
        for i in 0..DELTAS {
            chunk(
                &mut out,
                format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"word{i} \"}}}}]}}\n\n"),
            );
            if let Some(pace) = pace {
                if writer.write_all(out.as_bytes()).is_err() {
                    return;
                }
                out.clear();
                std::thread::sleep(pace);
            }
        }
        chunk(
            &mut out,
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":20}}\n\n".into(),
        );
        chunk(&mut out, "data: [DONE]\n\n".into());
        out.push_str("0\r\n\r\n");
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads a chunked HTTP response line by line; returns (time to a line containing
/// `first`, total time). `start` is when the request was sent.
fn timed_stream(stream: TcpStream, start: Instant, first: &str, last: &str) -> (Duration, Duration) {
    let mut reader = BufReader::new(stream);
    let mut first_at = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if first_at.is_none() && line.contains(first) {
            first_at = Some(start.elapsed());
        }
        if line.contains(last) {
            break;
        }
    }
    (first_at.unwrap_or_default(), start.elapsed())
}

fn direct(upstream: SocketAddr) -> (Duration, Duration) {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let mut s = TcpStream::connect(upstream).unwrap();
    s.set_nodelay(true).unwrap();
    let start = Instant::now();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    timed_stream(s, start, "\"content\"", "[DONE]")
}

fn through_astrbot(addr: SocketAddr, key: &str, session: &str) -> (Duration, Duration) {
    let body = format!(r#"{{"username":"bench","session_id":"{session}","message":"hi"}}"#);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let start = Instant::now();
    write!(s, "POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    timed_stream(s, start, "\"type\": \"plain\"", "\"type\": \"end\"")
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// STREAMS chats at once through a provider whose upstream paces its deltas PACE apart:
/// peak RSS of the server, and the smallest and largest gap between `plain` events.
fn open_streams(addr: SocketAddr, key: &str, paced: SocketAddr, pid: u32) {
    let body = format!(r#"{{"type":"openai_chat_completion","api_base":"http://{paced}/v1","key":["k"]}}"#);
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "PUT /api/v1/provider-sources/fake HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.contains("\"status\":\"ok\""), "re-point the source: {out}");
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max((rss_mb(pid) * 10.0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let clients: Vec<_> = (0..STREAMS)
        .map(|i| {
            let key = key.to_owned();
            std::thread::spawn(move || {
                let body = format!(r#"{{"username":"bench","session_id":"open{i}","message":"hi"}}"#);
                let mut s = TcpStream::connect(addr).unwrap();
                write!(s, "POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
                let mut reader = BufReader::new(s);
                let mut line = String::new();
                let mut times = Vec::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.contains("\"type\": \"end\"") {
                        break;
                    }
                    if line.contains("\"type\": \"plain\"") {
                        times.push(Instant::now());
                    }
                }
                times.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut gaps: Vec<Duration> = Vec::new();
    let mut complete = 0;
    for c in clients {
        let g = c.join().unwrap();
        if g.len() + 1 == DELTAS {
            complete += 1;
        }
        gaps.extend(g);
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    gaps.sort();
    let (lo, hi) = (gaps.first().copied().unwrap_or_default(), gaps.last().copied().unwrap_or_default());
    println!(
        "{STREAMS} streams open at once (upstream deltas {} ms apart): {complete}/{STREAMS} complete, peak RSS {:.1} MB, gaps between events {:.0}-{:.0} ms (p99 {:.0} ms)",
        PACE.as_millis(),
        peak.load(Ordering::Relaxed) as f64 / 10.0,
        lo.as_secs_f64() * 1000.0,
        hi.as_secs_f64() * 1000.0,
        pct(&mut gaps, 0.99),
    );
}

struct Guard(Child, std::path::PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0
}

fn main() {
    // ASTRBOT_BENCH_BIN compares another build (say, an older commit's) on the same load.
    let bin_override = std::env::var("ASTRBOT_BENCH_BIN").ok().filter(|b| !b.is_empty());
    let bin = bin_override.as_deref().unwrap_or(env!("CARGO_BIN_EXE_astrbot"));
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = fake_upstream(stop.clone(), None);
    let paced = fake_upstream(stop.clone(), Some(PACE));
    let data = std::env::temp_dir().join(format!("astrbot-bench-chat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn", "--data"])
        .arg(&data)
        .env_clear()
        .env("ASTRBOT_ADMIN_PASSWORD", "bench-password-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let guard = Guard(child, data.clone());
    let addr: SocketAddr = first.trim().trim_start_matches("listening on http://").parse().unwrap();
    // CLI commands need the data folder the server has just created.
    let key = Command::new(bin)
        .args([
            "key",
            "create",
            "--name",
            "bench",
            "--scopes",
            "chat,provider",
            "--daily-limit",
            "0",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();
    let post = |path: &str, body: String| {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.contains("\"status\":\"ok\""), "{path}: {out}");
    };
    post(
        "/api/v1/provider-sources",
        format!(
            r#"{{"id":"fake","type":"openai_chat_completion","api_base":"http://{upstream}/v1","key":["k"]}}"#
        ),
    );
    post("/api/v1/providers", r#"{"id":"fake/m","provider_source_id":"fake","model":"m"}"#.to_owned());

    let rounds = 200;
    for i in 0..20 {
        direct(upstream);
        through_astrbot(addr, &key, &format!("warm{i}"));
    }
    let (mut d_first, mut d_total, mut a_first, mut a_total) = (vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        let (f, t) = direct(upstream);
        d_first.push(f);
        d_total.push(t);
        let (f, t) = through_astrbot(addr, &key, &format!("s{}", i % 10));
        a_first.push(f);
        a_total.push(t);
    }
    println!("chat benchmark: {rounds} sequential chats, {DELTAS} deltas each, fake upstream on loopback");
    println!("{:<40} {:>10} {:>10} {:>10} {:>10}", "", "first p50", "first p99", "total p50", "total p99");
    println!(
        "{:<40} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms",
        "fake upstream, called directly",
        pct(&mut d_first, 0.5),
        pct(&mut d_first, 0.99),
        pct(&mut d_total, 0.5),
        pct(&mut d_total, 0.99)
    );
    println!(
        "{:<40} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms",
        "astrbot POST /api/v1/chat (first plain)",
        pct(&mut a_first, 0.5),
        pct(&mut a_first, 0.99),
        pct(&mut a_total, 0.5),
        pct(&mut a_total, 0.99)
    );
    println!("added to the first token: {:.2} ms (p50)", pct(&mut a_first, 0.5) - pct(&mut d_first, 0.5));

    let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (key, done) = (key.clone(), done.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while Instant::now() < until {
                    through_astrbot(addr, &key, &format!("c{w}-{}", i % 5));
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / secs as f64;
    println!(
        "8 concurrent clients for {secs} s: {rate:.0} chats/s (AstrBot 4.27.4: 8.8 chats/s; 20x is 176)"
    );
    open_streams(addr, &key, paced, guard.0.id());
    stop.store(true, Ordering::Relaxed);
    drop(guard);
}
