//! The route table: every route the binary serves, one line each, with its method, path,
//! access (the scope it needs), body kind, handler and the schemas the OpenAPI document
//! shows for it. `openapi` builds the document from this table and a test keeps the two
//! equal; `app` matches requests against it.

use crate::api::{self, Ctx};
use crate::error::ApiError;
use crate::http::Response;

pub type Handler = fn(&mut Ctx<'_, '_>) -> Result<Response, ApiError>;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// An API key holding this scope, or the admin token.
    Scope(&'static str),
    /// The admin token only; API keys get 403 (AstrBot's `system` scope).
    Admin,
    /// AstrBot's legacy dashboard routes: the admin token only, with the dashboard's
    /// Chinese 401 messages.
    Dashboard,
}

impl Access {
    /// The value of `x-astrbot-scope` in the OpenAPI document.
    pub fn scope_name(self) -> &'static str {
        match self {
            Access::Public => "none",
            Access::Scope(s) => s,
            Access::Admin | Access::Dashboard => "system",
        }
    }
}

/// What a route reads from its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// A JSON document up to 1 MiB, parsed before authentication.
    Json,
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub body: Body,
    pub handler: Handler,
    /// One line for the reference.
    pub summary: &'static str,
    pub tag: &'static str,
    /// Component schema of the request body, if any.
    pub request: Option<&'static str>,
    /// Component schema of `data` in the success envelope; `None` for non-envelope answers.
    pub response: Option<&'static str>,
}

use Access::{Admin, Dashboard, Public, Scope};
use Body::{Json, None as NoBody};

macro_rules! route {
    ($m:literal $p:literal, $access:expr, $body:expr, $h:path, $tag:literal, $summary:literal, $req:expr, $resp:expr) => {
        Route {
            method: $m,
            path: $p,
            access: $access,
            body: $body,
            handler: $h,
            summary: $summary,
            tag: $tag,
            request: $req,
            response: $resp,
        }
    };
}

#[rustfmt::skip]
pub static ROUTES: &[Route] = &[
    route!("GET" "/api/v1/im/bots",                   Scope("im"), NoBody, api::im::list_bots,      "IM",       "List the ids of the configured bots", None, Some("BotIds")),
    route!("GET" "/api/v1/api-keys",                  Admin,       NoBody, api::keys::list,         "API keys", "List API keys, newest first", None, Some("ApiKeyList")),
    route!("POST" "/api/v1/api-keys",                 Admin,       Json,   api::keys::create,       "API keys", "Create an API key (the raw key is shown once)", Some("ApiKeyCreate"), Some("ApiKeyCreated")),
    route!("POST" "/api/v1/api-keys/{key_id}/revoke", Admin,       NoBody, api::keys::revoke,       "API keys", "Revoke an API key", None, Some("Empty")),
    route!("DELETE" "/api/v1/api-keys/{key_id}",      Admin,       NoBody, api::keys::delete,       "API keys", "Delete an API key", None, Some("Empty")),
    route!("GET" "/api/apikey/list",                  Dashboard,   NoBody, api::keys::list,         "Legacy",   "List API keys (AstrBot dashboard route)", None, Some("ApiKeyList")),
    route!("POST" "/api/apikey/create",               Dashboard,   Json,   api::keys::create,       "Legacy",   "Create an API key (AstrBot dashboard route)", Some("ApiKeyCreate"), Some("ApiKeyCreated")),
    route!("POST" "/api/apikey/revoke",               Dashboard,   Json,   api::keys::legacy_revoke, "Legacy",  "Revoke an API key (AstrBot dashboard route)", Some("KeyIdBody"), Some("Empty")),
    route!("POST" "/api/apikey/delete",               Dashboard,   Json,   api::keys::legacy_delete, "Legacy",  "Delete an API key (AstrBot dashboard route)", Some("KeyIdBody"), Some("Empty")),
    route!("POST" "/api/auth/login",                  Public,      Json,   api::admin::login,       "Admin",    "Log in as the administrator and get an admin token", Some("Login"), Some("LoginToken")),
    route!("POST" "/api/auth/logout",                 Public,      NoBody, api::admin::logout,      "Admin",    "End the admin token sent as Bearer", None, Some("Empty")),
    route!("GET" "/api/v1/openapi.json",              Public,      NoBody, api::meta::openapi,      "Docs",     "This OpenAPI document", None, None),
    route!("GET" "/api/v1/docs",                      Public,      NoBody, api::meta::reference,    "Docs",     "The interactive API reference", None, None),
    route!("GET" "/healthz",                          Public,      NoBody, api::meta::healthz,      "Docs",     "Liveness: status, version, uptime", None, None),
    route!("GET" "/",                                 Public,      NoBody, api::meta::landing,      "Docs",     "The landing page", None, None),
    route!("GET" "/docs/{page}",                      Public,      NoBody, api::meta::guide,        "Docs",     "A bundled guide rendered as HTML", None, None),
    route!("GET" "/static/{file}",                    Public,      NoBody, api::meta::asset,        "Docs",     "A bundled static asset", None, None),
];

/// The outcome of matching a method and path against the table.
pub enum Match {
    Found(&'static Route, Vec<String>),
    /// The path exists with other methods.
    WrongMethod(Vec<&'static str>),
    NotFound,
}

/// Finds the route for a request. Path segments are matched literally or captured by a
/// `{name}` segment (captures are percent-decoded).
pub fn find(method: &str, path: &str) -> Match {
    let mut allowed = Vec::new();
    for route in ROUTES {
        if let Some(params) = match_path(route.path, path) {
            if route.method == method {
                return Match::Found(route, params);
            }
            allowed.push(route.method);
        }
    }
    if allowed.is_empty() { Match::NotFound } else { Match::WrongMethod(allowed) }
}

fn match_path(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') => {
                if g.is_empty() {
                    return None;
                }
                params.push(crate::http::percent_decode(g));
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_literals_and_captures() {
        match find("POST", "/api/v1/api-keys/abc%2Fd/revoke") {
            Match::Found(r, p) => {
                assert_eq!(r.path, "/api/v1/api-keys/{key_id}/revoke");
                assert_eq!(p, vec!["abc/d".to_owned()]);
            }
            _ => panic!("no match"),
        }
        assert!(matches!(find("GET", "/api/v1/im/bots/"), Match::NotFound), "no trailing-slash match");
        assert!(matches!(find("DELETE", "/api/v1/api-keys/"), Match::NotFound));
        match find("POST", "/api/v1/im/bots") {
            Match::WrongMethod(m) => assert_eq!(m, vec!["GET"]),
            _ => panic!("expected 405"),
        }
        match find("PUT", "/api/v1/api-keys") {
            Match::WrongMethod(m) => assert_eq!(m, vec!["GET", "POST"]),
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{} {} twice", a.method, a.path);
            }
        }
    }
}
