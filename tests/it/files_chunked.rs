//! Chunked uploads (AstrBot 4.29 `/api/v1/files/upload/*`), download tokens, the upload
//! answer's `stored_filename`, and the 411/413 body checks, against the real binary.
//!
//! The must-show: a 200 MB upload in 1 MiB chunks, cut off midway (the client stops in the
//! middle of a chunk), its `status` showing what arrived, resumed and completed, then
//! downloaded byte for byte, with the server's peak RSS (`VmHWM` in `/proc/<pid>/status`,
//! reset after start-up and login, whose argon2id hash alone takes 19 MiB) under 32 MB.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Resp, Server, TempDir, bearer, eventually, http, multipart, upload};

const MIB: usize = 1 << 20;

fn setup(extra: &[&str]) -> (Server, String) {
    let s = Server::start_with(Arc::new(TempDir::new()), extra);
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["file"]}"#);
    (s, key)
}

/// The `data` of a success, or a failure with everything printed.
fn ok(s: &Server, r: &Resp) -> Value {
    assert!(r.status == 200 && r.json()["status"] == "ok", "{} {}\n{}", r.status, r.text(), s.log());
    r.json()["data"].clone()
}

/// A 200-error with exactly this message.
fn soft(s: &Server, r: &Resp, message: &str) {
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"status": "error", "message": message})),
        "{}\n{}",
        r.text(),
        s.log()
    );
}

fn init(s: &Server, k: &str, filename: &str, total: usize) -> String {
    let body = json!({"filename": filename, "total_size": total, "content_type": "application/octet-stream"});
    let d = ok(s, &s.call("POST", "/api/v1/files/upload/init", k, Some(body)));
    assert_eq!(
        (d["chunk_size"].as_u64(), d["total_chunks"].as_u64()),
        (Some(MIB as u64), Some(total.div_ceil(MIB) as u64))
    );
    d["upload_id"].as_str().unwrap().to_owned()
}

fn chunk(s: &Server, k: &str, id: &str, index: &str, bytes: &[u8]) -> Resp {
    upload(
        s,
        k,
        "/api/v1/files/upload/chunk",
        &[
            ("upload_id", None, None, id.as_bytes()),
            ("chunk_index", None, None, index.as_bytes()),
            ("chunk", Some("blob"), None, bytes),
        ],
    )
}

fn call(s: &Server, k: &str, what: &str, id: &str) -> Resp {
    s.call("POST", &format!("/api/v1/files/upload/{what}"), k, Some(json!({"upload_id": id})))
}

/// Deterministic bytes of the big file: chunk `i` of a file of `total` bytes.
fn piece(i: usize, total: usize) -> Vec<u8> {
    let len = (total - i * MIB).min(MIB);
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_200_mb_upload_is_resumed_after_an_interruption_in_bounded_memory() {
    // The default settings: a chunked upload may be 512 MB whatever --max-upload-mb says.
    let (s, k) = setup(&[]);
    // The peak of start-up and login (argon2id takes 19 MiB by design, decision 4) is not
    // the upload's: the kernel's high-water mark is reset here (`clear_refs` 5), so the
    // peak measured below is the one of the upload, resume and download.
    std::fs::write(format!("/proc/{}/clear_refs", s.pid()), "5").unwrap();
    let start = vm_hwm_kib(s.pid());
    assert!(start < 32 * 1024, "resting RSS {start} KiB");
    let total = 200_000_000;
    let id = init(&s, &k, "big.bin", total);
    let chunks = total.div_ceil(MIB);
    assert_eq!(chunks, 191);
    // The first half arrives.
    for i in 0..chunks / 2 {
        let d = ok(&s, &chunk(&s, &k, &id, &i.to_string(), &piece(i, total)));
        assert_eq!((d["received"].as_u64(), d["chunk_index"].as_u64()), (Some(i as u64 + 1), Some(i as u64)));
    }
    // Then the client stops in the middle of a chunk: half its body sent, the connection gone.
    let cut = chunks / 2;
    let (ct, body) = multipart(&[
        ("upload_id", None, None, id.as_bytes()),
        ("chunk_index", None, None, cut.to_string().as_bytes()),
        ("chunk", Some("blob"), None, &piece(cut, total)),
    ]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    let head = format!(
        "POST /api/v1/files/upload/chunk HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {k}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body[..body.len() / 2]).unwrap();
    drop(c);
    // `status` says what arrived: the first half, not the cut chunk (the server may still be
    // reading it when we ask, and then it is not received either).
    let st = ok(&s, &call(&s, &k, "status", &id));
    let received: Vec<u64> =
        st["received_chunks"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(received, (0..cut as u64).collect::<Vec<_>>());
    assert_eq!(
        (st["total_chunks"].as_u64(), st["chunk_size"].as_u64()),
        (Some(chunks as u64), Some(MIB as u64))
    );
    assert!((3590..=3600).contains(&st["expires_in"].as_i64().unwrap()), "{st}");
    // Completing now names what is missing.
    let r = call(&s, &k, "complete", &id);
    assert!(
        r.json()["message"].as_str().unwrap().starts_with(&format!("Chunks incomplete, missing: [{cut}, ")),
        "{}",
        r.text()
    );
    // Resumed: what status says is missing, then complete. The cut chunk may still be on
    // the server's hands for a moment (`Chunk is being received`), then it is free again.
    for i in (0..chunks).filter(|i| !received.contains(&(*i as u64))) {
        let bytes = piece(i, total);
        let mut last = None;
        let sent = eventually(10, || {
            let r = chunk(&s, &k, &id, &i.to_string(), &bytes);
            let done = r.json()["status"] == "ok";
            last = Some(r);
            done
        });
        assert!(sent, "chunk {i}: {}\n{}", last.unwrap().text(), s.log());
    }
    let done = ok(&s, &call(&s, &k, "complete", &id));
    let att = done["attachment_id"].as_str().unwrap().to_owned();
    assert_eq!((done["filename"].as_str(), done["type"].as_str()), (Some("big.bin"), Some("file")));
    assert_eq!(done["stored_filename"].as_str(), Some(att.as_str()));
    assert_eq!(files_in(&s.data.path().join("uploads")), 0, "the session's file became the attachment");
    // The download is the file, byte for byte, read as it streams (HTTP/1.0: the body is the
    // bytes up to the close, without chunked framing to undo).
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(c, "GET /api/v1/files/{att} HTTP/1.0\r\nHost: x\r\nAuthorization: {}\r\n\r\n", bearer(&k))
        .unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.") && line.contains(" 200 "), "{line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            assert_eq!(v.trim().parse::<usize>().unwrap(), total);
        }
    }
    let mut got = vec![0u8; MIB];
    for i in 0..chunks {
        let want = piece(i, total);
        r.read_exact(&mut got[..want.len()]).unwrap();
        assert!(got[..want.len()] == want[..], "chunk {i} differs");
    }
    assert_eq!(r.read(&mut got).unwrap(), 0, "nothing after the file");
    let hwm = vm_hwm_kib(s.pid());
    assert!(hwm < 32 * 1024, "peak RSS {hwm} KiB (at rest {start} KiB)\n{}", s.log());
    eprintln!("200 MB chunked upload: peak RSS {hwm} KiB, {start} KiB at rest");
}

#[test]
fn init_refuses_missing_names_and_absurd_sizes() {
    let (s, k) = setup(&["--max-upload-mb", "600"]);
    let init = |body: Value| s.call("POST", "/api/v1/files/upload/init", &k, Some(body));
    soft(&s, &init(json!({"total_size": 10})), "Missing key: filename");
    soft(&s, &init(json!({"filename": "  ", "total_size": 10})), "Missing key: filename");
    for size in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!("abc"),
        json!(null),
        json!(true),
        json!(18446744073709551616u128 as f64),
    ] {
        soft(&s, &init(json!({"filename": "a", "total_size": size})), "Invalid file size");
    }
    soft(&s, &init(json!({"filename": "a", "total_size": u64::MAX})), "File too large (limit 600 MB)");
    soft(&s, &init(json!({"filename": "a", "total_size": 600 * MIB + 1})), "File too large (limit 600 MB)");
    // Exactly the limit is fine, and a numeric string is read as AstrBot's int() does.
    ok(&s, &init(json!({"filename": "a", "total_size": 600 * MIB})));
    ok(&s, &init(json!({"filename": "a", "total_size": "10"})));
    let r = s.request("POST", "/api/v1/files/upload/init", &[("Authorization", &bearer(&k))], Some("[1]"));
    s.expect_error(&r, 400, "Request body must be a JSON object");
    // With a smaller --max-upload-mb, AstrBot's 512 MB still holds for chunked uploads.
    let (s, k) = setup(&["--max-upload-mb", "8"]);
    let init = |body: Value| s.call("POST", "/api/v1/files/upload/init", &k, Some(body));
    soft(&s, &init(json!({"filename": "a", "total_size": 512 * MIB + 1})), "File too large (limit 512 MB)");
    ok(&s, &init(json!({"filename": "a", "total_size": 512 * MIB})));
}

#[test]
fn hostile_chunks_are_refused_and_leave_the_session_usable() {
    let (s, k) = setup(&[]);
    let total = MIB + 10;
    let id = init(&s, &k, "two.bin", total);
    for index in ["18446744073709551615", "-1", "2", "99999999999999999999999"] {
        soft(&s, &chunk(&s, &k, &id, index, b"x"), "Chunk index out of range");
    }
    for index in ["", "abc", "1.0", "0x1"] {
        soft(&s, &chunk(&s, &k, &id, index, b"x"), "Invalid chunk_index");
    }
    soft(&s, &chunk(&s, &k, "", "0", b"x"), "Missing key: upload_id");
    soft(&s, &chunk(&s, &k, "no-such-upload", "0", b"x"), "Upload session not found or expired");
    soft(&s, &chunk(&s, &k, &id, "0", b"short"), "Chunk size mismatch: got 5 bytes, expected 1048576");
    soft(&s, &chunk(&s, &k, &id, "1", &[1u8; 11]), "Chunk size mismatch: got 11 bytes, expected 10");
    soft(&s, &chunk(&s, &k, &id, "0", &vec![0u8; MIB + 1]), "Chunk exceeds the size limit");
    // More than the chunk route's 2 MiB body: 413 before anything is read.
    let r = chunk(&s, &k, &id, "0", &vec![0u8; 2 * MIB]);
    s.expect_error(&r, 413, "Request body exceeds the 2097152 bytes limit");
    let r = upload(
        &s,
        &k,
        "/api/v1/files/upload/chunk",
        &[("upload_id", None, None, id.as_bytes()), ("chunk_index", None, None, b"0")],
    );
    soft(&s, &r, "Missing key: chunk");
    // None of that counted.
    let st = ok(&s, &call(&s, &k, "status", &id));
    assert_eq!(st["received_chunks"], json!([]));
    soft(&s, &call(&s, &k, "complete", &id), "Chunks incomplete, missing: [0, 1]...");
    // The chunk part before its fields is kept until they come; a chunk sent again replaces
    // the first.
    let first: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let r = upload(
        &s,
        &k,
        "/api/v1/files/upload/chunk",
        &[
            ("chunk", Some("blob"), None, &first),
            ("upload_id", None, None, id.as_bytes()),
            ("chunk_index", None, None, b"0"),
        ],
    );
    assert_eq!(ok(&s, &r), json!({"received": 1, "total": 2, "chunk_index": 0}));
    ok(&s, &chunk(&s, &k, &id, "1", b"0123456789"));
    ok(&s, &chunk(&s, &k, &id, "1", b"abcdefghij"));
    let done = ok(&s, &call(&s, &k, "complete", &id));
    let got = s.call("GET", &format!("/api/v1/files/{}", done["attachment_id"].as_str().unwrap()), &k, None);
    assert_eq!(got.body.len(), total);
    assert!(got.body[..MIB] == first[..] && &got.body[MIB..] == b"abcdefghij");
    // A completed session is gone.
    soft(&s, &call(&s, &k, "status", &id), "Upload session not found or expired");
    soft(&s, &chunk(&s, &k, &id, "0", b"x"), "Upload session not found or expired");
    assert_eq!(files_in(&s.data.path().join("uploads")), 0, "no spool or session file left");
}

#[test]
fn a_session_is_its_callers_only_and_abort_removes_it() {
    let (s, k) = setup(&[]);
    let (other, _) = s.create_key(&s.admin_token(), r#"{"scopes":["file"]}"#);
    let id = init(&s, &k, "mine.txt", 5);
    soft(&s, &chunk(&s, &other, &id, "0", b"hello"), "Upload session not found or expired");
    for what in ["status", "complete", "abort"] {
        soft(&s, &call(&s, &other, what, &id), "Upload session not found or expired");
    }
    soft(&s, &call(&s, &k, "status", ""), "Missing key: upload_id");
    ok(&s, &chunk(&s, &k, &id, "0", b"hello"));
    assert_eq!(files_in(&s.data.path().join("uploads")), 1);
    assert_eq!(ok(&s, &call(&s, &k, "abort", &id)), json!({}));
    assert_eq!(files_in(&s.data.path().join("uploads")), 0, "the session's file is removed");
    soft(&s, &call(&s, &k, "complete", &id), "Upload session not found or expired");
    // Aborting what is not there is no error, as in AstrBot.
    assert_eq!(ok(&s, &call(&s, &k, "abort", &id)), json!({}));
    // A key without the file scope gets nowhere.
    let (chat, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"]}"#);
    let r =
        s.call("POST", "/api/v1/files/upload/init", &chat, Some(json!({"filename": "a", "total_size": 1})));
    s.expect_error(&r, 403, "Insufficient API key scope");
}

#[test]
fn unfinished_sessions_per_caller_are_bounded() {
    let (s, k) = setup(&[]);
    for _ in 0..8 {
        init(&s, &k, "a", 1);
    }
    let r = s.call("POST", "/api/v1/files/upload/init", &k, Some(json!({"filename": "a", "total_size": 1})));
    s.expect_error(&r, 429, "Too many unfinished uploads for this caller");
    assert!(r.header("retry-after").is_some());
    // Another caller is not held up by this one.
    let (other, _) = s.create_key(&s.admin_token(), r#"{"scopes":["file"]}"#);
    init(&s, &other, "b", 1);
}

#[test]
fn a_completed_upload_is_typed_and_named_like_a_simple_one() {
    let (s, k) = setup(&[]);
    let png = crate::support::PNG;
    let body = json!({"filename": "../photo.jpeg", "total_size": png.len(), "content_type": "image/jpeg"});
    let id = ok(&s, &s.call("POST", "/api/v1/files/upload/init", &k, Some(body)))["upload_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&s, &chunk(&s, &k, &id, "0", png));
    let d = ok(&s, &call(&s, &k, "complete", &id));
    assert_eq!((d["filename"].as_str(), d["type"].as_str()), (Some("photo.png"), Some("image")));
    let stored = d["stored_filename"].as_str().unwrap();
    let r = s.call("GET", &format!("/api/v1/files/content?filename={stored}"), &k, None);
    assert_eq!((r.status, r.header("content-type"), r.body.as_slice()), (200, Some("image/png"), png));
    // A simple upload answers the same shape.
    let r =
        upload(&s, &k, "/api/v1/files", &[("file", Some("C:\\dir\\notes.txt"), Some("text/plain"), b"hi")]);
    let d = ok(&s, &r);
    assert_eq!(d["filename"], "notes.txt");
    assert_eq!(d["stored_filename"], d["attachment_id"]);
}

/// A raw request; the answer read whole.
fn raw(s: &Server, request: &str) -> Resp {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    crate::support::read_response(&mut BufReader::new(c))
}

#[test]
fn multipart_without_content_length_is_411_before_auth() {
    let (s, k) = setup(&[]);
    let ct = "multipart/form-data; boundary=b";
    for (path, auth) in [
        ("/api/v1/file", format!("Authorization: Bearer {k}\r\n")),
        ("/api/v1/files/upload/chunk", String::new()),
        ("/api/v1/nothing-here", String::new()),
    ] {
        let r = raw(
            &s,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {ct}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n--b--\r\n0\r\n\r\n"
            ),
        );
        s.expect_error(&r, 411, "Content-Length header is required for uploads");
    }
    let r = raw(
        &s,
        &format!("PUT /api/v1/file HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nConnection: close\r\n\r\n"),
    );
    s.expect_error(&r, 411, "Content-Length header is required for uploads");
    // A JSON body without Content-Length is no upload.
    let r = raw(
        &s,
        "POST /api/v1/files/upload/init HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    );
    s.expect_error(&r, 401, "Missing API key");
}

#[test]
fn a_download_token_opens_its_one_file_without_a_key() {
    let (s, k) = setup(&[]);
    let id = crate::support::upload_file(&s, &k, "notes.txt", Some("text/plain"), b"hello tokens");
    let other = crate::support::upload_file(&s, &k, "other.txt", Some("text/plain"), b"other");
    let d =
        ok(&s, &s.call("POST", &format!("/api/v1/files/{id}/token"), &k, Some(json!({"expires_in": 60}))));
    assert_eq!(d["expires_in"], 60);
    let url = d["url"].as_str().unwrap().to_owned();
    let token = d["token"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/api/v1/files/tokens/{token}"));
    let r = s.get(&url, &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, b"hello tokens".as_slice()));
    let r = s.get(&url, &[("Range", "bytes=6-")]);
    assert_eq!((r.status, r.body.as_slice()), (206, b"tokens".as_slice()));
    // Another file's id under this signature, a changed expiry, garbage, a path: 404.
    let not_found = json!({"status": "error", "message": "Not Found"});
    for bad in [
        token.replacen(&id, &other, 1),
        token.replacen('.', ".9", 1),
        "nonsense".to_owned(),
        "..%2F..%2Fsecret.key".to_owned(),
        format!("{id}.99999999999.AAAA"),
    ] {
        let r = s.get(&format!("/api/v1/files/tokens/{bad}"), &[]);
        assert_eq!((r.status, r.json()), (404, not_found.clone()), "{bad}");
    }
    // A deleted file's token opens nothing.
    s.call("DELETE", &format!("/api/v1/files/{id}"), &k, None);
    assert_eq!(s.get(&url, &[]).status, 404);
    // Issuing: the file must exist, the lifetime must be sane.
    soft(&s, &s.call("POST", "/api/v1/files/no-such-file/token", &k, None), "Attachment not found");
    for bad in [json!(0), json!(86401), json!("60"), json!(-1)] {
        let r = s.call("POST", &format!("/api/v1/files/{other}/token"), &k, Some(json!({"expires_in": bad})));
        s.expect_error(&r, 400, "expires_in must be an integer from 1 to 86400");
    }
    let d = ok(&s, &s.call("POST", &format!("/api/v1/files/{other}/token"), &k, None));
    assert_eq!(d["expires_in"], 600);
    let r = http(s.addr, "GET", d["url"].as_str().unwrap(), &[], None);
    assert_eq!(r.body, b"other");
}
