//! The IM routes (scope `im`), as AstrBot's Open API has them: the bot listing, and
//! proactive messages to a unified message origin (UMO). `webchat` is always running: a
//! message is stored in the conversation's history and goes into every live chat stream
//! of its conversation (`chat::streams` sends it there, as chat events). Other platforms
//! answer `Bot not found or not running` until they exist; their adapters will belong to
//! the chat layer, and this module will stay the checks in front of them.
//!
//! Beyond AstrBot, a session part `webchat!<username>!<session_id>` names its owner too:
//! the message goes only into a session that username owns, created for them (in the
//! message's own transaction) when it does not exist, so that a message meant for one
//! user can never wait in an id another user claims later. Any other session part keeps
//! AstrBot's meaning: the conversation of that id, whoever owns it.
//!
//! A stored message's media are new attachments, as AstrBot registers them, but they
//! share the original's bytes through a hard link instead of a copy: a message naming one
//! large file many times costs inodes, not disk, and deleting either attachment leaves the
//! other whole (the bytes go with the last link). A message has at most
//! `MAX_MESSAGE_PARTS` parts.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::app::Ctx;
use crate::db;
use crate::db::chat as store;
use crate::db::resources::{self, Attachment};
use crate::error::ApiError;
use crate::http::Response;
use crate::platforms::{self, Media, OutPart, SendError};

/// `GET /api/v1/im/bots`
pub fn list_bots(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let conn = ctx.app.db.conn()?;
    let mut ids = db::bot_ids(&conn)?;
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(Response::ok(json!({ "bot_ids": ids })))
}

/// AstrBot's `MessageSession.from_str`: `platform:MessageType:session`, split on the first
/// two colons, with Python's error texts.
pub fn parse_umo(umo: &str) -> Result<(String, String, String), String> {
    let parts: Vec<&str> = umo.splitn(3, ':').collect();
    if parts.len() < 3 {
        return Err(format!("not enough values to unpack (expected 3, got {})", parts.len()));
    }
    if !matches!(parts[1], "FriendMessage" | "GroupMessage" | "OtherMessage") {
        return Err(format!("'{}' is not a valid MessageType", parts[1]));
    }
    Ok((parts[0].to_owned(), parts[1].to_owned(), parts[2].to_owned()))
}

/// Where a webchat UMO's session part delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `webchat!<username>!<session_id>`: only a session `username` owns (made for them if
    /// new). Both parts are trimmed, as the chat trims them, so the UMO a chat shows names
    /// the same session and owner.
    Owned { username: String, session_id: String },
    /// Any other session part: the conversation of that id as it is written, whoever owns
    /// it (AstrBot's meaning); no session is made.
    Conversation(String),
}

/// The target of a session part, as AstrBot's `_extract_conversation_id` splits it: a part
/// that starts with `webchat!` and has a second `!` is `webchat!<user>!<cid>`, `<cid>` being
/// everything after that second `!`. An owned form with an empty username or session id
/// names no one and is refused (the text follows `Invalid umo: `).
pub fn target(session: &str) -> Result<Target, String> {
    let Some((username, cid)) = session.strip_prefix("webchat!").and_then(|rest| rest.split_once('!')) else {
        return Ok(Target::Conversation(session.to_owned()));
    };
    let (username, session_id) = (username.trim(), cid.trim());
    if username.is_empty() {
        return Err("username is empty".to_owned());
    }
    if session_id.is_empty() {
        return Err("session_id is empty".to_owned());
    }
    Ok(Target::Owned { username: username.to_owned(), session_id: session_id.to_owned() })
}

impl Target {
    /// The conversation (session) id the message goes to.
    pub fn conversation(&self) -> &str {
        match self {
            Target::Owned { session_id, .. } => session_id,
            Target::Conversation(cid) => cid,
        }
    }

    /// The username the message is for, if the UMO names one.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Target::Owned { username, .. } => Some(username),
            Target::Conversation(_) => None,
        }
    }
}

/// Parts of one proactive message at most (AstrBot states no limit). Each media part
/// becomes an attachment row and a link, so the number is bounded, not the bytes alone.
pub const MAX_MESSAGE_PARTS: usize = 20;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// Strict message parts, as AstrBot checks them for IM messages: the first problem in
/// array order is the error, a 400 with AstrBot's message.
fn strict_parts(
    conn: &rusqlite::Connection,
    data_dir: &Path,
    message: &Value,
) -> Result<Vec<(Value, Option<Attachment>)>, ApiError> {
    let mut parts = Vec::new();
    match message {
        Value::String(s) => {
            if !s.trim().is_empty() {
                parts.push((json!({"type": "plain", "text": s.trim()}), None));
            }
        }
        Value::Array(items) => {
            if items.len() > MAX_MESSAGE_PARTS {
                return Err(bad(format!("message has too many parts (at most {MAX_MESSAGE_PARTS})")));
            }
            for item in items {
                let obj = item.as_object().ok_or_else(|| bad("message part must be an object"))?;
                let kind = super::chat::part_type(obj);
                match kind.as_str() {
                    "plain" => {
                        let text = super::chat::part_text(obj);
                        if !text.is_empty() {
                            parts.push((json!({"type": "plain", "text": text}), None));
                        }
                    }
                    "reply" => {
                        let Some(id) = obj.get("message_id").filter(|v| !v.is_null()) else {
                            return Err(bad("reply part missing message_id"));
                        };
                        // Kept for IM platforms (a quote); webchat stores no replies.
                        let id = id.as_str().map(str::to_owned).unwrap_or_else(|| id.to_string());
                        parts.push((json!({"type": "reply", "message_id": id}), None));
                    }
                    "image" | "record" | "file" | "video" => {
                        let id = obj.get("attachment_id").and_then(Value::as_str).filter(|s| !s.is_empty());
                        let id = id.ok_or_else(|| bad(format!("{kind} part missing attachment_id")))?;
                        let att = resources::attachment(conn, id)?
                            .ok_or_else(|| bad(format!("attachment not found: {id}")))?;
                        let path = data_dir.join("attachments").join(&att.attachment_id);
                        if !path.is_file() {
                            let shown = std::path::absolute(&path).unwrap_or(path);
                            return Err(bad(format!("file not found: {}", shown.display())));
                        }
                        parts.push((json!({"type": att.kind}), Some(att)));
                    }
                    other => return Err(bad(format!("unsupported message part type: {other}"))),
                }
            }
        }
        _ => return Err(bad("message must be a string or list")),
    }
    if parts.iter().all(|(p, _)| p["type"] == "reply") {
        return Err(bad("Message content is empty (reply only is not allowed)"));
    }
    Ok(parts)
}

/// Registers a new attachment for a stored bot message, as AstrBot registers copies, whose
/// file is a hard link to the original's bytes (same folder, so the same filesystem). The
/// new file's path is pushed to `made` before anything else can fail, for the caller to
/// remove if the message is not stored after all.
fn link_attachment(
    tx: &rusqlite::Transaction<'_>,
    data_dir: &Path,
    att: &Attachment,
    now: i64,
    made: &mut Vec<PathBuf>,
) -> Result<Attachment, ApiError> {
    let copy = Attachment { attachment_id: uuid::Uuid::new_v4().to_string(), created_at: now, ..att.clone() };
    let dir = data_dir.join("attachments");
    let path = dir.join(&copy.attachment_id);
    std::fs::hard_link(dir.join(&att.attachment_id), &path)
        .map_err(|e| bad(format!("Failed to send message: {e}")))?;
    made.push(path);
    resources::insert_attachment(tx, &copy)?;
    Ok(copy)
}

/// Stores a proactive message for `target` in one `IMMEDIATE` transaction; the stored
/// parts reference attachments of their own, as AstrBot stores them. An owned target's
/// session is made for its owner here, or refused when another username owns it, before
/// anything is linked. If anything fails, the rows roll back with the transaction and the
/// links made are removed. Returns the message id and the stored parts.
fn store_message(
    conn: &mut rusqlite::Connection,
    data_dir: &Path,
    target: &Target,
    parts: &[(Value, Option<Attachment>)],
    now: i64,
) -> Result<(i64, Vec<Value>), ApiError> {
    let cid = target.conversation();
    let mut made: Vec<PathBuf> = Vec::new();
    let stored = db::write_tx(conn, |tx| {
        if let Some(owner) = target.owner()
            && store::ensure_session(tx, cid, owner, now)?.creator != owner
        {
            return Err(bad("session_id belongs to another username"));
        }
        let mut out = Vec::new();
        for (part, att) in parts {
            match att {
                Some(att) => {
                    let copy = link_attachment(tx, data_dir, att, now, &mut made)?;
                    out.push(json!({"type": copy.kind, "attachment_id": copy.attachment_id, "filename": copy.filename}));
                }
                None => out.push(part.clone()),
            }
        }
        let content = json!({"type": "bot", "message": out});
        let id = store::insert_message(tx, cid, "bot", "bot", &content, None, now)?;
        if store::session(tx, cid)?.is_some() {
            store::touch_session(tx, cid, None, now)?;
        }
        Ok::<_, ApiError>((id, out))
    });
    if stored.is_err() {
        for path in &made {
            if let Err(e) = std::fs::remove_file(path) {
                log::error!("cannot remove {}: {e}", path.display());
            }
        }
    }
    stored
}

/// `POST /api/v1/im/messages` and `POST /api/v1/im/message`
pub fn send_message(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body: Map<String, Value> = ctx.req.json_object()?.clone();
    if body.get("message").is_some_and(Value::is_null) {
        return Err(bad("Missing key: message"));
    }
    let umo = match body.get("umo") {
        None | Some(Value::Null) => return Err(bad("Missing key: umo")),
        Some(Value::String(s)) if s.is_empty() => return Err(bad("Missing key: umo")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("umo must be a string")),
    };
    let (platform, message_type, session) = parse_umo(&umo).map_err(|e| bad(format!("Invalid umo: {e}")))?;
    if platform != "webchat" {
        return send_to_bot(ctx, &body, &platform, &message_type, &session);
    }
    let target = target(&session).map_err(|e| bad(format!("Invalid umo: {e}")))?;
    let message = body.get("message").cloned().unwrap_or_else(|| json!({}));
    let data_dir = ctx.app.settings.data_dir.clone();
    let mut conn = ctx.app.db.conn()?;
    let mut parts = strict_parts(&conn, &data_dir, &message)?;
    parts.retain(|(p, _)| p["type"] != "reply");
    let cid = target.conversation();
    let now = ctx.now;
    let (saved_id, stored_parts) = store_message(&mut conn, &data_dir, &target, &parts, ctx.now)?;
    // Live streams of the conversation see the message as events; for an owned target only
    // the owner's (a run can outlive its deleted session, whose id may now be the owner's).
    ctx.app.streams.deliver_proactive(cid, target.owner(), &stored_parts, saved_id, now);
    log::info!("proactive message delivered to webchat conversation {cid}");
    Ok(Response::ok(Value::Null))
}

/// A proactive message to a running IM bot: the parts checked as for webchat, then sent
/// by its adapter on this thread (Telegram's pacing may make it wait). Nothing is stored:
/// the platform keeps the message, as AstrBot leaves it to the platform.
fn send_to_bot(
    ctx: &Ctx<'_, '_>,
    body: &Map<String, Value>,
    platform: &str,
    message_type: &str,
    session: &str,
) -> Result<Response, ApiError> {
    let adapter = ctx
        .app
        .platforms
        .adapter(platform)
        .ok_or_else(|| bad(format!("Bot not found or not running for platform: {platform}")))?;
    let message = body.get("message").cloned().unwrap_or_else(|| json!({}));
    let data_dir = ctx.app.settings.data_dir.clone();
    let parts = strict_parts(&*ctx.app.db.conn()?, &data_dir, &message)?;
    let out: Vec<OutPart> = parts
        .into_iter()
        .map(|(part, att)| match att {
            Some(a) => OutPart::Media(Media {
                kind: a.kind,
                path: data_dir.join("attachments").join(&a.attachment_id),
                attachment_id: a.attachment_id,
                filename: a.filename,
                mime: a.mime_type,
            }),
            None if part["type"] == "reply" => {
                OutPart::Reply { message_id: part["message_id"].as_str().unwrap_or_default().to_owned() }
            }
            None => OutPart::Text(part["text"].as_str().unwrap_or_default().to_owned()),
        })
        .collect();
    let target =
        platforms::Target { group: message_type == "GroupMessage", chat: session.to_owned(), self_id: None };
    match adapter.send(&target, &out) {
        Ok(()) => {
            log::info!("proactive message sent by bot {platform} to {message_type}:{session}");
            Ok(Response::ok(Value::Null))
        }
        Err(SendError::Invalid(e)) => Err(bad(e)),
        Err(SendError::Failed(e)) => {
            log::warn!("proactive message by bot {platform} to {message_type}:{session} failed: {e}");
            Err(bad(format!("Failed to send message: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umo_parsing_and_conversation_ids() {
        assert_eq!(parse_umo("webchat:FriendMessage:webchat!alice!s:1").unwrap().2, "webchat!alice!s:1");
        assert_eq!(parse_umo("nope").unwrap_err(), "not enough values to unpack (expected 3, got 1)");
        assert_eq!(parse_umo("a:b").unwrap_err(), "not enough values to unpack (expected 3, got 2)");
        assert_eq!(parse_umo("a:Foo:c").unwrap_err(), "'Foo' is not a valid MessageType");
        assert_eq!(parse_umo("a::c").unwrap_err(), "'' is not a valid MessageType");
        let owned = |u: &str, s: &str| Ok(Target::Owned { username: u.into(), session_id: s.into() });
        assert_eq!(target("webchat!alice!sess-im-1"), owned("alice", "sess-im-1"));
        assert_eq!(target("webchat!alice!a!b"), owned("alice", "a!b"));
        assert_eq!(target("webchat! alice ! s1 "), owned("alice", "s1"));
        assert_eq!(target("webchat!!s1"), Err("username is empty".into()));
        assert_eq!(target("webchat!alice! "), Err("session_id is empty".into()));
        assert_eq!(target("plainsess"), Ok(Target::Conversation("plainsess".into())));
        assert_eq!(target("webchat!alice"), Ok(Target::Conversation("webchat!alice".into())));
        assert_eq!(target(" padded "), Ok(Target::Conversation(" padded ".into())));
    }

    /// A message that fails after its first media part was linked leaves neither the link
    /// nor the attachment row behind (a trigger makes the message insert fail).
    #[test]
    fn a_failed_store_removes_the_links_it_made() {
        let dir = std::env::temp_dir().join(format!("astrbot-im-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("attachments")).unwrap();
        let db = crate::db::Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        let att = Attachment {
            attachment_id: "orig".into(),
            filename: "a.bin".into(),
            kind: "file".into(),
            mime_type: "application/octet-stream".into(),
            size: 5,
            created_at: 1,
        };
        db::write_tx(&mut conn, |tx| resources::insert_attachment(tx, &att)).unwrap();
        std::fs::write(dir.join("attachments/orig"), b"bytes").unwrap();
        let parts = vec![(json!({"type": "file"}), Some(att.clone())), (json!({"type": "file"}), Some(att))];

        let c = Target::Conversation("c".into());
        let (_, stored) = store_message(&mut conn, &dir, &c, &parts, 2).unwrap();
        let linked = stored[0]["attachment_id"].as_str().unwrap().to_owned();
        let meta = std::fs::metadata(dir.join("attachments").join(&linked)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.ino(), std::fs::metadata(dir.join("attachments/orig")).unwrap().ino(), "a link");

        conn.execute_batch(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON chat_messages BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
        assert!(store_message(&mut conn, &dir, &c, &parts, 3).is_err());
        let files = std::fs::read_dir(dir.join("attachments")).unwrap().count();
        assert_eq!(files, 3, "the original and the first message's two links only");
        let rows: i64 = conn.query_row("SELECT count(*) FROM attachments", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 3);
        drop(conn);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
