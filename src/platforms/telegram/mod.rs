//! The Telegram Bot API adapter: long polling with `getUpdates` (no public address needed),
//! messages converted to [`Inbound`] for the pipeline, replies and proactive messages sent
//! with `sendMessage` and multipart uploads. One blocking thread per bot (the manager's),
//! ureq for HTTP.
//!
//! Running: `getMe` (the bot's id and username: the username is the `self_id` mentions are
//! compared with), `deleteWebhook` (polling is refused while a webhook is set), then
//! `getUpdates(offset, timeout, allowed_updates=["message"])` in a loop, with an HTTP
//! timeout 15 s longer than the long poll. Troubles are handled in the loop, as
//! python-telegram-bot does for AstrBot: a refused token (401, or 404 for a malformed one)
//! stops the bot for good; 409 "webhook is active" deletes the webhook and polls again;
//! 409 "terminated by other getUpdates" (another program polls with this token) and
//! network errors or 5xx are shown in the bot's state and retried after a backoff of 1 s
//! growing ×1.5 to 30 s (to 5 s while nothing answers at all, so the bot is back within
//! seconds of the Bot API); a 429 waits `retry_after` + 0.5 s. The bot is `running` again as
//! soon as a poll succeeds, so it survives the Bot API being unreachable for a while.
//! Failures before the first `getMe` succeeds wait `telegram_polling_restart_delay`.
//! After every poll the stop flag is checked: a stopping bot drops the batch it just got
//! (its offset is not advanced, so Telegram gives it again to the next run) and confirms
//! what it handled with `getUpdates(offset, timeout=0)`.
//!
//! Sending: one chat action (`typing`, `upload_photo`, ...), then the text in chunks of at
//! most 4096 UTF-16 units ([`split`]) and each medium as its own upload. Text goes as plain
//! text, without `parse_mode`: AstrBot's conversion to MarkdownV2 (with a plain-text retry)
//! is not copied, so a reply shows exactly what the model wrote. A quote (`OutPart::Reply`)
//! goes on the first message only, and `@name ` of an `OutPart::At` before the first text.
//! Every send-type call is paced ([`limit`]) and retried after a 429.
//!
//! Not done, knowingly: album members (`media_group_id`) arrive and are answered one by
//! one (AstrBot merges them after a debounce); commands are not registered with
//! `setMyCommands` (this server has no plugin commands to list); edited messages, channel
//! posts and other update types are not requested. Received voice is stored as sent
//! (OGG/Opus), not converted to WAV.
//!
//! The token is in every URL. It is never logged, stored in a state or returned: error
//! texts are scrubbed ([`client`]) and file URLs are only built at download time.

mod client;
mod convert;
mod limit;
mod split;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::types::{TELEGRAM_API_BASE, TELEGRAM_FILE_BASE, token_shape_ok};
use super::{Adapter, Hub, Media, OutPart, RunError, SendError, Target};
use client::{CallError, Client, Upload};
use convert::{FileRef, Me};
use limit::Limiter;

/// Telegram's download limit for bots.
const MAX_DOWNLOAD: u64 = 20 * 1024 * 1024;
/// Telegram's upload limits: photos, and everything else.
const MAX_PHOTO_UPLOAD: u64 = 10 * 1024 * 1024;
const MAX_UPLOAD: u64 = 50 * 1024 * 1024;
/// Timeouts of one call: an ordinary method, an upload, a download, the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const TEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than the long poll the HTTP call may take.
const POLL_SLACK: Duration = Duration::from_secs(15);
/// The least time an empty poll takes (see the poll loop).
const MIN_EMPTY_POLL: Duration = Duration::from_millis(200);
/// Retries of one send after a 429.
const SEND_RETRIES: u32 = 3;
/// The longest wait between polls while the Bot API cannot be reached at all.
const MAX_UNREACHABLE_WAIT: Duration = Duration::from_secs(5);
/// The longest a send waits for its turn under the pacing before it is refused.
const MAX_QUEUED_WAIT: Duration = Duration::from_secs(30);
/// The longest `retry_after` honoured as given.
const MAX_RETRY_AFTER: u64 = 60;

pub struct Telegram {
    bot_id: String,
    client: Client,
    start_message: String,
    poll_timeout: u64,
    restart_delay: Duration,
    /// The next `getUpdates` offset: one more than the last update handled. Kept across
    /// runs of the same adapter, so a restarted loop does not handle an update twice.
    offset: Mutex<i64>,
    limiter: Mutex<Limiter>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Telegram {
    /// Builds the adapter from the bot's config (defaults filled).
    pub fn new(bot_id: &str, config: &Value) -> Result<Telegram, String> {
        let token = config["telegram_token"].as_str().unwrap_or_default().trim();
        if !token_shape_ok(token) {
            return Err("telegram_token must look like 123456789:ABCdef... (digits, a colon, then letters, digits, - and _)".into());
        }
        let base = |name: &str, default: &str| {
            let v = config[name].as_str().unwrap_or_default().trim();
            if v.is_empty() { default.to_owned() } else { v.to_owned() }
        };
        let poll_timeout = config["telegram_poll_timeout"].as_u64().unwrap_or(25).clamp(1, 50);
        let delay =
            config["telegram_polling_restart_delay"].as_f64().filter(|d| d.is_finite()).unwrap_or(5.0);
        Ok(Telegram {
            bot_id: bot_id.to_owned(),
            client: Client::new(
                token,
                &base("telegram_api_base_url", TELEGRAM_API_BASE),
                &base("telegram_file_base_url", TELEGRAM_FILE_BASE),
            ),
            start_message: config["start_message"].as_str().unwrap_or("Hello, I'm AstrBot!").to_owned(),
            poll_timeout,
            restart_delay: Duration::from_secs_f64(delay.clamp(0.1, 3600.0)),
            offset: Mutex::new(0),
            limiter: Mutex::new(Limiter::default()),
        })
    }

    fn get_me(&self, timeout: Duration) -> Result<Me, CallError> {
        let me = self.client.call("getMe", &json!({}), timeout)?;
        match (me["id"].as_i64(), me["username"].as_str()) {
            (Some(id), Some(username)) => Ok(Me { id, username: username.to_owned() }),
            _ => Err(CallError::Transport("getMe gave no bot id and username".into())),
        }
    }

    /// `getMe` and `deleteWebhook` until both work; `None` when stopped meanwhile.
    fn bootstrap(&self, hub: &Hub) -> Result<Option<Me>, RunError> {
        loop {
            if hub.stopping() {
                return Ok(None);
            }
            let step = self.get_me(CALL_TIMEOUT).and_then(|me| {
                self.client.call("deleteWebhook", &json!({}), CALL_TIMEOUT)?;
                Ok(me)
            });
            match step {
                Ok(me) => {
                    log::info!("bot {}: connected to Telegram as @{}", self.bot_id, me.username);
                    return Ok(Some(me));
                }
                Err(e) if e.bad_token() => return Err(RunError::Fatal(describe(&e))),
                Err(e) => {
                    hub.trouble(&describe(&e));
                    let wait = match e {
                        CallError::Api { code: 429, retry_after, .. } => retry_wait(retry_after),
                        _ => self.restart_delay,
                    };
                    if hub.sleep(wait) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The long-poll loop.
    fn poll(&self, hub: &Hub, me: &Me) -> Result<(), RunError> {
        let mut failures: u32 = 0;
        loop {
            if hub.stopping() {
                self.confirm();
                return Ok(());
            }
            let offset = *lock(&self.offset);
            let params =
                json!({"offset": offset, "timeout": self.poll_timeout, "allowed_updates": ["message"]});
            let timeout = Duration::from_secs(self.poll_timeout) + POLL_SLACK;
            let asked = Instant::now();
            let result = self.client.call("getUpdates", &params, timeout).and_then(|v| match v {
                Value::Array(updates) => Ok(updates),
                _ => Err(CallError::Transport("Telegram's getUpdates answer is not a list".into())),
            });
            if hub.stopping() {
                // What just came is not handled: Telegram gives it again to the next run.
                self.confirm();
                return Ok(());
            }
            let e = match result {
                Ok(updates) => {
                    failures = 0;
                    hub.running();
                    // A server that answers an empty long poll at once (not Telegram)
                    // must not be polled in a tight loop.
                    if updates.is_empty() && asked.elapsed() < MIN_EMPTY_POLL && hub.sleep(MIN_EMPTY_POLL) {
                        continue;
                    }
                    for update in &updates {
                        if hub.stopping() {
                            break;
                        }
                        let Some(id) = update["update_id"].as_i64() else { continue };
                        // Advanced before handling: an update that cannot be handled is
                        // not fetched again forever.
                        if let Some(next) = id.checked_add(1) {
                            let mut o = lock(&self.offset);
                            *o = (*o).max(next);
                        }
                        self.handle(hub, me, update);
                    }
                    continue;
                }
                Err(e) => e,
            };
            if e.bad_token() {
                return Err(RunError::Fatal(describe(&e)));
            }
            failures = failures.saturating_add(1);
            let wait = match &e {
                CallError::Api { code: 409, description, .. }
                    if description.to_lowercase().contains("webhook") =>
                {
                    log::warn!("bot {}: a webhook is set for this bot; deleting it to poll", self.bot_id);
                    match self.client.call("deleteWebhook", &json!({}), CALL_TIMEOUT) {
                        // Poll again at once, unless this keeps happening.
                        Ok(_) if failures <= 1 => continue,
                        Ok(_) => backoff(failures - 1),
                        Err(e) if e.bad_token() => return Err(RunError::Fatal(describe(&e))),
                        Err(e) => {
                            hub.trouble(&describe(&e));
                            backoff(failures)
                        }
                    }
                }
                CallError::Api { code: 429, retry_after, .. } => {
                    hub.trouble(&describe(&e));
                    retry_wait(*retry_after)
                }
                // Unreachable (refused, reset, timed out): retried at least every few
                // seconds, so the bot answers soon after the Bot API is back.
                CallError::Transport(_) => {
                    hub.trouble(&describe(&e));
                    backoff(failures).min(MAX_UNREACHABLE_WAIT)
                }
                _ => {
                    hub.trouble(&describe(&e));
                    backoff(failures)
                }
            };
            if hub.sleep(wait) {
                self.confirm();
                return Ok(());
            }
        }
    }

    /// Confirms the updates handled so far (Telegram forgets updates below the offset).
    fn confirm(&self) {
        let offset = *lock(&self.offset);
        if offset > 0 {
            let params = json!({"offset": offset, "timeout": 0, "allowed_updates": ["message"]});
            if let Err(e) = self.client.call("getUpdates", &params, Duration::from_secs(3)) {
                log::debug!("bot {}: confirming the last updates failed: {}", self.bot_id, e.text());
            }
        }
    }

    /// One update: `/start` is answered here, anything else goes to the pipeline with its
    /// files stored.
    fn handle(&self, hub: &Hub, me: &Me, update: &Value) {
        let Some(mut c) = convert::convert(update, me) else {
            log::debug!("bot {}: an update without a message from a user, skipped", self.bot_id);
            return;
        };
        if c.start {
            let target = Target {
                group: c.inbound.group,
                chat: c.inbound.reply_to.clone(),
                self_id: Some(me.username.clone()),
            };
            if let Err(e) = self.send(&target, &[OutPart::Text(self.start_message.clone())]) {
                log::warn!("bot {}: cannot answer /start: {e}", self.bot_id);
            }
            return;
        }
        for file in &c.files {
            match self.fetch(hub, file) {
                Ok(media) => c.inbound.media.push(media),
                Err(e) => log::warn!(
                    "bot {}: cannot fetch a received {} ({e}); the message goes on without it",
                    self.bot_id,
                    file.kind
                ),
            }
        }
        let i = &c.inbound;
        if i.text.is_empty() && i.media.is_empty() && !i.mentions_bot {
            return; // a service message, or media that could not be fetched
        }
        hub.deliver(c.inbound);
    }

    /// `getFile` then the download into an attachment, at most 20 MB.
    fn fetch(&self, hub: &Hub, f: &FileRef) -> Result<Media, String> {
        let too_big = || format!("larger than Telegram's {} MB download limit", MAX_DOWNLOAD / (1024 * 1024));
        if f.size.is_some_and(|s| s > MAX_DOWNLOAD) {
            return Err(too_big());
        }
        let file = self
            .client
            .call("getFile", &json!({"file_id": f.file_id}), CALL_TIMEOUT)
            .map_err(|e| e.text())?;
        if file["file_size"].as_u64().is_some_and(|s| s > MAX_DOWNLOAD) {
            return Err(too_big());
        }
        let path = file["file_path"].as_str().ok_or("getFile gave no file_path")?;
        self.client.download(path, MAX_DOWNLOAD, DOWNLOAD_TIMEOUT, |reader| {
            hub.store_media(f.kind, f.filename.as_deref(), f.mime.as_deref(), reader, MAX_DOWNLOAD)
        })
    }

    /// Waits for the limiter's slot for `dest`, then makes `attempt`, again after a 429.
    fn paced(&self, dest: &Dest, attempt: impl Fn() -> Result<Value, CallError>) -> Result<Value, CallError> {
        let mut retries = 0;
        loop {
            let now = Instant::now();
            let booked = lock(&self.limiter).chat(&dest.key, dest.group, now, MAX_QUEUED_WAIT);
            let slot = booked.map_err(|at| {
                CallError::Transport(format!(
                    "too many messages waiting for this chat (Telegram allows about one a second, twenty a minute in a group); try again in {} s",
                    at.saturating_duration_since(now).as_secs().max(1)
                ))
            })?;
            std::thread::sleep(slot.saturating_duration_since(Instant::now()));
            let slot = lock(&self.limiter).global(Instant::now());
            std::thread::sleep(slot.saturating_duration_since(Instant::now()));
            match attempt() {
                Err(CallError::Api { code: 429, retry_after, .. }) if retries < SEND_RETRIES => {
                    retries += 1;
                    log::warn!(
                        "bot {}: Telegram asks to wait {}s before sending",
                        self.bot_id,
                        retry_after.unwrap_or(1)
                    );
                    std::thread::sleep(retry_wait(retry_after));
                }
                other => return other,
            }
        }
    }

    fn send_text(&self, dest: &Dest, text: &str, reply: Option<i64>) -> Result<(), SendError> {
        let mut params = dest.params();
        params["text"] = json!(text);
        if let Some(id) = reply {
            params["reply_parameters"] = reply_parameters(id);
        }
        self.paced(dest, || self.client.call("sendMessage", &params, CALL_TIMEOUT)).map(drop).map_err(failed)
    }

    fn send_media(&self, dest: &Dest, media: &Media, reply: Option<i64>) -> Result<(), SendError> {
        let (len, magic) = inspect(&media.path)?;
        if len > MAX_UPLOAD {
            return Err(SendError::Failed(format!(
                "the file is larger than Telegram's {} MB upload limit",
                MAX_UPLOAD / (1024 * 1024)
            )));
        }
        let gif = media.mime == "image/gif"
            || media.filename.to_ascii_lowercase().ends_with(".gif")
            || magic.starts_with(b"GIF8");
        let (method, field) = match media.kind.as_str() {
            "image" if gif => ("sendAnimation", "animation"),
            // Telegram takes photos up to 10 MB; a larger picture goes as a file.
            "image" if len <= MAX_PHOTO_UPLOAD => ("sendPhoto", "photo"),
            "record" => ("sendVoice", "voice"),
            "video" => ("sendVideo", "video"),
            _ => ("sendDocument", "document"),
        };
        let mut fields = dest.fields();
        if let Some(id) = reply {
            fields.push(("reply_parameters", reply_parameters(id).to_string()));
        }
        let filename = if media.filename.is_empty() { media.attachment_id.as_str() } else { &media.filename };
        let upload = |method: &str, field: &str| {
            let file = Upload { field, filename, mime: &media.mime, path: &media.path, len };
            self.paced(dest, || self.client.upload(method, &fields, &file, UPLOAD_TIMEOUT))
        };
        match upload(method, field) {
            // The user's privacy settings refuse voice notes: the same file as a document,
            // as AstrBot does.
            Err(CallError::Api { description, .. })
                if method == "sendVoice"
                    && description.to_lowercase().contains("voice_messages_forbidden") =>
            {
                upload("sendDocument", "document").map(drop).map_err(failed)
            }
            other => other.map(drop).map_err(failed),
        }
    }
}

impl Adapter for Telegram {
    fn run(&self, hub: &Hub) -> Result<(), RunError> {
        let Some(me) = self.bootstrap(hub)? else { return Ok(()) };
        hub.running();
        self.poll(hub, &me)
    }

    fn send(&self, target: &Target, parts: &[OutPart]) -> Result<(), SendError> {
        let dest = Dest::parse(&target.chat)?;
        let plan = plan(parts);
        if plan.items.is_empty() {
            return Ok(());
        }
        let mut action = dest.params();
        action["action"] = json!(chat_action(&plan.items));
        if let Err(e) = self.client.call("sendChatAction", &action, CALL_TIMEOUT) {
            log::debug!("bot {}: sendChatAction failed: {}", self.bot_id, e.text());
        }
        let mut reply = plan.reply;
        for item in &plan.items {
            match item {
                Item::Text(text) => {
                    for chunk in split::split(text, split::MAX_TEXT) {
                        self.send_text(&dest, &chunk, reply.take())?;
                    }
                }
                Item::Media(media) => self.send_media(&dest, media, reply.take())?,
            }
        }
        Ok(())
    }

    fn test(&self) -> Value {
        match self.get_me(TEST_TIMEOUT) {
            Ok(me) => json!({
                "status": "ok",
                "message": format!("connected as @{}", me.username),
                "username": me.username,
                "bot_user_id": me.id,
            }),
            Err(e) => json!({"status": "error", "message": describe(&e)}),
        }
    }

    /// Nothing to wake: the poll loop checks the stop flag after every call, and a long
    /// poll in flight ends within `telegram_poll_timeout`.
    fn stop(&self) {}
}

/// Where a message goes: `<chat_id>` or `<chat_id>#<thread>`.
#[derive(Debug, Clone, PartialEq)]
struct Dest {
    chat_id: Value,
    thread: Option<i64>,
    /// The limiter's key (the chat, whatever the thread) and whether it is a group.
    key: String,
    group: bool,
}

impl Dest {
    fn parse(chat: &str) -> Result<Dest, SendError> {
        let invalid = || {
            let shown: String = chat.chars().take(64).collect();
            SendError::Invalid(format!(
                "invalid Telegram chat: {shown} (expected a chat id, an optional #thread, or @channelusername)"
            ))
        };
        let (id, thread) = match chat.split_once('#') {
            Some((id, t)) => (id, Some(t.parse::<i64>().ok().filter(|t| *t > 0).ok_or_else(invalid)?)),
            None => (chat, None),
        };
        let (chat_id, group) = if let Ok(n) = id.parse::<i64>() {
            (json!(n), n < 0)
        } else if id.strip_prefix('@').is_some_and(|u| {
            (1..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }) {
            (json!(id), true)
        } else {
            return Err(invalid());
        };
        Ok(Dest { chat_id, thread, key: id.to_owned(), group })
    }

    /// `chat_id` and `message_thread_id` as JSON parameters.
    fn params(&self) -> Value {
        let mut p = json!({"chat_id": self.chat_id});
        if let Some(t) = self.thread {
            p["message_thread_id"] = json!(t);
        }
        p
    }

    /// The same as form fields.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let chat = match &self.chat_id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut f = vec![("chat_id", chat)];
        if let Some(t) = self.thread {
            f.push(("message_thread_id", t.to_string()));
        }
        f
    }
}

/// What a message's parts become: texts (consecutive ones joined) and media in order.
#[derive(Debug, PartialEq)]
enum Item<'a> {
    Text(String),
    Media(&'a Media),
}

#[derive(Debug, PartialEq)]
struct Plan<'a> {
    items: Vec<Item<'a>>,
    /// The message to quote (on the first message sent).
    reply: Option<i64>,
}

fn plan(parts: &[OutPart]) -> Plan<'_> {
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut mentions = String::new();
    let mut reply = None;
    for part in parts {
        match part {
            OutPart::Text(t) => match items.last_mut() {
                Some(Item::Text(s)) => s.push_str(t),
                _ => items.push(Item::Text(t.clone())),
            },
            OutPart::At { id, name } => {
                mentions.push('@');
                mentions.push_str(if name.is_empty() { id } else { name });
                mentions.push(' ');
            }
            OutPart::Reply { message_id } => reply = message_id.parse::<i64>().ok(),
            OutPart::Media(m) => items.push(Item::Media(m)),
        }
    }
    if !mentions.is_empty() {
        match items.iter_mut().find_map(|i| match i {
            Item::Text(s) => Some(s),
            Item::Media(_) => None,
        }) {
            Some(s) => s.insert_str(0, &mentions),
            None => items.insert(0, Item::Text(mentions.trim_end().to_owned())),
        }
    }
    Plan { items, reply }
}

/// The one chat action shown before sending, by AstrBot's priority.
fn chat_action(items: &[Item<'_>]) -> &'static str {
    let has = |kind: &str| items.iter().any(|i| matches!(i, Item::Media(m) if m.kind == kind));
    if has("record") {
        "upload_voice"
    } else if has("video") {
        "upload_video"
    } else if has("file") {
        "upload_document"
    } else if has("image") {
        "upload_photo"
    } else {
        "typing"
    }
}

fn reply_parameters(message_id: i64) -> Value {
    json!({"message_id": message_id, "allow_sending_without_reply": true})
}

/// An attachment's size and first bytes (for a GIF's signature).
fn inspect(path: &std::path::Path) -> Result<(u64, Vec<u8>), SendError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| SendError::Failed(format!("cannot read the attachment: {e}"));
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let mut magic = Vec::with_capacity(4);
    file.take(4).read_to_end(&mut magic).map_err(unreadable)?;
    Ok((len, magic))
}

fn failed(e: CallError) -> SendError {
    SendError::Failed(match e {
        CallError::Api { description, .. } => description,
        CallError::Transport(t) => t,
    })
}

/// A call's failure as the bot's state and the test show it (scrubbed already).
fn describe(e: &CallError) -> String {
    match e {
        CallError::Api { code, description, .. } if e.bad_token() => {
            format!("Telegram refused the token ({code} {description})")
        }
        CallError::Api { code: 409, description, .. } if description.contains("other getUpdates") => {
            format!("another program is polling with this token ({description})")
        }
        CallError::Api { code, description, .. } => format!("Telegram answered {code}: {description}"),
        CallError::Transport(t) => t.clone(),
    }
}

/// The wait after `failures` failures in a row: 1 s, ×1.5 each time, at most 30 s.
fn backoff(failures: u32) -> Duration {
    let exp = i32::try_from(failures.clamp(1, 20) - 1).unwrap_or(0);
    Duration::from_secs_f64(1.5f64.powi(exp).min(30.0))
}

/// The wait a 429 asks for, plus half a second, bounded.
fn retry_wait(retry_after: Option<u64>) -> Duration {
    Duration::from_secs(retry_after.unwrap_or(1).min(MAX_RETRY_AFTER)) + Duration::from_millis(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chats_threads_and_channels_parse_and_anything_else_is_refused() {
        let d = Dest::parse("-100123#7").unwrap();
        assert_eq!(d.params(), json!({"chat_id": -100123, "message_thread_id": 7}));
        assert!(d.group);
        assert_eq!(
            d.fields(),
            vec![("chat_id", "-100123".to_owned()), ("message_thread_id", "7".to_owned())]
        );
        let d = Dest::parse("4242").unwrap();
        assert_eq!((d.params(), d.group), (json!({"chat_id": 4242}), false));
        assert_eq!(Dest::parse("@my_channel").unwrap().fields(), vec![("chat_id", "@my_channel".to_owned())]);
        for bad in ["", "abc", "12#x", "12#-1", "@", "@a b", "1 2", "12#"] {
            assert!(matches!(Dest::parse(bad), Err(SendError::Invalid(_))), "{bad}");
        }
    }

    fn media(kind: &str) -> Media {
        Media {
            kind: kind.into(),
            attachment_id: "a".into(),
            path: "/nonexistent".into(),
            filename: "x".into(),
            mime: "application/octet-stream".into(),
        }
    }

    #[test]
    fn parts_plan_mentions_first_quote_once_and_texts_joined() {
        let img = media("image");
        let parts = vec![
            OutPart::Reply { message_id: "77".into() },
            OutPart::Text("hello ".into()),
            OutPart::Text("world".into()),
            OutPart::At { id: "1".into(), name: "ann".into() },
            OutPart::Media(img.clone()),
            OutPart::Text("after".into()),
        ];
        let p = plan(&parts);
        assert_eq!(p.reply, Some(77));
        assert_eq!(
            p.items,
            vec![Item::Text("@ann hello world".into()), Item::Media(&img), Item::Text("after".into())]
        );
        assert_eq!(chat_action(&p.items), "upload_photo");
        let only_at = [OutPart::At { id: "5".into(), name: String::new() }];
        assert_eq!(plan(&only_at).items, vec![Item::Text("@5".into())]);
        let voice = [OutPart::Media(media("record")), OutPart::Media(media("image"))];
        assert_eq!(chat_action(&plan(&voice).items), "upload_voice");
        assert_eq!(chat_action(&plan(&[OutPart::Text("x".into())]).items), "typing");
    }

    #[test]
    fn backoff_grows_by_half_to_thirty_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_millis(1500));
        assert_eq!(backoff(3), Duration::from_millis(2250));
        assert_eq!(backoff(50), Duration::from_secs(30));
        assert_eq!(retry_wait(Some(2)), Duration::from_millis(2500));
        assert_eq!(retry_wait(Some(100_000)), Duration::from_millis(60_500));
    }

    #[test]
    fn errors_are_described_without_the_token() {
        let unauthorized =
            CallError::Api { code: 401, description: "Unauthorized".into(), retry_after: None };
        assert_eq!(describe(&unauthorized), "Telegram refused the token (401 Unauthorized)");
        let other = CallError::Api {
            code: 409,
            description: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running".into(),
            retry_after: None,
        };
        assert!(describe(&other).starts_with("another program is polling"));
        let t = Telegram::new(
            "tg",
            &json!({"telegram_token": "123:SECRETsecret", "telegram_api_base_url": "http://127.0.0.1:9/bot"}),
        )
        .unwrap();
        // Port 9 (discard) is closed on loopback: connection refused, a text naming no token.
        let v = t.test();
        assert_eq!(v["status"], "error");
        assert!(!v.to_string().contains("SECRETsecret"), "{v}");
        assert!(Telegram::new("tg", &json!({"telegram_token": "nope"})).is_err());
    }
}
