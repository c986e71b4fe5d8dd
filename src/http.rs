//! Our own request and response types: plain data, parsed once at the edge.
//!
//! The server module turns a tiny_http request into a [`Request`] (method, decoded path
//! segments and query, lower-cased headers, the body as a bounded reader) and writes a
//! [`Response`] back. Nothing outside `server` touches tiny_http types. A response is a
//! status, headers and a body; the http layer owns the framing headers.

use std::io::{self, Read};
use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::error::ApiError;

/// Largest JSON body any route accepts (decision 6).
pub const MAX_JSON_BODY: usize = 1 << 20;

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
    pub fn read_body(&mut self, limit: usize) -> Result<Vec<u8>, ApiError> {
        if self.body_done {
            return Ok(Vec::new());
        }
        if self.body_len.is_some_and(|n| n > limit) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let mut buf = Vec::with_capacity(self.body_len.unwrap_or(0).min(limit));
        let read = self.body.reader().take(limit as u64 + 1).read_to_end(&mut buf);
        match read {
            Ok(_) if buf.len() > limit => return Err(ApiError::PayloadTooLarge(limit)),
            Ok(n) if self.body_len.is_some_and(|want| want != n) => {
                return Err(ApiError::bad_request("There was an error parsing the body"));
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Err(ApiError::BodyTimeout),
            Err(_) => return Err(ApiError::bad_request("There was an error parsing the body")),
        }
        self.body_done = true;
        Ok(buf)
    }

    /// The body as a reader that fails once more than `limit` bytes come; reading it to the
    /// end marks the body done.
    pub fn body_reader(&mut self, limit: usize) -> Result<LimitedBody<'_, 'a>, ApiError> {
        if self.body_len.is_some_and(|n| n > limit) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        Ok(LimitedBody { req: self, read: 0, limit })
    }

    /// Reads the body as JSON into `self.json`: empty means `null`, invalid JSON is 400.
    pub fn parse_json_body(&mut self) -> Result<(), ApiError> {
        let bytes = self.read_body(MAX_JSON_BODY)?;
        let text = String::from_utf8_lossy(&bytes);
        self.json = if text.trim().is_empty() {
            Some(Value::Null)
        } else {
            Some(serde_json::from_str(&text).map_err(|_| ApiError::bad_request("Invalid JSON body"))?)
        };
        Ok(())
    }

    /// The JSON body as an object, for handlers whose body is a model.
    pub fn json_object(&self) -> Result<&serde_json::Map<String, Value>, ApiError> {
        match &self.json {
            Some(Value::Object(map)) => Ok(map),
            _ => Err(ApiError::bad_request("Request body must be a JSON object")),
        }
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

/// What a handler produces: plain data, or a reader of known length (a file) that the
/// server copies to the client without holding it in memory.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub stream: Option<(Box<dyn Read + Send>, usize)>,
    /// Server-sent events: finished `data: ...` frames until the sender hangs up.
    pub sse: Option<std::sync::mpsc::Receiver<String>>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body,
            stream: None,
            sse: None,
        }
    }

    /// An SSE stream of the frames `events` sends (the server adds the framing).
    pub fn events(events: std::sync::mpsc::Receiver<String>) -> Response {
        let mut r = Response::new(200, "text/event-stream; charset=utf-8", Vec::new());
        r.sse = Some(events);
        r
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

    #[cfg(test)]
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    #[cfg(test)]
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("")
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
        assert!(matches!(req.read_body(3), Err(ApiError::PayloadTooLarge(3))));

        let mut data: &[u8] = b"{\"a\":";
        let mut req = Request::new("POST".into(), "/x", vec![], None, Some(50), &mut data);
        assert!(matches!(req.read_body(100), Err(ApiError::BadRequest(_))));

        let mut data: &[u8] = b"[1,";
        let mut req = Request::new("POST".into(), "/x", vec![], None, None, &mut data);
        assert_eq!(req.parse_json_body().unwrap_err().message(), "Invalid JSON body");

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
}
