//! The public, unauthenticated routes: health, the OpenAPI document, the interactive
//! reference, the landing page, the bundled guides and their static assets. All of it is
//! embedded in the binary at build time; nothing is read from disk or fetched.
//!
//! Every HTML page carries [`PAGE_CSP`]: scripts, styles and requests from this origin only,
//! no inline script or style, no framing. The reference holds a credential in
//! `sessionStorage`, so nothing but our own `reference.js` may run beside it.

use serde_json::json;

use crate::app::Ctx;
use crate::docs::GUIDES;
use crate::error::ApiError;
use crate::http::Response;
use crate::markdown;

const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css; charset=utf-8", include_str!("../../static/style.css")),
    ("reference.js", "text/javascript; charset=utf-8", include_str!("../../static/reference.js")),
];

const REFERENCE_HTML: &str = include_str!("../../static/reference.html");
const LANDING_HTML: &str = include_str!("../../static/index.html");

/// The Content-Security-Policy of our HTML pages, so that a script injected into a page
/// cannot run or send what it reads elsewhere. `data:` images are only the reference's
/// empty favicon.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn html(body: String) -> Response {
    let mut r = Response::new(200, "text/html; charset=utf-8", body.into_bytes());
    r.header("Cache-Control", "no-cache".into());
    r.header("Content-Security-Policy", PAGE_CSP.into());
    r
}

/// `GET /healthz`
pub fn healthz(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    Ok(Response::json(
        200,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": crate::app::uptime_secs(ctx.app),
        }),
    ))
}

/// `GET /api/v1/openapi.json`
pub fn openapi(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    // Set at start-up before any request is served.
    let document =
        ctx.app.openapi_json.get().ok_or_else(|| ApiError::internal("the OpenAPI document is not ready"))?;
    Ok(Response::new(200, "application/json", document.clone()))
}

/// `GET /api/v1/docs`
pub fn reference(_ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    Ok(html(REFERENCE_HTML.to_owned()))
}

/// `GET /`
pub fn landing(_ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    Ok(html(LANDING_HTML.to_owned()))
}

/// `GET /docs/{page}`: a guide rendered into the page template.
pub fn guide(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let slug = ctx.param(0);
    let Some((_, source)) = GUIDES.iter().find(|(s, _)| *s == slug) else {
        return Ok(Response::new(
            404,
            "text/plain; charset=utf-8",
            b"404 Not found: no such guide\n".to_vec(),
        ));
    };
    let title = markdown::title(source).unwrap_or(slug);
    let nav: String = GUIDES
        .iter()
        .map(|(s, src)| {
            let t = markdown::title(src).unwrap_or(s);
            let current = if *s == slug { " aria-current=\"page\"" } else { "" };
            format!("<a href=\"/docs/{s}\"{current}>{}</a> ", markdown::escape(t))
        })
        .collect();
    Ok(html(format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · astrbot</title>\n<link rel=\"stylesheet\" href=\"/static/style.css\">\n</head>\n<body>\n\
         <nav class=\"top\"><a href=\"/\"><strong>astrbot</strong></a> {nav}<a href=\"/api/v1/docs\">API reference</a></nav>\n\
         <main class=\"doc\">\n{}</main>\n</body>\n</html>\n",
        markdown::escape(title),
        markdown::render(source)
    )))
}

/// `GET /static/{file}`
pub fn asset(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.param(0);
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => {
            let mut r = Response::new(200, content_type, body.as_bytes().to_vec());
            r.header("Cache-Control", "public, max-age=300".into());
            Ok(r)
        }
        None => Ok(Response::new(404, "text/plain; charset=utf-8", b"404 Not found\n".to_vec())),
    }
}
