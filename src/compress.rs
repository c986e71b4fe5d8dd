//! gzip of answers, as AstrBot 4.29's `GZipMiddleware(minimum_size=1024)` does it
//! (4.29 §6): a JSON answer or a download of 1024 bytes or more is sent with
//! `Content-Encoding: gzip` when the request's `Accept-Encoding` takes gzip, and every
//! answer says `Vary: Accept-Encoding`. Never compressed: the event stream, a partial
//! answer (206, ranges count bytes of the file as stored), images in formats that are
//! compressed already (PNG, JPEG, GIF, WebP), audio, video, archives, and anything that
//! already has a `Content-Encoding`.
//!
//! Bytes in memory are compressed in memory (the handler already holds them). A file is
//! compressed as it is sent (flate2's reader over the file), so its size never matters;
//! its length is then unknown and it goes chunked, which needs an HTTP/1.1 client (an
//! HTTP/1.0 client gets the file as stored).

use std::io::Write;

use flate2::Compression;
use flate2::read::GzEncoder as GzReader;
use flate2::write::GzEncoder;

use crate::http::{Body, Response};

/// Smaller answers are sent as they are (AstrBot's `minimum_size`).
pub const MIN_SIZE: usize = 1024;

/// Whether an `Accept-Encoding` value takes gzip: `gzip` or `*` listed without `q=0`
/// (an explicit `gzip;q=0` refuses it even when `*` is listed).
pub fn accepts_gzip(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut star = false;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => return q > 0.0,
            "*" => star = q > 0.0,
            _ => {}
        }
    }
    star
}

/// Whether a type is worth compressing.
fn compressible(content_type: &str) -> bool {
    let t = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    !(t == "text/event-stream"
        || matches!(t.as_str(), "image/png" | "image/jpeg" | "image/jpg" | "image/gif" | "image/webp")
        || t.starts_with("audio/")
        || t.starts_with("video/")
        || matches!(
            t.as_str(),
            "application/zip" | "application/gzip" | "application/x-gzip" | "application/x-tar+gzip"
        ))
}

fn has(response: &Response, name: &str) -> bool {
    response.header_value(name).is_some()
}

/// Compresses `response` for a request with this `Accept-Encoding` when the rules above
/// allow it, and adds `Vary: Accept-Encoding` to every answer but an event stream.
/// `chunked_ok`: the client speaks HTTP/1.1, so a file may go out with an unknown length.
pub fn apply(response: &mut Response, accept: Option<&str>, chunked_ok: bool, head: bool) {
    if matches!(response.body, Body::Events(_)) {
        return;
    }
    if !has(response, "Vary") {
        response.header("Vary", "Accept-Encoding".into());
    }
    let content_type = response.header_value("Content-Type").unwrap_or("");
    if head
        || response.status == 206
        || !(200..300).contains(&response.status) && response.status < 400
        || has(response, "Content-Encoding")
        || has(response, "Content-Range")
        || !compressible(content_type)
        || !accepts_gzip(accept)
    {
        return;
    }
    let body = std::mem::replace(&mut response.body, Body::Bytes(Vec::new()));
    response.body = match body {
        Body::Bytes(bytes) if bytes.len() >= MIN_SIZE => match gzip(&bytes) {
            Some(packed) => {
                response.header("Content-Encoding", "gzip".into());
                Body::Bytes(packed)
            }
            None => Body::Bytes(bytes),
        },
        Body::File(reader, len) if len >= MIN_SIZE && chunked_ok => {
            response.header("Content-Encoding", "gzip".into());
            Body::Stream(Box::new(GzReader::new(reader, Compression::default())))
        }
        other => other,
    };
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = GzEncoder::new(Vec::with_capacity(bytes.len() / 3 + 64), Compression::default());
    out.write_all(bytes).ok()?;
    out.finish().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    fn header<'r>(r: &'r Response, name: &str) -> Option<&'r str> {
        r.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    #[test]
    fn what_accept_encoding_takes() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, gzip;q=0.5, br")));
        assert!(accepts_gzip(Some("*")));
        assert!(accepts_gzip(Some("GZIP")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("gzip;q=0, *")));
        assert!(!accepts_gzip(Some("br, deflate")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
        assert!(!accepts_gzip(Some("*;q=0")));
    }

    #[test]
    fn large_json_is_compressed_small_is_not() {
        let big = serde_json::json!({"data": "x".repeat(4000)});
        let mut r = Response::json(200, &big);
        apply(&mut r, Some("gzip"), true, false);
        assert_eq!(header(&r, "Content-Encoding"), Some("gzip"));
        assert_eq!(header(&r, "Vary"), Some("Accept-Encoding"));
        let Body::Bytes(packed) = &r.body else { panic!("bytes") };
        assert!(packed.len() < 200, "{}", packed.len());
        assert_eq!(gunzip(packed), serde_json::to_vec(&big).unwrap());

        let mut small = Response::json(200, &serde_json::json!({"a": 1}));
        apply(&mut small, Some("gzip"), true, false);
        assert_eq!(header(&small, "Content-Encoding"), None);
        assert_eq!(header(&small, "Vary"), Some("Accept-Encoding"));

        let mut unasked = Response::json(200, &big);
        apply(&mut unasked, None, true, false);
        assert_eq!(header(&unasked, "Content-Encoding"), None);
        assert_eq!(header(&unasked, "Vary"), Some("Accept-Encoding"));
    }

    #[test]
    fn images_ranges_and_streams_are_left_alone() {
        let bytes = vec![0u8; 4096];
        for (status, ty) in [(200, "image/png"), (200, "video/mp4"), (200, "audio/wav"), (206, "text/plain")]
        {
            let mut r = Response::new(status, ty, bytes.clone());
            apply(&mut r, Some("gzip"), true, false);
            assert_eq!(header(&r, "Content-Encoding"), None, "{status} {ty}");
        }
        let (_tx, rx) = std::sync::mpsc::channel();
        let mut events = Response::events(rx);
        apply(&mut events, Some("gzip"), true, false);
        assert_eq!(header(&events, "Vary"), None);
        assert_eq!(header(&events, "Content-Encoding"), None);
        let mut head = Response::new(200, "application/json", bytes.clone());
        apply(&mut head, Some("gzip"), true, true);
        assert_eq!(header(&head, "Content-Encoding"), None);
    }

    #[test]
    fn files_are_compressed_as_they_are_sent_to_1_1_clients() {
        let text = "line of a text file\n".repeat(500).into_bytes();
        let file = || Box::new(std::io::Cursor::new(text.clone())) as Box<dyn Read + Send>;
        let mut r = Response::file(200, "text/plain", file(), text.len());
        apply(&mut r, Some("gzip"), true, false);
        assert_eq!(header(&r, "Content-Encoding"), Some("gzip"));
        let Body::Stream(mut reader) = std::mem::replace(&mut r.body, Body::Bytes(vec![])) else {
            panic!("a stream")
        };
        let mut packed = Vec::new();
        reader.read_to_end(&mut packed).unwrap();
        assert_eq!(gunzip(&packed), text);

        let mut old = Response::file(200, "text/plain", file(), text.len());
        apply(&mut old, Some("gzip"), false, false);
        assert_eq!(header(&old, "Content-Encoding"), None);
        assert!(matches!(old.body, Body::File(_, n) if n == text.len()));
    }
}
