//! gzip as AstrBot 4.29 answers (its `GZipMiddleware(minimum_size=1024)`): JSON and
//! downloads of 1024 bytes or more compressed when the request takes gzip, every answer
//! `Vary: Accept-Encoding`, never the event stream, images, ranges or an HTTP/1.0 download.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{PNG, Resp, Server, bearer, read_response, upload_file};

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("a gzip body");
    out
}

fn setup() -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["file","config"]}"#);
    (s, key)
}

fn get(s: &Server, path: &str, key: &str, extra: &[(&str, &str)]) -> Resp {
    let auth = bearer(key);
    s.get(path, &[&[("Authorization", auth.as_str())], extra].concat())
}

#[test]
fn json_of_1024_bytes_or_more_is_gzipped_when_asked() {
    let (s, key) = setup();
    let plain = get(&s, "/api/v1/system-config", &key, &[]);
    s.expect(&plain, 200);
    assert!(plain.body.len() >= 1024, "{}", plain.body.len());
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));

    let packed = get(&s, "/api/v1/system-config", &key, &[("Accept-Encoding", "gzip, deflate")]);
    assert_eq!(packed.status, 200);
    assert_eq!(packed.header("content-encoding"), Some("gzip"));
    assert_eq!(packed.header("vary"), Some("Accept-Encoding"));
    assert!(packed.body.len() < plain.body.len() / 2, "{} of {}", packed.body.len(), plain.body.len());
    // The same document (but for the clock it carries).
    let unclocked = |bytes: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        v["data"].as_object_mut().unwrap().remove("server_utc_time");
        v
    };
    assert!(unclocked(&gunzip(&packed.body)) == unclocked(&plain.body), "the gzip body differs");

    let refused = get(&s, "/api/v1/system-config", &key, &[("Accept-Encoding", "gzip;q=0, br")]);
    assert_eq!(refused.header("content-encoding"), None);

    // Small answers are sent as they are.
    let small = get(&s, "/api/v1/api-keys/nope", &key, &[("Accept-Encoding", "gzip")]);
    assert!(small.body.len() < 1024);
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.header("vary"), Some("Accept-Encoding"));
}

#[test]
fn downloads_are_gzipped_as_sent_but_not_images_or_ranges() {
    let (s, key) = setup();
    let text = "a line of a log file, again and again\n".repeat(2000).into_bytes();
    let id = upload_file(&s, &key, "log.txt", Some("text/plain"), &text);
    let r = get(&s, &format!("/api/v1/files/{id}"), &key, &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(gunzip(&r.body), text);

    let range =
        get(&s, &format!("/api/v1/files/{id}"), &key, &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-9")]);
    assert_eq!((range.status, range.header("content-encoding")), (206, None));
    assert_eq!(range.body, &text[..10]);

    let mut png = PNG.to_vec();
    png.resize(4096, 0);
    let img = upload_file(&s, &key, "big.png", Some("image/png"), &png);
    let r = get(&s, &format!("/api/v1/files/{img}"), &key, &[("Accept-Encoding", "gzip")]);
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    assert_eq!(r.body, png);
}

/// One raw exchange, for the HTTP versions and headers the shared client does not send.
fn raw(s: &Server, request: &str) -> Resp {
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream))
}

#[test]
fn an_http_1_0_download_is_sent_whole_and_te_identity_cannot_force_buffering() {
    let (s, key) = setup();
    let text = "x".repeat(50_000).into_bytes();
    let id = upload_file(&s, &key, "x.txt", Some("text/plain"), &text);
    let path = format!("/api/v1/files/{id}");
    let auth = bearer(&key);
    let old =
        raw(&s, &format!("GET {path} HTTP/1.0\r\nAuthorization: {auth}\r\nAccept-Encoding: gzip\r\n\r\n"));
    assert_eq!((old.status, old.header("content-encoding")), (200, None));
    assert_eq!(old.header("content-length"), Some("50000"));
    assert_eq!(old.body, text);

    // A 1.1 client asking for identity transfer still gets the compressed file chunked
    // (tiny_http used to read a body of unknown length into memory for it: P8).
    let te = raw(
        &s,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\
             Accept-Encoding: gzip\r\nTE: identity\r\n\r\n"
        ),
    );
    assert_eq!(te.header("transfer-encoding"), Some("chunked"));
    assert_eq!(gunzip(&te.body), text);
}

#[test]
fn the_event_stream_is_never_gzipped() {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"]}"#);
    let auth = bearer(&key);
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[("Authorization", &auth), ("Content-Type", "application/json"), ("Accept-Encoding", "gzip")],
        Some(r#"{"username":"u","message":"what is astrbot?"}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream; charset=utf-8"));
    assert_eq!(r.header("content-encoding"), None);
    assert!(r.text().contains("data: "), "{}", r.text());
}
