//! `POST /api/v1/chat` and the chat sessions (scope `chat`), as AstrBot's Open API has them.
//!
//! The handler checks the request in AstrBot's order (its errors are HTTP 200 with
//! `status: error`) into a [`UserMessage`] and hands it to the chat layer (`crate::chat`):
//! the message is stored, and then the run either answers with one JSON envelope
//! (`Accept: application/json`, beyond AstrBot, for clients that cannot read SSE) or
//! streams its events on a thread of its own, detached from the connection, that stores
//! the reply when done even if the client is gone. `prepare` only reads; what a request writes before its run is one `IMMEDIATE`
//! transaction in [`run::save_user_message`], so a refused or failed request leaves
//! nothing behind.
//!
//! AstrBot 4.29's additions are read here too: `enable_reasoning` and `locale` become the
//! run's [`ChatOptions`], a session that is not the caller's webchat session is `Permission
//! denied`, and a session's history is read a page at a time, newest first.
//!
//! A body with `bot_id` is an Astroworld request (decision 14): the bot names a config
//! profile, `username` defaults to the key's own identity (`key:<key_id>`, which no other
//! key may use), new sessions are `api-<uuid>`, the answer is the bare JSON
//! `{"response", "sources", "session_id"}` unless the client asks for
//! `text/event-stream`, and errors keep real status codes. A key bound to a bot (decision
//! 15) chats only as that bot, in either shape.

use serde_json::{Map, Value, json};

use super::{opt_bool, opt_string};
use crate::app::Ctx;
use crate::auth::Identity;
use crate::chat::events;
use crate::chat::locale::Locale;
use crate::chat::run::{self, ChatOptions, RunSlot, UserMessage};
use crate::config::{self, BotLookup};
use crate::db::chat as store;
use crate::db::resources;
use crate::db::write_tx;
use crate::error::ApiError;
use crate::http::Response;
use crate::timefmt::iso;

/// What a validated chat request asks for: the message for the run, and the profile
/// the request names for this conversation (`config_id` / `config_name`).
struct Prepared {
    message: UserMessage,
    profile: Option<String>,
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

/// AstrBot 4.29's display options: `enable_reasoning` (a flag, default `reasoning_default`)
/// and `locale` (a string naming the language of built-in texts).
fn chat_options(body: &Map<String, Value>, reasoning_default: bool) -> Result<ChatOptions, ApiError> {
    let reasoning = match body.get("flags") {
        Some(Value::Object(flags)) if opt_bool(flags, "enable_reasoning")?.is_some() => {
            opt_bool(flags, "enable_reasoning")?.unwrap_or(reasoning_default)
        }
        _ => opt_bool(body, "enable_reasoning")?.unwrap_or(reasoning_default),
    };
    let locale = string_field(body, "locale")?.map(|l| Locale::parse(&l)).unwrap_or_default();
    Ok(ChatOptions { reasoning, locale })
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

/// AstrBot's lenient message parts, as its chat reads them: a string or a list of parts,
/// where invalid items are skipped rather than refused, so AstrBot's clients work unchanged.
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

/// The plain text of a message's parts, one part a line (for commands, search and the model).
fn plain_text(parts: &[Value]) -> String {
    parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n")
}

fn has_content(parts: &[Value]) -> bool {
    parts.iter().any(|p| {
        matches!(p["type"].as_str(), Some("plain" | "image" | "record" | "file" | "video"))
            && (p["text"].as_str().is_some_and(|t| !t.is_empty()) || p.get("attachment_id").is_some())
    })
}

/// Which profile a request names with `config_id` / `config_name`, in AstrBot's order: a
/// non-empty `config_id` wins, else `config_name` must match exactly one profile's name.
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

/// The checks of `POST /api/v1/chat` (AstrBot's shape) for another carrier of the same
/// fields (the WebSocket chat's `send`): the message and the profile it names.
pub(crate) fn prepare_message(ctx: &Ctx<'_, '_>) -> Result<(UserMessage, Option<String>), ApiError> {
    prepare(ctx).map(|p| (p.message, p.profile))
}

fn prepare(ctx: &Ctx<'_, '_>) -> Result<Prepared, ApiError> {
    let who = ctx.caller()?.clone();
    let body = ctx.req.json_object()?.clone();
    for field in ["session_id", "conversation_id", "config_id", "config_name", "platform_id"] {
        string_field(&body, field)?;
    }
    let streaming = flag(&body, "enable_streaming")?;
    let options = chat_options(&body, true)?;
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
    // 2. administrator ids are reserved for keys with chat:admin, key identities for their key
    let is_admin_id = check_admin_id(&conn, &who, &username)?;
    check_identity_username(&who, &username).map_err(soft)?;
    // 3. the session: `session_id` if the key is present, else `conversation_id`
    let raw =
        if body.contains_key("session_id") { body.get("session_id") } else { body.get("conversation_id") };
    let session_id = match raw {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    // Checked again in `run::save_user_message`, inside the transaction; here for AstrBot's order.
    if let Some(existing) = store::session(&conn, &session_id)? {
        check_session_owner(&existing, &username)?;
    }
    if names_im_conversation(&session_id) {
        return Err(soft("Permission denied"));
    }
    let umo = format!("webchat:FriendMessage:webchat!{username}!{session_id}");
    // 4–5. the profile for this conversation; a bound key's bot unless it names its own
    let named =
        resolve_config(&conn, string_field(&body, "config_id")?, string_field(&body, "config_name")?)?;
    let profile = match bound_bot(&who) {
        Some(bot) if named.as_deref().is_some_and(|p| p != bot) => return Err(bound_to(bot)),
        Some(bot) => Some(bot.to_owned()),
        None => named,
    };
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
    let text = plain_text(&parts);
    let pick = |field: &str| {
        body.get(field).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
    };
    let message = UserMessage {
        sender_name: username.clone(),
        username,
        session_id,
        umo,
        parts,
        text,
        streaming,
        selected_provider: pick("selected_provider"),
        selected_model: pick("selected_model"),
        is_admin: is_admin_id,
        platform_id: "webchat".into(),
        is_group: false,
        options,
    };
    Ok(Prepared { message, profile })
}

/// Whether a chat message from `username` may go into an existing session: it must be
/// theirs (`session_id belongs to another username`) and a webchat one (`Permission
/// denied`, AstrBot 4.29's answer for someone else's session: an IM conversation's session
/// is named after its UMO, which a client could send as both username and session).
fn check_session_owner(session: &store::Session, username: &str) -> Result<(), ApiError> {
    if session.creator != username {
        return Err(soft("session_id belongs to another username"));
    }
    if session.platform_id != "webchat" {
        return Err(soft("Permission denied"));
    }
    Ok(())
}

/// Whether a session id is an IM bot's conversation (`<bot_id>:FriendMessage:<chat>` or
/// `GroupMessage`, the UMO its session is named after): the chat never creates one, so
/// that no client can take a conversation's session before its first message arrives.
fn names_im_conversation(session_id: &str) -> bool {
    let mut parts = session_id.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(bot), Some("FriendMessage" | "GroupMessage"), Some(_)) => bot != "webchat",
        _ => false,
    }
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

/// The username that owns an API caller's sessions when it names none (Astroworld):
/// `key:<key_id>` for a key, `admin:<name>` for the admin.
fn identity_username(who: &Identity) -> String {
    match who {
        Identity::Key(k) => format!("key:{}", k.key_id),
        Identity::Admin(name) => format!("admin:{name}"),
    }
}

/// Identity usernames belong to their identity: a key may use only its own `key:<key_id>`
/// and no `admin:` name, so two keys never see each other's sessions. The admin may use
/// any. The error is the message; each shape gives it its own status.
fn check_identity_username(who: &Identity, username: &str) -> Result<(), String> {
    let Identity::Key(key) = who else { return Ok(()) };
    let foreign = match username.strip_prefix("key:") {
        Some(id) => id != key.key_id,
        None => username.starts_with("admin:"),
    };
    match foreign {
        true => Err("username is reserved for another API key".into()),
        false => Ok(()),
    }
}

/// The bot a key is bound to, if any.
fn bound_bot(who: &Identity) -> Option<&str> {
    match who {
        Identity::Key(k) => k.bot_id.as_deref(),
        Identity::Admin(_) => None,
    }
}

fn bound_to(bot: &str) -> ApiError {
    ApiError::Forbidden(format!("API key is bound to bot {bot}"))
}

/// The longest `bot_id` looked up (a profile's id or name).
const MAX_BOT_ID: usize = 255;

/// An Astroworld request's fields, checked in the order of its page (bot, message,
/// session), with real status codes: 400 for the body, 403 for another's bot, username
/// or session, 404 for an unknown bot.
fn prepare_astroworld(ctx: &Ctx<'_, '_>, body: &Map<String, Value>) -> Result<Prepared, ApiError> {
    let who = ctx.caller()?.clone();
    let bad = ApiError::bad_request;
    let bot_id = match body.get("bot_id") {
        // A profile's id or name is short; a longer one names nothing and is not echoed back.
        Some(Value::String(s)) if s.chars().count() > MAX_BOT_ID => {
            return Err(bad("bot_id must be at most 255 characters"));
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err(bad("bot_id must be a non-empty string")),
    };
    for field in ["session_id", "username"] {
        string_field(body, field)?;
    }
    let conn = ctx.app.db.conn()?;
    let bound = bound_bot(&who);
    let profile = match (config::find_bot(&conn, &bot_id)?, bound) {
        (BotLookup::Found(id), Some(bot)) if id != bot => return Err(bound_to(bot)),
        (BotLookup::Found(id), _) => id,
        // Another bot's key learns nothing about which bots exist.
        (_, Some(bot)) if bot != bot_id => return Err(bound_to(bot)),
        (BotLookup::Ambiguous, _) => {
            return Err(ApiError::bad_request(format!("bot_id is ambiguous, use the profile id: {bot_id}")));
        }
        (BotLookup::Missing, _) => return Err(ApiError::NotFound(format!("Bot not found: {bot_id}"))),
    };
    let message = match body.get("message") {
        None | Some(Value::Null) => return Err(bad("Missing key: message")),
        Some(m @ (Value::String(_) | Value::Array(_))) => m.clone(),
        Some(_) => return Err(bad("message must be a string or a list of message parts")),
    };
    let username = match body.get("username").and_then(Value::as_str).map(str::trim) {
        Some(u) if !u.is_empty() => u.to_owned(),
        _ => identity_username(&who),
    };
    let is_admin = check_admin_id(&conn, &who, &username).map_err(|e| match e {
        ApiError::Soft(m) => ApiError::Forbidden(m),
        other => other,
    })?;
    check_identity_username(&who, &username).map_err(ApiError::Forbidden)?;
    let session_id = match body.get("session_id").and_then(Value::as_str).map(str::trim) {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => format!("api-{}", uuid::Uuid::new_v4()),
    };
    if let Some(existing) = store::session(&conn, &session_id)? {
        check_session_owner(&existing, &username).map_err(|e| ApiError::Forbidden(e.message()))?;
    }
    if names_im_conversation(&session_id) {
        return Err(ApiError::Forbidden("Permission denied".into()));
    }
    let parts = lenient_parts(&conn, &message)?;
    if !has_content(&parts) {
        return Err(bad("message is empty"));
    }
    let text = plain_text(&parts);
    let umo = format!("webchat:FriendMessage:webchat!{username}!{session_id}");
    let message = UserMessage {
        sender_name: username.clone(),
        username,
        session_id,
        umo,
        parts,
        text,
        streaming: flag(body, "enable_streaming")?,
        selected_provider: None,
        selected_model: None,
        is_admin,
        platform_id: "webchat".into(),
        is_group: false,
        // A website's widget shows `response` as it is: thoughts only when asked for.
        options: chat_options(body, false)?,
    };
    Ok(Prepared { message, profile: Some(profile) })
}

/// Whether the client asked for one JSON answer instead of a stream: `application/json`
/// without `text/event-stream`, so a client that accepts both still gets AstrBot's stream.
fn wants_json(ctx: &Ctx<'_, '_>) -> bool {
    let accept = ctx.req.header("accept").unwrap_or("").to_ascii_lowercase();
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

/// Whether the client asked for an SSE stream (an Astroworld request streams only then).
fn wants_stream(ctx: &Ctx<'_, '_>) -> bool {
    ctx.req.header("accept").unwrap_or("").to_ascii_lowercase().contains("text/event-stream")
}

/// An Astroworld request's refusals keep real status codes: the chat layer's 200-errors
/// become 403 (another's session) or 400.
fn real_status(e: ApiError) -> ApiError {
    match e {
        ApiError::Soft(m) if m.contains("belongs to another") || m == "Permission denied" => {
            ApiError::Forbidden(m)
        }
        ApiError::Soft(m) => ApiError::BadRequest(m),
        other => other,
    }
}

/// `POST /api/v1/chat`
pub fn chat(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let astroworld = ctx.req.json.as_ref().and_then(|b| b.get("bot_id")).is_some_and(|v| !v.is_null());
    if astroworld {
        return chat_astroworld(ctx).map_err(real_status);
    }
    // A full house is refused before the request is looked at.
    let slot = RunSlot::take()?;
    let Prepared { message, profile } = prepare(ctx)?;
    let json = wants_json(ctx);
    start(ctx, slot, message, profile, json)
}

/// `POST /api/v1/chat` with `bot_id`: the bare JSON answer, or SSE when asked for.
fn chat_astroworld(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let slot = RunSlot::take()?;
    let body = ctx.req.json_object()?.clone();
    let Prepared { message, profile } = prepare_astroworld(ctx, &body)?;
    let stream = wants_stream(ctx);
    let response = start(ctx, slot, message, profile, !stream)?;
    if stream {
        return Ok(response);
    }
    // The envelope's data, bare: Astroworld's clients read `response` at the top.
    let Some(Value::Object(mut data)) = response_data(&response) else {
        return Err(ApiError::internal("the chat answer lost its data"));
    };
    let mut bare = Map::new();
    for field in ["response", "sources", "session_id"] {
        bare.insert(field.into(), data.remove(field).unwrap_or(Value::Null));
    }
    Ok(Response::json(200, &Value::Object(bare)))
}

fn response_data(response: &Response) -> Option<Value> {
    match &response.body {
        crate::http::Body::Bytes(bytes) => {
            serde_json::from_slice::<Value>(bytes).ok().and_then(|mut v| v.get_mut("data").map(Value::take))
        }
        _ => None,
    }
}

/// Stores the message and runs it: one JSON envelope when `json`, else the SSE stream,
/// whose run finishes the request's webhook event when it ends.
fn start(
    ctx: &mut Ctx<'_, '_>,
    slot: RunSlot,
    message: UserMessage,
    profile: Option<String>,
    json: bool,
) -> Result<Response, ApiError> {
    let checkpoint = uuid::Uuid::new_v4().to_string();
    // The user message is stored before anything is streamed.
    let now = ctx.now;
    let saved_id =
        run::save_user_message(&mut *ctx.app.db.conn()?, &message, profile.as_deref(), &checkpoint, now)?;
    if json {
        let outcome = run::run(ctx.app, message, checkpoint, None);
        drop(slot);
        return Ok(Response::ok(json!({
            "response": outcome.text,
            "session_id": outcome.session_id,
            "message_id": outcome.message_id,
            "sources": events::refs(&outcome.sources),
        })));
    }
    let owner = ctx.caller()?.username();
    let rx =
        run::spawn(ctx.app.clone(), slot, message, checkpoint, saved_id, now, ctx.mirror.take(), &owner)?;
    Ok(Response::events(rx))
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
    check_identity_username(ctx.caller()?, &username).map_err(soft)?;
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

/// `GET /api/v1/chat/sessions?username=&page=&page_size=&platform_id=`. The admin token
/// may leave `username` out: every username's sessions (the operator's listing); an API
/// key gets AstrBot's `Missing key: username`.
pub fn sessions(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let every = ctx.req.query_param("username").is_none() && matches!(ctx.who, Some(Identity::Admin(_)));
    let username = if every { None } else { Some(username_query(ctx)?) };
    let page = ctx.req.query_param("page").map(python_int).unwrap_or(Some(1));
    let size = ctx.req.query_param("page_size").map(python_int).unwrap_or(Some(20));
    let (Some(page), Some(size)) = (page, size) else {
        return Err(soft("page and page_size must be integers"));
    };
    let (page, size, offset) = page_window(page, size);
    let platform = ctx.req.query_param("platform_id").filter(|p| !p.is_empty());
    let (rows, total) =
        store::sessions_of(&*ctx.app.db.conn()?, username.as_deref(), platform, size, offset)?;
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

/// A history page's query value: absent is `default`; otherwise an integer within
/// `min..=max` (AstrBot answers 422 out of range; here a 400 naming the field).
fn history_param(ctx: &Ctx<'_, '_>, name: &str, default: i64, max: i64) -> Result<i64, ApiError> {
    let Some(raw) = ctx.req.query_param(name) else { return Ok(default) };
    let bad = || match max {
        i64::MAX => ApiError::bad_request(format!("{name} must be an integer of at least 1")),
        _ => ApiError::bad_request(format!("{name} must be an integer from 1 to {max}")),
    };
    match python_int(raw) {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// The largest history page (AstrBot 4.29's bound, and its default).
const MAX_HISTORY_PAGE: i64 = 1000;

/// `GET /api/v1/chat/sessions/{session_id}?username=&page=&page_size=`: the session and one
/// page of its messages, page 1 the newest (chronological within the page).
pub fn session(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let page = history_param(ctx, "page", 1, i64::MAX)?;
    let size = history_param(ctx, "page_size", MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)?;
    let s = owned_session(ctx)?;
    let offset = (page - 1).checked_mul(size);
    let (messages, total) = store::messages_page(&*ctx.app.db.conn()?, &s.session_id, size, offset)?;
    let seen = offset.and_then(|o| o.checked_add(messages.len() as i64)).unwrap_or(i64::MAX);
    let items: Vec<Value> = messages
        .iter()
        .map(|m| json!({"id": m.id, "sender": m.sender, "sender_name": m.sender_name, "content": m.content, "llm_checkpoint_id": m.llm_checkpoint_id, "created_at": iso(m.created_at)}))
        .collect();
    Ok(Response::ok(json!({
        "session": session_json(&s),
        "messages": items,
        "total": total,
        "page": page,
        "page_size": size,
        "has_more": seen < total,
    })))
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
    fn python_ints() {
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
    fn a_message_goes_only_into_its_owners_webchat_session() {
        let session = |creator: &str, platform: &str| store::Session {
            session_id: "s".into(),
            platform_id: platform.into(),
            creator: creator.into(),
            display_name: None,
            is_group: 0,
            selected_provider: None,
            selected_model: None,
            persona_id: None,
            created_at: 0,
            updated_at: 0,
        };
        assert!(check_session_owner(&session("alice", "webchat"), "alice").is_ok());
        let err = |s: store::Session| check_session_owner(&s, "alice").unwrap_err().message();
        assert_eq!(err(session("bob", "webchat")), "session_id belongs to another username");
        // An IM conversation is named after its UMO, which a client could send as both.
        assert_eq!(err(session("alice", "tg-bot")), "Permission denied");
        assert!(names_im_conversation("tg-bot:FriendMessage:42"));
        assert!(names_im_conversation("qq:GroupMessage:7:x"));
        assert!(!names_im_conversation("webchat:FriendMessage:webchat!a!s"));
        assert!(!names_im_conversation("s1"));
        assert!(!names_im_conversation("a:b:c"));
    }

    #[test]
    fn content_rules() {
        assert!(!has_content(&[json!({"type": "reply", "message_id": 1, "selected_text": ""})]));
        assert!(has_content(&[json!({"type": "plain", "text": "hi"})]));
        assert!(has_content(&[json!({"type": "image", "attachment_id": "a", "filename": "x.png"})]));
    }
}
