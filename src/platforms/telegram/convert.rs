//! A Telegram update into an [`Inbound`]: who, where, the text as AstrBot's `message_str`,
//! the waking signals, and the files to fetch (fetched by the caller, which has the hub).
//!
//! Entity offsets are UTF-16 code units, so the text is edited as UTF-16 and every entity
//! is applied to the original text (AstrBot slices code points, and after its own
//! rewrites, so an emoji before a mention makes it cut the wrong span). A mention of the
//! bot is removed, `/cmd@bot args` becomes `/cmd args`; other mentions stay as text. A
//! reply to one of the bot's messages is a flag ([`Inbound::replies_to_bot`]) rather than
//! AstrBot's rewrite of the text into a `/` command.

use serde_json::Value;

use super::split::utf16_len;
use crate::platforms::Inbound;

/// The bot's own account, from `getMe`.
#[derive(Debug, Clone, PartialEq)]
pub struct Me {
    pub id: i64,
    pub username: String,
}

/// A file a message carries, to fetch with `getFile`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRef {
    /// The attachment kind: `image`, `record`, `video` or `file`.
    pub kind: &'static str,
    pub file_id: String,
    pub filename: Option<String>,
    pub mime: Option<String>,
    /// The size Telegram announces, if it does.
    pub size: Option<u64>,
}

/// A converted message.
#[derive(Debug, Clone)]
pub struct Converted {
    /// Everything but `media`, which the caller fills from `files`.
    pub inbound: Inbound,
    pub files: Vec<FileRef>,
    /// Exactly `/start`: answered with the start message, never given to the pipeline.
    pub start: bool,
}

/// The text with the bot's mentions taken out, and what they said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CleanText {
    pub text: String,
    pub mentions_bot: bool,
    pub first_mention_other: bool,
}

/// Converts an update; `None` for what the bot does not answer (no `message`, no `from`,
/// the bot's own message).
pub fn convert(update: &Value, me: &Me) -> Option<Converted> {
    let msg = update.get("message").filter(|m| m.is_object())?;
    let from = msg.get("from").filter(|f| f.is_object())?;
    let sender = from["id"].as_i64()?;
    if sender == me.id {
        return None;
    }
    let chat_id = msg["chat"]["id"].as_i64()?;
    let group = msg["chat"]["type"].as_str() != Some("private");
    let thread = msg["message_thread_id"].as_i64().filter(|_| msg["is_topic_message"] == Value::Bool(true));
    let session = match thread {
        Some(t) => format!("{chat_id}#{t}"),
        None => chat_id.to_string(),
    };
    let (raw, entities) = match msg["text"].as_str() {
        Some(t) => (t, &msg["entities"]),
        None => (msg["caption"].as_str().unwrap_or_default(), &msg["caption_entities"]),
    };
    let entities = entities.as_array().map(Vec::as_slice).unwrap_or_default();
    let cleaned = clean_text(raw, entities, me);
    // In a forum topic every message "replies" to the topic's first message; that is not
    // a reply to the bot even when the bot opened the topic.
    let reply = &msg["reply_to_message"];
    let implicit = thread.is_some() && reply["message_id"].as_i64() == thread;
    let replies_to_bot = !implicit && reply["from"]["id"].as_i64() == Some(me.id);
    let (files, sticker_text) = files(msg);
    let mut text = cleaned.text;
    if text.is_empty()
        && let Some(s) = sticker_text
    {
        text = s;
    }
    let sender_name =
        from["username"].as_str().or_else(|| from["first_name"].as_str()).unwrap_or("Unknown").to_owned();
    let start = text == "/start";
    let inbound = Inbound {
        group,
        session_id: session.clone(),
        group_id: group.then(|| session.clone()),
        reply_to: session,
        sender_id: sender.to_string(),
        sender_name,
        self_id: me.username.clone(),
        message_id: msg["message_id"].as_i64().map(|i| i.to_string()).unwrap_or_default(),
        text,
        media: Vec::new(),
        mentions_bot: cleaned.mentions_bot,
        mentions_all: false,
        replies_to_bot,
        first_mention_other: cleaned.first_mention_other,
    };
    Some(Converted { inbound, files, start })
}

/// The files of a message, and the text a sticker stands for.
fn files(msg: &Value) -> (Vec<FileRef>, Option<String>) {
    let file = |kind: &'static str, v: &Value, name: Option<&str>, mime: Option<&str>| {
        let file_id = v["file_id"].as_str().filter(|s| !s.is_empty())?;
        Some(FileRef {
            kind,
            file_id: file_id.to_owned(),
            filename: v["file_name"].as_str().or(name).map(str::to_owned),
            mime: v["mime_type"].as_str().or(mime).map(str::to_owned),
            size: v["file_size"].as_u64(),
        })
    };
    let mut out = Vec::new();
    let mut sticker_text = None;
    // The sizes of one photo, smallest first: the last is the largest.
    if let Some(largest) = msg["photo"].as_array().and_then(|sizes| sizes.last()) {
        out.extend(file("image", largest, Some("photo.jpg"), Some("image/jpeg")));
    }
    let doc = &msg["document"];
    out.extend(file("file", doc, None, None));
    out.extend(file("record", &msg["voice"], Some("voice.ogg"), Some("audio/ogg")));
    out.extend(file("record", &msg["audio"], Some("audio.mp3"), None));
    out.extend(file("video", &msg["video"], Some("video.mp4"), Some("video/mp4")));
    out.extend(file("video", &msg["video_note"], Some("video_note.mp4"), Some("video/mp4")));
    let sticker = &msg["sticker"];
    if sticker.is_object() {
        // An animated or video sticker is shown by its still thumbnail, as AstrBot does.
        let moving = sticker["is_animated"] == Value::Bool(true) || sticker["is_video"] == Value::Bool(true);
        let shown = if moving { &sticker["thumbnail"] } else { sticker };
        let (name, mime) =
            if moving { ("sticker.jpg", "image/jpeg") } else { ("sticker.webp", "image/webp") };
        out.extend(file("image", shown, Some(name), Some(mime)).map(|mut f| {
            // A thumbnail's own fields would name the sticker file, not the picture.
            f.mime = Some(mime.into());
            f
        }));
        sticker_text =
            Some(format!("Sticker: {}", sticker["emoji"].as_str().unwrap_or_default()).trim().to_owned());
    }
    (out, sticker_text)
}

/// Removes the bot's mentions from `text` by its entities (offsets in UTF-16 units) and
/// trims it. `@bot` is cut with one space next to it; `/cmd@bot args` keeps `/cmd args`.
pub fn clean_text(text: &str, entities: &[Value], me: &Me) -> CleanText {
    let units: Vec<u16> = text.encode_utf16().collect();
    let mut out = CleanText::default();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let is_me = |name: &str| !me.username.is_empty() && name.eq_ignore_ascii_case(&me.username);
    for e in entities {
        let (Some(offset), Some(length)) = (e["offset"].as_u64(), e["length"].as_u64()) else { continue };
        let (Ok(start), Ok(length)) = (usize::try_from(offset), usize::try_from(length)) else { continue };
        let Some(end) = start.checked_add(length).filter(|end| *end <= units.len()) else { continue };
        let span = String::from_utf16_lossy(&units[start..end]);
        match e["type"].as_str().unwrap_or_default() {
            "mention" => {
                if is_me(span.strip_prefix('@').unwrap_or(&span)) {
                    out.mentions_bot = true;
                    cuts.push((start, end));
                } else if start == 0 {
                    out.first_mention_other = true;
                }
            }
            "text_mention" => {
                if e["user"]["id"].as_i64() == Some(me.id) {
                    out.mentions_bot = true;
                    cuts.push((start, end));
                } else if start == 0 {
                    out.first_mention_other = true;
                }
            }
            "bot_command" => {
                if let Some(at) = span.find('@') {
                    if is_me(&span[at + 1..]) {
                        out.mentions_bot = true;
                        cuts.push((start + utf16_len(&span[..at]), end));
                    } else if start == 0 {
                        // A command for another bot in the group.
                        out.first_mention_other = true;
                    }
                }
            }
            _ => {}
        }
    }
    cuts.sort_unstable();
    let mut kept: Vec<u16> = Vec::with_capacity(units.len());
    let mut pos = 0usize;
    for (start, mut end) in cuts {
        if start < pos {
            continue; // overlapping entities: the first one wins
        }
        kept.extend_from_slice(&units[pos..start]);
        // One space of the two around a cut mention goes with it.
        let space = u16::from(b' ');
        if units.get(end) == Some(&space) && (kept.is_empty() || kept.last() == Some(&space)) {
            end += 1;
        }
        pos = end;
    }
    kept.extend_from_slice(units.get(pos..).unwrap_or_default());
    out.text = String::from_utf16_lossy(&kept).trim().to_owned();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Me {
        Me { id: 999, username: "astr_test_bot".into() }
    }

    fn mention(offset: usize, length: usize) -> Value {
        json!({"type": "mention", "offset": offset, "length": length})
    }

    #[test]
    fn the_bots_mention_is_cut_by_utf16_offsets_after_emoji() {
        // "😀" is 2 UTF-16 units, "é" one: the mention starts at unit 5, byte 8.
        let text = "😀 é @Astr_Test_Bot hello";
        let c = clean_text(text, &[mention(5, 14)], &me());
        assert_eq!(c.text, "😀 é hello");
        assert!(c.mentions_bot && !c.first_mention_other);
        let c = clean_text("@astr_test_bot  hi", &[mention(0, 14)], &me());
        assert_eq!((c.text.as_str(), c.mentions_bot), ("hi", true));
    }

    #[test]
    fn other_mentions_stay_and_a_leading_one_is_flagged() {
        let c = clean_text("@ann hi @astr_test_bot", &[mention(0, 4), mention(8, 14)], &me());
        assert_eq!(c.text, "@ann hi");
        assert!(c.mentions_bot && c.first_mention_other);
        let c = clean_text("hi @ann", &[mention(3, 4)], &me());
        assert_eq!(c, CleanText { text: "hi @ann".into(), mentions_bot: false, first_mention_other: false });
    }

    #[test]
    fn commands_addressed_to_the_bot_lose_the_name() {
        let cmd = |len| json!({"type": "bot_command", "offset": 0, "length": len});
        let c = clean_text("/help@astr_test_bot now", &[cmd(19)], &me());
        assert_eq!((c.text.as_str(), c.mentions_bot), ("/help now", true));
        let c = clean_text("/help@other_bot now", &[cmd(15)], &me());
        assert_eq!(c.text, "/help@other_bot now");
        assert!(!c.mentions_bot && c.first_mention_other);
        let c = clean_text("/help now", &[cmd(5)], &me());
        assert_eq!((c.text.as_str(), c.mentions_bot), ("/help now", false));
    }

    #[test]
    fn text_mentions_of_the_bot_count_and_bad_entities_are_ignored() {
        let e = json!({"type": "text_mention", "offset": 0, "length": 4, "user": {"id": 999}});
        let c = clean_text("Astr do it", &[e], &me());
        assert_eq!((c.text.as_str(), c.mentions_bot), ("do it", true));
        let bad = [mention(3, 100), json!({"type": "mention", "offset": -1, "length": 2}), json!({})];
        assert_eq!(clean_text("hi @x", &bad, &me()).text, "hi @x");
    }

    fn update(message: Value) -> Value {
        json!({"update_id": 1, "message": message})
    }

    #[test]
    fn private_and_group_messages_become_inbound() {
        let from = json!({"id": 4242, "is_bot": false, "first_name": "Ann", "username": "ann"});
        let c = convert(
            &update(
                json!({"message_id": 7, "chat": {"id": 4242, "type": "private"}, "from": from, "text": "hi"}),
            ),
            &me(),
        )
        .unwrap();
        let i = &c.inbound;
        assert!(!i.group && !c.start);
        assert_eq!(
            (i.session_id.as_str(), i.reply_to.as_str(), i.group_id.as_deref(), i.sender_id.as_str()),
            ("4242", "4242", None, "4242")
        );
        assert_eq!(
            (i.sender_name.as_str(), i.self_id.as_str(), i.message_id.as_str()),
            ("ann", "astr_test_bot", "7")
        );
        assert_eq!(i.text, "hi");

        let topic = json!({
            "message_id": 8, "message_thread_id": 7, "is_topic_message": true,
            "chat": {"id": -100123, "type": "supergroup", "is_forum": true},
            "from": {"id": 5, "first_name": "Bob"},
            "text": "@astr_test_bot hello", "entities": [mention(0, 14)],
            "reply_to_message": {"message_id": 7, "from": {"id": 999}},
        });
        let c = convert(&update(topic), &me()).unwrap();
        let i = &c.inbound;
        assert!(i.group && i.mentions_bot && !i.replies_to_bot, "the topic's root is no reply");
        assert_eq!((i.session_id.as_str(), i.group_id.as_deref()), ("-100123#7", Some("-100123#7")));
        assert_eq!((i.sender_name.as_str(), i.text.as_str()), ("Bob", "hello"));

        let reply = json!({
            "message_id": 9, "chat": {"id": -5, "type": "group"}, "from": {"id": 5, "first_name": "Bob"},
            "text": "and?", "reply_to_message": {"message_id": 3, "from": {"id": 999, "is_bot": true}},
        });
        let c = convert(&update(reply), &me()).unwrap();
        assert!(c.inbound.replies_to_bot && !c.inbound.mentions_bot);
        assert_eq!(c.inbound.session_id, "-5");
    }

    #[test]
    fn updates_without_a_message_or_sender_are_skipped_and_start_is_flagged() {
        assert!(convert(&json!({"update_id": 1, "edited_message": {}}), &me()).is_none());
        let channel = json!({"message_id": 1, "chat": {"id": -1, "type": "channel"}, "text": "x"});
        assert!(convert(&update(channel), &me()).is_none());
        let start = json!({
            "message_id": 1, "chat": {"id": 1, "type": "private"}, "from": {"id": 1},
            "text": "/start@astr_test_bot", "entities": [{"type": "bot_command", "offset": 0, "length": 20}],
        });
        assert!(convert(&update(start), &me()).unwrap().start);
    }

    #[test]
    fn media_become_files_to_fetch_and_the_caption_the_text() {
        let photo = json!({
            "message_id": 1, "chat": {"id": 1, "type": "private"}, "from": {"id": 1},
            "photo": [{"file_id": "small", "file_size": 10}, {"file_id": "big", "file_size": 99}],
            "caption": "look @astr_test_bot", "caption_entities": [mention(5, 14)],
        });
        let c = convert(&update(photo), &me()).unwrap();
        assert_eq!(c.inbound.text, "look");
        assert!(c.inbound.mentions_bot);
        assert_eq!(c.files.len(), 1);
        assert_eq!(
            (c.files[0].kind, c.files[0].file_id.as_str(), c.files[0].size),
            ("image", "big", Some(99))
        );

        let doc = json!({
            "message_id": 2, "chat": {"id": 1, "type": "private"}, "from": {"id": 1},
            "document": {"file_id": "d", "file_name": "a.pdf", "mime_type": "application/pdf"},
        });
        let f = &convert(&update(doc), &me()).unwrap().files[0];
        assert_eq!(
            (f.kind, f.filename.as_deref(), f.mime.as_deref()),
            ("file", Some("a.pdf"), Some("application/pdf"))
        );

        let voice = json!({"message_id": 3, "chat": {"id": 1, "type": "private"}, "from": {"id": 1},
            "voice": {"file_id": "v", "duration": 2}});
        assert_eq!(convert(&update(voice), &me()).unwrap().files[0].kind, "record");

        let sticker = json!({"message_id": 4, "chat": {"id": 1, "type": "private"}, "from": {"id": 1},
            "sticker": {"file_id": "s", "is_animated": true, "emoji": "👍", "thumbnail": {"file_id": "t"}}});
        let c = convert(&update(sticker), &me()).unwrap();
        assert_eq!((c.files[0].file_id.as_str(), c.inbound.text.as_str()), ("t", "Sticker: 👍"));
    }
}
