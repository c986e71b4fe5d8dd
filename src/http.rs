//! Our own request and response types: plain data, parsed once at the edge.
//!
//! The server module turns a tiny_http request into a [`Request`] (method, decoded path
//! segments and query, lower-cased headers, the body as a bounded reader) and writes a
//! [`Response`] back. Nothing outside `server` touches tiny_http types. A response is a
//! status, headers and one [`Body`]: bytes, a file of known length, or a stream of events;
//! the http layer owns the framing headers.
//!
//! This module sits below the error type and imports nothing from the crate: reading and
//! checking a body fails with its own small [`BodyError`], which `error` turns into an
//! `ApiError` (and so into a status and envelope) in the one place that does that mapping.
//! The multipart checks live here too, because they are request parsing: a route that
//! takes an upload refuses a body without a usable boundary before anything is read.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::mpsc::Receiver;

use serde_json::{Value, json};

/// Largest JSON body any route accepts: far above any real request, and small enough that
/// a body is read whole into memory without a client choosing how much.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// Why a request body cannot be had. Each variant is one answer the client sees;
/// `ApiError`'s `From<BodyError>` gives it its status and AstrBot's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than the route's limit (in bytes) was announced or sent: 413.
    TooLarge(usize),
    /// The body did not arrive at the transport's minimum rate: 408.
    Timeout,
    /// The body broke off before its announced length, or could not be read: 400.
    Unreadable,
    /// The body is not JSON: 400.
    InvalidJson,
    /// The JSON body is not an object where a model is expected: 400.
    NotAnObject,
    /// An upload route got something other than `multipart/form-data`: 400.
    NotMultipart,
    /// A `multipart/form-data` body without a boundary to split it by: 400.
    MissingBoundary,
}

pub struct Request<'a> {
    pub method: String,
    /// The path without the query string, as sent.
    pub path: String,
    /// Decoded `key=value` pairs in order.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub remote: Option<SocketAddr>,
    /// The announced `Content-Length`, `None` for chunked or absent.
    pub body_len: Option<usize>,
    /// Values of `{name}` segments of the matched route, in order.
    pub params: Vec<String>,
    /// The body parsed as JSON before authentication (AstrBot parses before it checks keys).
    pub json: Option<Value>,
    body: &'a mut dyn BodySource,
    body_done: bool,
}

/// Where a request body comes from; the server reads it lazily, so that a body we refuse
/// is never invited with `100 Continue`.
pub trait BodySource {
    fn reader(&mut self) -> &mut dyn Read;
}

impl BodySource for &[u8] {
    fn reader(&mut self) -> &mut dyn Read {
        self
    }
}

impl<'a> Request<'a> {
    pub fn new(
        method: String,
        url: &str,
        headers: Vec<(String, String)>,
        remote: Option<SocketAddr>,
        body_len: Option<usize>,
        body: &'a mut dyn BodySource,
    ) -> Request<'a> {
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p.to_owned(), parse_query(q)),
            None => (url.to_owned(), Vec::new()),
        };
        Request {
            method,
            path,
            query,
            headers,
            remote,
            body_len,
            params: Vec::new(),
            json: None,
            body_done: body_len == Some(0),
            body,
        }
    }

    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The first query parameter of that name.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A cookie's value from the `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim())
    }

    /// Reads the whole body, refusing more than `limit` bytes with 413. A body that ends
    /// before its announced length is a client error, not a short success.
    pub fn read_body(&mut self, limit: usize) -> Result<Vec<u8>, BodyError> {
        if self.body_done {
            return Ok(Vec::new());
        }
        if self.body_len.is_some_and(|n| n > limit) {
            return Err(BodyError::TooLarge(limit));
        }
        let mut buf = Vec::with_capacity(self.body_len.unwrap_or(0).min(limit));
        let read = self.body.reader().take(limit as u64 + 1).read_to_end(&mut buf);
        match read {
            Ok(_) if buf.len() > limit => return Err(BodyError::TooLarge(limit)),
            Ok(n) if self.body_len.is_some_and(|want| want != n) => return Err(BodyError::Unreadable),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Err(BodyError::Timeout),
            Err(_) => return Err(BodyError::Unreadable),
        }
        self.body_done = true;
        Ok(buf)
    }

    /// The body as a reader that fails once more than `limit` bytes come; reading it to the
    /// end marks the body done.
    pub fn body_reader(&mut self, limit: usize) -> Result<LimitedBody<'_, 'a>, BodyError> {
        if self.body_len.is_some_and(|n| n > limit) {
            return Err(BodyError::TooLarge(limit));
        }
        Ok(LimitedBody { req: self, read: 0, limit })
    }

    /// Reads the body as JSON into `self.json`: empty means `null`, invalid JSON is 400.
    pub fn parse_json_body(&mut self) -> Result<(), BodyError> {
        let bytes = self.read_body(MAX_JSON_BODY)?;
        let text = String::from_utf8_lossy(&bytes);
        self.json = if text.trim().is_empty() {
            Some(Value::Null)
        } else {
            Some(serde_json::from_str(&text).map_err(|_| BodyError::InvalidJson)?)
        };
        Ok(())
    }

    /// The JSON body as an object, for handlers whose body is a model.
    pub fn json_object(&self) -> Result<&serde_json::Map<String, Value>, BodyError> {
        match &self.json {
            Some(Value::Object(map)) => Ok(map),
            _ => Err(BodyError::NotAnObject),
        }
    }

    /// The boundary of a `multipart/form-data` body, from the `Content-Type` header alone.
    /// Upload routes ask for it before authentication, as AstrBot checks the form before the
    /// key; that is safe because it reads no body, and the body is read only after auth.
    pub fn multipart_boundary(&self) -> Result<String, BodyError> {
        let ct = self.header("content-type").unwrap_or("");
        if !ct.to_ascii_lowercase().starts_with("multipart/form-data") {
            return Err(BodyError::NotMultipart);
        }
        ct.split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
            .ok_or(BodyError::MissingBoundary)
    }
}

/// A request body read through a size cap (see [`Request::body_reader`]).
pub struct LimitedBody<'r, 'a> {
    req: &'r mut Request<'a>,
    read: usize,
    limit: usize,
}

impl LimitedBody<'_, '_> {
    /// Whether the body went over its cap.
    pub fn over_limit(&self) -> bool {
        self.read > self.limit
    }

    /// Reads and drops what is left (up to the cap), so the body counts as read.
    pub fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(())
    }
}

impl Read for LimitedBody<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.req.body_done {
            return Ok(0);
        }
        let n = self.req.body.reader().read(buf)?;
        if n == 0 {
            self.req.body_done = true;
        }
        self.read += n;
        if self.read > self.limit {
            return Err(io::Error::other("request body over its size limit"));
        }
        Ok(n)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// `a=1&b=x%20y` → `[("a","1"),("b","x y")]`, with `+` as a space.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// Decodes `%XX` escapes; invalid escapes stay as they are, invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a response carries after its head. One value, so a response cannot be both a file
/// and an event stream, or bytes that a stream would silently replace.
pub enum Body {
    /// Bytes held in memory, sent with their length.
    Bytes(Vec<u8>),
    /// A reader of known length (a file or a range of one) that the server copies to the
    /// client with that `Content-Length`, never holding it whole in memory.
    File(Box<dyn Read + Send>, usize),
    /// A reader of unknown length (a file compressed as it is sent), sent chunked; only
    /// for HTTP/1.1 clients (`compress` decides).
    Stream(Box<dyn Read + Send>),
    /// Server-sent events: finished `data: ...` frames until the sender hangs up. The server
    /// adds the framing and a heartbeat after each silent second.
    Events(Receiver<String>),
}

/// What a handler produces: a status, headers and a [`Body`], all plain data.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response::with_body(status, content_type, Body::Bytes(body))
    }

    /// A file (or a part of one) of `len` bytes, streamed by the server.
    pub fn file(status: u16, content_type: &str, reader: Box<dyn Read + Send>, len: usize) -> Response {
        Response::with_body(status, content_type, Body::File(reader, len))
    }

    /// An SSE stream of the frames `events` sends (the server adds the framing).
    pub fn events(events: Receiver<String>) -> Response {
        Response::with_body(200, "text/event-stream; charset=utf-8", Body::Events(events))
    }

    fn with_body(status: u16, content_type: &str, body: Body) -> Response {
        Response { status, headers: vec![("Content-Type", content_type.to_owned())], body }
    }

    /// A JSON document as it is.
    pub fn json(status: u16, value: &Value) -> Response {
        let body = serde_json::to_vec(value).unwrap_or_default();
        Response::new(status, "application/json", body)
    }

    /// `{"status":"ok","message":null,"data":...}`; `data` is never `null`.
    pub fn ok(data: Value) -> Response {
        let data = if data.is_null() { json!({}) } else { data };
        Response::json(200, &json!({"status": "ok", "message": null, "data": data}))
    }

    /// A success envelope with AstrBot's message text (`"保存成功~"`, ...).
    pub fn ok_with_message(data: Value, message: &str) -> Response {
        let data = if data.is_null() { json!({}) } else { data };
        Response::json(200, &json!({"status": "ok", "message": message, "data": data}))
    }

    /// `{"status":"error","message":...}` with no `data` key.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &json!({"status": "error", "message": message}))
    }

    pub fn header(&mut self, name: &'static str, value: String) {
        self.headers.push((name, value));
    }

    /// The first header of that name (any case).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text when it is bytes; files and streams read as empty.
    #[cfg(test)]
    pub fn body_str(&self) -> &str {
        match &self.body {
            Body::Bytes(bytes) => std::str::from_utf8(bytes).unwrap_or(""),
            Body::File(..) | Body::Stream(_) | Body::Events(_) => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_percent_decoding() {
        assert_eq!(
            parse_query("api_key=abk_1&x=a%20b+c&&flag"),
            vec![
                ("api_key".into(), "abk_1".into()),
                ("x".into(), "a b c".into()),
                ("flag".into(), "".into())
            ]
        );
        assert_eq!(percent_decode("%E4%BD%A0%2"), "你%2");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn body_limits() {
        let mut data: &[u8] = b"{\"a\":1}";
        let mut req = Request::new("POST".into(), "/x", vec![], None, Some(7), &mut data);
        assert_eq!(req.read_body(3), Err(BodyError::TooLarge(3)));

        let mut data: &[u8] = b"{\"a\":";
        let mut req = Request::new("POST".into(), "/x", vec![], None, Some(50), &mut data);
        assert_eq!(req.read_body(100), Err(BodyError::Unreadable));

        let mut data: &[u8] = b"[1,";
        let mut req = Request::new("POST".into(), "/x", vec![], None, None, &mut data);
        assert_eq!(req.parse_json_body(), Err(BodyError::InvalidJson));
        assert_eq!(req.json_object().err(), Some(BodyError::NotAnObject));

        let mut data: &[u8] = b"";
        let mut req = Request::new("POST".into(), "/x", vec![], None, None, &mut data);
        req.parse_json_body().unwrap();
        assert_eq!(req.json, Some(Value::Null));
    }

    #[test]
    fn envelope_shapes() {
        assert_eq!(Response::ok(Value::Null).body_str(), r#"{"status":"ok","message":null,"data":{}}"#);
        assert_eq!(
            Response::ok(json!({"bot_ids": []})).body_str(),
            r#"{"status":"ok","message":null,"data":{"bot_ids":[]}}"#
        );
    }

    #[test]
    fn multipart_boundaries() {
        let boundary = |ct: &str| {
            let mut data: &[u8] = b"";
            let headers = vec![("content-type".to_owned(), ct.to_owned())];
            Request::new("POST".into(), "/x", headers, None, None, &mut data).multipart_boundary()
        };
        assert_eq!(boundary("Multipart/Form-Data; boundary=\"abc\""), Ok("abc".to_owned()));
        assert_eq!(boundary("multipart/form-data; charset=utf-8; BOUNDARY = x1"), Ok("x1".to_owned()));
        assert_eq!(boundary("multipart/form-data; boundary=\"\""), Err(BodyError::MissingBoundary));
        assert_eq!(boundary("multipart/form-data"), Err(BodyError::MissingBoundary));
        assert_eq!(boundary("application/json"), Err(BodyError::NotMultipart));
        assert_eq!(boundary(""), Err(BodyError::NotMultipart));
    }

    #[test]
    fn one_body_per_response() {
        let r = Response::file(206, "image/png", Box::new(&b"abcdef"[1..4]), 3);
        assert_eq!((r.status, r.header_value("content-type")), (206, Some("image/png")));
        let Body::File(mut reader, len) = r.body else { panic!("not a file body") };
        let mut read = String::new();
        reader.read_to_string(&mut read).unwrap();
        assert_eq!((read.as_str(), len), ("bcd", 3));

        let (tx, rx) = std::sync::mpsc::channel();
        let r = Response::events(rx);
        assert_eq!(r.header_value("Content-Type"), Some("text/event-stream; charset=utf-8"));
        assert_eq!(r.body_str(), "");
        tx.send("data: {}\n\n".to_owned()).unwrap();
        let Body::Events(events) = r.body else { panic!("not an event body") };
        assert_eq!(events.recv().unwrap(), "data: {}\n\n");

        let r = Response::new(404, "text/plain", b"gone".to_vec());
        assert!(matches!(&r.body, Body::Bytes(b) if b == b"gone"));
    }
}
