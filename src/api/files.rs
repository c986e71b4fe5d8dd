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
//!
//! Chunked uploads (AstrBot 4.29, `/api/v1/files/upload/*`): `init` opens a session
//! (`uploads`), each `chunk` is streamed from the form straight to its offset in the
//! session's file, and `complete` checks that every chunk arrived and the file on disk has
//! the declared size before renaming it into the attachments folder, so an attachment is
//! never half-written. Answers of both kinds of upload carry `filename` (the cleaned name)
//! and `stored_filename` (the name on disk, the attachment id, which
//! `/files/content?filename=` also takes).
//!
//! Download tokens: `POST /api/v1/files/{attachment_id}/token` (scope `file`) issues a
//! signed token for one attachment, `GET /api/v1/files/tokens/{file_token}` serves it to
//! anyone holding it until it expires; anything else is AstrBot's 404 `Not Found`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::required_query;
use crate::app::Ctx;
use crate::attachments;
use crate::auth::Identity;
use crate::db::resources::{self, Attachment};
use crate::error::ApiError;
use crate::http::Response;
use crate::mirror;
use crate::timefmt::http_date;
use crate::uploads::{CHUNK_BODY_LIMIT, CHUNK_SIZE, Finished, MAX_FILE, Slot, UploadError};

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
    Ok(upload_answer(&attachment))
}

/// The answer to an upload, simple or chunked (AstrBot 4.29 adds `stored_filename`).
fn upload_answer(a: &Attachment) -> Response {
    Response::ok(json!({
        "attachment_id": a.attachment_id,
        "filename": a.filename,
        "stored_filename": a.attachment_id,
        "type": a.kind,
    }))
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
    // `stored_filename` (the attachment id) first, then the display name.
    let conn = ctx.app.db.conn()?;
    let by_id =
        if attachments::is_attachment_id(&base) { resources::attachment(&conn, &base)? } else { None };
    let att = match by_id {
        Some(att) => att,
        None => resources::attachment_by_name(&conn, &base)?
            .ok_or_else(|| ApiError::Soft("File access error".into()))?,
    };
    drop(conn);
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

/// The owner of upload sessions: the key (`api_key:<id>`, as AstrBot has it) or the admin.
fn session_owner(ctx: &Ctx<'_, '_>) -> Result<String, ApiError> {
    Ok(match ctx.caller()? {
        Identity::Admin(name) => format!("admin:{name}"),
        Identity::Key(key) => format!("api_key:{}", key.key_id),
    })
}

fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::Soft(m) => ApiError::Soft(m),
        UploadError::Busy(m) => ApiError::TooManyRequests { message: m.into(), retry_after: 60 },
        UploadError::Io(cause) => ApiError::Internal(cause),
    }
}

/// A string field of the JSON body, trimmed, at most `max` characters; `None` if absent,
/// empty or not a string.
fn text_field(ctx: &Ctx<'_, '_>, name: &str, max: usize) -> Result<Option<String>, ApiError> {
    if matches!(ctx.req.json, None | Some(Value::Null)) {
        return Ok(None);
    }
    let body = ctx.req.json_object()?;
    Ok(body
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.chars().take(max).collect()))
}

/// `upload_id` from the JSON body (or the query, for clients that send it there).
fn upload_id(ctx: &Ctx<'_, '_>) -> Result<String, ApiError> {
    let from_query = ctx.req.query_param("upload_id").map(str::trim).filter(|v| !v.is_empty());
    let id = match text_field(ctx, "upload_id", 64)? {
        Some(id) => Some(id),
        None => from_query.map(str::to_owned),
    };
    id.ok_or_else(|| ApiError::Soft("Missing key: upload_id".into()))
}

/// A declared MIME type, if it is a plain `type/subtype` (it is served back in a header).
fn clean_mime(raw: &str) -> Option<String> {
    let essence = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let (a, b) = essence.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&c))
    };
    (token(a) && token(b)).then_some(essence)
}

/// A JSON number that is a whole number from 0 to 2^53 (`28` or `28.0`: JSON Schema's
/// integers), else `None`.
fn whole_number(v: &Value) -> Option<u64> {
    let integral = |f: &f64| f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(f);
    v.as_u64().or_else(|| v.as_f64().filter(integral).map(|f| f as u64))
}

/// `POST /api/v1/files/upload/init` `{filename, total_size, content_type}`
pub fn upload_init(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?;
    let filename =
        text_field(ctx, "filename", 1024)?.ok_or_else(|| ApiError::Soft("Missing key: filename".into()))?;
    let total_size = match body.get("total_size") {
        Some(n @ Value::Number(_)) => whole_number(n),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    let total_size =
        total_size.filter(|&n| n > 0).ok_or_else(|| ApiError::Soft("Invalid file size".into()))?;
    let content_type = body.get("content_type").and_then(Value::as_str).and_then(clean_mime);
    // A chunked upload may be as large as AstrBot allows (512 MB), or `--max-upload-mb`
    // when that is larger; the flag keeps its meaning for one-request uploads.
    let max = MAX_FILE.max(ctx.app.settings.max_upload_bytes as u64);
    if total_size > max {
        return Err(ApiError::Soft(format!("File too large (limit {} MB)", max >> 20)));
    }
    let owner = session_owner(ctx)?;
    let started = ctx
        .app
        .uploads
        .init(&owner, &filename, content_type, total_size, max, ctx.now)
        .map_err(upload_error)?;
    Ok(Response::ok(json!({
        "upload_id": started.upload_id,
        "chunk_size": started.chunk_size,
        "total_chunks": started.total_chunks,
    })))
}

/// A chunk index as Python's `int()` reads it: digits, an optional sign, spaces around.
/// `Ok(None)` is a number that is no chunk (negative or beyond `u64`): out of range.
fn parse_chunk_index(raw: &str) -> Result<Option<u64>, ApiError> {
    let t = raw.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::Soft("Invalid chunk_index".into()));
    }
    if negative && digits.bytes().any(|b| b != b'0') {
        return Ok(None);
    }
    Ok(digits.parse::<u64>().ok())
}

/// Writes the first `slot.expected` bytes of a chunk at its offset and counts the rest (up
/// to one byte past [`CHUNK_SIZE`]) without keeping them: the number of bytes the part had.
/// A failure to read is the client's (a body cut short, too slow, too large), to write ours.
fn write_chunk(data: &mut dyn Read, slot: &Slot) -> Result<u64, ChunkFailure> {
    let file = OpenOptions::new().write(true).open(&slot.path).map_err(ChunkFailure::Write)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut seen = 0u64;
    loop {
        let n = data.read(&mut buf).map_err(ChunkFailure::Read)?;
        if n == 0 {
            return Ok(seen);
        }
        if seen < slot.expected {
            let take = (slot.expected - seen).min(n as u64) as usize;
            file.write_all_at(&buf[..take], slot.offset + seen).map_err(ChunkFailure::Write)?;
        }
        seen += n as u64;
        if seen > CHUNK_SIZE {
            return Ok(seen);
        }
    }
}

/// Why a chunk could not be written.
enum ChunkFailure {
    Read(io::Error),
    Write(io::Error),
}

/// Reads a short text field of a form (at most 256 bytes kept).
fn read_text_field(data: &mut dyn Read) -> io::Result<String> {
    let mut buf = Vec::new();
    data.take(256).read_to_end(&mut buf)?;
    io::copy(data, &mut io::sink())?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// What became of the form's `chunk` part.
enum ChunkPart {
    /// Written to its session: chunks received, in all, and the index.
    Placed(Result<(u64, u64, u64), ApiError>),
    /// Arrived before `upload_id` and `chunk_index`: kept in a spool file until they come.
    Spooled(PathBuf),
}

/// Checks the fields, reserves the chunk's slot and writes it; the slot is released
/// whatever happens, as received only when the chunk is whole and of its exact size.
fn place_chunk(
    ctx_app: &crate::app::App,
    owner: &str,
    upload_id: Option<&str>,
    index: Option<&str>,
    data: &mut dyn Read,
    now: i64,
) -> Result<(u64, u64, u64), ApiError> {
    let upload_id = upload_id.map(str::trim).filter(|v| !v.is_empty());
    let upload_id = upload_id.ok_or_else(|| ApiError::Soft("Missing key: upload_id".into()))?;
    let index = parse_chunk_index(index.unwrap_or(""))?;
    let uploads = &ctx_app.uploads;
    let slot = uploads.begin_chunk(owner, upload_id, index, now).map_err(upload_error)?;
    let i = slot.offset / CHUNK_SIZE;
    let written = write_chunk(data, &slot);
    let whole = matches!(written, Ok(n) if n == slot.expected);
    let counts =
        uploads.end_chunk(upload_id, i, whole, crate::timefmt::now_micros()).map_err(upload_error)?;
    match written {
        Ok(n) if n > CHUNK_SIZE => Err(ApiError::Soft("Chunk exceeds the size limit".into())),
        Ok(n) if n != slot.expected => {
            Err(ApiError::Soft(format!("Chunk size mismatch: got {n} bytes, expected {}", slot.expected)))
        }
        Ok(_) => Ok((counts.0, counts.1, i)),
        Err(ChunkFailure::Read(e)) => {
            log::debug!("chunk {i} of {upload_id} broke off: {e}");
            Err(ApiError::bad_request("Invalid multipart data."))
        }
        Err(ChunkFailure::Write(e)) => Err(ApiError::Internal(format!("chunk {i} of {upload_id}: {e}"))),
    }
}

/// `POST /api/v1/files/upload/chunk`: multipart `upload_id`, `chunk_index` and the file
/// part `chunk` (the body at most 2 MiB, refused by the pipeline beyond).
pub fn upload_chunk(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let boundary = ctx.req.multipart_boundary()?;
    let owner = session_owner(ctx)?;
    let app = ctx.app.clone();
    let now = ctx.now;
    let spool_dir = app.uploads.dir().to_path_buf();
    let mut body = ctx.req.body_reader(CHUNK_BODY_LIMIT)?;
    let mut upload_id: Option<String> = None;
    let mut index: Option<String> = None;
    let mut part: Option<ChunkPart> = None;
    let mut broken: Option<String> = None;
    {
        let mut form = multipart::server::Multipart::with_body(&mut body, boundary);
        loop {
            let mut entry = match form.read_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e.to_string());
                    break;
                }
            };
            let name = entry.headers.name.to_string();
            let read = match name.as_str() {
                "upload_id" => read_text_field(&mut entry.data).map(|v| upload_id = Some(v)),
                "chunk_index" => read_text_field(&mut entry.data).map(|v| index = Some(v)),
                "chunk" if part.is_none() && upload_id.is_some() && index.is_some() => {
                    let placed = place_chunk(
                        &app,
                        &owner,
                        upload_id.as_deref(),
                        index.as_deref(),
                        &mut entry.data,
                        now,
                    );
                    part = Some(ChunkPart::Placed(placed));
                    Ok(())
                }
                "chunk" if part.is_none() => {
                    spool(&spool_dir, &mut entry.data).map(|p| part = Some(ChunkPart::Spooled(p)))
                }
                _ => io::copy(&mut entry.data, &mut io::sink()).map(|_| ()),
            };
            if let Err(e) = read {
                broken = Some(e.to_string());
                break;
            }
        }
    }
    let over = body.over_limit();
    let _ = body.finish();
    let placed = match part {
        Some(ChunkPart::Spooled(path)) if broken.is_none() => {
            let placed = File::open(&path).map_err(ApiError::from).and_then(|mut f| {
                place_chunk(&app, &owner, upload_id.as_deref(), index.as_deref(), &mut f, now)
            });
            let _ = fs::remove_file(&path);
            Some(placed)
        }
        Some(ChunkPart::Spooled(path)) => {
            let _ = fs::remove_file(&path);
            None
        }
        Some(ChunkPart::Placed(placed)) => Some(placed),
        None => None,
    };
    if let Some(e) = broken {
        if over {
            return Err(ApiError::PayloadTooLarge(CHUNK_BODY_LIMIT));
        }
        log::debug!("bad multipart chunk: {e}");
        return Err(ApiError::bad_request("Invalid multipart data."));
    }
    let Some(placed) = placed else {
        // No chunk: say which field is missing first, as for a chunk.
        if upload_id.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Err(ApiError::Soft("Missing key: upload_id".into()));
        }
        parse_chunk_index(index.as_deref().unwrap_or(""))?;
        return Err(ApiError::Soft("Missing key: chunk".into()));
    };
    let (received, total, chunk_index) = placed?;
    Ok(Response::ok(json!({"received": received, "total": total, "chunk_index": chunk_index})))
}

/// Keeps a chunk that came before its fields in a spool file of the uploads folder (at
/// most one byte past [`CHUNK_SIZE`], which is refused later anyway).
fn spool(dir: &Path, data: &mut dyn Read) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.spool", uuid::Uuid::new_v4()));
    let mut limited = data.take(CHUNK_SIZE + 1);
    if let Err(e) = attachments::write_file(&mut limited, &path) {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    io::copy(data, &mut io::sink())?;
    Ok(path)
}

/// `POST /api/v1/files/upload/status` `{upload_id}`
pub fn upload_status(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = upload_id(ctx)?;
    let owner = session_owner(ctx)?;
    let st = ctx.app.uploads.status(&owner, &id, ctx.now).map_err(upload_error)?;
    Ok(Response::ok(json!({
        "received_chunks": st.received_chunks,
        "total_chunks": st.total_chunks,
        "chunk_size": CHUNK_SIZE,
        "expires_in": st.expires_in,
    })))
}

/// `POST /api/v1/files/upload/complete` `{upload_id}`: the normal upload answer.
pub fn upload_complete(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = upload_id(ctx)?;
    let owner = session_owner(ctx)?;
    let finished = ctx.app.uploads.finish(&owner, &id, ctx.now).map_err(upload_error)?;
    let path = finished.path.clone();
    let stored = store_finished(ctx, finished);
    if stored.is_err() {
        let _ = fs::remove_file(&path);
    }
    let attachment = stored?;
    log::info!(
        "upload session {id} completed as attachment {} ({} bytes)",
        attachment.attachment_id,
        attachment.size
    );
    if let Some(draft) = ctx.mirror.as_mut() {
        draft.set_request(mirror::upload_summary(
            &attachment.filename,
            &attachment.mime_type,
            attachment.size as u64,
        ));
    }
    Ok(upload_answer(&attachment))
}

/// Verifies a finished session's file (synced, of the declared size), names and types it,
/// and renames it into the attachments folder with its record.
fn store_finished(ctx: &Ctx<'_, '_>, f: Finished) -> Result<Attachment, ApiError> {
    let file = File::open(&f.path)?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    if size != f.total_size {
        return Err(ApiError::Soft(format!(
            "Merged size ({size}) does not match the declared size ({})",
            f.total_size
        )));
    }
    let mut head = Vec::with_capacity(64);
    (&file).take(64).read_to_end(&mut head)?;
    drop(file);
    let (filename, mime) = attachments::classify(Some(&f.filename), f.content_type, &head, ctx.now);
    let attachment = Attachment {
        attachment_id: uuid::Uuid::new_v4().to_string(),
        kind: attachments::kind_of(&mime).to_owned(),
        filename,
        mime_type: mime,
        size: size as i64,
        created_at: ctx.now,
    };
    let dir = attachments_dir(ctx);
    fs::create_dir_all(&dir)?;
    let dest = dir.join(&attachment.attachment_id);
    fs::rename(&f.path, &dest)?;
    if let Err(e) =
        crate::db::write_tx(&mut *ctx.app.db.conn()?, |tx| resources::insert_attachment(tx, &attachment))
    {
        let _ = fs::remove_file(&dest);
        log::error!("cannot record attachment {}: {e}", attachment.attachment_id);
        return Err(ApiError::Soft("Failed to create attachment".into()));
    }
    Ok(attachment)
}

/// `POST /api/v1/files/upload/abort` `{upload_id}`: `{}`, also for an unknown session.
pub fn upload_abort(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = upload_id(ctx)?;
    let owner = session_owner(ctx)?;
    ctx.app.uploads.abort(&owner, &id, ctx.now).map_err(upload_error)?;
    Ok(Response::ok(json!({})))
}

/// `POST /api/v1/files/{attachment_id}/token` `{expires_in}` (optional, seconds, 1 to a
/// day, default 600): a download token for that attachment.
pub fn issue_token(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    let ttl = match ctx.req.json.as_ref() {
        None | Some(Value::Null) => None,
        Some(Value::Object(body)) => match body.get("expires_in") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let ttl = whole_number(v).filter(|n| (1..=attachments::TOKEN_TTL_MAX as u64).contains(n));
                let bad = || {
                    let max = attachments::TOKEN_TTL_MAX;
                    ApiError::bad_request(format!("expires_in must be an integer from 1 to {max}"))
                };
                Some(ttl.ok_or_else(bad)? as i64)
            }
        },
        Some(_) => return Err(ApiError::bad_request("Request body must be a JSON object")),
    };
    let ttl = ttl.unwrap_or(attachments::TOKEN_TTL_DEFAULT);
    let found =
        attachments::is_attachment_id(&id) && resources::attachment(&*ctx.app.db.conn()?, &id)?.is_some();
    if !found {
        return Err(ApiError::Soft("Attachment not found".into()));
    }
    let expires_at = ctx.now / 1_000_000 + ttl;
    let token = attachments::issue_token(&ctx.app.mac, &id, expires_at);
    Ok(Response::ok(json!({
        "token": token,
        "url": format!("/api/v1/files/tokens/{token}"),
        "expires_in": ttl,
        "expires_at": expires_at,
    })))
}

/// `GET /api/v1/files/tokens/{file_token}` (no auth): the token's file, or AstrBot's 404.
pub fn download_token(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("Not Found".into());
    let id =
        attachments::open_token(&ctx.app.mac, ctx.param(0), ctx.now / 1_000_000).ok_or_else(not_found)?;
    match serve(ctx, &id) {
        Err(ApiError::Soft(_)) => Err(not_found()),
        other => other,
    }
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
    fn chunk_indexes_are_read_as_python_reads_them() {
        assert_eq!(parse_chunk_index(" 7 ").unwrap(), Some(7));
        assert_eq!(parse_chunk_index("+0").unwrap(), Some(0));
        assert_eq!(parse_chunk_index("-0").unwrap(), Some(0));
        assert_eq!(parse_chunk_index("-1").unwrap(), None);
        assert_eq!(parse_chunk_index("18446744073709551615").unwrap(), Some(u64::MAX));
        assert_eq!(parse_chunk_index("99999999999999999999999").unwrap(), None);
        for bad in ["", "x", "1.5", "0x10", "--1", "1e3"] {
            assert_eq!(parse_chunk_index(bad).unwrap_err().message(), "Invalid chunk_index", "{bad}");
        }
        assert_eq!(clean_mime("Image/PNG; q=1").as_deref(), Some("image/png"));
        assert_eq!(clean_mime("text/html\r\nX: y"), None);
        assert_eq!(clean_mime("nonsense"), None);
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
