//! The one error type of the HTTP API and the one place it becomes a response.
//!
//! Handlers return `Result<Response, ApiError>`; [`ApiError::into_response`] maps every
//! variant to its status code and AstrBot's envelope `{"status":"error","message":...}`.
//! Server-side failures (`Internal`) are logged here with their cause and shown to the
//! client only as `Internal server error`; client errors are not logged, they are not news.
//! Every error response carries `X-Content-Type-Options: nosniff`, so a browser never
//! guesses a type for bytes we serve and runs them as a page: this is also the path of the
//! 500 that `server` builds for a panicking handler, which never returns through
//! `pipeline::handle`.
//!
//! The dependency runs one way: this module knows `http`'s [`Response`] (to build the
//! envelope) and its [`BodyError`] (to map a refused body), and `http` knows nothing of
//! `ApiError`. So the messages of refused bodies (413, 408, `Invalid JSON body`, the
//! multipart checks) are written here, next to every other message a client can see.

use std::fmt;

use crate::http::{BodyError, Response};

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is wrong (bad JSON, wrong field type, a validation rule).
    BadRequest(String),
    /// 401 with AstrBot's message (`Missing API key`, `Invalid API key`, `未授权`, ...).
    Unauthorized(String),
    /// 403 with a message (`Cross-origin request refused`, ...).
    Forbidden(String),
    /// 403: the key lacks `scope` (`admin` for the admin-only routes). AstrBot's message,
    /// plus RFC 6750's `WWW-Authenticate: Bearer error="insufficient_scope"`, so a client
    /// learns which scope it lacks from a standard header.
    InsufficientScope { message: String, scope: &'static str },
    /// 404 with a message (`Not Found` for unknown routes).
    NotFound(String),
    /// 405 with the methods the path does allow, sent in `Allow`.
    MethodNotAllowed(Vec<&'static str>),
    /// 413: the body is larger than the route accepts; it is not read.
    PayloadTooLarge(usize),
    /// 411: a multipart body without `Content-Length` (AstrBot 4.29 refuses those).
    LengthRequired,
    /// 408: the body did not arrive at the minimum rate; the connection is closed after.
    BodyTimeout,
    /// 429 with `Retry-After` in seconds.
    TooManyRequests { message: String, retry_after: i64 },
    /// 503 with `Retry-After` in seconds: the server is at a capacity limit.
    Busy { message: String, retry_after: i64 },
    /// AstrBot's "200-error": HTTP 200 with `status: error` (chat, sessions and file routes).
    Soft(String),
    /// 500: our fault. The cause is logged, never sent.
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    pub fn internal(cause: impl fmt::Display) -> ApiError {
        ApiError::Internal(cause.to_string())
    }

    /// The HTTP status code of this error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) | ApiError::InsufficientScope { .. } => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::LengthRequired => 411,
            ApiError::BodyTimeout => 408,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Soft(_) => 200,
            ApiError::Busy { .. } => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// The message the client sees.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Soft(m) => m.clone(),
            ApiError::TooManyRequests { message, .. }
            | ApiError::Busy { message, .. }
            | ApiError::InsufficientScope { message, .. } => message.clone(),
            ApiError::MethodNotAllowed(_) => "Method Not Allowed".to_owned(),
            ApiError::PayloadTooLarge(limit) => format!("Request body exceeds the {limit} bytes limit"),
            ApiError::LengthRequired => "Content-Length header is required for uploads".to_owned(),
            ApiError::BodyTimeout => "Request body not received in time".to_owned(),
            ApiError::Internal(_) => "Internal server error".to_owned(),
        }
    }

    /// The single mapping from an error to what goes on the wire. `route` names the
    /// request in the log line of a server-side failure.
    pub fn into_response(self, route: &str) -> Response {
        if let ApiError::Internal(cause) = &self {
            log::error!("{route}: {cause}");
        }
        let mut response = Response::error(self.status(), &self.message());
        response.header("X-Content-Type-Options", "nosniff".into());
        match self {
            ApiError::MethodNotAllowed(methods) => response.header("Allow", methods.join(", ")),
            ApiError::TooManyRequests { retry_after, .. } | ApiError::Busy { retry_after, .. } => {
                response.header("Retry-After", retry_after.to_string())
            }
            ApiError::InsufficientScope { scope, .. } => response.header(
                "WWW-Authenticate",
                format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\""),
            ),
            _ => {}
        }
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.message())
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> ApiError {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge(limit) => ApiError::PayloadTooLarge(limit),
            BodyError::Timeout => ApiError::BodyTimeout,
            BodyError::Unreadable => ApiError::bad_request("There was an error parsing the body"),
            BodyError::InvalidJson => ApiError::bad_request("Invalid JSON body"),
            BodyError::NotAnObject => ApiError::bad_request("Request body must be a JSON object"),
            BodyError::NotMultipart => {
                ApiError::bad_request("Expected a multipart/form-data body with a file field")
            }
            BodyError::MissingBoundary => ApiError::bad_request("Missing boundary in multipart."),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        ApiError::Internal(format!("i/o: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_headers() {
        let r = ApiError::MethodNotAllowed(vec!["GET", "POST"]).into_response("t");
        assert_eq!(r.status, 405);
        assert_eq!(r.header_value("Allow"), Some("GET, POST"));
        assert_eq!(r.body_str(), r#"{"status":"error","message":"Method Not Allowed"}"#);

        let r = ApiError::TooManyRequests { message: "x".into(), retry_after: 7 }.into_response("t");
        assert_eq!((r.status, r.header_value("Retry-After")), (429, Some("7")));

        let r = ApiError::Busy { message: "full".into(), retry_after: 1 }.into_response("t");
        assert_eq!((r.status, r.header_value("Retry-After")), (503, Some("1")));

        let r = ApiError::internal("disk on fire").into_response("t");
        assert_eq!(r.body_str(), r#"{"status":"error","message":"Internal server error"}"#);
        assert_eq!(r.header_value("X-Content-Type-Options"), Some("nosniff"));

        let r = ApiError::InsufficientScope { message: "Insufficient API key scope".into(), scope: "file" }
            .into_response("t");
        assert_eq!(r.status, 403);
        assert_eq!(
            r.header_value("WWW-Authenticate"),
            Some(r#"Bearer error="insufficient_scope", scope="file""#)
        );
        assert_eq!(r.body_str(), r#"{"status":"error","message":"Insufficient API key scope"}"#);
    }

    #[test]
    fn refused_bodies_keep_their_status_and_message() {
        let cases = [
            (BodyError::TooLarge(5), 413, "Request body exceeds the 5 bytes limit"),
            (BodyError::Timeout, 408, "Request body not received in time"),
            (BodyError::Unreadable, 400, "There was an error parsing the body"),
            (BodyError::InvalidJson, 400, "Invalid JSON body"),
            (BodyError::NotAnObject, 400, "Request body must be a JSON object"),
            (BodyError::NotMultipart, 400, "Expected a multipart/form-data body with a file field"),
            (BodyError::MissingBoundary, 400, "Missing boundary in multipart."),
        ];
        for (body_error, status, message) in cases {
            let e = ApiError::from(body_error);
            assert_eq!((e.status(), e.message().as_str()), (status, message), "{body_error:?}");
        }
    }
}
