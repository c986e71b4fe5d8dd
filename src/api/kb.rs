//! Knowledge collections over HTTP (admin token only): what `astrbot kb list`, `kb add`
//! and `kb remove` do, with the same splitting (`kb::split_documents`).
//!
//! An upload is `multipart/form-data` with one or more file parts (any field name, each
//! with a file name) and an optional `base_url` field; it replaces the collection, as the
//! CLI does. The body is capped by `--max-upload-mb` (413 beyond it), and documents are
//! held in memory only up to that cap, since they are split whole. Collection `docs` is the
//! bundled guides, rebuilt at every start, and is refused. Beyond AstrBot, so errors are
//! plain HTTP statuses (400, 404, 413) with the envelope.

use std::io::Read;

use serde_json::json;

use crate::app::Ctx;
use crate::db::kb as store;
use crate::error::ApiError;
use crate::http::Response;

/// Longest collection name a new upload may use.
const MAX_NAME: usize = 64;
/// Longest `base_url` kept.
const MAX_BASE_URL: usize = 2_048;

/// A new collection's name: 1 to 64 of `A-Z a-z 0-9 _ - .`, not starting with a dot, not
/// `docs`. It is shown in links (`kb:<name>/<file>`) and in config (`kb_names`), so
/// nothing that needs quoting is accepted.
fn check_new_name(name: &str) -> Result<(), ApiError> {
    if name == "docs" {
        return Err(ApiError::bad_request("collection docs holds the bundled guides; choose another name"));
    }
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Err(ApiError::bad_request(format!(
            "a collection name is 1 to {MAX_NAME} letters, digits, '_', '-' or '.', not starting with '.'"
        )));
    }
    Ok(())
}

/// `GET /api/v1/kb/collections`
pub fn list(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let rows = store::collections(&*ctx.app.db.conn()?)?;
    let items: Vec<_> = rows
        .iter()
        .map(|(name, n)| json!({"name": name, "passages": n, "bundled": name == "docs"}))
        .collect();
    Ok(Response::ok(json!({"collections": items})))
}

/// `DELETE /api/v1/kb/collections/{name}`
pub fn delete(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.param(0).to_owned();
    // The bundled guides are the server's own: a request that is well formed but not
    // allowed (403), which a client listing the collections can still send.
    if name == "docs" {
        return Err(ApiError::Forbidden(
            "collection docs holds the bundled guides and is rebuilt at every start".into(),
        ));
    }
    let removed =
        crate::kb::remove_collection(&mut *ctx.app.db.conn()?, &name).map_err(ApiError::internal)?;
    if !removed {
        return Err(ApiError::NotFound("no collection of that name".into()));
    }
    log::info!("knowledge collection {name} removed over HTTP");
    Ok(Response::ok(json!({"name": name})))
}

/// The documents and the `base_url` of an upload form.
#[derive(Default)]
struct Form {
    documents: Vec<(String, String)>,
    base_url: Option<String>,
    not_text: Vec<String>,
}

/// `POST /api/v1/kb/collections/{name}/documents`
pub fn upload(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.param(0).to_owned();
    check_new_name(&name)?;
    let boundary = ctx.req.multipart_boundary()?;
    let limit = ctx.app.settings.max_upload_bytes;
    let mut body = ctx.req.body_reader(limit)?;
    let parsed = read_form(&mut body, boundary);
    let over = body.over_limit();
    let _ = body.finish();
    let form = match parsed {
        Ok(form) => form,
        Err(_) if over => return Err(ApiError::PayloadTooLarge(limit)),
        Err(e) => {
            log::debug!("bad knowledge upload: {e}");
            return Err(ApiError::bad_request("Invalid multipart data."));
        }
    };
    if over {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    if let Some(bad) = form.not_text.first() {
        return Err(ApiError::bad_request(format!(
            "{} is not UTF-8 text; upload Markdown, text or HTML",
            crate::attachments::sanitize_filename(Some(bad), ctx.now)
        )));
    }
    let base_url = form.base_url.as_deref().map(str::trim).filter(|b| !b.is_empty());
    if let Some(b) = base_url
        && (b.len() > MAX_BASE_URL
            || !(b.starts_with("https://") || b.starts_with("http://") || b.starts_with('/')))
    {
        return Err(ApiError::bad_request(format!(
            "base_url must start with https://, http:// or / and be at most {MAX_BASE_URL} bytes"
        )));
    }
    let split = crate::kb::split_documents(
        &name,
        form.documents.iter().map(|(n, t)| (n.as_str(), t.as_str())),
        base_url,
    );
    if split.used.is_empty() {
        return Err(ApiError::bad_request(
            "no Markdown, text or HTML file in the upload (.md, .markdown, .txt, .text, .html, .htm)",
        ));
    }
    crate::kb::replace_collection(&mut *ctx.app.db.conn()?, &name, &split.passages)
        .map_err(ApiError::internal)?;
    log::info!(
        "knowledge collection {name} replaced over HTTP: {} passages from {} files",
        split.passages.len(),
        split.used.len()
    );
    Ok(Response::ok(json!({
        "name": name,
        "passages": split.passages.len(),
        "files": split.used,
        "skipped": split.skipped,
    })))
}

/// Reads every part: file parts become documents (their names sanitised), `base_url` is
/// kept, other fields are drained. The body reader is already capped.
fn read_form(body: &mut dyn Read, boundary: String) -> Result<Form, String> {
    let mut multipart = multipart::server::Multipart::with_body(body, boundary);
    let mut form = Form::default();
    while let Some(mut entry) = multipart.read_entry().map_err(|e| e.to_string())? {
        let mut bytes = Vec::new();
        entry.data.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        match entry.headers.filename.clone() {
            Some(raw) => {
                let file_name = crate::attachments::sanitize_filename(Some(&raw), 0);
                match String::from_utf8(bytes) {
                    Ok(text) => form.documents.push((file_name, text)),
                    Err(_) if crate::kb::readable(&file_name) => form.not_text.push(file_name),
                    // Skipped by the splitter anyway, and listed as skipped.
                    Err(_) => form.documents.push((file_name, String::new())),
                }
            }
            None if &*entry.headers.name == "base_url" => {
                form.base_url = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
            None => {}
        }
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_are_plain() {
        for ok in ["home", "faq-2024", "a.b_c", &"x".repeat(MAX_NAME)] {
            assert!(check_new_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "docs", "..", "../etc", "a/b", ".hidden", "a b", "名字", &"x".repeat(MAX_NAME + 1)]
        {
            assert!(check_new_name(bad).is_err(), "{bad}");
        }
    }
}
