//! Chat attachments (scope `file`), as AstrBot's Open API has them: upload, download,
//! delete.
//!
//! Uploads are `multipart/form-data` with a `file` part, streamed to
//! `DIR/attachments/<attachment_id>` through the `--max-upload-mb` cap (413 beyond it, the
//! partial file removed), never held whole in memory. The pipeline has already refused a
//! body without a boundary before reading it (`Request::multipart_boundary`: that is
//! request parsing, so it lives in `http`); this module reads the parts. Every upload gets
//! its own file, so uploads never overwrite each other, even under the same name; the name
//! shown is sanitised and the type comes from the part's Content-Type, or for
//! `application/octet-stream` from the file's magic bytes. Downloads stream the file with
//! `ETag`, `Last-Modified` and single `Range` support. Errors after authentication are
//! AstrBot's 200-errors.
//!
//! Stored bytes are anyone's: an uploaded page or SVG served inline from our origin would
//! run its scripts next to the reference page and the admin's cookie. So every download
//! answer (200, 206, 304, 416) carries `Content-Security-Policy: sandbox` and is an
//! `attachment`, except raster images, audio and video, which a browser only displays
//! (`nosniff` comes from `pipeline`).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde_json::json;

use super::required_query;
use crate::app::Ctx;
use crate::attachments;
use crate::db::resources::{self, Attachment};
use crate::error::ApiError;
use crate::http::Response;
use crate::mirror;
use crate::timefmt::http_date;

fn attachments_dir(ctx: &Ctx<'_, '_>) -> PathBuf {
    ctx.app.settings.data_dir.join("attachments")
}

/// `POST /api/v1/file` and `POST /api/v1/files`
pub fn upload(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let boundary = ctx.req.multipart_boundary()?;
    let limit = ctx.app.settings.max_upload_bytes;
    let dir = attachments_dir(ctx);
    fs::create_dir_all(&dir)?;
    let now = ctx.now;
    let mut body = ctx.req.body_reader(limit)?;
    let parsed = read_file_part(&mut body, boundary, &dir);
    let over = body.over_limit();
    let _ = body.finish();
    let saved = match parsed {
        Ok(saved) => saved,
        Err(e) if over => {
            log::debug!("upload refused: {e}");
            return Err(ApiError::PayloadTooLarge(limit));
        }
        Err(e) => {
            log::debug!("bad multipart upload: {e}");
            return Err(ApiError::bad_request("Invalid multipart data."));
        }
    };
    let Some((path, raw_name, declared, size, head)) = saved else {
        return Err(ApiError::bad_request("Missing key: file (a multipart file part named file)"));
    };
    let id = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let (filename, mime) = attachments::classify(Some(&raw_name), declared, &head, now);
    let attachment = Attachment {
        attachment_id: id.clone(),
        filename,
        kind: attachments::kind_of(&mime).to_owned(),
        mime_type: mime,
        size: size as i64,
        created_at: now,
    };
    if let Err(e) =
        crate::db::write_tx(&mut *ctx.app.db.conn()?, |tx| resources::insert_attachment(tx, &attachment))
    {
        let _ = fs::remove_file(&path);
        log::error!("cannot record attachment {id}: {e}");
        return Err(ApiError::Soft("Failed to create attachment".into()));
    }
    log::info!("attachment {id} stored ({size} bytes, {})", attachment.mime_type);
    if let Some(draft) = ctx.mirror.as_mut() {
        draft.set_request(mirror::upload_summary(&attachment.filename, &attachment.mime_type, size as u64));
    }
    Ok(Response::ok(json!({"attachment_id": id, "filename": attachment.filename, "type": attachment.kind})))
}

/// A stored `file` part: path, client file name, declared type, size, first bytes.
type SavedPart = (PathBuf, String, Option<String>, usize, Vec<u8>);

/// Streams the form's last `file` part to a new file in `dir`; earlier `file` parts and
/// partial files are removed. The error says what went wrong, for the log.
fn read_file_part(
    body: &mut dyn Read,
    boundary: String,
    dir: &std::path::Path,
) -> Result<Option<SavedPart>, String> {
    let mut form = multipart::server::Multipart::with_body(body, boundary);
    let mut saved: Option<SavedPart> = None;
    let discard = |saved: &mut Option<SavedPart>| {
        if let Some((path, ..)) = saved.take() {
            let _ = fs::remove_file(path);
        }
    };
    loop {
        let mut entry = match form.read_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => return Ok(saved),
            Err(e) => {
                discard(&mut saved);
                return Err(e.to_string());
            }
        };
        if &*entry.headers.name != "file" || entry.headers.filename.is_none() {
            if let Err(e) = io::copy(&mut entry.data, &mut io::sink()) {
                discard(&mut saved);
                return Err(e.to_string());
            }
            continue;
        }
        let path = dir.join(uuid::Uuid::new_v4().to_string());
        match attachments::write_file(&mut entry.data, &path) {
            Ok((size, head)) => {
                let part = (
                    path,
                    entry.headers.filename.clone().unwrap_or_default(),
                    entry.headers.content_type.as_ref().map(|m| m.to_string()),
                    size,
                    head,
                );
                discard(&mut saved);
                saved = Some(part);
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                discard(&mut saved);
                return Err(e.to_string());
            }
        }
    }
}

/// `GET /api/v1/file?attachment_id=
pub fn download_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    if ctx.req.query_param("attachment_id").is_none() {
        return Err(ApiError::bad_request("Missing key: attachment_id"));
    }
    let id = required_query(ctx, "attachment_id").map_err(|e| ApiError::Soft(e.message()))?;
    serve(ctx, &id)
}

/// `GET /api/v1/files/content?filename=`: the newest attachment of that name (AstrBot
/// serves a file of the attachments folder by name; names here are display names).
pub fn download_by_name(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let raw = ctx.req.query_param("filename").map(str::trim).unwrap_or("");
    if raw.is_empty() {
        return Err(ApiError::Soft("Missing key: filename".into()));
    }
    let base = raw.replace('\\', "/").rsplit('/').next().unwrap_or("").to_owned();
    if base != raw || base == "." || base == ".." || base.contains('\0') {
        return Err(ApiError::Soft("Invalid file path".into()));
    }
    let att = resources::attachment_by_name(&*ctx.app.db.conn()?, &base)?
        .ok_or_else(|| ApiError::Soft("File access error".into()))?;
    serve(ctx, &att.attachment_id)
}

/// `GET /api/v1/files/{attachment_id}` and `.../content`
pub fn download(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    serve(ctx, &id)
}

/// A single `bytes=` range of a file of `len` bytes: `Ok(None)` for the whole file.
fn parse_range(header: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn serve(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let att = resources::attachment(&*ctx.app.db.conn()?, id)?
        .ok_or_else(|| ApiError::Soft("Attachment not found".into()))?;
    let path = attachments_dir(ctx).join(&att.attachment_id);
    let mut file = File::open(&path).map_err(|_| ApiError::Soft("File access error".into()))?;
    let len = file.metadata().map_err(|_| ApiError::Soft("File access error".into()))?.len();
    let etag = format!("\"{}-{len}\"", att.attachment_id);
    let content_type = if att.mime_type.starts_with("text/") && !att.mime_type.contains("charset") {
        format!("{}; charset=utf-8", att.mime_type)
    } else {
        att.mime_type.clone()
    };
    let disposition = content_disposition(&att.mime_type, &att.filename);
    let common = |r: &mut Response| {
        r.header("Accept-Ranges", "bytes".into());
        r.header("ETag", etag.clone());
        r.header("Last-Modified", http_date(att.created_at));
        r.header("Content-Disposition", disposition.clone());
        r.header("Content-Security-Policy", "sandbox".into());
    };
    if ctx
        .req
        .header("if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        let mut r = Response::new(304, &content_type, Vec::new());
        common(&mut r);
        return Ok(r);
    }
    let range = match ctx.req.header("range") {
        Some(h) => match parse_range(h, len) {
            Ok(r) => r,
            Err(()) => {
                let mut r = Response::new(416, &content_type, Vec::new());
                r.header("Content-Range", format!("bytes */{len}"));
                common(&mut r);
                return Ok(r);
            }
        },
        None => None,
    };
    let (status, start, count) = match range {
        Some((a, b)) => (206, a, b - a + 1),
        None => (200, 0, len),
    };
    file.seek(SeekFrom::Start(start)).map_err(|_| ApiError::Soft("File access error".into()))?;
    let mut r = Response::file(status, &content_type, Box::new(file.take(count)), count as usize);
    common(&mut r);
    if status == 206 {
        r.header("Content-Range", format!("bytes {start}-{}/{len}", start + count - 1));
    }
    Ok(r)
}

/// Whether a browser only displays this type, never runs it: raster images, audio and
/// video. SVG, HTML, XML, PDF and anything unknown can carry script or forms.
fn displayed_inline(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("audio" | "video", sub)) => !sub.is_empty(),
        Some(("image", sub)) => matches!(
            sub,
            "png"
                | "apng"
                | "jpeg"
                | "pjpeg"
                | "gif"
                | "webp"
                | "bmp"
                | "x-ms-bmp"
                | "avif"
                | "tiff"
                | "x-icon"
                | "vnd.microsoft.icon"
        ),
        _ => false,
    }
}

/// `attachment` (or `inline` for [`displayed_inline`] types) with the file name twice:
/// an ASCII fallback and RFC 5987's UTF-8 form, which browsers prefer.
fn content_disposition(mime: &str, filename: &str) -> String {
    let kind = if displayed_inline(mime) { "inline" } else { "attachment" };
    let fallback: String = filename
        .chars()
        .map(|c| if c == ' ' || (c.is_ascii_graphic() && c != '"' && c != '\\') { c } else { '_' })
        .collect();
    let mut encoded = String::with_capacity(filename.len());
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// `DELETE /api/v1/files/{attachment_id}`: removes the record and the bytes.
pub fn delete(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    if !crate::db::write_tx(&mut *ctx.app.db.conn()?, |tx| resources::delete_attachment(tx, &id))? {
        return Err(ApiError::Soft("Attachment not found".into()));
    }
    let path = attachments_dir(ctx).join(&id);
    if let Err(e) = fs::remove_file(&path)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::error!("cannot remove {}: {e}", path.display());
    }
    Ok(Response::ok(json!({"attachment_id": id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_xss_only_raster_images_audio_and_video_are_inline() {
        for mime in ["image/png", "image/jpeg", "IMAGE/GIF", "audio/mpeg", "video/mp4", "image/webp; q=1"] {
            assert!(displayed_inline(mime), "{mime}");
        }
        for mime in [
            "text/html",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/pdf",
            "",
            "image/",
        ] {
            assert!(!displayed_inline(mime), "{mime}");
        }
        assert_eq!(
            content_disposition("text/html", "x.html"),
            "attachment; filename=\"x.html\"; filename*=UTF-8''x.html"
        );
        assert_eq!(
            content_disposition("image/png", "报告 \"1\".png"),
            "inline; filename=\"__ _1_.png\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A%20%221%22.png"
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-4", 10), Ok(Some((0, 4))));
        assert_eq!(parse_range("bytes=5-", 10), Ok(Some((5, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(parse_range("bytes=8-100", 10), Ok(Some((8, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Ok(None));
        assert_eq!(parse_range("items=1-2", 10), Ok(None));
    }
}
