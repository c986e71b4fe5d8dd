//! OneBot v11 messages both ways, free of sockets: a message event's segments into an
//! [`Inbound`] (platforms reference §3.3), our [`OutPart`]s into the segment array of one
//! `send_*_msg` call plus the files sent on their own (§3.11), and the target id of a send
//! (§3.12).
//!
//! The lookups an event needs (an `at`'s name, the sender of a replied-to message) are API
//! calls the caller makes for us through `lookup`, so this module is tested with a
//! closure. Media are only named here (kind and URL); the caller downloads them.

use std::io::Read;

use base64::Engine;
use serde_json::{Value, json};

use crate::platforms::{Inbound, OutPart};

/// QQ 管家, whose messages AstrBot drops.
pub const QQ_BUTLER: &str = "2854196310";

/// Media sent inline as `base64://` are capped: NapCat takes the whole message in one frame
/// and QQ refuses far smaller images anyway.
pub const MAX_INLINE_BYTES: u64 = 10 * 1024 * 1024;

/// A medium a received message points at, to be downloaded into an attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRef {
    /// `image`, `record`, `video` or `file`.
    pub kind: String,
    pub url: String,
    /// The implementation's file name, a hint for the attachment's name.
    pub name: Option<String>,
}

/// An API call the conversion needs: action, params → the response's `data`.
pub type Lookup<'a> = dyn FnMut(&str, Value) -> Result<Value, String> + 'a;

/// A OneBot id as a decimal string: ids arrive as JSON numbers, sometimes as strings.
pub fn id_str(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()).or_else(|| n.as_i64().map(|n| n.to_string())),
        Value::String(s) if is_id(s) => Some(s.clone()),
        _ => None,
    }
}

/// 1 to 20 ASCII digits: a QQ number, a group id, a message id.
pub fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Why a message event is not delivered.
#[derive(Debug, PartialEq)]
pub enum Skip {
    /// Not a private or group message, or without the ids it needs.
    Malformed(&'static str),
    /// `message` is a CQ-code string: AstrBot needs the array format.
    StringFormat,
    /// From QQ 管家.
    Butler,
}

/// Converts a message event (`post_type: message`) into an [`Inbound`] without media,
/// and the media it points at.
pub fn message_event(event: &Value, lookup: &mut Lookup<'_>) -> Result<(Inbound, Vec<MediaRef>), Skip> {
    let group = match event["message_type"].as_str() {
        Some("group") => true,
        Some("private") => false,
        _ => return Err(Skip::Malformed("message_type is neither private nor group")),
    };
    let self_id = id_str(&event["self_id"]).ok_or(Skip::Malformed("no self_id"))?;
    let sender = &event["sender"];
    let user_id = id_str(&sender["user_id"])
        .or_else(|| id_str(&event["user_id"]))
        .ok_or(Skip::Malformed("no user_id"))?;
    if user_id == QQ_BUTLER {
        return Err(Skip::Butler);
    }
    let group_id = if group {
        Some(id_str(&event["group_id"]).ok_or(Skip::Malformed("a group message without group_id"))?)
    } else {
        None
    };
    let segments = match &event["message"] {
        Value::Array(a) => a,
        Value::String(_) => return Err(Skip::StringFormat),
        _ => return Err(Skip::Malformed("no message")),
    };
    let name = |k: &str| sender[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let chat = group_id.clone().unwrap_or_else(|| user_id.clone());
    let mut msg = Inbound {
        group,
        session_id: chat.clone(),
        group_id: group_id.clone(),
        reply_to: chat,
        sender_name: name("card").or_else(|| name("nickname")).unwrap_or_else(|| "N/A".into()),
        sender_id: user_id,
        message_id: id_str(&event["message_id"]).unwrap_or_default(),
        self_id,
        ..Inbound::default()
    };
    let media = segments_into(&mut msg, segments, lookup);
    Ok((msg, media))
}

/// Reads the segments into `msg` (text, mentions, reply) and returns the media.
fn segments_into(msg: &mut Inbound, segments: &[Value], lookup: &mut Lookup<'_>) -> Vec<MediaRef> {
    let mut text = String::new();
    let mut run = String::new();
    let mut media = Vec::new();
    let mut first_component = true;
    let mut at_self_seen = false;
    // A run of text segments is one component, joined then stripped (AstrBot groups
    // consecutive segments of one type); an empty run is no component at all.
    let end_run = |run: &mut String, text: &mut String, first: &mut bool| {
        let t = run.trim();
        if !t.is_empty() {
            text.push_str(t);
            *first = false;
        }
        run.clear();
    };
    for seg in segments {
        let kind = seg["type"].as_str().unwrap_or_default();
        let data = &seg["data"];
        if kind == "text" {
            run.push_str(data["text"].as_str().unwrap_or_default());
            continue;
        }
        end_run(&mut run, &mut text, &mut first_component);
        match kind {
            "at" => {
                let qq = match &data["qq"] {
                    Value::String(s) => s.clone(),
                    other => id_str(other).unwrap_or_default(),
                };
                if qq.is_empty() {
                    continue;
                }
                if qq == "all" {
                    msg.mentions_all = true;
                } else if qq == msg.self_id && !at_self_seen {
                    // The first mention of the bot stays out of the text.
                    at_self_seen = true;
                    msg.mentions_bot = true;
                } else {
                    if first_component && qq != msg.self_id {
                        msg.first_mention_other = true;
                    }
                    let name = at_name(msg.group_id.as_deref(), &qq, lookup);
                    text.push_str(&format!(" @{name}({qq}) "));
                }
                first_component = false;
            }
            "reply" => {
                first_component = false;
                let Some(id) = id_str(&data["id"]).and_then(|id| id.parse::<i64>().ok()) else { continue };
                match lookup("get_msg", json!({"message_id": id})) {
                    Ok(found) => {
                        let sender =
                            id_str(&found["sender"]["user_id"]).or_else(|| id_str(&found["user_id"]));
                        if sender.as_deref() == Some(msg.self_id.as_str()) {
                            msg.replies_to_bot = true;
                        }
                    }
                    Err(e) => log::debug!("get_msg {id} failed: {e}"),
                }
            }
            "image" | "record" | "video" | "file" => {
                first_component = false;
                let url = data["url"].as_str().unwrap_or_default().trim();
                let lower = url.to_ascii_lowercase();
                if lower.starts_with("http://") || lower.starts_with("https://") {
                    let name = ["file_name", "name", "file"]
                        .iter()
                        .filter_map(|k| data[*k].as_str())
                        .find(|s| !s.is_empty() && !s.contains("://"))
                        .map(str::to_owned);
                    media.push(MediaRef { kind: kind.to_owned(), url: url.to_owned(), name });
                } else {
                    log::debug!("a {kind} segment without an http(s) url is skipped");
                }
            }
            "" => {}
            other => {
                first_component = false;
                log::debug!("a {other} segment is skipped");
            }
        }
    }
    end_run(&mut run, &mut text, &mut first_component);
    msg.text = text.trim().to_owned();
    media
}

/// The name shown for an `@qq` in the text: the group card, else the QQ nickname, else
/// empty (kept, unlike AstrBot, which drops the mention when a lookup fails, §3.14).
fn at_name(group_id: Option<&str>, qq: &str, lookup: &mut Lookup<'_>) -> String {
    let Ok(user_id) = qq.parse::<i64>() else { return String::new() };
    if let Some(group_id) = group_id.and_then(|g| g.parse::<i64>().ok()) {
        let params = json!({"group_id": group_id, "user_id": user_id, "no_cache": false});
        match lookup("get_group_member_info", params) {
            Ok(info) => {
                if let Some(card) = info["card"].as_str().filter(|s| !s.is_empty()) {
                    return card.to_owned();
                }
            }
            Err(e) => log::debug!("get_group_member_info {qq} failed: {e}"),
        }
    }
    match lookup("get_stranger_info", json!({"user_id": user_id, "no_cache": false})) {
        Ok(info) => ["nick", "nickname"]
            .iter()
            .filter_map(|k| info[*k].as_str())
            .find(|s| !s.is_empty())
            .unwrap_or_default()
            .to_owned(),
        Err(e) => {
            log::debug!("get_stranger_info {qq} failed: {e}");
            String::new()
        }
    }
}

/// The id a send goes to: a group's id (the `unique_session` form `<user>_<group>` reaches
/// the group), or the user's. `None` when it is not a number (AstrBot's `ValueError`).
pub fn target_id(group: bool, chat: &str) -> Option<u64> {
    let id = if group { chat.rsplit('_').next().unwrap_or_default() } else { chat };
    if !is_id(id) {
        return None;
    }
    id.parse::<u64>().ok()
}

/// What one send becomes: the segments of one `send_*_msg`, then each file as a message of
/// its own (one `file` segment, as AstrBot sends files).
#[derive(Debug, Default, PartialEq)]
pub struct Outgoing {
    pub segments: Vec<Value>,
    pub files: Vec<Value>,
}

/// Converts the parts of a send. Media are read from their attachment and inlined as
/// `base64://` (AstrBot inlines images and voice; video and files too here, as no file
/// service link exists), each at most [`MAX_INLINE_BYTES`].
pub fn outgoing(parts: &[OutPart]) -> Result<Outgoing, String> {
    let mut out = Outgoing::default();
    for part in parts {
        match part {
            OutPart::Text(t) => {
                if !t.trim().is_empty() {
                    out.segments.push(json!({"type": "text", "data": {"text": t}}));
                }
            }
            OutPart::At { id, .. } => {
                out.segments.push(json!({"type": "at", "data": {"qq": id}}));
                out.segments.push(json!({"type": "text", "data": {"text": " "}}));
            }
            OutPart::Reply { message_id } => {
                out.segments.push(json!({"type": "reply", "data": {"id": message_id}}));
            }
            OutPart::Media(m) => {
                let file = inline(&m.path, &m.kind)?;
                match m.kind.as_str() {
                    "image" | "record" | "video" => {
                        out.segments.push(json!({"type": m.kind, "data": {"file": file}}));
                    }
                    _ => {
                        out.files.push(json!([{"type": "file", "data": {"name": m.filename, "file": file}}]))
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A file as `base64://<data>`, refused past the cap.
fn inline(path: &std::path::Path, kind: &str) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read the {kind}: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_INLINE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the {kind}: {e}"))?;
    if bytes.len() as u64 > MAX_INLINE_BYTES {
        return Err(format!("the {kind} is larger than {} MiB", MAX_INLINE_BYTES >> 20));
    }
    Ok(format!("base64://{}", base64::engine::general_purpose::STANDARD.encode(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platforms::Media;

    fn no_lookup() -> impl FnMut(&str, Value) -> Result<Value, String> {
        |action: &str, _| Err(format!("{action} not expected"))
    }

    fn group_event(message: Value) -> Value {
        json!({"time": 1, "self_id": 10001, "post_type": "message", "message_type": "group",
            "sub_type": "normal", "message_id": 555, "group_id": 20002, "user_id": 30003,
            "message": message, "sender": {"user_id": 30003, "nickname": "Ann", "card": ""}})
    }

    #[test]
    fn a_private_text_message_becomes_an_inbound_of_its_sender() {
        let e = json!({"self_id": 10001, "post_type": "message", "message_type": "private",
            "message_id": 7, "user_id": 30003, "sender": {"user_id": 30003, "nickname": "Ann"},
            "message": [{"type": "text", "data": {"text": " hello "}}, {"type": "text", "data": {"text": "there "}}]});
        let (m, media) = message_event(&e, &mut no_lookup()).unwrap();
        assert!(!m.group && media.is_empty());
        assert_eq!((m.session_id.as_str(), m.reply_to.as_str(), m.group_id), ("30003", "30003", None));
        assert_eq!((m.sender_id.as_str(), m.sender_name.as_str()), ("30003", "Ann"));
        assert_eq!(
            (m.self_id.as_str(), m.message_id.as_str(), m.text.as_str()),
            ("10001", "7", "hello there")
        );
        assert!(!m.mentions_bot);
    }

    #[test]
    fn a_group_mention_of_the_bot_wakes_and_stays_out_of_the_text() {
        let e = group_event(
            json!([{"type": "at", "data": {"qq": "10001"}}, {"type": "text", "data": {"text": " hi"}}]),
        );
        let (m, _) = message_event(&e, &mut no_lookup()).unwrap();
        assert!(m.group && m.mentions_bot && !m.first_mention_other);
        assert_eq!((m.session_id.as_str(), m.group_id.as_deref()), ("20002", Some("20002")));
        assert_eq!(m.text, "hi");
        assert_eq!(m.sender_name, "Ann", "an empty card falls back to the nickname");
    }

    #[test]
    fn other_mentions_are_text_with_looked_up_names_and_kept_when_lookups_fail() {
        let mut calls = Vec::new();
        let mut lookup = |action: &str, params: Value| {
            calls.push((action.to_owned(), params.clone()));
            match (action, params["user_id"].as_i64()) {
                ("get_group_member_info", Some(40004)) => Ok(json!({"card": "Bob"})),
                ("get_group_member_info", _) => Ok(json!({"card": ""})),
                ("get_stranger_info", Some(50005)) => Ok(json!({"nickname": "Cy"})),
                _ => Err("failed".into()),
            }
        };
        let e = group_event(json!([
            {"type": "at", "data": {"qq": "40004"}}, {"type": "text", "data": {"text": "look"}},
            {"type": "at", "data": {"qq": "50005"}}, {"type": "at", "data": {"qq": "60006"}},
            {"type": "at", "data": {"qq": "all"}}]));
        let (m, _) = message_event(&e, &mut lookup).unwrap();
        assert_eq!(m.text, "@Bob(40004) look @Cy(50005)  @(60006)");
        assert!(m.first_mention_other && m.mentions_all && !m.mentions_bot);
        assert_eq!(
            calls[0],
            ("get_group_member_info".into(), json!({"group_id": 20002, "user_id": 40004, "no_cache": false}))
        );
        assert!(calls.iter().any(|(a, p)| a == "get_stranger_info" && p["user_id"] == 60006));
    }

    #[test]
    fn a_reply_to_the_bot_is_found_with_get_msg() {
        let mut lookup = |action: &str, params: Value| {
            assert_eq!(action, "get_msg");
            Ok(
                json!({"message_id": params["message_id"], "sender": {"user_id": if params["message_id"] == 9 { 10001 } else { 1 }}}),
            )
        };
        let to_bot = group_event(
            json!([{"type": "reply", "data": {"id": "9"}}, {"type": "text", "data": {"text": "so?"}}]),
        );
        assert!(message_event(&to_bot, &mut lookup).unwrap().0.replies_to_bot);
        let to_other = group_event(json!([{"type": "reply", "data": {"id": "8"}}]));
        assert!(!message_event(&to_other, &mut lookup).unwrap().0.replies_to_bot);
        let failing = group_event(
            json!([{"type": "reply", "data": {"id": "8"}}, {"type": "text", "data": {"text": "x"}}]),
        );
        let (m, _) = message_event(&failing, &mut no_lookup()).unwrap();
        assert!(!m.replies_to_bot && m.text == "x");
    }

    #[test]
    fn media_with_http_urls_are_named_and_others_skipped() {
        let e = group_event(json!([
            {"type": "image", "data": {"file": "abc.jpg", "url": "https://multimedia.example/x?a=1"}},
            {"type": "record", "data": {"file": "v.amr", "url": "file:///tmp/v.amr"}},
            {"type": "file", "data": {"file_name": "doc.pdf", "url": "http://h/f"}}]));
        let (_, media) = message_event(&e, &mut no_lookup()).unwrap();
        assert_eq!(
            media,
            vec![
                MediaRef {
                    kind: "image".into(),
                    url: "https://multimedia.example/x?a=1".into(),
                    name: Some("abc.jpg".into())
                },
                MediaRef { kind: "file".into(), url: "http://h/f".into(), name: Some("doc.pdf".into()) },
            ]
        );
    }

    #[test]
    fn skipped_events() {
        let mut e = group_event(json!("[CQ:at,qq=10001] hi"));
        assert_eq!(message_event(&e, &mut no_lookup()).unwrap_err(), Skip::StringFormat);
        e["message"] = json!([]);
        e["user_id"] = json!(2854196310u64);
        e["sender"]["user_id"] = json!(2854196310u64);
        assert_eq!(message_event(&e, &mut no_lookup()).unwrap_err(), Skip::Butler);
        let bad = json!({"message_type": "group", "self_id": 1, "user_id": 2, "message": []});
        assert!(matches!(message_event(&bad, &mut no_lookup()), Err(Skip::Malformed(_))));
        e["sender"]["user_id"] = json!("x");
        e["user_id"] = json!(-5);
        e["message_type"] = json!("private");
        assert_eq!(message_event(&e, &mut no_lookup()).unwrap().0.sender_id, "-5");
    }

    #[test]
    fn target_ids_must_be_numbers_and_groups_take_the_last_part() {
        assert_eq!(target_id(true, "20002"), Some(20002));
        assert_eq!(target_id(true, "30003_20002"), Some(20002));
        assert_eq!(target_id(false, "30003"), Some(30003));
        for bad in ["", "abc", "30003_", "12a", "-5", "123456789012345678901"] {
            assert_eq!(target_id(false, bad), None, "{bad}");
        }
        assert_eq!(target_id(false, "30003_20002"), None);
    }

    #[test]
    fn parts_become_one_segment_array_and_files_go_alone() {
        let dir = std::env::temp_dir().join(format!("onebot-convert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let media = |kind: &str, name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            OutPart::Media(Media {
                kind: kind.into(),
                attachment_id: name.into(),
                path,
                filename: name.into(),
                mime: "x/y".into(),
            })
        };
        let parts = vec![
            OutPart::Reply { message_id: "555".into() },
            OutPart::At { id: "30003".into(), name: "Ann".into() },
            OutPart::Text("hi".into()),
            OutPart::Text("  \n".into()),
            media("image", "a.png", b"PNG"),
            media("file", "d.txt", b"doc"),
        ];
        let out = outgoing(&parts).unwrap();
        assert_eq!(
            out.segments,
            vec![
                json!({"type": "reply", "data": {"id": "555"}}),
                json!({"type": "at", "data": {"qq": "30003"}}),
                json!({"type": "text", "data": {"text": " "}}),
                json!({"type": "text", "data": {"text": "hi"}}),
                json!({"type": "image", "data": {"file": "base64://UE5H"}}),
            ]
        );
        assert_eq!(
            out.files,
            vec![json!([{"type": "file", "data": {"name": "d.txt", "file": "base64://ZG9j"}}])]
        );
        let missing = OutPart::Media(Media {
            kind: "image".into(),
            attachment_id: "x".into(),
            path: dir.join("none"),
            filename: "x".into(),
            mime: "x".into(),
        });
        assert!(outgoing(&[missing]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
