//! What an operator reads without AstrBot's WebUI (admin token only, see the route table):
//! the recent log lines (`logbuf`) as a list or a live SSE stream, and the server's
//! statistics. Beyond AstrBot, so errors are plain HTTP statuses with the envelope, never
//! 200-errors; no client value is echoed back, however long.

use log::LevelFilter;
use serde_json::{Value, json};

use crate::app::Ctx;
use crate::db;
use crate::error::ApiError;
use crate::http::Response;
use crate::logbuf::{self, SubscribeError};

/// Lines of history when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// `?level=`: absent or empty is every level the server logs.
fn level_query(ctx: &Ctx<'_, '_>) -> Result<LevelFilter, ApiError> {
    match ctx.req.query_param("level").map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(LevelFilter::Trace),
        Some(v) => logbuf::parse_level(v)
            .ok_or_else(|| ApiError::bad_request("level must be one of error, warn, info, debug, trace")),
    }
}

/// `?limit=`: a positive integer; beyond the buffer it is the buffer (a number of any
/// length is read without overflow).
fn limit_query(ctx: &Ctx<'_, '_>) -> Result<usize, ApiError> {
    let Some(v) = ctx.req.query_param("limit").map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_LIMIT);
    };
    let bad = || ApiError::bad_request(format!("limit must be an integer from 1 to {}", logbuf::MAX_LINES));
    let digits = v.strip_prefix('+').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n = digits.parse::<usize>().unwrap_or(usize::MAX);
    if n == 0 {
        return Err(bad());
    }
    Ok(n.min(logbuf::MAX_LINES))
}

/// `GET /api/v1/logs/history?limit=&level=`: the last lines, oldest first.
pub fn logs_history(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let level = level_query(ctx)?;
    let limit = limit_query(ctx)?;
    let lines: Vec<Value> = logbuf::history(limit, level).iter().map(logbuf::Line::to_json).collect();
    Ok(Response::ok(json!({"lines": lines, "capacity": logbuf::MAX_LINES})))
}

/// `GET /api/v1/logs/live?level=`: each new line as a `data: {json}` event.
pub fn logs_live(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let level = level_query(ctx)?;
    match logbuf::subscribe(level) {
        Ok(rx) => Ok(Response::events(rx)),
        Err(SubscribeError::Full) => Err(ApiError::Busy {
            message: format!(
                "{} live log streams are open; close one or try again shortly",
                logbuf::MAX_SUBSCRIBERS
            ),
            retry_after: 5,
        }),
        Err(SubscribeError::Closed) => {
            Err(ApiError::Busy { message: "The server is stopping".into(), retry_after: 5 })
        }
    }
}

/// `GET /api/v1/stats`
pub fn stats(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let conn = ctx.app.db.conn()?;
    let keys = db::list_keys(&conn)?;
    let (pending, dropped) = db::webhooks::outbox_totals(&conn)?;
    drop(conn);
    let mut requests: Vec<(i64, Value)> = keys
        .iter()
        .filter_map(|k| {
            let count = ctx.app.usage_today(&k.key_id, ctx.now);
            (count > 0).then(|| (count, json!({"key_id": k.key_id, "name": k.name, "count": count})))
        })
        .collect();
    // Busiest first; the listing order (newest key first) breaks ties.
    requests.sort_by_key(|r| std::cmp::Reverse(r.0));
    let total = requests.iter().fold(0i64, |sum, (n, _)| sum.saturating_add(*n));
    Ok(Response::ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": crate::app::uptime_secs(ctx.app),
        "requests_today": requests.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "requests_today_total": total,
        "active_streams": ctx.app.streams.total(),
        "chat_runs": crate::chat::run::runs_in_progress(),
        "upstream_errors": crate::chat::run::upstream_errors(),
        "outbox_pending": pending,
        "outbox_dropped": dropped,
        "bots": ctx.app.platforms.states().into_iter().map(|(id, kind, state)| {
            let mut v = state.to_json();
            v["id"] = json!(id);
            v["type"] = json!(kind);
            v
        }).collect::<Vec<_>>(),
        "mcp": mcp_stats(ctx),
    })))
}

/// Each running MCP server's state, tool count and tool calls, and the calls over all.
fn mcp_stats(ctx: &Ctx<'_, '_>) -> Value {
    let servers: Vec<Value> = ctx
        .app
        .mcp
        .runtimes()
        .iter()
        .map(|r| {
            let mut v = r.state().to_json();
            v["name"] = json!(r.name);
            v["tools"] = json!(r.tools().len());
            if let (Some(v), Value::Object(c)) = (v.as_object_mut(), r.counters.to_json()) {
                v.extend(c);
            }
            v
        })
        .collect();
    let mut all = ctx.app.mcp.counters.to_json();
    all["servers"] = json!(servers);
    let (calls, errors) = crate::chat::tools::builtin_stats();
    all["builtin_calls"] = json!(calls);
    all["builtin_errors"] = json!(errors);
    all
}
