//! `POST /api/v1/chat` and the chat sessions (scope `chat`; reference open API §5–7, §10).
//!
//! The handler checks the request in AstrBot's order (its errors are HTTP 200 with
//! `status: error`), stores the user message, and then either answers with one JSON
//! envelope (`Accept: application/json`, decision 8) or returns an SSE stream. The run is
//! a thread of its own, detached from the connection: it emits events into a channel that
//! the server writes out, and it stores the reply when done even if the client is gone.
//!
//! `prepare` only reads; everything a request writes before its run (the session, the
//! conversation's profile route and the user message) is one `IMMEDIATE` transaction in
//! `store_request`, so a refused or failed request leaves nothing behind.

use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::{opt_bool, opt_string};
use crate::app::{App, Ctx, LiveStream};
use crate::auth::Identity;
use crate::config::{self, ProviderChoice, SessionChoice};
use crate::db::chat::{self as store, Passage};
use crate::db::resources;
use crate::db::write_tx;
use crate::error::ApiError;
use crate::http::Response;
use crate::sse;
use crate::timefmt::iso;

/// What a validated chat request asks for.
struct Prepared {
    username: String,
    session_id: String,
    umo: String,
    /// The user's parts as stored (no server paths).
    parts: Vec<Value>,
    /// The plain text of the message (for commands, search and the model).
    text: String,
    streaming: bool,
    /// The profile the request names for this conversation (`config_id` / `config_name`).
    profile: Option<String>,
    selected_provider: Option<String>,
    selected_model: Option<String>,
    /// The sender may use administrator commands.
    is_admin: bool,
}

fn soft(message: impl Into<String>) -> ApiError {
    ApiError::Soft(message.into())
}

fn string_field(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    opt_string(body, field)
}

/// AstrBot's flags: `flags.<name>` if boolean, else the top-level `<name>` if boolean,
/// else true.
fn flag(body: &Map<String, Value>, name: &str) -> Result<bool, ApiError> {
    if let Some(Value::Object(flags)) = body.get("flags")
        && let Some(b) = opt_bool(flags, name)?
    {
        return Ok(b);
    }
    Ok(opt_bool(body, name)?.unwrap_or(true))
}

/// A message part's `type`, stringified and trimmed as AstrBot does (`""` when absent).
pub fn part_type(obj: &Map<String, Value>) -> String {
    match obj.get("type") {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A plain part's text, stringified (`""` when absent).
pub fn part_text(obj: &Map<String, Value>) -> String {
    match obj.get("text") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// AstrBot's lenient message parts (reference §7.1–7.2): invalid items are skipped.
fn lenient_parts(conn: &rusqlite::Connection, message: &Value) -> rusqlite::Result<Vec<Value>> {
    let mut parts = Vec::new();
    match message {
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() {
                parts.push(json!({"type": "plain", "text": t}));
            }
        }
        Value::Array(items) => {
            for item in items {
                let Some(obj) = item.as_object() else { continue };
                if !obj.contains_key("type") {
                    continue;
                }
                let kind = part_type(obj);
                match kind.as_str() {
                    "plain" => {
                        let text = part_text(obj);
                        if !text.is_empty() {
                            parts.push(json!({"type": "plain", "text": text}));
                        }
                    }
                    "reply" => {
                        if let Some(id) = obj.get("message_id").filter(|v| !v.is_null()) {
                            let selected = obj.get("selected_text").and_then(Value::as_str).unwrap_or("");
                            parts.push(json!({"type": "reply", "message_id": id, "selected_text": selected}));
                        }
                    }
                    "image" | "record" | "file" | "video" => {
                        let Some(id) =
                            obj.get("attachment_id").and_then(Value::as_str).filter(|s| !s.is_empty())
                        else {
                            continue;
                        };
                        if let Some(att) = resources::attachment(conn, id)? {
                            parts.push(json!({"type": att.kind, "attachment_id": att.attachment_id, "filename": att.filename}));
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(parts)
}

fn has_content(parts: &[Value]) -> bool {
    parts.iter().any(|p| {
        matches!(p["type"].as_str(), Some("plain" | "image" | "record" | "file" | "video"))
            && (p["text"].as_str().is_some_and(|t| !t.is_empty()) || p.get("attachment_id").is_some())
    })
}

/// Which profile a request names with `config_id` / `config_name` (reference §5.5).
fn resolve_config(
    conn: &rusqlite::Connection,
    config_id: Option<String>,
    config_name: Option<String>,
) -> Result<Option<String>, ApiError> {
    let id = config_id.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let name = config_name.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let mut all: Vec<(String, String)> =
        resources::custom_profiles(conn)?.into_iter().map(|p| (p.id, p.name)).collect();
    all.push(("default".into(), "default".into()));
    if let Some(id) = id {
        return match all.iter().any(|(i, _)| *i == id) {
            true => Ok(Some(id)),
            false => Err(soft(format!("config_id not found: {id}"))),
        };
    }
    let Some(name) = name else { return Ok(None) };
    let matches: Vec<&(String, String)> = all.iter().filter(|(_, n)| *n == name).collect();
    match matches.len() {
        0 => Err(soft(format!("config_name not found: {name}"))),
        1 => Ok(Some(matches[0].0.clone())),
        _ => Err(soft(format!("config_name is ambiguous, please use config_id: {name}"))),
    }
}

fn prepare(ctx: &Ctx<'_, '_>) -> Result<Prepared, ApiError> {
    let who = ctx.caller()?.clone();
    let body = ctx.req.json_object()?.clone();
    for field in ["session_id", "conversation_id", "config_id", "config_name", "platform_id"] {
        string_field(&body, field)?;
    }
    let streaming = flag(&body, "enable_streaming")?;
    // 1. username
    let username = match body.get("username") {
        None | Some(Value::Null) => return Err(soft("Missing key: username")),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(_) => return Err(ApiError::bad_request("username must be a string")),
    };
    if username.is_empty() {
        return Err(soft("username is empty"));
    }
    let conn = ctx.app.db.conn()?;
    // 2. administrator ids are reserved for keys with chat:admin
    let is_admin_id = check_admin_id(&conn, &who, &username)?;
    // 3. the session: `session_id` if the key is present, else `conversation_id`
    let raw =
        if body.contains_key("session_id") { body.get("session_id") } else { body.get("conversation_id") };
    let session_id = match raw {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    // Checked again in `store_request`, inside the transaction; here for AstrBot's order.
    if let Some(existing) = store::session(&conn, &session_id)?
        && existing.creator != username
    {
        return Err(soft("session_id belongs to another username"));
    }
    let umo = format!("webchat:FriendMessage:webchat!{username}!{session_id}");
    // 4–5. the profile for this conversation
    let profile =
        resolve_config(&conn, string_field(&body, "config_id")?, string_field(&body, "config_name")?)?;
    // 6. the message
    let message = match (body.get("message"), body.get("files")) {
        (Some(m), _) => m.clone(),
        (None, Some(f)) => f.clone(),
        (None, None) => return Err(soft("Missing key: message or files")),
    };
    let parts = lenient_parts(&conn, &message)?;
    if !has_content(&parts) {
        return Err(soft("Message content is empty (reply only is not allowed)"));
    }
    let text = parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n");
    let pick = |field: &str| {
        body.get(field).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
    };
    Ok(Prepared {
        username,
        session_id,
        umo,
        parts,
        text,
        streaming,
        profile,
        selected_provider: pick("selected_provider"),
        selected_model: pick("selected_model"),
        is_admin: is_admin_id,
    })
}

/// Whether `username` is one of the administrators' ids (`admins_id` of any profile); such
/// a username is reserved for the admin token and keys with `chat:admin`, whether to chat
/// as it or to read or delete its sessions (AstrBot's 200-error otherwise).
fn check_admin_id(conn: &rusqlite::Connection, who: &Identity, username: &str) -> Result<bool, ApiError> {
    if !config::all_admin_ids(conn)?.iter().any(|id| id == username) {
        return Ok(false);
    }
    let may_admin = match who {
        Identity::Admin(_) => true,
        Identity::Key(k) => k.scopes.iter().any(|s| s == "*" || s == "chat:admin"),
    };
    match may_admin {
        true => Ok(true),
        false => Err(soft("username is reserved for an AstrBot administrator")),
    }
}

/// Stores what a chat request writes before its run, in one `IMMEDIATE` transaction: the
/// session (created if new), the conversation's profile route, the user message, and the
/// session's activity. The session's owner is checked again inside the transaction, so a
/// session deleted or recreated by someone else meanwhile is handled, never assumed.
fn store_request(
    conn: &mut rusqlite::Connection,
    p: &Prepared,
    checkpoint: &str,
    now: i64,
) -> Result<i64, ApiError> {
    let first_text: String = p.text.chars().take(40).collect();
    write_tx(conn, |tx| {
        let session = store::ensure_session(tx, &p.session_id, &p.username, now)
            .map_err(|e| soft(format!("Failed to create session: {e}")))?;
        if session.creator != p.username {
            return Err(soft("session_id belongs to another username"));
        }
        if let Some(profile) = &p.profile {
            let routed = if profile == config::DEFAULT_PROFILE {
                resources::delete_route(tx, &p.umo).map(|_| ())
            } else if resources::profile(tx, profile)?.is_none() {
                // Deleted since `prepare` resolved it: no route to a profile that is gone.
                return Err(soft(format!("config_id not found: {profile}")));
            } else {
                resources::set_route(tx, &p.umo, profile)
            };
            routed.map_err(|e| soft(format!("Failed to update chat config route: {e}")))?;
        }
        let id = store::insert_message(
            tx,
            &p.session_id,
            "user",
            &p.username,
            &json!({"type": "user", "message": p.parts}),
            Some(checkpoint),
            now,
        )?;
        store::touch_session(tx, &p.session_id, Some(first_text.as_str()).filter(|t| !t.is_empty()), now)?;
        Ok(id)
    })
}

/// Whether the client asked for one JSON answer instead of a stream (decision 8).
fn wants_json(ctx: &Ctx<'_, '_>) -> bool {
    let accept = ctx.req.header("accept").unwrap_or("").to_ascii_lowercase();
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

/// Chat runs at once; each holds a thread (and a stream's writer another), so beyond this
/// the chat answers 503 with `Retry-After` instead of letting threads pile up.
pub const MAX_RUNS: usize = 512;
static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A place among the running chats; freed when the run ends.
struct RunSlot;

impl RunSlot {
    fn take() -> Result<RunSlot, ApiError> {
        use std::sync::atomic::Ordering;
        if RUNS.fetch_add(1, Ordering::SeqCst) >= MAX_RUNS {
            RUNS.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Busy {
                message: "Too many chats in progress, try again shortly".into(),
                retry_after: 1,
            });
        }
        Ok(RunSlot)
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        RUNS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `POST /api/v1/chat`
pub fn chat(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let slot = RunSlot::take()?;
    let p = prepare(ctx)?;
    let checkpoint = uuid::Uuid::new_v4().to_string();
    // The user message is stored before anything is streamed.
    let now = ctx.now;
    let saved_id = store_request(&mut *ctx.app.db.conn()?, &p, &checkpoint, now)?;
    let (tx, rx) = channel::<String>();
    let _ = tx.send(sse::frame(&json!({"type": "session_id", "data": null, "session_id": p.session_id})));
    let _ = tx.send(sse::frame(&json!({"type": "user_message_saved", "data": {"id": saved_id, "created_at": iso(now), "llm_checkpoint_id": checkpoint}})));
    if wants_json(ctx) {
        drop(rx);
        let outcome = run(ctx.app.clone(), p, checkpoint, None);
        drop(slot);
        return Ok(Response::ok(json!({
            "response": outcome.text,
            "session_id": outcome.session_id,
            "message_id": outcome.message_id,
            "sources": outcome.sources.iter().map(|s| json!({"title": s.title, "url": s.url})).collect::<Vec<_>>(),
        })));
    }
    let app = ctx.app.clone();
    std::thread::Builder::new()
        .name("chat-run".into())
        .spawn(move || {
            run(app, p, checkpoint, Some(tx));
            drop(slot);
        })
        .map_err(|e| ApiError::internal(format!("cannot start the chat run: {e}")))?;
    Ok(Response::events(rx))
}

/// What a finished run produced.
struct Outcome {
    session_id: String,
    message_id: String,
    text: String,
    sources: Vec<Passage>,
}

/// Sends events of one run; a gone client only makes sends fail, which is ignored.
struct Events {
    tx: Option<Sender<String>>,
    run_id: String,
}

impl Events {
    fn send(&self, event: Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(sse::frame(&event));
        }
    }

    fn plain(&self, text: &str, streaming: bool) {
        self.send(json!({"type": "plain", "data": text, "streaming": streaming, "chain_type": null, "message_id": self.run_id}));
    }
}

/// The run: a command or the provider's answer, then the stats, the complete text, the
/// stored reply and `end`. Never fails: upstream errors become the reply's text.
fn run(app: Arc<App>, p: Prepared, checkpoint: String, tx: Option<Sender<String>>) -> Outcome {
    let run_id = uuid::Uuid::new_v4().to_string();
    if let Some(tx) = &tx {
        app.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(p.session_id.clone())
            .or_default()
            .push(LiveStream { run_id: run_id.clone(), username: p.username.clone(), tx: tx.clone() });
    }
    let ev = Events { tx, run_id: run_id.clone() };
    ev.send(
        json!({"type": "run_started", "data": {"run_id": run_id}, "streaming": false, "message_id": run_id}),
    );
    let started = crate::timefmt::now_micros();
    let clock = Instant::now();
    let mut first_token: Option<f64> = None;
    let mut text = String::new();
    let mut sources: Vec<Passage> = Vec::new();
    let mut usage = crate::llm::Usage::default();

    let mut deliver = |delta: &str, text: &mut String| {
        if first_token.is_none() {
            first_token = Some(clock.elapsed().as_secs_f64());
        }
        text.push_str(delta);
        if p.streaming {
            ev.plain(delta, true);
        }
    };

    let mut command = false;
    match answer(&app, &p) {
        Answer::Text(reply) => {
            command = true;
            deliver(&reply, &mut text);
        }
        Answer::Builtin { passages, fallback } => {
            match passages.first() {
                Some(best) => {
                    // The passage itself, in small deltas: the built-in provider never invents text.
                    for piece in split_deltas(&best.body) {
                        deliver(&piece, &mut text);
                    }
                }
                None => deliver(&fallback, &mut text),
            }
            sources = passages;
        }
        Answer::Llm { provider, turns, model, retries, sources: found, custom_error } => {
            sources = found;
            let result =
                crate::llm::generate(&provider, model.as_deref(), &turns, p.streaming, retries, &mut |d| {
                    deliver(d, &mut text)
                });
            match result {
                Ok(u) => usage = u,
                Err(e) => {
                    // The persona's own error message replaces the technical one, as in AstrBot.
                    let message = custom_error.clone().unwrap_or_else(|| format!("LLM 响应错误: {e}"));
                    log::warn!("chat run {run_id}: {e}");
                    deliver(&message, &mut text);
                }
            }
        }
    }
    let ended = crate::timefmt::now_micros();
    let stats = json!({
        "token_usage": {"input_other": usage.input, "input_cached": usage.cached, "output": usage.output},
        "current_context_tokens": usage.input.saturating_add(usage.cached),
        "start_time": started as f64 / 1e6,
        "end_time": ended as f64 / 1e6,
        "time_to_first_token": first_token.unwrap_or(0.0),
    });
    ev.send(json!({"type": "agent_stats", "data": stats}));
    let refs: Vec<Value> = sources.iter().map(|s| json!({"title": s.title, "url": s.url})).collect();
    if p.streaming {
        ev.send(json!({"type": "complete", "data": text, "reasoning": "", "streaming": true, "message_id": run_id, "sources": refs}));
    } else {
        ev.send(json!({"type": "plain", "data": text, "streaming": false, "chain_type": null, "message_id": run_id, "sources": refs}));
    }
    let mut content = json!({"type": "bot", "message": [{"type": "plain", "text": text}], "agent_stats": stats, "refs": refs});
    if command {
        // A command's exchange stays in the history but never reaches the model.
        content["command"] = json!(true);
    }
    let saved = app.db.conn().map_err(|e| e.to_string()).and_then(|mut conn| {
        write_tx(&mut conn, |tx| {
            // A session made anew under the same id by (or for) another username while the
            // run went on is not this run's: the reply is dropped as for a deleted one.
            if store::session(tx, &p.session_id)?.is_some_and(|s| s.creator != p.username) {
                return Ok(None);
            }
            let id = store::insert_session_message(
                tx,
                &p.session_id,
                "bot",
                "bot",
                &content,
                Some(&checkpoint),
                ended,
            )?;
            store::touch_session(tx, &p.session_id, None, ended)?;
            Ok::<_, rusqlite::Error>(id)
        })
        .map_err(|e| e.to_string())
    });
    match saved {
        Ok(Some(id)) => ev.send(json!({"type": "message_saved", "data": {"id": id, "created_at": iso(ended), "llm_checkpoint_id": checkpoint}})),
        // The session was deleted during the run, or is another username's now: its reply has
        // nowhere to go.
        Ok(None) => {
            log::info!("chat run {run_id}: session {} was deleted or is another's, reply not stored", p.session_id)
        }
        Err(e) => {
            log::error!("chat run {run_id}: cannot store the reply: {e}");
            ev.send(json!({"type": "error", "data": "WebChat run failed"}));
        }
    }
    ev.send(json!({"type": "end", "data": "", "streaming": false, "message_id": run_id}));
    {
        let mut streams = app.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = streams.get_mut(&p.session_id) {
            list.retain(|stream| stream.run_id != run_id);
            if list.is_empty() {
                streams.remove(&p.session_id);
            }
        }
    }
    Outcome { session_id: p.session_id, message_id: run_id, text, sources }
}

/// Splits a text into deltas of a few words, keeping every character.
fn split_deltas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut words = 0;
    for c in text.chars() {
        current.push(c);
        if c.is_whitespace() {
            words += 1;
            if words >= 6 {
                out.push(std::mem::take(&mut current));
                words = 0;
            }
        } else if current.chars().count() >= 48 {
            out.push(std::mem::take(&mut current));
            words = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

enum Answer {
    /// A command's reply, made by the server.
    Text(String),
    /// The built-in provider: the best passages (the first is the answer).
    Builtin { passages: Vec<Passage>, fallback: String },
    /// A configured LLM with its request.
    Llm {
        provider: Value,
        turns: Vec<crate::llm::Turn>,
        model: Option<String>,
        retries: u32,
        sources: Vec<Passage>,
        /// The persona's message for a failed request.
        custom_error: Option<String>,
    },
}

const NO_MATCH: &str = "I could not find anything about that in the knowledge base. \
To get answers beyond the bundled documents, connect an LLM provider: see /docs/providers";

/// Decides the answer: a command, the built-in provider, or an LLM request with context.
fn answer(app: &App, p: &Prepared) -> Answer {
    let mut conn = match app.db.conn() {
        Ok(c) => c,
        Err(e) => return Answer::Text(format!("LLM 响应错误: {e}")),
    };
    let session = store::session(&conn, &p.session_id).ok().flatten();
    let choice = SessionChoice {
        provider_id: p
            .selected_provider
            .clone()
            .or_else(|| session.as_ref().and_then(|s| s.selected_provider.clone())),
        persona_id: session.as_ref().and_then(|s| s.persona_id.clone()),
    };
    let effective = match config::effective(&conn, &p.umo, &choice) {
        Ok(e) => e,
        Err(e) => return Answer::Text(format!("LLM 响应错误: {e}")),
    };
    let prefixes: Vec<String> = effective.config["wake_prefix"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_else(|| vec!["/".into()]);
    if let Some(reply) = crate::api::commands::run(
        &mut conn,
        p.text.trim(),
        &prefixes,
        &p.session_id,
        &p.umo,
        p.is_admin,
        &effective,
    ) {
        return Answer::Text(reply);
    }
    match effective.provider {
        ProviderChoice::Builtin => {
            let passages = crate::kb::search(&conn, &p.text, &[], 3).unwrap_or_default();
            Answer::Builtin { passages, fallback: NO_MATCH.into() }
        }
        ProviderChoice::Configured { config: provider, .. } => {
            let kb_names: Vec<String> = effective.config["kb_names"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let sources = if kb_names.is_empty() {
                Vec::new()
            } else {
                crate::kb::search(&conn, &p.text, &kb_names, 3).unwrap_or_default()
            };
            let settings = &effective.config["provider_settings"];
            let max_turns = settings["max_context_length"].as_i64().unwrap_or(-1);
            let retries = settings["request_max_retries"].as_u64().unwrap_or(3).min(10) as u32;
            let turns = crate::llm::context(
                &conn,
                &app.settings.data_dir,
                &effective.persona,
                &p.session_id,
                &p.parts,
                max_turns,
                &sources,
            );
            let model =
                p.selected_model.clone().or_else(|| session.as_ref().and_then(|s| s.selected_model.clone()));
            let custom_error = effective.persona.custom_error_message.clone();
            Answer::Llm { provider, turns, model, retries, sources, custom_error }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sessions

fn session_json(s: &store::Session) -> Value {
    json!({
        "session_id": s.session_id,
        "platform_id": s.platform_id,
        "creator": s.creator,
        "display_name": s.display_name,
        "is_group": s.is_group,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    })
}

/// The `username` query parameter of the session routes, trimmed; an administrator's id
/// needs the admin token or `chat:admin`, as it does to chat.
fn username_query(ctx: &Ctx<'_, '_>) -> Result<String, ApiError> {
    let username = match ctx.req.query_param("username") {
        None => return Err(soft("Missing key: username")),
        Some(u) if u.trim().is_empty() => return Err(soft("username is empty")),
        Some(u) => u.trim().to_owned(),
    };
    check_admin_id(&*ctx.app.db.conn()?, ctx.caller()?, &username)?;
    Ok(username)
}

/// Python's `int()` on a query value: whitespace, a sign and digit underscores allowed.
/// Python's integers have no bounds; a value beyond ours is read as the nearest one we have
/// (the caller clamps it anyway), never as a parse error or a wrapped number.
fn python_int(v: &str) -> Option<i64> {
    let t = v.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return None;
    }
    match t.replace('_', "").parse::<i64>() {
        Ok(n) => Some(n),
        Err(e) => match e.kind() {
            std::num::IntErrorKind::PosOverflow => Some(i64::MAX),
            std::num::IntErrorKind::NegOverflow => Some(i64::MIN),
            _ => None,
        },
    }
}

/// The clamped page and page size of the sessions list, and the row offset: `None` when
/// the page lies beyond any offset we can express (it is empty: there are not that many).
fn page_window(page: i64, size: i64) -> (i64, i64, Option<i64>) {
    let page = page.max(1);
    let size = size.clamp(1, 100);
    (page, size, (page - 1).checked_mul(size))
}

/// `GET /api/v1/chat/sessions?username=&page=&page_size=&platform_id=`
pub fn sessions(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let username = username_query(ctx)?;
    let page = ctx.req.query_param("page").map(python_int).unwrap_or(Some(1));
    let size = ctx.req.query_param("page_size").map(python_int).unwrap_or(Some(20));
    let (Some(page), Some(size)) = (page, size) else {
        return Err(soft("page and page_size must be integers"));
    };
    let (page, size, offset) = page_window(page, size);
    let platform = ctx.req.query_param("platform_id").filter(|p| !p.is_empty());
    let (rows, total) = store::sessions_of(&*ctx.app.db.conn()?, &username, platform, size, offset)?;
    Ok(Response::ok(
        json!({"sessions": rows.iter().map(session_json).collect::<Vec<_>>(), "page": page, "page_size": size, "total": total}),
    ))
}

fn owned_session(ctx: &Ctx<'_, '_>) -> Result<store::Session, ApiError> {
    let username = username_query(ctx)?;
    let id = ctx.param(0).trim().to_owned();
    let session = store::session(&*ctx.app.db.conn()?, &id)?.ok_or_else(|| soft("Session not found"))?;
    if session.creator != username {
        return Err(soft("session_id belongs to another username"));
    }
    Ok(session)
}

/// `GET /api/v1/chat/sessions/{session_id}?username=`: the session and its messages.
pub fn session(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let s = owned_session(ctx)?;
    let messages = store::messages(&*ctx.app.db.conn()?, &s.session_id, None)?;
    let items: Vec<Value> = messages
        .iter()
        .map(|m| json!({"id": m.id, "sender": m.sender, "sender_name": m.sender_name, "content": m.content, "llm_checkpoint_id": m.llm_checkpoint_id, "created_at": iso(m.created_at)}))
        .collect();
    Ok(Response::ok(json!({"session": session_json(&s), "messages": items})))
}

/// `DELETE /api/v1/chat/sessions/{session_id}?username=`: the session and its history.
pub fn delete_session(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let s = owned_session(ctx)?;
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| store::delete_session(tx, &s.session_id).map_err(ApiError::from))?;
    Ok(Response::ok(json!({"session_id": s.session_id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_ints_and_deltas() {
        assert_eq!(python_int(" 2 "), Some(2));
        assert_eq!(python_int("1_0"), Some(10));
        assert_eq!(python_int("-3"), Some(-3));
        assert_eq!(python_int("1.5"), None);
        assert_eq!(python_int(""), None);
        // Python's int() has no bounds: beyond ours is the nearest bound, never a wrap.
        assert_eq!(python_int("9223372036854775807"), Some(i64::MAX));
        assert_eq!(python_int("18446744073709551616"), Some(i64::MAX));
        assert_eq!(python_int("-99999999999999999999"), Some(i64::MIN));
        assert_eq!(python_int("1_0000000000000000000000"), Some(i64::MAX));
        let text = "one two three four five six seven eight nine ten eleven twelve thirteen";
        let d = split_deltas(text);
        assert!(d.len() >= 2);
        assert_eq!(d.concat(), text);
    }

    #[test]
    fn session_pages_never_overflow() {
        assert_eq!(page_window(1, 20), (1, 20, Some(0)));
        assert_eq!(page_window(3, 20), (3, 20, Some(40)));
        assert_eq!(page_window(0, 0), (1, 1, Some(0)));
        assert_eq!(page_window(i64::MIN, i64::MIN), (1, 1, Some(0)));
        assert_eq!(page_window(-5, i64::MAX), (1, 100, Some(0)));
        assert_eq!(page_window(i64::MAX, 1), (i64::MAX, 1, Some(i64::MAX - 1)));
        assert_eq!(page_window(i64::MAX, 20), (i64::MAX, 20, None));
    }

    #[test]
    fn content_rules() {
        assert!(!has_content(&[json!({"type": "reply", "message_id": 1, "selected_text": ""})]));
        assert!(has_content(&[json!({"type": "plain", "text": "hi"})]));
        assert!(has_content(&[json!({"type": "image", "attachment_id": "a", "filename": "x.png"})]));
    }
}
