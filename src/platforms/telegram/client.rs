//! The Bot API over HTTP: one ureq agent per bot, a method call with JSON parameters or a
//! hand-built multipart upload, Telegram's `{ok, result | error_code, description,
//! parameters}` envelope read into a [`CallError`], and file downloads.
//!
//! The token is part of every URL (`{base}{token}/{method}`), so nothing here ever returns
//! or logs a URL, and every error text is passed through [`Client::scrub`] first: ureq's own
//! error texts may quote the URL. Redirects are never followed (a redirect would carry the
//! token-bearing path to another host), statuses are read as answers (Telegram explains a
//! refusal in its JSON body), and every answer is read with a size cap.

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};

/// The largest JSON answer read (a full `getUpdates` batch of 100 long messages fits).
const MAX_ANSWER: u64 = 8 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// Telegram (or whatever answers at the base URL) answered with an error.
    Api {
        code: u16,
        description: String,
        /// `parameters.retry_after` of a 429, in seconds.
        retry_after: Option<u64>,
    },
    /// No usable answer: connection refused or reset, timeout, a body that is not the
    /// envelope. The text is scrubbed.
    Transport(String),
}

impl CallError {
    pub fn text(&self) -> String {
        match self {
            CallError::Api { code, description, .. } => format!("{code} {description}"),
            CallError::Transport(t) => t.clone(),
        }
    }

    /// The token was refused: 401, or 404 for a token Telegram cannot even parse.
    pub fn bad_token(&self) -> bool {
        matches!(self, CallError::Api { code: 401 | 404, .. })
    }
}

/// One file part of a multipart upload, streamed from its file.
pub struct Upload<'a> {
    /// The parameter name (`photo`, `document`, `voice`, `video`, `animation`).
    pub field: &'a str,
    pub filename: &'a str,
    pub mime: &'a str,
    pub path: &'a std::path::Path,
    /// The file's size, checked against Telegram's limits by the caller.
    pub len: u64,
}

pub struct Client {
    token: String,
    api_base: String,
    file_base: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(token: &str, api_base: &str, file_base: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            // A default for every call; each call sets its own below.
            .timeout_global(Some(Duration::from_secs(60)))
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("astrbot/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            token: token.to_owned(),
            api_base: api_base.to_owned(),
            file_base: file_base.to_owned(),
            agent,
        }
    }

    /// Removes the token (and its secret part alone) from a text that may quote a URL.
    pub fn scrub(&self, text: &str) -> String {
        scrub(&self.token, text)
    }

    /// Calls `method` with JSON parameters; `timeout` bounds the whole exchange.
    pub fn call(&self, method: &str, params: &Value, timeout: Duration) -> Result<Value, CallError> {
        let url = format!("{}{}/{method}", self.api_base, self.token);
        let sent = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", "application/json")
            .send(params.to_string());
        self.answer(sent)
    }

    /// Calls `method` with `fields` as form fields and one uploaded file, as
    /// multipart/form-data. The file is streamed (with a Content-Length, which every
    /// server takes), never held in memory.
    pub fn upload(
        &self,
        method: &str,
        fields: &[(&str, String)],
        file: &Upload<'_>,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let url = format!("{}{}/{method}", self.api_base, self.token);
        let boundary = format!("astrbot-{}", uuid::Uuid::new_v4().simple());
        let head = multipart_head(&boundary, fields, file);
        let tail = multipart_tail(&boundary);
        let opened = std::fs::File::open(file.path)
            .map_err(|e| CallError::Transport(format!("cannot read the attachment: {e}")))?;
        let len = (head.len() as u64).saturating_add(file.len).saturating_add(tail.len() as u64);
        let body = std::io::Cursor::new(head).chain(opened.take(file.len)).chain(std::io::Cursor::new(tail));
        let sent = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .header("content-length", len.to_string())
            .send(ureq::SendBody::from_owned_reader(body));
        self.answer(sent)
    }

    /// Downloads `file_path` (from `getFile`) and hands the body, capped at `max` bytes
    /// while it is read, to `store`.
    pub fn download<T>(
        &self,
        file_path: &str,
        max: u64,
        timeout: Duration,
        store: impl FnOnce(&mut dyn Read) -> Result<T, String>,
    ) -> Result<T, String> {
        if !file_path_ok(file_path) {
            return Err("Telegram gave an unusable file path".into());
        }
        let url = format!("{}{}/{file_path}", self.file_base, self.token);
        let mut resp = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()
            .map_err(|e| self.scrub(&format!("download failed: {e}")))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(format!("download failed: HTTP {status}"));
        }
        if resp.body().content_length().is_some_and(|n| n > max) {
            return Err(format!("the file is larger than {} MB", max / (1024 * 1024)));
        }
        let mut reader = resp.body_mut().with_config().limit(max).reader();
        store(&mut reader).map_err(|e| self.scrub(&e))
    }

    fn answer(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, CallError> {
        let mut resp = sent.map_err(|e| CallError::Transport(self.scrub(&transport_text(&e))))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| CallError::Transport(self.scrub(&format!("reading the answer failed: {e}"))))?;
        envelope(status, &text).map_err(|e| match e {
            CallError::Api { code, description, retry_after } => {
                CallError::Api { code, description: self.scrub(&description), retry_after }
            }
            other => other,
        })
    }
}

fn transport_text(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "Telegram did not answer in time".into(),
        other => format!("cannot reach Telegram: {other}"),
    }
}

/// Reads Telegram's envelope: `result` when `ok`, else the error it describes. A body that
/// is not the envelope (a proxy's HTML page) is a transport error for 5xx and anything
/// unexpected.
pub fn envelope(status: u16, text: &str) -> Result<Value, CallError> {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let Some(v) = parsed.filter(Value::is_object) else {
        return Err(match status {
            200..=299 => CallError::Transport("Telegram's answer is not JSON".into()),
            _ => CallError::Api { code: status, description: format!("HTTP {status}"), retry_after: None },
        });
    };
    if v["ok"] == json!(true) && (200..300).contains(&status) {
        return Ok(v["result"].clone());
    }
    let code = v["error_code"].as_u64().and_then(|c| u16::try_from(c).ok()).filter(|c| *c >= 300);
    let code = code.unwrap_or(if status >= 300 { status } else { 500 });
    let description: String =
        v["description"].as_str().unwrap_or("no description").chars().take(500).collect();
    let retry_after = v["parameters"]["retry_after"].as_u64();
    Err(CallError::Api { code, description, retry_after })
}

/// Removes a token from a text.
pub fn scrub(token: &str, text: &str) -> String {
    if token.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(token, "<token>");
    // A URL-encoded colon, or the secret quoted alone.
    if let Some((_, secret)) = token.split_once(':')
        && secret.len() >= 6
    {
        out = out.replace(secret, "<token>");
    }
    out
}

/// A relative path as `getFile` gives it (`photos/file_1.jpg`): nothing that could step
/// out of the file base or add a query.
fn file_path_ok(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 512
        && !p.starts_with('/')
        && !p.split('/').any(|s| s == ".." || s == ".")
        && p.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\' | b'%'))
}

/// The start of a multipart/form-data body: the fields, then the file part's head. The
/// file's bytes follow, then [`multipart_tail`].
pub fn multipart_head(boundary: &str, fields: &[(&str, String)], file: &Upload<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(512);
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{}\"\r\n\r\n", header_safe(name)).as_bytes(),
        );
        body.extend_from_slice(value.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        format!(
            "Content-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
            header_safe(file.field),
            header_safe(file.filename),
            header_safe(file.mime)
        )
        .as_bytes(),
    );
    body
}

pub fn multipart_tail(boundary: &str) -> Vec<u8> {
    format!("\r\n--{boundary}--\r\n").into_bytes()
}

/// A value safe inside a quoted header parameter: no quote, backslash or control character.
fn header_safe(s: &str) -> String {
    let cleaned: String =
        s.chars().map(|c| if c == '"' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    if cleaned.is_empty() { "file".into() } else { cleaned }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_scrubbed_whole_and_alone() {
        let t = "123456:ABC-def_ghi";
        let s = scrub(t, "GET http://h/bot123456:ABC-def_ghi/getMe failed; 123456%3AABC-def_ghi");
        assert!(!s.contains("ABC-def_ghi"), "{s}");
        assert!(s.contains("/bot<token>/getMe"), "{s}");
        // A short secret is only removed as a whole token (it could match anything).
        assert_eq!(scrub("1:ab", "tab 1:ab"), "tab <token>");
    }

    #[test]
    fn the_envelope_gives_result_or_error() {
        assert_eq!(envelope(200, r#"{"ok":true,"result":{"id":1}}"#), Ok(json!({"id": 1})));
        let e = envelope(
            429,
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#,
        );
        assert_eq!(
            e,
            Err(CallError::Api {
                code: 429,
                description: "Too Many Requests: retry after 3".into(),
                retry_after: Some(3)
            })
        );
        assert!(matches!(envelope(502, "<html>bad gateway</html>"), Err(CallError::Api { code: 502, .. })));
        assert!(matches!(envelope(200, "nope"), Err(CallError::Transport(_))));
        let bad = envelope(401, r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#).unwrap_err();
        assert!(bad.bad_token());
    }

    #[test]
    fn multipart_body_has_fields_then_the_file() {
        let path = std::path::Path::new("/unused");
        let file = Upload { field: "photo", filename: "a\"b\r\n.png", mime: "image/png", path, len: 6 };
        let mut body = multipart_head("XYZ", &[("chat_id", "42".into()), ("caption", "hi".into())], &file);
        body.extend_from_slice(b"\x89PNG\0\xff");
        body.extend_from_slice(&multipart_tail("XYZ"));
        let mut expected = b"--XYZ\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n\
--XYZ\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\nhi\r\n\
--XYZ\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a_b__.png\"\r\nContent-Type: image/png\r\n\r\n"
            .to_vec();
        expected.extend_from_slice(b"\x89PNG\0\xff\r\n--XYZ--\r\n");
        assert_eq!(body, expected);
    }

    #[test]
    fn file_paths_stay_under_the_base() {
        assert!(file_path_ok("photos/file_1.jpg"));
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a?b", "a#b", "a b", "a%2e%2e"] {
            assert!(!file_path_ok(bad), "{bad}");
        }
    }
}
