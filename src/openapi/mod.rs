//! The OpenAPI 3.1 document, built from the route table so the two cannot drift: every
//! route is an operation with its scope in `x-astrbot-scope`, its request and response
//! component schemas from [`mod@schemas`] (one function per resource), and the error
//! envelope for the failures it can produce.

mod operator;
mod schemas;

use serde_json::{Map, Value, json};

use crate::routes::{Access, Body, ROUTES, Route};
use schemas::schemas;

fn envelope(data_schema: &str) -> Value {
    json!({
        "type": "object",
        "required": ["status", "message", "data"],
        "properties": {
            "status": {"const": "ok"},
            "message": {"type": ["string", "null"]},
            "data": {"$ref": format!("#/components/schemas/{data_schema}")}
        }
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    })
}

/// The answer of a route that does not speak the envelope.
fn plain_response(route: &Route) -> Value {
    let (content_type, schema) = match route.path {
        "/api/v1/openapi.json" => ("application/json", json!({"type": "object"})),
        "/healthz" => ("application/json", json!({"$ref": "#/components/schemas/Health"})),
        "/static/{file}" => ("text/css", json!({"type": "string"})),
        p if p.starts_with("/api/v1/file") => {
            ("application/octet-stream", json!({"type": "string", "format": "binary"}))
        }
        "/api/v1/chat" => (
            "text/event-stream",
            json!({"type": "string", "description": "data: {\"type\": ...} events: session_id, user_message_saved, run_started, plain, agent_stats, complete, message_saved, end; with Accept: application/json one envelope {response, session_id, message_id, sources}; with bot_id (Astroworld) the bare AstroworldAnswer as application/json unless text/event-stream is asked for"}),
        ),
        _ => ("text/html; charset=utf-8", json!({"type": "string"})),
    };
    json!({"description": "OK", "content": {content_type: {"schema": schema}}})
}

/// Who a proactive message reaches, beyond AstrBot (`api::im`): the reference page states
/// the owner rule, because a client written for AstrBot would not expect the refusal.
const IM_OWNER_RULE: &str = "A UMO whose session part is `webchat!<username>!<session_id>` reaches only a session \
    that `<username>` owns: one that does not exist yet is created for them, and one another username owns is \
    refused with 400 `session_id belongs to another username`, nothing stored; any other session part names the \
    conversation directly, as in AstrBot, and reaches whoever owns it.";

fn operation(route: &Route) -> Value {
    let description = match route.path {
        "/api/v1/im/message" | "/api/v1/im/messages" => Some(IM_OWNER_RULE),
        _ => None,
    };
    let mut op = json!({
        "operationId": operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "x-astrbot-scope": route.access.scope_name(),
        "responses": responses(route),
    });
    if let Some(description) = description {
        op["description"] = json!(description);
    }
    let params = path_parameters(route);
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(schema) = route.request {
        let media = if route.body == Body::Upload { "multipart/form-data" } else { "application/json" };
        op["requestBody"] = json!({
            "required": true,
            "content": {media: {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        });
    }
    op["security"] = match route.access {
        Access::Public => json!([]),
        Access::Scope(_) => json!([{"bearer": []}, {"apiKeyHeader": []}, {"apiKeyQuery": []}]),
        Access::Admin | Access::Dashboard => json!([{"bearer": []}]),
    };
    op
}

/// The answers a route can give: its success, then the failures its body, its access and
/// its own rules can produce, in the order the document has always listed them.
fn responses(route: &Route) -> Map<String, Value> {
    let mut responses = Map::new();
    match route.response {
        Some(schema) => {
            responses.insert(
                "200".into(),
                json!({"description": "OK", "content": {"application/json": {"schema": envelope(schema)}}}),
            );
        }
        None => {
            responses.insert("200".into(), plain_response(route));
        }
    }
    if route.body != Body::None || route.access != Access::Public {
        responses.insert(
            "400".into(),
            error_response("Invalid request (bad JSON, wrong field type, a validation rule)"),
        );
    }
    match route.access {
        Access::Public => {}
        Access::Scope(_) => {
            responses.insert("401".into(), error_response("Missing API key / Invalid API key"));
            responses.insert(
                "403".into(),
                error_response(
                    "Insufficient API key scope (with `WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=\"...\"`), or a dashboard-cookie request from another origin (`Cross-origin request refused`)",
                ),
            );
            responses.insert("429".into(), error_response("Daily request limit exceeded (see Retry-After)"));
        }
        Access::Admin => {
            responses.insert("401".into(), error_response("Missing API key / Token expired"));
            responses.insert(
                "403".into(),
                error_response(
                    "Insufficient API key scope: API keys may not manage keys (with `WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=\"admin\"`)",
                ),
            );
        }
        Access::Dashboard => {
            responses.insert("401".into(), error_response("未授权 / Token 过期 / Token 无效"));
        }
    }
    if route.path == "/api/v1/chat" {
        responses.insert("503".into(), error_response("Too many chats in progress (see Retry-After)"));
    }
    if route.path == "/api/auth/login" {
        responses.insert("401".into(), error_response("Invalid username or password"));
        responses.insert("429".into(), error_response("Too many failed logins from this address"));
    }
    if route.body != Body::None {
        responses.insert("413".into(), error_response("Request body too large"));
        responses.insert(
            "408".into(),
            error_response("Request body not received in time (slower than 1 KiB/s on average after 10 s)"),
        );
    }
    responses.insert("500".into(), error_response("Internal server error"));
    responses
}

/// The path's `{name}` segments as required string parameters.
fn path_parameters(route: &Route) -> Vec<Value> {
    route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| name.trim_end_matches(":path"))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

fn operation_id(route: &Route) -> String {
    let path: String = route
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches(|c| c == '{' || c == '}').trim_end_matches(":path").replace(['-', '.'], "_"))
        .collect::<Vec<_>>()
        .join("_");
    format!("{}_{}", route.method.to_lowercase(), if path.is_empty() { "root".into() } else { path })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths.entry(crate::routes::openapi_path(route.path)).or_insert_with(|| json!({}));
        item[route.method.to_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AstrBot Open API (astrbot appliance)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "AstrBot's developer HTTP API served by the astrbot appliance. Authenticate with an API key (`Authorization: Bearer abk_...`, `X-API-Key`, or `?api_key=`); each operation names the scope it needs in `x-astrbot-scope`. Every `/api/` answer is an envelope: `{\"status\":\"ok\",\"message\":null,\"data\":...}` or `{\"status\":\"error\",\"message\":\"...\"}`. Keys with a daily limit get `RateLimit-Policy` and `RateLimit` headers."
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (abk_...) or an admin token (abt_...)"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in the document must name a schema that exists.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn document_equals_route_table() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut ops = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let route = ROUTES
                    .iter()
                    .find(|r| {
                        crate::routes::openapi_path(r.path) == *path && r.method.to_lowercase() == *method
                    })
                    .unwrap_or_else(|| panic!("{method} {path} is not in the route table"));
                assert_eq!(op["x-astrbot-scope"], route.access.scope_name());
                ops += 1;
            }
        }
        assert_eq!(ops, ROUTES.len());
        let mut all = Vec::new();
        refs(&doc, &mut all);
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {r}");
        }
    }
}
