//! The request pipeline: what happens to every request between the server and a handler.
//!
//! [`handle`] is the whole pipeline as plain function calls: match the route, refuse an
//! oversized body, parse a JSON body, authenticate, open the webhook event of a mirrored
//! key (`mirror`), apply the key's daily quota, call the handler, then add the quota
//! headers, finish the webhook event with the answer (a memory push to the outbox), and
//! add `X-Content-Type-Options: nosniff` to every answer, so that no browser sniffs a stored upload or an error message into HTML. A
//! request that the dashboard cookie authenticates and that would change state is refused
//! when it comes from another site's page. `server` calls [`handle`]; the handlers in
//! `api` see only the [`Ctx`] it builds, and the shared state lives in `app`.

use std::sync::Arc;

use crate::app::{App, Ctx};
use crate::auth::{self, ActiveKey, Credential, Identity, refuse_cross_site_cookie};
use crate::db;
use crate::error::ApiError;
use crate::http::{self, MAX_JSON_BODY, Request, Response};
use crate::mirror::Draft;
use crate::quota::Verdict;
use crate::routes::{self, Access, Body, Match, Route};
use crate::secrets;
use crate::timefmt::now_micros;

/// Quota headers to add to a keyed response.
struct QuotaHeaders {
    limit: i64,
    remaining: i64,
    reset_secs: i64,
}

/// The request pipeline. Never panics on its own account; `server` catches handler panics
/// (that 500 gets its `nosniff` from [`ApiError::into_response`]).
pub fn handle(app: &Arc<App>, req: &mut Request<'_>) -> Response {
    let mut response = route_and_run(app, req);
    // Browsers must take our types as given: a stored upload or an error message is never
    // sniffed into HTML.
    if !response.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("X-Content-Type-Options")) {
        response.header("X-Content-Type-Options", "nosniff".into());
    }
    response
}

fn route_and_run(app: &Arc<App>, req: &mut Request<'_>) -> Response {
    let now = now_micros();
    // `?=value` names nothing: a client bug or a probe, never a parameter of ours.
    if req.query.iter().any(|(name, _)| name.is_empty()) {
        return ApiError::bad_request("Query parameter without a name").into_response(&req.path);
    }
    // AstrBot 4.29 refuses a multipart body of unannounced length on every `/api` path,
    // before routing and authentication.
    let is_api = req.path == "/api" || req.path.starts_with("/api/");
    if is_api && req.body_len.is_none() && matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        let ct = req.header("content-type").unwrap_or("").trim_start().to_ascii_lowercase();
        if ct.starts_with("multipart/") {
            return ApiError::LengthRequired.into_response(&req.path);
        }
    }
    let (route, params) = match routes::find(&req.method, &req.path) {
        Match::Found(route, params) => (route, params),
        Match::WrongMethod(allowed) => {
            return ApiError::MethodNotAllowed(allowed).into_response(&req.path);
        }
        Match::NotFound => return not_found(app, req, now),
    };
    req.params = params;
    let mut quota = None;
    let mut mirror = None;
    let result = run_route(app, route, req, now, &mut quota, &mut mirror);
    let mut response = match result {
        Ok(response) => response,
        Err(e) => e.into_response(&format!("{} {}", route.method, route.path)),
    };
    if let Some(q) = quota {
        response.header("RateLimit-Policy", format!("\"daily\";q={};w=86400", q.limit));
        response.header("RateLimit", format!("\"daily\";r={};t={}", q.remaining, q.reset_secs));
    }
    if let Some(draft) = mirror {
        app.outbox.push(finish_event(draft, &response));
    }
    response
}

/// The webhook event of an answer: a JSON body as it is, a download or a stream by type
/// and size (a chat stream takes its draft along and never gets here).
fn finish_event(draft: Draft, response: &Response) -> crate::webhooks::Event {
    let content_type = response.header_value("Content-Type").unwrap_or("");
    match &response.body {
        http::Body::Bytes(bytes) if content_type.starts_with("application/json") => {
            draft.finish_json_bytes(response.status, bytes)
        }
        http::Body::Bytes(bytes) => draft
            .finish(response.status, serde_json::json!({"content_type": content_type, "size": bytes.len()})),
        http::Body::File(_, len) => {
            draft.finish(response.status, serde_json::json!({"content_type": content_type, "size": len}))
        }
        // Compression happens after the pipeline: no handler answers a stream of unknown length.
        http::Body::Events(_) | http::Body::Stream(_) => {
            draft.finish(response.status, serde_json::json!({"content_type": content_type}))
        }
    }
}

fn run_route(
    app: &Arc<App>,
    route: &'static Route,
    req: &mut Request<'_>,
    now: i64,
    quota: &mut Option<QuotaHeaders>,
    mirror: &mut Option<Draft>,
) -> Result<Response, ApiError> {
    let limit = match route.body {
        Body::Json | Body::None => MAX_JSON_BODY,
        // A chunk's body is AstrBot's 2 MiB, whatever `--max-upload-mb` says.
        Body::Upload if route.path == "/api/v1/files/upload/chunk" => crate::uploads::CHUNK_BODY_LIMIT,
        Body::Upload => app.settings.max_upload_bytes,
    };
    let mut body_checked = match route.body {
        Body::Upload => req.multipart_boundary().map(|_| ()).map_err(ApiError::from),
        Body::Json | Body::None => Ok(()),
    };
    if body_checked.is_ok() && req.body_len.is_some_and(|n| n > limit) {
        body_checked = Err(ApiError::PayloadTooLarge(limit));
    }
    // AstrBot's dashboard middleware runs before the body is looked at; the Open API
    // parses JSON before it checks the key.
    let who = if route.access == Access::Dashboard {
        body_checked?;
        let who = authenticate_dashboard(app, req, now)?;
        if route.body == Body::Json {
            req.parse_json_body()?;
        }
        Some(who)
    } else {
        if body_checked.is_ok() && route.body == Body::Json {
            body_checked = req.parse_json_body().map_err(ApiError::from);
        }
        if let Err(e) = body_checked {
            // The body's refusal is the answer; a mirrored key still sees it in its webhook.
            let _ = authenticate(app, req, route.access, now, mirror);
            return Err(e);
        }
        authenticate(app, req, route.access, now, mirror)?
    };
    if let Some(Identity::Key(key)) = &who {
        apply_quota(app, key, now, quota)?;
    }
    let mut ctx = Ctx { app, req, who, now, mirror: mirror.take() };
    let result = (route.handler)(&mut ctx);
    *mirror = ctx.mirror.take();
    result
}

/// The 401 of an admin-only route called without any credential.
pub const MISSING_ADMIN_TOKEN: &str =
    "Missing admin token: this route needs the admin token (POST /api/auth/login)";

/// Authentication for Open API routes: an admin token (bearer or cookie) passes every
/// scope, an API key only the scopes it holds.
/// A verified key with a webhook opens `mirror`, so that even its refusal (scope, quota) is
/// mirrored.
fn authenticate(
    app: &App,
    req: &Request<'_>,
    access: Access,
    now: i64,
    mirror: &mut Option<Draft>,
) -> Result<Option<Identity>, ApiError> {
    let scope = match access {
        Access::Public => return Ok(None),
        Access::Scope(s) => Some(s),
        Access::Admin | Access::Dashboard => None,
    };
    // AstrBot's message on scoped routes; an admin-only route says what it needs instead,
    // since no API key would do.
    let missing = || match access {
        Access::Admin => ApiError::Unauthorized(MISSING_ADMIN_TOKEN.into()),
        _ => ApiError::Unauthorized("Missing API key".into()),
    };
    // The needed scope goes in `WWW-Authenticate` (RFC 6750), so a client can tell which
    // key it lacks; admin-only routes need `admin`.
    let insufficient = || ApiError::InsufficientScope {
        message: "Insufficient API key scope".into(),
        scope: scope.unwrap_or("admin"),
    };
    let raw_key = match auth::extract_credential(req) {
        Credential::None => return Err(missing()),
        Credential::Cookie(token) => {
            refuse_cross_site_cookie(req)?;
            return match app.verify_admin_token(&token, now)? {
                Some(name) => Ok(Some(Identity::Admin(name))),
                None => Err(ApiError::Unauthorized("Invalid token".into())),
            };
        }
        Credential::Bearer(token) => {
            if let Some(name) = app.verify_admin_token(&token, now)? {
                return Ok(Some(Identity::Admin(name)));
            }
            // Our admin tokens have their own prefix; one that is unknown (signed out,
            // password changed) is a dead admin token, not an API key.
            if token.starts_with(secrets::ADMIN_TOKEN_PREFIX) {
                return Err(ApiError::Unauthorized("Invalid token".into()));
            }
            token
        }
        Credential::ApiKey(key) => key,
    };
    // Routes outside the Open API scopes refuse any key, valid or not, before a lookup.
    let Some(scope) = scope else { return Err(insufficient()) };
    let key = app.verify_api_key(&raw_key, now)?;
    if key.mirrored {
        *mirror = Some(Draft::new(&key.key_id, req, now));
    }
    if !auth::scopes_allow(&key.scopes, scope) {
        return Err(insufficient());
    }
    Ok(Some(Identity::Key(key)))
}

/// Authentication for AstrBot's legacy dashboard routes: the admin token only, refused
/// with AstrBot's own Chinese messages, which its dashboard shows as they are.
fn authenticate_dashboard(app: &App, req: &Request<'_>, now: i64) -> Result<Identity, ApiError> {
    let token = match auth::extract_dashboard_credential(req) {
        Credential::Cookie(token) => {
            refuse_cross_site_cookie(req)?;
            token
        }
        Credential::Bearer(token) | Credential::ApiKey(token) => token,
        Credential::None => return Err(ApiError::Unauthorized("未授权".into())),
    };
    match app.verify_admin_token(&token, now) {
        Ok(Some(name)) => Ok(Identity::Admin(name)),
        Ok(None) => Err(ApiError::Unauthorized("Token 无效".into())),
        Err(ApiError::Unauthorized(_)) => Err(ApiError::Unauthorized("Token 过期".into())),
        Err(e) => Err(e),
    }
}

fn apply_quota(
    app: &App,
    key: &ActiveKey,
    now: i64,
    headers: &mut Option<QuotaHeaders>,
) -> Result<(), ApiError> {
    let limit = key.effective_limit(app.settings.default_daily_limit);
    let verdict = app.quota.lock().unwrap_or_else(|e| e.into_inner()).check(&key.key_id, limit, now, |day| {
        app.db.conn().and_then(|c| db::usage_count(&c, &key.key_id, day)).unwrap_or_else(|e| {
            log::error!("cannot read usage of key {}: {e}", key.key_id);
            0
        })
    });
    match verdict {
        Verdict::Exceeded { limit, retry_after } => {
            // The refusal still tells the client its policy, with nothing remaining.
            *headers = Some(QuotaHeaders { limit, remaining: 0, reset_secs: retry_after });
            Err(ApiError::TooManyRequests { message: "Daily request limit exceeded".into(), retry_after })
        }
        Verdict::Allowed { limit: Some(limit), remaining, reset_secs } => {
            *headers = Some(QuotaHeaders { limit, remaining, reset_secs });
            Ok(())
        }
        Verdict::Allowed { limit: None, .. } => Ok(()),
    }
}

/// AstrBot's answers for paths no route matches, so clients see what they know: its catch-all static
/// route serves GET, so other methods get 405 with `Allow: GET`; unknown `/api/v1` paths
/// are 404 envelopes; other `/api/` paths are behind the dashboard login; anything else is
/// a plain-text 404.
fn not_found(app: &App, req: &Request<'_>, now: i64) -> Response {
    let is_api = req.path == "/api" || req.path.starts_with("/api/");
    let is_v1 = req.path == "/api/v1" || req.path.starts_with("/api/v1/");
    if is_api
        && !is_v1
        && let Err(e) = authenticate_dashboard(app, req, now)
    {
        return e.into_response(&req.path);
    }
    if req.method != "GET" {
        return ApiError::MethodNotAllowed(vec!["GET"]).into_response(&req.path);
    }
    if is_api {
        return ApiError::NotFound("Not Found".into()).into_response(&req.path);
    }
    Response::new(
        404,
        "text/plain; charset=utf-8",
        "404 Not found: this path does not exist. See / for the documentation.\n".into(),
    )
}
