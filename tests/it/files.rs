//! Attachments (reference open API §11; decision 10): multipart upload streamed to disk,
//! types from Content-Type or magic bytes, downloads with ETag and Range, real deletion.

use serde_json::{Value, json};

use crate::support::{PNG, Resp, Server, TempDir, multipart, upload};

fn setup() -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["file"]}"#);
    (s, key)
}

#[test]
fn upload_types_names_and_download() {
    let (s, k) = setup();
    let r = upload(
        &s,
        &k,
        "/api/v1/file",
        &[("file", Some("notes.txt"), Some("text/plain"), b"hello attachments")],
    );
    s.expect(&r, 200);
    let d = r.json()["data"].clone();
    assert_eq!((d["filename"].clone(), d["type"].clone()), (json!("notes.txt"), json!("file")));
    let id = d["attachment_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);

    let got = s.call("GET", &format!("/api/v1/file?attachment_id={id}"), &k, None);
    s.expect(&got, 200);
    assert_eq!(got.body, b"hello attachments");
    assert_eq!(got.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(got.header("content-length"), Some("17"));
    assert_eq!(got.header("accept-ranges"), Some("bytes"));
    let etag = got.header("etag").unwrap().to_owned();
    assert!(got.header("last-modified").unwrap().ends_with("GMT"));
    for path in [format!("/api/v1/files/{id}"), format!("/api/v1/files/{id}/content")] {
        assert_eq!(s.call("GET", &path, &k, None).body, b"hello attachments");
    }
    // Range and conditional requests.
    let auth = format!("Bearer {k}");
    let r = s.request(
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &auth), ("Range", "bytes=6-")],
        None,
    );
    assert_eq!((r.status, r.body.as_slice()), (206, b"attachments".as_slice()));
    assert_eq!(r.header("content-range"), Some("bytes 6-16/17"));
    let r = s.request(
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &auth), ("Range", "bytes=99-")],
        None,
    );
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */17")));
    let r = s.request(
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &auth), ("If-None-Match", &etag)],
        None,
    );
    assert_eq!(r.status, 304);

    // A PNG sent as octet-stream is recognised by its bytes and renamed to .png.
    let r = upload(
        &s,
        &k,
        "/api/v1/files",
        &[("file", Some("../../photo.jpeg"), Some("application/octet-stream"), PNG)],
    );
    let d = r.json()["data"].clone();
    assert_eq!((d["filename"].clone(), d["type"].clone()), (json!("photo.png"), json!("image")));
    let png = s.call(
        "GET",
        &format!("/api/v1/file?attachment_id={}", d["attachment_id"].as_str().unwrap()),
        &k,
        None,
    );
    assert_eq!(png.header("content-type"), Some("image/png"));
    // Audio by declared type; the last of several file parts wins; names never collide.
    let r = upload(
        &s,
        &k,
        "/api/v1/file",
        &[
            ("file", Some("a.txt"), Some("text/plain"), b"first"),
            ("note", None, None, b"x"),
            ("file", Some("C:\\dir\\voice.wav"), Some("audio/wav"), b"RIFF\0\0\0\0WAVE"),
        ],
    );
    let d = r.json()["data"].clone();
    assert_eq!((d["filename"].clone(), d["type"].clone()), (json!("voice.wav"), json!("record")));
    let again =
        upload(&s, &k, "/api/v1/file", &[("file", Some("notes.txt"), Some("text/plain"), b"other bytes")]);
    assert_ne!(again.json()["data"]["attachment_id"], id.as_str());
    assert_eq!(
        s.call("GET", &format!("/api/v1/files/{id}"), &k, None).body,
        b"hello attachments",
        "no overwrite"
    );
    let files = std::fs::read_dir(s.data.path().join("attachments")).unwrap().count();
    assert_eq!(files, 4, "the replaced part was removed");
}

#[test]
fn errors_and_deletion() {
    let (s, k) = setup();
    let soft = |r: &Resp, msg: &str| {
        s.expect(r, 200);
        assert_eq!(r.json(), json!({"status":"error","message":msg}));
    };
    soft(&s.call("GET", "/api/v1/file?attachment_id=", &k, None), "Missing key: attachment_id");
    soft(&s.call("GET", "/api/v1/file?attachment_id=nope", &k, None), "Attachment not found");
    soft(&s.call("GET", "/api/v1/files/nope", &k, None), "Attachment not found");
    s.expect_error(&s.call("GET", "/api/v1/file", &k, None), 400, "Missing key: attachment_id");
    let r = upload(&s, &k, "/api/v1/file", &[("other", Some("x.txt"), None, b"x")]);
    s.expect_error(&r, 400, "Missing key: file (a multipart file part named file)");
    let r = upload(&s, &k, "/api/v1/file", &[("file", None, None, b"just text")]);
    s.expect(&r, 400);
    let r = s.request(
        "POST",
        "/api/v1/file",
        &[("Authorization", &format!("Bearer {k}")), ("Content-Type", "multipart/form-data")],
        Some("x"),
    );
    s.expect_error(&r, 400, "Missing boundary in multipart.");
    let r = s.request(
        "POST",
        "/api/v1/file",
        &[("Authorization", &format!("Bearer {k}")), ("Content-Type", "multipart/form-data; boundary=zz")],
        Some("garbage"),
    );
    s.expect_error(&r, 400, "Invalid multipart data.");

    let id = upload(&s, &k, "/api/v1/file", &[("file", Some("x.bin"), None, b"bytes")]).json()["data"]["attachment_id"].as_str().unwrap().to_owned();
    assert!(s.data.path().join("attachments").join(&id).exists());
    let r = s.call("DELETE", &format!("/api/v1/files/{id}"), &k, None);
    assert_eq!(r.json(), json!({"status":"ok","message":null,"data":{"attachment_id": id}}));
    assert!(!s.data.path().join("attachments").join(&id).exists(), "really deleted");
    soft(&s.call("GET", &format!("/api/v1/files/{id}"), &k, None), "Attachment not found");
    soft(&s.call("DELETE", &format!("/api/v1/files/{id}"), &k, None), "Attachment not found");
}

#[test]
fn scope_and_auth_come_before_the_body() {
    let s = Server::start();
    let (chat, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"]}"#);
    let r = upload(&s, &chat, "/api/v1/file", &[("file", Some("x.txt"), None, b"x")]);
    s.expect_error(&r, 403, "Insufficient API key scope");
    let (ct, body) = multipart(&[("file", Some("x.txt"), None, b"x")]);
    let r = crate::support::http(s.addr, "POST", "/api/v1/file", &[("Content-Type", &ct)], Some(&body));
    s.expect_error(&r, 401, "Missing API key");
    let v: Value = s.call("GET", "/api/v1/file?attachment_id=x", &chat, None).json();
    assert_eq!(v["message"], "Insufficient API key scope");
    assert!(
        !s.data.path().join("attachments").exists()
            || std::fs::read_dir(s.data.path().join("attachments")).unwrap().count() == 0
    );
}

#[test]
fn the_upload_limit_is_413_and_leaves_nothing() {
    let s = Server::start_with(std::sync::Arc::new(TempDir::new()), &["--max-upload-mb", "1"]);
    let (k, _) = s.create_key(&s.admin_token(), r#"{"scopes":["file"]}"#);
    let big = vec![b'x'; (1 << 20) + 10];
    let r = upload(&s, &k, "/api/v1/file", &[("file", Some("big.bin"), None, &big)]);
    s.expect_error(&r, 413, "Request body too large (limit 1048576 bytes)");
    let dir = s.data.path().join("attachments");
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().count() == 0, "no partial file");
    let ok = upload(&s, &k, "/api/v1/file", &[("file", Some("small.bin"), None, &big[..1000])]);
    s.expect(&ok, 200);
}

#[test]
fn download_by_name() {
    let (s, k) = setup();
    upload(&s, &k, "/api/v1/file", &[("file", Some("report.txt"), Some("text/plain"), b"old")]);
    upload(&s, &k, "/api/v1/file", &[("file", Some("report.txt"), Some("text/plain"), b"new")]);
    let r = s.call("GET", "/api/v1/files/content?filename=report.txt", &k, None);
    assert_eq!((r.status, r.body.as_slice()), (200, b"new".as_slice()), "the newest of that name");
    let soft = |path: &str, msg: &str| {
        let r = s.call("GET", path, &k, None);
        assert_eq!((r.status, r.json()), (200, json!({"status": "error", "message": msg})), "{path}");
    };
    soft("/api/v1/files/content", "Missing key: filename");
    soft("/api/v1/files/content?filename=", "Missing key: filename");
    soft("/api/v1/files/content?filename=../etc/passwd", "Invalid file path");
    soft("/api/v1/files/content?filename=nothing.txt", "File access error");
}
