//! Attachments as AstrBot's open API serves them: multipart upload streamed to disk,
//! types from Content-Type or magic bytes, downloads with ETag and Range, real deletion.

use serde_json::{Value, json};

use crate::support::{PNG, Resp, Server, TempDir, multipart, upload};

fn setup() -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["file"]}"#);
    (s, key)
}

/// Uploads `notes.txt` ("hello attachments", 17 bytes); returns its id.
fn upload_notes(s: &Server, k: &str) -> String {
    let r = upload(
        s,
        k,
        "/api/v1/file",
        &[("file", Some("notes.txt"), Some("text/plain"), b"hello attachments")],
    );
    s.expect(&r, 200);
    let d = r.json()["data"].clone();
    assert_eq!((d["filename"].clone(), d["type"].clone()), (json!("notes.txt"), json!("file")));
    d["attachment_id"].as_str().unwrap().to_owned()
}

#[test]
fn an_upload_is_downloaded_with_its_type_length_and_validators() {
    let (s, k) = setup();
    let id = upload_notes(&s, &k);
    assert_eq!(id.len(), 36);
    let got = s.call("GET", &format!("/api/v1/file?attachment_id={id}"), &k, None);
    s.expect(&got, 200);
    assert_eq!(got.body, b"hello attachments");
    assert_eq!(got.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(got.header("content-length"), Some("17"));
    assert_eq!(got.header("accept-ranges"), Some("bytes"));
    assert!(got.header("etag").is_some());
    assert!(got.header("last-modified").unwrap().ends_with("GMT"));
    for path in [format!("/api/v1/files/{id}"), format!("/api/v1/files/{id}/content")] {
        assert_eq!(s.call("GET", &path, &k, None).body, b"hello attachments");
    }
}

/// `GET /api/v1/files/{id}` with one extra request header.
fn get_with(s: &Server, k: &str, id: &str, header: (&str, &str)) -> Resp {
    let auth = format!("Bearer {k}");
    s.request("GET", &format!("/api/v1/files/{id}"), &[("Authorization", &auth), header], None)
}

#[test]
fn a_range_is_answered_206_or_416_when_unsatisfiable() {
    let (s, k) = setup();
    let id = upload_notes(&s, &k);
    let r = get_with(&s, &k, &id, ("Range", "bytes=6-"));
    assert_eq!((r.status, r.body.as_slice()), (206, b"attachments".as_slice()));
    assert_eq!(r.header("content-range"), Some("bytes 6-16/17"));
    let r = get_with(&s, &k, &id, ("Range", "bytes=99-"));
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */17")));
}

#[test]
fn a_matching_etag_is_answered_304() {
    let (s, k) = setup();
    let id = upload_notes(&s, &k);
    let got = s.call("GET", &format!("/api/v1/file?attachment_id={id}"), &k, None);
    let etag = got.header("etag").unwrap().to_owned();
    assert_eq!(get_with(&s, &k, &id, ("If-None-Match", &etag)).status, 304);
}

#[test]
fn a_png_sent_as_octet_stream_is_recognised_by_its_bytes() {
    let (s, k) = setup();
    // It is also renamed to .png, and the path in its name is dropped.
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
}

#[test]
fn only_the_last_file_part_is_kept() {
    let (s, k) = setup();
    // Audio is recognised by its declared type.
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
    let files = std::fs::read_dir(s.data.path().join("attachments")).unwrap().count();
    assert_eq!(files, 1, "the replaced part was removed");
}

#[test]
fn uploads_of_the_same_name_never_overwrite() {
    let (s, k) = setup();
    let id = upload_notes(&s, &k);
    let again =
        upload(&s, &k, "/api/v1/file", &[("file", Some("notes.txt"), Some("text/plain"), b"other bytes")]);
    assert_ne!(again.json()["data"]["attachment_id"], id.as_str());
    assert_eq!(
        s.call("GET", &format!("/api/v1/files/{id}"), &k, None).body,
        b"hello attachments",
        "no overwrite"
    );
}

#[test]
fn a_missing_or_unknown_attachment_id_is_refused() {
    let (s, k) = setup();
    for (path, message) in [
        ("/api/v1/file?attachment_id=", "Missing key: attachment_id"),
        ("/api/v1/file?attachment_id=nope", "Attachment not found"),
        ("/api/v1/files/nope", "Attachment not found"),
    ] {
        s.check_error("GET", path, &k, None, 200, message);
    }
    s.check_error("GET", "/api/v1/file", &k, None, 400, "Missing key: attachment_id");
}

#[test]
fn malformed_uploads_are_400() {
    let (s, k) = setup();
    let r = upload(&s, &k, "/api/v1/file", &[("other", Some("x.txt"), None, b"x")]);
    s.expect_error(&r, 400, "Missing key: file (a multipart file part named file)");
    let r = upload(&s, &k, "/api/v1/file", &[("file", None, None, b"just text")]);
    s.expect(&r, 400);
    for (content_type, body, message) in [
        ("multipart/form-data", "x", "Missing boundary in multipart."),
        ("multipart/form-data; boundary=zz", "garbage", "Invalid multipart data."),
    ] {
        let r = s.request(
            "POST",
            "/api/v1/file",
            &[("Authorization", &format!("Bearer {k}")), ("Content-Type", content_type)],
            Some(body),
        );
        s.expect_error(&r, 400, message);
    }
}

#[test]
fn deleting_an_attachment_removes_its_file() {
    let (s, k) = setup();
    let id = upload(&s, &k, "/api/v1/file", &[("file", Some("x.bin"), None, b"bytes")]).json()["data"]["attachment_id"].as_str().unwrap().to_owned();
    assert!(s.data.path().join("attachments").join(&id).exists());
    let r = s.call("DELETE", &format!("/api/v1/files/{id}"), &k, None);
    assert_eq!(r.json(), json!({"status":"ok","message":null,"data":{"attachment_id": id}}));
    assert!(!s.data.path().join("attachments").join(&id).exists(), "really deleted");
    for method in ["GET", "DELETE"] {
        s.check_error(method, &format!("/api/v1/files/{id}"), &k, None, 200, "Attachment not found");
    }
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
    s.expect_error(&r, 413, "Request body exceeds the 1048576 bytes limit");
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
