//! The HTTP transports: Streamable HTTP (2025-03-26 and later) and the legacy HTTP+SSE
//! transport (2024-11-05).
//!
//! Streamable HTTP needs no thread: each message is a POST on the caller's thread, and the
//! answer to a request comes back on the same exchange, as one JSON body or as an event
//! stream read until the response with our id (other messages on it are handled as they
//! come, replies to the server's requests POSTed back). The session id from the
//! `initialize` answer and the negotiated version go on every later request; a 404 (or a
//! 400 naming the session) on an established session means it is gone, and the manager
//! reconnects. `close` sends DELETE. Once connected, a thread holds the optional standalone
//! GET stream, as AstrBot's SDK does, for what the server sends outside our requests.
//!
//! Legacy HTTP+SSE: a reader thread holds the GET stream, whose first `endpoint` event names
//! (relative to the SSE URL, and on the same origin, or it is refused) where our messages
//! are POSTed; every answer arrives as a `message` event. That thread blocks in a read that
//! cannot be interrupted, so after `close` it ends at the stream's next event, its end, or
//! the config's `sse_read_timeout` of silence (default 300 s), whichever is first.
//!
//! Both: ureq with statuses read rather than raised, no redirects, a 5 s connect timeout,
//! bodies bounded, and the configured headers (never logged: they may hold credentials).

use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::jsonrpc::{Core, MAX_MESSAGE, cut, lock, messages, read_events};
use super::{Link, RemoteConfig, SendError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a cancellation's POST (on its own thread) may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// What is read of a body that is not the answer (a 202's, an error's).
const SMALL_BODY: u64 = 64 * 1024;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("astrbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn transport_error(e: ureq::Error) -> SendError {
    match e {
        ureq::Error::Timeout(_) => SendError::Timeout,
        // ureq's messages name the failure, not the URL or the headers.
        other => SendError::Failed(format!("the HTTP request failed: {other}")),
    }
}

/// The start of a body, as text, for an error message.
fn snippet(body: &mut ureq::Body) -> String {
    let mut buf = Vec::new();
    let _ = body.as_reader().take(SMALL_BODY).read_to_end(&mut buf);
    cut(String::from_utf8_lossy(&buf).trim(), 300).to_owned()
}

fn content_type(resp: &ureq::http::Response<ureq::Body>) -> String {
    resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase()
}

/// Streamable HTTP: every message a POST to one URL.
/// The link: the state is shared with the standalone GET stream's thread.
pub(super) struct StreamableLink(Arc<Streamable>);

impl StreamableLink {
    pub fn new(config: &RemoteConfig) -> StreamableLink {
        StreamableLink(Arc::new(Streamable::new(config)))
    }
}

pub(super) struct Streamable {
    agent: ureq::Agent,
    sse_read_timeout: Duration,
    url: String,
    headers: Vec<(String, String)>,
    session: Mutex<Option<String>>,
    version: Mutex<Option<String>>,
    gone: AtomicBool,
    closed: AtomicBool,
}

impl Streamable {
    pub fn new(config: &RemoteConfig) -> Streamable {
        Streamable {
            agent: agent(),
            sse_read_timeout: config.sse_read_timeout,
            url: config.url.clone(),
            headers: config.headers.clone(),
            session: Mutex::new(None),
            version: Mutex::new(None),
            gone: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Adds the configured headers, the session id and the negotiated version.
    fn with_headers<B>(&self, mut req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(sid) = lock(&self.session).as_deref() {
            req = req.header("mcp-session-id", sid);
        }
        if let Some(v) = lock(&self.version).as_deref() {
            req = req.header("mcp-protocol-version", v);
        }
        req
    }

    fn post(&self, core: &Core, msg: &Value, deadline: Instant) -> Result<(), SendError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(SendError::Timeout);
        }
        let session = lock(&self.session).clone();
        let req = self.with_headers(
            self.agent
                .post(&self.url)
                .config()
                .timeout_global(Some(remaining))
                .build()
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json"),
        );
        let mut resp = req.send(msg.to_string()).map_err(transport_error)?;
        let status = resp.status().as_u16();
        if session.is_none() && msg["method"] == "initialize" {
            let sid = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok());
            if let Some(sid) = sid
                .filter(|s| !s.is_empty() && s.len() <= 1024 && s.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            {
                *lock(&self.session) = Some(sid.to_owned());
            }
        }
        if !(200..300).contains(&status) {
            let body = snippet(resp.body_mut());
            let ended = status == 404 || (status == 400 && body.to_ascii_lowercase().contains("session"));
            if session.is_some() && ended {
                self.gone.store(true, Ordering::Release);
                let why = format!("the server ended the session (HTTP {status})");
                core.fail_all(&why);
                return Err(SendError::Failed(why));
            }
            return Err(SendError::Failed(format!("the server answered HTTP {status}: {body}")));
        }
        let ctype = content_type(&resp);
        let our_id = msg.get("id").filter(|_| msg.get("method").is_some()).cloned();
        if ctype.starts_with("text/event-stream") {
            let mut reader = BufReader::new(resp.into_body().into_reader());
            let mut answered = false;
            let read = read_events(&mut reader, None, |event| {
                if event.event != "message" || event.data.trim().is_empty() {
                    return true;
                }
                for m in messages(&event.data).unwrap_or_default() {
                    let ours =
                        our_id.is_some() && m.get("method").is_none() && m.get("id") == our_id.as_ref();
                    self.deliver(core, m, deadline);
                    answered |= ours;
                }
                !answered
            });
            return match read {
                Err(_) if Instant::now() >= deadline => Err(SendError::Timeout),
                Err(e) => Err(SendError::Failed(e)),
                // Resuming a stream (2025-11-25 polling, `Last-Event-ID`) is not supported:
                // failing now beats waiting out the caller's timeout for an answer that
                // will not come on this exchange.
                Ok(()) if our_id.is_some() && !answered => {
                    Err(SendError::Failed("the server ended its answer stream without an answer".into()))
                }
                Ok(()) => Ok(()),
            };
        }
        if ctype.starts_with("application/json") {
            let text = resp.body_mut().with_config().limit(MAX_MESSAGE as u64).read_to_string().map_err(
                |e| match e {
                    ureq::Error::Timeout(_) => SendError::Timeout,
                    other => SendError::Failed(format!("reading the answer failed: {other}")),
                },
            )?;
            if !text.trim().is_empty() {
                let msgs = messages(&text).map_err(|_| SendError::Failed("the answer is not JSON".into()))?;
                for m in msgs {
                    self.deliver(core, m, deadline);
                }
            }
            return Ok(());
        }
        // 202 for a notification or a response, with no body to speak of.
        let _ = std::io::copy(&mut resp.body_mut().as_reader().take(SMALL_BODY), &mut std::io::sink());
        Ok(())
    }

    /// Hands a message to the core; a reply (to the server's ping) is POSTed back.
    fn deliver(&self, core: &Core, msg: Value, deadline: Instant) {
        if let Some(reply) = core.handle(msg) {
            let _ = self.post(core, &reply, deadline.min(Instant::now() + Duration::from_secs(5)));
        }
    }
}

impl Streamable {
    fn usable(&self) -> bool {
        !self.gone.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire)
    }

    /// The standalone GET stream: the server's notifications and requests that belong to no
    /// request of ours (server-everything's `list_changed` and log messages come only there).
    /// It is optional: a server that refuses it (405, an error) simply has none. When it ends
    /// (or `sse_read_timeout` passes in silence) it is opened again, a second later, for as
    /// long as the session lasts; the DELETE of `close` makes the server end it. Its failures
    /// never end the session.
    fn listen(&self, core: &Core) {
        while self.usable() && self.listen_once(core) {
            let resume = Instant::now() + Duration::from_secs(1);
            while self.usable() && Instant::now() < resume {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Holds the GET stream until it ends; false when it could not be opened.
    fn listen_once(&self, core: &Core) -> bool {
        let req = self.with_headers(
            self.agent
                .get(&self.url)
                .config()
                .timeout_recv_response(Some(Duration::from_secs(10)))
                .timeout_per_read(Some(self.sse_read_timeout))
                .build()
                .header("accept", "text/event-stream"),
        );
        let resp = match req.call() {
            Ok(resp) => resp,
            Err(e) => {
                log::debug!("MCP server {}: no standalone stream: {e}", core.name);
                return false;
            }
        };
        let status = resp.status().as_u16();
        if status != 200 || !content_type(&resp).starts_with("text/event-stream") {
            log::debug!("MCP server {}: no standalone stream (HTTP {status})", core.name);
            return false;
        }
        let mut reader = BufReader::new(resp.into_body().into_reader());
        let read = read_events(&mut reader, Some(&self.closed), |event| {
            if event.event == "message" {
                for m in messages(&event.data).unwrap_or_default() {
                    self.deliver(core, m, Instant::now() + Duration::from_secs(5));
                }
            }
            true
        });
        log::debug!("MCP server {}: the standalone stream ended ({read:?})", core.name);
        true
    }
}

impl Link for StreamableLink {
    fn cancel(&self, _core: &Core, msg: &Value) {
        if !self.0.usable() {
            return;
        }
        let req = self.0.with_headers(
            self.0
                .agent
                .post(&self.0.url)
                .config()
                .timeout_global(Some(CANCEL_TIMEOUT))
                .build()
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json"),
        );
        let body = msg.to_string();
        let _ = thread::Builder::new().name("mcp-cancel".into()).spawn(move || {
            if let Ok(mut resp) = req.send(body) {
                let _ =
                    std::io::copy(&mut resp.body_mut().as_reader().take(SMALL_BODY), &mut std::io::sink());
            }
        });
    }

    fn send(&self, core: &Core, msg: &Value, deadline: Instant) -> Result<(), SendError> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err(SendError::Failed("the connection was closed".into()));
        }
        self.0.post(core, msg, deadline)
    }

    fn negotiated(&self, version: &str) {
        *lock(&self.0.version) = Some(version.to_owned());
    }

    fn started(&self, core: &Arc<Core>) {
        let (link, core) = (Arc::clone(&self.0), Arc::clone(core));
        let name = format!("mcp-get-{}", core.name);
        let _ = thread::Builder::new().name(name).spawn(move || link.listen(&core));
    }

    fn alive(&self) -> bool {
        self.0.usable()
    }

    fn close(&self) {
        if self.0.closed.swap(true, Ordering::AcqRel) || self.0.gone.load(Ordering::Acquire) {
            return;
        }
        if lock(&self.0.session).is_none() {
            return;
        }
        let req = self.0.with_headers(
            self.0.agent.delete(&self.0.url).config().timeout_global(Some(Duration::from_secs(2))).build(),
        );
        // 200, 405 (not allowed) or an error: the session is left either way.
        let _ = req.call();
    }
}

/// Legacy HTTP+SSE: a GET stream for the server's messages, POSTs for ours.
pub(super) struct Legacy {
    poster: Arc<Poster>,
    reading: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

/// What POSTs to the endpoint (the caller's thread, and the reader's for replies).
struct Poster {
    agent: ureq::Agent,
    endpoint: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
}

impl Poster {
    fn post(&self, msg: &Value, deadline: Instant) -> Result<(), SendError> {
        let remaining = deadline.saturating_duration_since(Instant::now()).min(self.timeout);
        if remaining.is_zero() {
            return Err(SendError::Timeout);
        }
        let mut req = self
            .agent
            .post(&self.endpoint)
            .config()
            .timeout_global(Some(remaining))
            .build()
            .header("content-type", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = req.send(msg.to_string()).map_err(transport_error)?;
        let status = resp.status().as_u16();
        let body = snippet(resp.body_mut());
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(SendError::Failed(format!("the server answered HTTP {status}: {body}")))
        }
    }
}

impl Legacy {
    /// Opens the event stream and waits (until `deadline`) for its `endpoint` event.
    pub fn open(core: &Arc<Core>, config: &RemoteConfig, deadline: Instant) -> Result<Legacy, String> {
        let agent = agent();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut req = agent
            .get(&config.url)
            .config()
            .timeout_connect(Some(remaining.min(CONNECT_TIMEOUT)))
            .timeout_recv_response(Some(remaining))
            .timeout_per_read(Some(config.sse_read_timeout))
            .build()
            .header("accept", "text/event-stream");
        for (k, v) in &config.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = req.call().map_err(|e| match transport_error(e) {
            SendError::Timeout => "the event stream did not open in time".to_owned(),
            SendError::Failed(why) => why,
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(format!("the event stream answered HTTP {status}: {}", snippet(resp.body_mut())));
        }
        if !content_type(&resp).starts_with("text/event-stream") {
            return Err(
                "the URL did not answer with an event stream (is the transport streamable_http?)".into()
            );
        }
        let (tx, rx) = sync_channel::<Result<String, String>>(1);
        let reading = Arc::new(AtomicBool::new(true));
        let closed = Arc::new(AtomicBool::new(false));
        let poster_slot: Arc<Mutex<Option<Arc<Poster>>>> = Arc::new(Mutex::new(None));
        let (c, r, cl, slot, base) = (
            Arc::clone(core),
            Arc::clone(&reading),
            Arc::clone(&closed),
            Arc::clone(&poster_slot),
            config.url.clone(),
        );
        let body = resp.into_body();
        thread::Builder::new()
            .name(format!("mcp-sse-{}", core.name))
            .spawn(move || {
                let mut reader = BufReader::new(body.into_reader());
                let mut endpoint_sent = false;
                let read = read_events(&mut reader, Some(&cl), |event| {
                    match event.event.as_str() {
                        "endpoint" if !endpoint_sent => {
                            endpoint_sent = true;
                            let _ = tx.try_send(resolve_endpoint(&base, event.data.trim()));
                        }
                        "message" if !event.data.trim().is_empty() => {
                            for m in messages(&event.data).unwrap_or_default() {
                                if let Some(reply) = c.handle(m) {
                                    let poster = lock(&slot).clone();
                                    if let Some(p) = poster {
                                        let _ = p.post(&reply, Instant::now() + Duration::from_secs(5));
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                    true
                });
                r.store(false, Ordering::Release);
                c.fail_all(&match read {
                    Ok(()) => "the server closed the event stream".to_owned(),
                    Err(e) => e,
                });
                if !endpoint_sent {
                    let _ = tx.try_send(Err("the event stream ended before its endpoint event".into()));
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let endpoint = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(endpoint)) => endpoint,
            Ok(Err(e)) => {
                closed.store(true, Ordering::Release);
                return Err(e);
            }
            Err(_) => {
                closed.store(true, Ordering::Release);
                return Err("the event stream sent no endpoint event in time".into());
            }
        };
        let poster = Arc::new(Poster {
            agent,
            endpoint,
            headers: config.headers.clone(),
            timeout: config.timeout.unwrap_or(Duration::from_secs(30)),
        });
        *lock(&poster_slot) = Some(Arc::clone(&poster));
        Ok(Legacy { poster, reading, closed })
    }
}

impl Link for Legacy {
    fn cancel(&self, _core: &Core, msg: &Value) {
        if !self.alive() {
            return;
        }
        let (poster, msg) = (Arc::clone(&self.poster), msg.clone());
        let _ = thread::Builder::new().name("mcp-cancel".into()).spawn(move || {
            let _ = poster.post(&msg, Instant::now() + CANCEL_TIMEOUT);
        });
    }

    fn send(&self, _core: &Core, msg: &Value, deadline: Instant) -> Result<(), SendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::Failed("the connection was closed".into()));
        }
        self.poster.post(msg, deadline)
    }

    fn alive(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.reading.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// The scheme, host and port of an absolute http(s) URL (the port made explicit).
fn origin(uri: &ureq::http::Uri) -> Option<(String, String, u16)> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = uri.host()?.to_ascii_lowercase();
    Some((scheme, host, uri.port_u16().unwrap_or(default)))
}

/// Resolves the `endpoint` event's URL against the SSE URL; it must stay on the SSE URL's
/// scheme, host and port (a server must not send our messages, with our headers, elsewhere).
pub(super) fn resolve_endpoint(sse_url: &str, endpoint: &str) -> Result<String, String> {
    let base: ureq::http::Uri = sse_url.parse().map_err(|_| "the SSE URL is not valid".to_owned())?;
    let base_origin = origin(&base).ok_or("the SSE URL is not an http(s) URL")?;
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    let (scheme, _, _) = &base_origin;
    if endpoint.is_empty() || endpoint.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the endpoint event's URL is not valid".into());
    }
    let lower = endpoint.to_ascii_lowercase();
    let absolute = if lower.starts_with("http://") || lower.starts_with("https://") {
        endpoint.to_owned()
    } else if let Some(rest) = endpoint.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if endpoint.starts_with('/') {
        format!("{scheme}://{authority}{endpoint}")
    } else {
        // Relative to the SSE URL's directory (its query dropped).
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{endpoint}")
    };
    let uri: ureq::http::Uri =
        absolute.parse().map_err(|_| "the endpoint event's URL is not valid".to_owned())?;
    if origin(&uri).as_ref() != Some(&base_origin) {
        return Err("the endpoint event names another origin than the SSE URL; refused".into());
    }
    Ok(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_against_the_sse_url() {
        let sse = "http://127.0.0.1:8000/sse";
        assert_eq!(
            resolve_endpoint(sse, "/messages/?session_id=ab12").unwrap(),
            "http://127.0.0.1:8000/messages/?session_id=ab12"
        );
        assert_eq!(
            resolve_endpoint(sse, "message?sessionId=1").unwrap(),
            "http://127.0.0.1:8000/message?sessionId=1"
        );
        assert_eq!(
            resolve_endpoint("https://h.example/mcp/sse?k=v", "post").unwrap(),
            "https://h.example/mcp/post"
        );
        assert_eq!(
            resolve_endpoint(sse, "http://127.0.0.1:8000/m?x=1").unwrap(),
            "http://127.0.0.1:8000/m?x=1"
        );
        assert_eq!(
            resolve_endpoint("https://h.example/sse", "https://h.example:443/m").unwrap(),
            "https://h.example:443/m"
        );
    }

    #[test]
    fn endpoints_on_another_origin_are_refused() {
        let sse = "http://127.0.0.1:8000/sse";
        for bad in [
            "http://evil.example/messages",
            "https://127.0.0.1:8000/m",
            "http://127.0.0.1:8001/m",
            "//evil.example/m",
            "",
            "/m x",
        ] {
            assert!(resolve_endpoint(sse, bad).is_err(), "{bad:?} accepted");
        }
    }
}
