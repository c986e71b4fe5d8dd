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

/// `GET /`: the examples name the address the page was asked on, and the guide list is
/// the bundled guides'.
pub fn landing(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let origin = markdown::escape(&origin(ctx.req.header("host"), ctx.req.header("x-forwarded-proto")));
    let guides: String =
        GUIDES.iter().map(|(slug, source)| format!("<li>{}</li>\n", guide_entry(slug, source))).collect();
    Ok(html(LANDING_HTML.replace("http://127.0.0.1:6185", &origin).replace("<!-- guides -->\n", &guides)))
}

/// The origin a page's examples should use: the request's `Host` when it is a plain host
/// and port (anything else, which only a confused or hostile client sends, falls back to
/// the default address), `https` when a proxy in front says so.
fn origin(host: Option<&str>, forwarded_proto: Option<&str>) -> String {
    let host = host
        .map(str::trim)
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("127.0.0.1:6185");
    let scheme = if forwarded_proto.is_some_and(|p| p.trim().eq_ignore_ascii_case("https")) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

/// One guide as a list entry: its title linked, then its summary.
fn guide_entry(slug: &str, source: &str) -> String {
    let title = markdown::title(source).unwrap_or(slug);
    let summary = markdown::summary(source).map(|s| markdown::inline(&s)).unwrap_or_default();
    format!("<a href=\"/docs/{slug}\">{}</a>: {summary}", markdown::escape(title))
}

/// A page in the guides' frame: the navigation (with `current` marked) around `main`.
fn guide_page(title: &str, current: Option<&str>, main: &str) -> Response {
    let nav: String = GUIDES
        .iter()
        .map(|(s, src)| {
            let t = markdown::title(src).unwrap_or(s);
            let mark = if Some(*s) == current { " aria-current=\"page\"" } else { "" };
            format!("<a href=\"/docs/{s}\"{mark}>{}</a> ", markdown::escape(t))
        })
        .collect();
    html(format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · astrbot</title>\n<link rel=\"stylesheet\" href=\"/static/style.css\">\n</head>\n<body>\n\
         <nav class=\"top\"><a href=\"/\"><strong>astrbot</strong></a> <a href=\"/docs\">Guides</a> {nav}<a href=\"/api/v1/docs\">API reference</a></nav>\n\
         <main class=\"doc\">\n{main}</main>\n</body>\n</html>\n",
        markdown::escape(title),
    ))
}

/// `GET /docs`: the index of the bundled guides.
pub fn guide_index(_ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let items: String =
        GUIDES.iter().map(|(slug, source)| format!("<li>{}</li>\n", guide_entry(slug, source))).collect();
    let main = format!(
        "<h1>Guides</h1>\n<ul>\n{items}<li><a href=\"/api/v1/docs\">API reference</a>: every route with its \
         scope; paste a key and send requests.</li>\n</ul>\n"
    );
    Ok(guide_page("Guides", None, &main))
}

/// `GET /docs/{page}`: a guide rendered into the page template.
pub fn guide(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let slug = ctx.param(0);
    let Some((_, source)) = GUIDES.iter().find(|(s, _)| *s == slug) else {
        return Ok(Response::new(
            404,
            "text/plain; charset=utf-8",
            b"404 Not found: no such guide; /docs lists them\n".to_vec(),
        ));
    };
    let title = markdown::title(source).unwrap_or(slug);
    Ok(guide_page(title, Some(slug), &markdown::render(source)))
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

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origin_is_the_host_asked_for_unless_it_is_not_a_plain_host() {
        assert_eq!(origin(Some("pi.local:8080"), None), "http://pi.local:8080");
        assert_eq!(origin(Some("[::1]:6185"), None), "http://[::1]:6185");
        assert_eq!(origin(Some("bot.example.com"), Some("https")), "https://bot.example.com");
        assert_eq!(origin(None, Some("javascript")), "http://127.0.0.1:6185");
        for hostile in ["a\"><script>", "a b", "", "x/y", "a@b"] {
            assert_eq!(origin(Some(hostile), None), "http://127.0.0.1:6185", "{hostile:?}");
        }
    }
}
