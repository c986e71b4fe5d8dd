//! Attachments as files: names sanitised as AstrBot does, types from the declared type or
//! the magic bytes, and the bytes written to `DIR/attachments/<attachment_id>`. Shared by
//! uploads (`api::files`), knowledge uploads and what IM platforms receive
//! ([`store`]), so a file from any of them is named, typed and kept the same way.
//!
//! Download tokens ([`issue_token`], [`open_token`]) live here too: a token names one
//! attachment and an expiry, signed with the server's MAC key, so `GET
//! /api/v1/files/tokens/{file_token}` opens that one file, until then, without any other
//! credential and without the server remembering anything. A token can only ever name an
//! attachment id (a UUID), so it never opens anything outside the attachments folder.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::db::resources::{self, Attachment};
use crate::db::{Db, write_tx};
use crate::secrets::{MacKey, base64url};

/// How long a download token lasts unless asked otherwise (seconds).
pub const TOKEN_TTL_DEFAULT: i64 = 600;
/// The longest a download token may last (seconds): one day.
pub const TOKEN_TTL_MAX: i64 = 86_400;

/// Whether `id` is an attachment id as we make them: a lower-case hyphenated UUID, so
/// never a path.
pub fn is_attachment_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

fn token_mac(mac: &MacKey, id: &str, expires_at: i64) -> String {
    base64url(&mac.mac(&format!("astrbot file token\n{id}\n{expires_at}"))[..18])
}

/// A token that opens attachment `id` until `expires_at` (Unix seconds):
/// `<attachment_id>.<expires_at>.<MAC>`.
pub fn issue_token(mac: &MacKey, id: &str, expires_at: i64) -> String {
    format!("{id}.{expires_at}.{}", token_mac(mac, id, expires_at))
}

/// The attachment id a token opens, if it is ours, intact and not expired at `now_secs`.
pub fn open_token(mac: &MacKey, token: &str, now_secs: i64) -> Option<String> {
    if token.len() > 100 {
        return None;
    }
    let mut parts = token.split('.');
    let (id, expires, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_attachment_id(id) {
        return None;
    }
    if expires.is_empty() || expires.len() > 12 || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let expires_at: i64 = expires.parse().ok()?;
    let want = token_mac(mac, id, expires_at);
    // Compared in constant time: how much of a guess matched must not show in the timing.
    let same =
        want.len() == sig.len() && want.bytes().zip(sig.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    (same && now_secs < expires_at).then(|| id.to_owned())
}

/// AstrBot's `sanitize_upload_filename`: the last path component (backslashes are
/// separators), NULs removed, trimmed; nothing usable gives a generated name.
pub fn sanitize_filename(raw: Option<&str>, now: i64) -> String {
    let name = raw
        .map(|r| r.replace('\\', "/"))
        .and_then(|r| r.rsplit('/').next().map(|s| s.replace('\0', "").trim().to_owned()))
        .filter(|n| !n.is_empty() && n != "." && n != "..");
    let name = name.unwrap_or_else(|| {
        // AstrBot's generated id: YYYYMMDDHHMMSSmmm, `_`, 4 hex digits (here in UTC).
        let iso = crate::timefmt::iso(now - now.rem_euclid(1000) + 1);
        let digits: String = iso.chars().filter(char::is_ascii_digit).take(17).collect();
        let [a, b] = crate::secrets::random_bytes::<2>();
        format!("{digits}_{a:02x}{b:02x}")
    });
    // Control characters have no place in a name shown back in headers and JSON.
    name.chars().filter(|c| !c.is_control()).take(255).collect()
}

/// The media type of a file from its first bytes, if it is one we know.
pub fn sniff(head: &[u8]) -> Option<(&'static str, &'static str)> {
    let at = |i: usize, magic: &[u8]| head.len() >= i + magic.len() && &head[i..i + magic.len()] == magic;
    Some(if at(0, b"\x89PNG\r\n\x1a\n") {
        ("image/png", ".png")
    } else if at(0, b"\xff\xd8\xff") {
        ("image/jpeg", ".jpg")
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        ("image/gif", ".gif")
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        ("image/webp", ".webp")
    } else if at(0, b"BM") && head.len() > 14 {
        ("image/bmp", ".bmp")
    } else if at(0, b"II*\0") || at(0, b"MM\0*") {
        ("image/tiff", ".tiff")
    } else if at(4, b"ftypavif") {
        ("image/avif", ".avif")
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        ("audio/wav", ".wav")
    } else if at(0, b"ID3") || (head.len() > 1 && head[0] == 0xff && head[1] & 0xe0 == 0xe0) {
        ("audio/mpeg", ".mp3")
    } else if at(0, b"OggS") {
        ("audio/ogg", ".ogg")
    } else if at(0, b"fLaC") {
        ("audio/flac", ".flac")
    } else if at(4, b"ftypM4A") {
        ("audio/mp4", ".m4a")
    } else if at(4, b"ftyp") {
        ("video/mp4", ".mp4")
    } else if at(0, b"\x1a\x45\xdf\xa3") {
        ("video/webm", ".webm")
    } else if at(0, b"%PDF-") {
        ("application/pdf", ".pdf")
    } else {
        return None;
    })
}

/// AstrBot's attachment type from a MIME type.
pub fn kind_of(mime: &str) -> &'static str {
    if mime.starts_with("image") {
        "image"
    } else if mime.starts_with("audio") {
        "record"
    } else if mime.starts_with("video") {
        "video"
    } else {
        "file"
    }
}

/// Gives an image the canonical extension of its detected format (`photo.jpeg` holding a
/// PNG is `photo.png`), as AstrBot renames the stored file.
pub fn canonical_name(name: &str, ext: &str) -> String {
    let stem = match name.rsplit_once('.') {
        Some((stem, old)) if !stem.is_empty() => {
            if format!(".{}", old.to_ascii_lowercase()) == ext {
                return name.to_owned();
            }
            stem
        }
        _ => name,
    };
    format!("{stem}{ext}")
}

/// Copies data to a new file at `path`, synced before it counts as stored; says how many
/// bytes it wrote and what the first 64 were (for [`sniff`]).
pub fn write_file(data: &mut dyn Read, path: &std::path::Path) -> io::Result<(usize, Vec<u8>)> {
    let mut file = File::create(path)?;
    let mut head = Vec::new();
    let mut size = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = data.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 64 {
            head.extend_from_slice(&buf[..n.min(64 - head.len())]);
        }
        size += n;
        file.write_all(&buf[..n])?;
    }
    file.sync_all()?;
    Ok((size, head))
}

/// The name and type an attachment is stored under: the sanitised name, and the type from
/// what was declared or, for `application/octet-stream` (or nothing), from the bytes;
/// an image gets its detected format's extension.
pub fn classify(raw_name: Option<&str>, declared: Option<String>, head: &[u8], now: i64) -> (String, String) {
    let mut filename = sanitize_filename(raw_name, now);
    let declared = declared.filter(|d| !d.is_empty()).unwrap_or_else(|| "application/octet-stream".into());
    let sniffed = sniff(head);
    let mime = match sniffed {
        // Decision 10: an unspecific type is replaced by what the bytes say.
        Some((m, _)) if declared == "application/octet-stream" => m.to_owned(),
        // AstrBot sniffs declared images and keeps the detected format.
        Some((m, _)) if declared.starts_with("image") && m.starts_with("image") => m.to_owned(),
        _ => declared,
    };
    if let Some((m, ext)) = sniffed
        && m == mime
        && m.starts_with("image")
    {
        filename = canonical_name(&filename, ext);
    }
    (filename, mime)
}

/// What is known of a file before its bytes: the kind to store it as (a Telegram voice
/// note is a `record` whatever its MIME type says; `None`: from the type), the sender's
/// name for it and its declared type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Described<'a> {
    pub kind: Option<&'a str>,
    pub name: Option<&'a str>,
    pub mime: Option<&'a str>,
}

/// Stores `data` (at most `max` bytes, else an error and nothing kept) as a new attachment
/// under `data_dir`, named and typed from `about` and its bytes.
pub fn store(
    data_dir: &Path,
    db: &Db,
    about: Described<'_>,
    data: &mut dyn Read,
    max: u64,
    now: i64,
) -> Result<Attachment, String> {
    let dir = data_dir.join("attachments");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let id = uuid::Uuid::new_v4().to_string();
    let path = dir.join(&id);
    // One byte past the cap tells "exactly max" from "more".
    let mut limited = data.take(max.saturating_add(1));
    let written = write_file(&mut limited, &path);
    let fail = |e: String| {
        let _ = fs::remove_file(&path);
        e
    };
    let (size, head) = written.map_err(|e| fail(format!("cannot store the file: {e}")))?;
    if size as u64 > max {
        return Err(fail(format!("the file is larger than {max} bytes")));
    }
    let (filename, mime) = classify(about.name, about.mime.map(str::to_owned), &head, now);
    let attachment = Attachment {
        attachment_id: id,
        filename,
        kind: about.kind.map(str::to_owned).unwrap_or_else(|| kind_of(&mime).to_owned()),
        mime_type: mime,
        size: size as i64,
        created_at: now,
    };
    let mut conn = db.conn().map_err(|e| fail(e.to_string()))?;
    write_tx(&mut conn, |tx| resources::insert_attachment(tx, &attachment))
        .map_err(|e| fail(format!("cannot record the attachment: {e}")))?;
    Ok(attachment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_sanitised_like_astrbot() {
        assert_eq!(sanitize_filename(Some("../../etc/evil.txt"), 0), "evil.txt");
        assert_eq!(sanitize_filename(Some("C:\\dir\\win.txt"), 0), "win.txt");
        assert_eq!(sanitize_filename(Some("a\0b.png"), 0), "ab.png");
        let generated = sanitize_filename(Some(".."), 1_795_332_585_123_456);
        assert!(generated.starts_with("20261122072945123_"), "{generated}");
        assert!(
            generated.len() == 22 && generated[18..].chars().all(|c| c.is_ascii_hexdigit()),
            "{generated}"
        );
        assert_ne!(sanitize_filename(None, 0), "");
    }

    #[test]
    fn magic_bytes_and_canonical_names() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(("image/png", ".png")));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Some(("image/jpeg", ".jpg")));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Some(("audio/wav", ".wav")));
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(canonical_name("photo.jpeg", ".png"), "photo.png");
        assert_eq!(canonical_name("photo.PNG", ".png"), "photo.PNG");
        assert_eq!(canonical_name("photo", ".png"), "photo.png");
        assert_eq!(kind_of("audio/wav"), "record");
    }

    #[test]
    fn a_download_token_opens_its_one_file_until_it_expires() {
        let mac = MacKey::fixed(7);
        let id = "0b4f3c2e-9d7a-4f7e-8a51-3c2d1e0f9a8b";
        let token = issue_token(&mac, id, 1000);
        assert_eq!(open_token(&mac, &token, 999).as_deref(), Some(id));
        assert_eq!(open_token(&mac, &token, 1000), None, "expired");
        assert_eq!(open_token(&MacKey::fixed(8), &token, 0), None, "another server's key");
        // Another file, a later expiry or a changed signature: all refused.
        let other = "1b4f3c2e-9d7a-4f7e-8a51-3c2d1e0f9a8b";
        assert_eq!(open_token(&mac, &token.replacen(id, other, 1), 0), None);
        assert_eq!(open_token(&mac, &token.replace(".1000.", ".9999."), 0), None);
        let mut bad = token.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(open_token(&mac, &String::from_utf8(bad).unwrap(), 0), None);
        // Never a path, whatever is signed.
        for hostile in ["../secret.key", "..", "", "a/b", &"x".repeat(10_000)] {
            let t = issue_token(&mac, hostile, 1000);
            assert_eq!(open_token(&mac, &t, 0), None, "{hostile}");
        }
        assert_eq!(open_token(&mac, &format!("{token}.x"), 0), None);
        assert_eq!(open_token(&mac, &format!("{id}.-5.x"), 0), None);
        assert!(!is_attachment_id("0B4F3C2E-9D7A-4F7E-8A51-3C2D1E0F9A8B"));
    }
}
