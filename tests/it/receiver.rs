//! A loopback webhook receiver for the webhook mirror's tests: a small threaded HTTP/1.1
//! server on `127.0.0.1` that records every request (headers and body) and answers as the
//! test tells it, switchable at run time:
//!
//! - **answer**: 200 to everything, after answering 500 to the next N requests when the
//!   test asked for failures ([`Receiver::fail_next`]);
//! - **hang** ([`Receiver::hang`]): accept and read each request, never answer until the
//!   test switches back; the held requests are then answered in the new mode;
//! - **down** ([`Receiver::down`], [`Receiver::go_down`]): nothing listens on the port (a
//!   connection is refused) until [`Receiver::up`] listens again on the same port, so a
//!   webhook URL stays valid across the outage.
//!
//! It checks Standard Webhooks signatures with `ring` ([`verify`]), and a test waits for
//! events on a condition variable with a deadline, never with a fixed sleep.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// One request as the receiver read it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the receiver answered with, once it was written; `None` while the
    /// request hangs, or when the receiver went down before answering.
    pub answered: Option<u16>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The `webhook-id` header (empty when missing).
    pub fn id(&self) -> &str {
        self.header("webhook-id").unwrap_or_default()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("event is not JSON ({e}): {}", self.text()))
    }

    /// Whether the receiver answered this request with a 2xx.
    pub fn delivered(&self) -> bool {
        self.answered.is_some_and(|s| (200..300).contains(&s))
    }

    /// Checks the Standard Webhooks signature of this request with `secret` (see [`verify`]).
    pub fn verify(&self, secret: &str) -> Result<(), String> {
        verify(
            secret,
            self.header("webhook-id").ok_or("no webhook-id header")?,
            self.header("webhook-timestamp").ok_or("no webhook-timestamp header")?,
            &self.body,
            self.header("webhook-signature").ok_or("no webhook-signature header")?,
        )
    }

    /// Everything a failure message needs: the head and the body.
    pub fn describe(&self) -> String {
        let headers: Vec<String> = self.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        format!(
            "{} {} -> {:?}\n{}\n\n{}",
            self.method,
            self.path,
            self.answered,
            headers.join("\n"),
            self.text()
        )
    }
}

/// Verifies a Standard Webhooks signature: `signature` holds space-separated `v1,<base64>`
/// entries, one of which must be the base64 of HMAC-SHA256 over `"{id}.{timestamp}.{body}"`
/// keyed with the base64-decoded `secret` after its `whsec_` prefix. The timestamp must be
/// integer seconds within five minutes of now, the specification's default tolerance (a
/// retry is signed anew, with the time of that attempt).
pub fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], signature: &str) -> Result<(), String> {
    let encoded = secret.strip_prefix("whsec_").ok_or_else(|| format!("secret {secret:?} lacks whsec_"))?;
    let key_bytes = STANDARD.decode(encoded).map_err(|e| format!("secret is not base64: {e}"))?;
    let sent: i64 =
        timestamp.parse().map_err(|_| format!("webhook-timestamp {timestamp:?} is not an integer"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - sent).abs() > 300 {
        return Err(format!("webhook-timestamp {sent} is more than 5 minutes from now ({now})"));
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let matches = signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|b64| STANDARD.decode(b64).is_ok_and(|tag| ring::hmac::verify(&key, &message, &tag).is_ok()));
    match matches {
        true => Ok(()),
        false => Err(format!("no v1 signature in {signature:?} matches")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Answer,
    Hang,
}

struct State {
    mode: Mode,
    /// 500s still to answer before answering 200.
    failures: usize,
    requests: Vec<Received>,
    /// Bumped by every [`Receiver::go_down`]: a connection of an older generation is
    /// closed without an answer.
    generation: u64,
    listening: bool,
    /// The open connections by peer address, to cut them when the receiver goes down.
    conns: Vec<(SocketAddr, TcpStream)>,
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

/// A running (or down) receiver; stops listening when dropped.
pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    /// A receiver that listens now and answers 200.
    pub fn start() -> Receiver {
        let receiver = Receiver::down();
        receiver.up();
        receiver
    }

    /// A receiver whose port is chosen but where nothing listens: a listener is bound, its
    /// port noted and the listener dropped. [`Receiver::up`] listens there later.
    pub fn down() -> Receiver {
        let port = free_port();
        let state = State {
            mode: Mode::Answer,
            failures: 0,
            requests: Vec::new(),
            generation: 0,
            listening: false,
            conns: Vec::new(),
        };
        Receiver {
            port,
            shared: Arc::new(Shared { state: Mutex::new(state), changed: Condvar::new() }),
            accept: Mutex::new(None),
        }
    }

    /// The webhook URL to configure on a key.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Listens again on the same port. Another socket may hold the port for a moment (std
    /// binds with SO_REUSEADDR, so only a live socket can): the bind is retried for up to
    /// five seconds.
    pub fn up(&self) {
        let mut accept = self.accept.lock().unwrap();
        if accept.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("the receiver cannot listen on its port {} again: {e}", self.port),
            }
        };
        let generation = {
            let mut st = self.shared.lock();
            st.listening = true;
            st.generation
        };
        let shared = self.shared.clone();
        *accept = Some(std::thread::spawn(move || accept_loop(listener, shared, generation)));
    }

    /// Stops listening and cuts every open connection; held (hanging) requests are dropped
    /// unanswered. New connections are refused until [`Receiver::up`].
    pub fn go_down(&self) {
        let mut accept = self.accept.lock().unwrap();
        let Some(handle) = accept.take() else { return };
        let conns = {
            let mut st = self.shared.lock();
            st.generation += 1;
            st.listening = false;
            std::mem::take(&mut st.conns)
        };
        self.shared.changed.notify_all();
        // Wake the accept loop so it sees the new generation and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = handle.join();
        for (_, c) in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Answers 200 from now on, and releases held requests (which then get 200).
    pub fn answer_ok(&self) {
        let mut st = self.shared.lock();
        st.mode = Mode::Answer;
        st.failures = 0;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Answers 500 to the next `n` requests, then 200.
    pub fn fail_next(&self, n: usize) {
        let mut st = self.shared.lock();
        st.mode = Mode::Answer;
        st.failures = n;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Reads each request and holds it unanswered until the mode changes.
    pub fn hang(&self) {
        self.shared.lock().mode = Mode::Hang;
        self.shared.changed.notify_all();
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().requests.clone()
    }

    /// Waits until `done` holds for the requests received so far, up to `secs` seconds, on
    /// the condition variable (every request and every answer wakes it). Panics with `what`
    /// and every request received when the deadline passes.
    #[track_caller]
    pub fn wait_until(
        &self,
        secs: u64,
        what: &str,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut st = self.shared.lock();
        loop {
            if done(&st.requests) {
                return st.requests.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let all: Vec<String> = st.requests.iter().map(Received::describe).collect();
                panic!(
                    "the receiver waited {secs} s for {what}; it got {} requests:\n{}",
                    st.requests.len(),
                    all.join("\n---\n")
                );
            }
            st = self.shared.changed.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Waits until requests with `n` distinct `webhook-id`s were answered with 2xx; returns
    /// the first delivered request of each id, in order of delivery.
    #[track_caller]
    pub fn wait_delivered(&self, n: usize, secs: u64) -> Vec<Received> {
        let all =
            self.wait_until(secs, &format!("{n} delivered events"), |r| distinct_delivered(r).len() >= n);
        distinct_delivered(&all)
    }

    /// Waits for the delivered event whose `webhook-id` is `id`.
    #[track_caller]
    pub fn wait_for_id(&self, id: &str, secs: u64) -> Received {
        let all = self
            .wait_until(secs, &format!("event {id}"), |r| r.iter().any(|q| q.id() == id && q.delivered()));
        all.into_iter().find(|q| q.id() == id && q.delivered()).unwrap()
    }

    /// Waits for a delivered event whose body satisfies `matches`; returns the first one.
    #[track_caller]
    pub fn wait_for_event(&self, secs: u64, what: &str, matches: impl Fn(&Value) -> bool) -> Received {
        let hit =
            |q: &Received| q.delivered() && serde_json::from_slice(&q.body).is_ok_and(|v: Value| matches(&v));
        let all = self.wait_until(secs, what, |r| r.iter().any(hit));
        all.into_iter().find(hit).unwrap()
    }
}

/// A port that is free now and that no other socket of the tests can take while the
/// receiver is down: one below the kernel's ephemeral range, which `bind(":0")` (the
/// servers, the fakes) and outgoing connections draw from. Falls back to an ephemeral
/// port when the range leaves no room below it.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    if low > 11_000 {
        let random = std::collections::hash_map::RandomState::new();
        for attempt in 0..200u64 {
            let mut h = random.build_hasher();
            h.write_u64(attempt);
            let port = 10_000 + (h.finish() % u64::from(low - 10_000)) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0").expect("bind the receiver").local_addr().unwrap().port()
}

/// The first delivered request of each `webhook-id`, in order of delivery.
pub fn distinct_delivered(requests: &[Received]) -> Vec<Received> {
    let mut seen = std::collections::HashSet::new();
    requests.iter().filter(|q| q.delivered() && seen.insert(q.id().to_owned())).cloned().collect()
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.go_down();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, generation: u64) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let mut st = shared.lock();
        if st.generation != generation {
            break; // the wake-up connection of go_down, or a late one: closed unanswered
        }
        let peer = conn.peer_addr().ok();
        if let (Some(peer), Ok(clone)) = (peer, conn.try_clone()) {
            st.conns.push((peer, clone));
        }
        drop(st);
        let shared = shared.clone();
        std::thread::spawn(move || {
            let _ = serve(conn, &shared, generation);
            shared.lock().conns.retain(|(p, _)| Some(*p) != peer);
        });
    }
}

/// Serves one connection, request after request (the sender may keep it alive).
fn serve(conn: TcpStream, shared: &Shared, generation: u64) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        let Some(request) = read_request(&mut reader)? else { return Ok(()) };
        let close = request.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let index = {
            let mut st = shared.lock();
            st.requests.push(request);
            st.requests.len() - 1
        };
        shared.changed.notify_all();
        // Decide the answer, holding the request while the receiver hangs.
        let status = {
            let mut st = shared.lock();
            loop {
                if st.generation != generation {
                    return Ok(()); // went down: the connection closes unanswered
                }
                if st.mode == Mode::Answer {
                    break;
                }
                st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.failures > 0 {
                st.failures -= 1;
                500
            } else {
                200
            }
        };
        let body = if status == 200 { "ok" } else { "receiver failure" };
        let reason = if status == 200 { "OK" } else { "Internal Server Error" };
        write!(
            writer,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        writer.flush()?;
        shared.lock().requests[index].answered = Some(status);
        shared.changed.notify_all();
        if close {
            return Ok(());
        }
    }
}

/// Reads one request (Content-Length or chunked body); `None` at the end of the connection.
fn read_request<R: BufRead>(r: &mut R) -> std::io::Result<Option<Received>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some(Received { method, path, headers, body, answered: None }))
}

#[cfg(test)]
mod tests {
    //! The receiver checked against itself, so that a webhook test that fails points at the
    //! server, not at its harness.

    use super::*;

    fn post(port: u16, body: &str) -> std::io::Result<u16> {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            c,
            "POST /hook HTTP/1.1\r\nHost: x\r\nwebhook-id: msg_1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut head = String::new();
        BufReader::new(c).read_line(&mut head)?;
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other(head))
    }

    #[test]
    fn the_receiver_fails_then_answers_hangs_and_goes_down() {
        let r = Receiver::start();
        r.fail_next(2);
        assert_eq!(post(r.port, "{}").unwrap(), 500);
        assert_eq!(post(r.port, "{}").unwrap(), 500);
        assert_eq!(post(r.port, "{\"a\":1}").unwrap(), 200);
        assert_eq!(r.wait_delivered(1, 5)[0].json(), serde_json::json!({"a": 1}));

        r.hang();
        let port = r.port;
        let held = std::thread::spawn(move || post(port, "{}"));
        r.wait_until(5, "a held request", |q| q.len() == 4);
        assert!(!held.is_finished());
        r.answer_ok();
        assert_eq!(held.join().unwrap().unwrap(), 200);

        r.go_down();
        assert!(post(r.port, "{}").is_err(), "a down receiver refuses connections");
        r.up();
        assert_eq!(post(r.port, "{}").unwrap(), 200);
    }

    #[test]
    fn signatures_verify_only_with_their_secret() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &STANDARD.decode(&secret[6..]).unwrap());
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
        let body = br#"{"test": 2432232314}"#;
        let tag = ring::hmac::sign(
            &key,
            format!("msg_p5jXN8AQM9LWM0D4loKWxJek.{ts}.{}", std::str::from_utf8(body).unwrap()).as_bytes(),
        );
        let sig = format!("v1,{}", STANDARD.encode(tag.as_ref()));
        assert_eq!(verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", &ts, body, &sig), Ok(()));
        assert_eq!(
            verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", &ts, body, &format!("v1,AAAA {sig}")),
            Ok(())
        );
        assert!(verify(secret, "msg_other", &ts, body, &sig).is_err());
        assert!(verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", &ts, b"{}", &sig).is_err());
        assert!(
            verify(
                "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                &ts,
                body,
                &sig
            )
            .is_err()
        );
        assert!(verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1", body, &sig).is_err(), "too old");
    }
}
