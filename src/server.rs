//! The HTTP layer: the only module that touches tiny_http.
//!
//! Our tiny_http (`vendor/tiny_http`, patched: see its PATCHES.md) accepts connections, one
//! thread each, reads heads and frames bodies within the transport limits, and answers
//! what breaks them (400, 408, 431, 501, 503) itself. Our workers take parsed requests from
//! its queue. A connection hands over its next request only when the previous one is
//! answered, so there are never more requests than connections; the pool grows up to the
//! connection cap, and no request waits behind another's slow body. Each request is turned
//! into our [`Request`], run through [`pipeline::handle`] under `catch_unwind` (a panic is a
//! 500, never a dead server), and answered the way its [`Body`] asks: bytes, a file copied
//! with its length, or an event stream written with our own framing. One wrapper,
//! `logged`, writes the single debug line of every request, whichever way it was answered.
//! Shutdown stops accepting, lets queued and running requests finish for up to ten
//! seconds, then flushes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::api::chat_ws;
use crate::app::App;
use crate::error::ApiError;
use crate::http::{Body, BodySource, Request, Response};
use crate::pipeline;
use crate::system;

pub const MIN_WORKERS: usize = 8;
/// How long a connection may stay silent between requests before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write to a client may block.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for in-flight requests.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

struct Shared {
    app: Arc<App>,
    http: tiny_http::Server,
    listen: SocketAddr,
    /// Workers never outnumber the connections that can send requests.
    max_workers: usize,
    total: AtomicUsize,
    busy: AtomicUsize,
    stopping: AtomicBool,
}

/// A bound server, ready to run.
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// Binds `addr` and starts accepting, at most `max_connections` at once (fewer when the
    /// open-files limit cannot hold that many). Requests queue until [`Server::run`].
    pub fn bind(app: Arc<App>, addr: &str, max_connections: usize) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let listen = listener.local_addr()?;
        let cap = system::connection_cap(max_connections, system::raise_nofile_limit());
        if cap < max_connections {
            log::warn!("the open-files limit allows {cap} connections, not {max_connections}");
        }
        let limits = tiny_http::Limits {
            max_connections: cap,
            idle_timeout: IDLE_TIMEOUT,
            write_timeout: SEND_TIMEOUT,
            ..tiny_http::Limits::default()
        };
        let http = tiny_http::Server::from_listener(listener, limits)
            .map_err(|e| io::Error::other(format!("cannot start the HTTP server: {e}")))?;
        let shared = Arc::new(Shared {
            app,
            http,
            listen,
            max_workers: cap.max(MIN_WORKERS),
            total: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        Ok(Server { shared })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Serves until `wait_for_shutdown` returns, then stops gracefully.
    pub fn run(self, wait_for_shutdown: impl FnOnce()) -> io::Result<()> {
        // Threads may be short (a pids limit, RLIMIT_NPROC): start what can be started; the
        // pool grows on demand later, but it needs one worker to begin with.
        for _ in 0..MIN_WORKERS {
            if let Err(e) = spawn_worker(&self.shared) {
                log::warn!("cannot start a worker: {e}");
                break;
            }
        }
        while self.shared.total.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(100));
            let _ = spawn_worker(&self.shared);
        }
        wait_for_shutdown();

        log::info!("shutting down: no new connections, finishing requests in flight");
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.http.stop_accepting();
        let deadline = Instant::now() + DRAIN_DEADLINE;
        while self.shared.total.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            for _ in 0..self.shared.total.load(Ordering::SeqCst) {
                self.shared.http.unblock();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self.shared.busy.load(Ordering::SeqCst);
        if left > 0 {
            log::warn!("{left} request(s) still running after {DRAIN_DEADLINE:?}; stopping anyway");
        }
        Ok(())
    }
}

fn spawn_worker(shared: &Arc<Shared>) -> io::Result<()> {
    shared.total.fetch_add(1, Ordering::SeqCst);
    let s = shared.clone();
    let spawned = std::thread::Builder::new().name("worker".into()).spawn(move || worker(s));
    if spawned.is_err() {
        shared.total.fetch_sub(1, Ordering::SeqCst);
    }
    spawned.map(|_| ())
}

fn worker(shared: Arc<Shared>) {
    let mut idle_since = Instant::now();
    loop {
        match shared.http.recv_timeout(Duration::from_secs(5)) {
            Ok(Some(request)) => {
                let busy = shared.busy.fetch_add(1, Ordering::SeqCst) + 1;
                if busy >= shared.total.load(Ordering::SeqCst)
                    && shared.total.load(Ordering::SeqCst) < shared.max_workers
                    && !shared.stopping.load(Ordering::SeqCst)
                    && let Err(e) = spawn_worker(&shared)
                {
                    log::warn!("cannot start another worker: {e}");
                }
                serve_one(&shared, request);
                shared.busy.fetch_sub(1, Ordering::SeqCst);
                idle_since = Instant::now();
            }
            Ok(None) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let retire = idle_since.elapsed() > Duration::from_secs(30)
                    && shared
                        .total
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                            (t > MIN_WORKERS).then(|| t - 1)
                        })
                        .is_ok();
                if retire {
                    return;
                }
            }
            Err(e) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                // Our tiny_http never reports accept errors here; should that change,
                // nothing new would be served: exit so systemd restarts us.
                log::error!("the HTTP accept loop failed ({e}); exiting so the service restarts");
                if let Err(e) = shared.app.flush_usage() {
                    log::error!("{e}");
                }
                std::process::exit(1);
            }
        }
    }
    shared.total.fetch_sub(1, Ordering::SeqCst);
}

/// The body of a tiny_http request, read lazily: asking for it is what sends
/// `100 Continue`, so a refused body is never invited.
struct TinyBody<'a>(&'a mut tiny_http::Request);

impl BodySource for TinyBody<'_> {
    fn reader(&mut self) -> &mut dyn Read {
        self.0.as_reader()
    }
}

fn serve_one(shared: &Shared, request: tiny_http::Request) {
    let method = request.method().as_str().to_owned();
    let url = request.url().to_owned();
    // The query string stays out of the log: it may carry an API key.
    let path = url.split('?').next().unwrap_or("");
    logged(&method, path, || answer(shared, request, &method, &url));
}

/// How an answer went, for the request log.
struct Sent {
    status: u16,
    /// The body was an event stream; its line is written when the stream ends.
    stream: bool,
    /// Why the answer did not reach the client whole, if it did not.
    failure: Option<String>,
}

/// The request log, the one place a request is logged: runs `serve` and writes exactly one
/// debug line, whatever the answer was (bytes, a file, an event stream, the 500 of a
/// panic), with the time until the last byte was written.
fn logged(method: &str, path: &str, serve: impl FnOnce() -> Sent) {
    let started = Instant::now();
    let sent = serve();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = sent.status;
    let stream = if sent.stream { " (stream)" } else { "" };
    match sent.failure {
        None => log::debug!("{method} {path} {status}{stream} {ms:.1}ms"),
        Some(why) => log::debug!("{method} {path} {status}{stream} {ms:.1}ms; {why}"),
    }
}

/// Turns the tiny_http request into ours, runs the pipeline under [`guarded`] and sends
/// what it answers.
fn answer(shared: &Shared, mut request: tiny_http::Request, method: &str, url: &str) -> Sent {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_owned()))
        .collect();
    let remote = request.remote_addr().copied();
    if request.is_upgrade() && url.split('?').next() == Some(chat_ws::PATH) {
        return upgrade(shared, request, method, url, headers, remote);
    }
    // A length beyond usize (a 32-bit Pi) is beyond every limit: it reads as usize::MAX.
    let body_len = request.body_length().map(|n| usize::try_from(n).unwrap_or(usize::MAX));

    let accept = headers.iter().find(|(n, _)| n == "accept-encoding").map(|(_, v)| v.clone());
    let mut response = {
        let mut body = TinyBody(&mut request);
        let mut req = Request::new(method.to_owned(), url, headers, remote, body_len, &mut body);
        let route = format!("{method} {}", req.path);
        guarded(&route, || pipeline::handle(&shared.app, &mut req))
    };
    let http11 = *request.http_version() >= (1, 1);
    crate::compress::apply(&mut response, accept.as_deref(), http11, method == "HEAD");
    // A body the handler left unread is the transport's business: it skips up to 1 MiB
    // of it to keep the connection, or closes the connection after the answer.
    send(request, response)
}

/// Hands a WebSocket handshake for the chat to its session: the handshake is checked (a
/// bad one is answered as HTTP), `101` written, and the session runs on this worker thread
/// until the connection closes. The connection stays counted against the connection cap.
fn upgrade(
    shared: &Shared,
    request: tiny_http::Request,
    method: &str,
    url: &str,
    headers: Vec<(String, String)>,
    remote: Option<SocketAddr>,
) -> Sent {
    let mut no_body: &[u8] = &[];
    let req = Request::new(method.to_owned(), url, headers, remote, Some(0), &mut no_body);
    let accept = match chat_ws::accept_key(&req) {
        Ok(accept) => accept,
        Err(response) => return send(request, response),
    };
    let credential = crate::auth::extract_credential(&req);
    let mut conn = match request.upgrade_raw(chat_ws::IDLE_WAIT) {
        Ok(conn) => Upgraded(conn),
        Err(request) => return send(*request, ApiError::internal("the upgrade failed").into_response(url)),
    };
    let head = chat_ws::switching_head(&accept);
    if let Err(e) = conn.0.write_all(head.as_bytes()).and_then(|_| conn.0.flush()) {
        return Sent {
            status: 101,
            stream: true,
            failure: Some(format!("could not send the handshake: {e}")),
        };
    }
    let session = catch_unwind(AssertUnwindSafe(|| {
        chat_ws::session(&shared.app, conn, credential, remote, &shared.stopping)
    }));
    let failure = session.is_err().then(|| "the WebSocket session panicked".to_owned());
    if failure.is_some() {
        log::error!("panic in a WebSocket chat session");
    }
    Sent { status: 101, stream: true, failure }
}

/// The transport's upgraded connection as the WebSocket chat sees it.
struct Upgraded(tiny_http::Upgraded);

impl Read for Upgraded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Upgraded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl chat_ws::Conn for Upgraded {
    fn set_read_wait(&self, wait: Duration) {
        self.0.set_read_wait(wait);
    }
}

/// Writes a response, each kind of body its own way.
fn send(request: tiny_http::Request, response: Response) -> Sent {
    let Response { status, headers, body } = response;
    let (stream, result) = match body {
        Body::Events(events) => {
            let http10 = *request.http_version() < (1, 1);
            let result = stream_events(request, &headers, &events, http10);
            (true, result.map_err(|_| "event stream client went away".to_owned()))
        }
        // A known length: tiny_http copies the reader with a Content-Length, nothing buffered.
        Body::File(reader, len) => {
            let out = tiny_http::Response::new(status.into(), tiny_headers(headers), reader, Some(len), None);
            (false, request.respond(out).map_err(|e| format!("could not send a response: {e}")))
        }
        // An unknown length: tiny_http sends it chunked (an HTTP/1.1 client, see tiny_http P8).
        Body::Stream(reader) => {
            let out = tiny_http::Response::new(status.into(), tiny_headers(headers), reader, None, None);
            (false, request.respond(out).map_err(|e| format!("could not send a response: {e}")))
        }
        Body::Bytes(bytes) => {
            let mut out = tiny_http::Response::from_data(bytes).with_status_code(status);
            for h in tiny_headers(headers) {
                out.add_header(h);
            }
            (false, request.respond(out).map_err(|e| format!("could not send a response: {e}")))
        }
    };
    Sent { status, stream, failure: result.err() }
}

fn tiny_headers(headers: Vec<(&'static str, String)>) -> Vec<tiny_http::Header> {
    headers
        .into_iter()
        .filter_map(|(name, value)| tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok())
        .collect()
}

/// Writes an SSE response through the raw connection: tiny_http buffers `Response<Read>`
/// bodies, so the head and the chunked framing are written here, each event flushed at
/// once, a `: heartbeat` comment after each silent second (which is also how a vanished
/// client is noticed). When a write fails the writer stops; the run goes on by itself.
fn stream_events(
    request: tiny_http::Request,
    headers: &[(&'static str, String)],
    events: &Receiver<String>,
    http10: bool,
) -> io::Result<()> {
    let mut writer = request.into_writer();
    // HTTP/1.0 has no chunked framing: the body ends when the connection closes, which
    // tiny_http does after a 1.0 exchange.
    let mut head = if http10 {
        String::from(
            "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\nConnection: close\r\n",
        )
    } else {
        String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n\
             Connection: keep-alive\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n",
        )
    };
    for (name, value) in headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("content-type")) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let chunk = |w: &mut dyn Write, data: &str| -> io::Result<()> {
        if http10 {
            w.write_all(data.as_bytes())?;
        } else {
            write!(w, "{:x}\r\n{data}\r\n", data.len())?;
        }
        w.flush()
    };
    writer.write_all(head.as_bytes())?;
    writer.flush()?;
    loop {
        match events.recv_timeout(Duration::from_secs(1)) {
            Ok(frame) => chunk(&mut writer, &frame)?,
            Err(RecvTimeoutError::Timeout) => chunk(&mut writer, crate::sse::HEARTBEAT)?,
            Err(RecvTimeoutError::Disconnected) => {
                // The run has ended and every event is out: a client that goes away now
                // has all it asked for, so a failed terminator is no failure.
                if !http10 {
                    let _ = writer.write_all(b"0\r\n\r\n").and_then(|_| writer.flush());
                }
                return Ok(());
            }
        }
    }
}

/// Runs a handler; a panic becomes a logged 500 instead of a dead worker.
fn guarded(route: &str, handler: impl FnOnce() -> Response) -> Response {
    catch_unwind(AssertUnwindSafe(handler))
        .unwrap_or_else(|_| ApiError::internal(format!("panic while serving {route}")).into_response(route))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_handler_is_a_500_envelope() {
        let r = guarded("GET /boom", || panic!("handler bug"));
        assert_eq!(r.status, 500);
        assert_eq!(r.body_str(), r#"{"status":"error","message":"Internal server error"}"#);
        let ok = guarded("GET /fine", || Response::ok(serde_json::Value::Null));
        assert_eq!(ok.status, 200);
    }
}
