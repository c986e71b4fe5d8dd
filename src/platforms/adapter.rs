//! What an adapter is and what it exchanges with the server: the [`Adapter`] trait, the
//! messages both ways ([`Inbound`], [`OutPart`] to a [`Target`]), the [`Hub`] an adapter
//! runs with, and a bot's [`State`]. Nothing here knows the application: the hub's sink and
//! media store are closures the manager makes, so adapters can be built and tested alone.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use crate::timefmt::now_micros;

/// A message received by a bot, converted by its adapter.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    /// A group chat (`GroupMessage`), else a private one (`FriendMessage`).
    pub group: bool,
    /// The UMO's session part as AstrBot builds it: Telegram's chat id (with `#<thread>` in
    /// a forum topic), OneBot's user id (private) or group id. `unique_session` is applied
    /// by the pipeline, not here.
    pub session_id: String,
    /// The group's id for the whitelist (Telegram: the chat id with `#<thread>`; OneBot:
    /// the group id); `None` in a private chat.
    pub group_id: Option<String>,
    /// Where a reply goes, in the form [`Target::chat`] takes (Telegram: chat id with an
    /// optional `#<thread>`; OneBot: the group id, or the user id in a private chat).
    pub reply_to: String,
    /// The sender's id as AstrBot compares it with `admins_id` (Telegram's numeric
    /// `from.id`, the QQ number).
    pub sender_id: String,
    pub sender_name: String,
    /// The bot's own id on the platform (Telegram: its username; OneBot: its QQ number).
    pub self_id: String,
    /// The platform's id of this message (for a quote in the reply).
    pub message_id: String,
    /// AstrBot's `message_str`: the text with a mention of the bot removed (other mentions
    /// kept as text), trimmed.
    pub text: String,
    /// Media received with the message, already stored as attachments.
    pub media: Vec<Media>,
    /// The message @-mentions the bot.
    pub mentions_bot: bool,
    /// The message @-mentions everyone (`@all`).
    pub mentions_all: bool,
    /// The message replies to one of the bot's messages.
    pub replies_to_bot: bool,
    /// The message's first component is an @-mention of someone other than the bot (a
    /// wake prefix then does not wake it in a group, as in AstrBot).
    pub first_mention_other: bool,
}

/// A stored attachment sent or received with a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    /// `image`, `record` (voice), `video` or `file`.
    pub kind: String,
    pub attachment_id: String,
    /// The file under the data folder's `attachments/`.
    pub path: PathBuf,
    /// The display name (sanitised).
    pub filename: String,
    pub mime: String,
}

/// One part of an outgoing message.
#[derive(Debug, Clone, PartialEq)]
pub enum OutPart {
    Text(String),
    /// An @-mention of a user (`name` for platforms that mention by name).
    At {
        id: String,
        name: String,
    },
    /// Quote the message with this platform id.
    Reply {
        message_id: String,
    },
    Media(Media),
}

/// Where an outgoing message goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// A group chat: the UMO's message type, or the received message's.
    pub group: bool,
    /// The chat: [`Inbound::reply_to`] for a reply; the UMO's session part for a proactive
    /// message (Telegram: chat id with an optional `#<thread>`; OneBot: user or group id,
    /// a group's `<user>_<group>` form meaning the group).
    pub chat: String,
    /// The bot account that received the message being answered (OneBot routes a call to
    /// the connection of this `self_id`); `None` for a proactive message.
    pub self_id: Option<String>,
}

/// Why a send failed, as the IM route reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    /// The target or message cannot be sent at all (400 with this text, AstrBot's
    /// `ValueError`).
    Invalid(String),
    /// The platform refused or could not be reached (`Failed to send message: <text>`).
    Failed(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Invalid(s) | SendError::Failed(s) => f.write_str(s),
        }
    }
}

/// Why an adapter's [`Adapter::run`] returned before it was asked to stop.
#[derive(Debug, Clone, PartialEq)]
pub enum RunError {
    /// The configuration cannot work (a bad token, a port in use): the adapter stays
    /// stopped in `error` until the bot is changed or enabled again.
    Fatal(String),
    /// Something passing went wrong: the supervisor runs the adapter again after a backoff.
    Retry(String),
}

/// A platform adapter of one configured bot.
pub trait Adapter: Send + Sync {
    /// Receives until `hub.stopping()`; returns `Ok(())` once stopped. Every message
    /// received goes to [`Hub::deliver`]. Called again after a [`RunError::Retry`] or a
    /// panic, on the same adapter.
    fn run(&self, hub: &Hub) -> Result<(), RunError>;
    /// Sends a message (a reply or a proactive message). May block for rate limits.
    fn send(&self, target: &Target, parts: &[OutPart]) -> Result<(), SendError>;
    /// A live connectivity check for `POST /api/v1/bots/test`: `{"status": "ok" | "error",
    /// "message": ...}` plus what the platform reports (Telegram's bot username, OneBot's
    /// connected accounts).
    fn test(&self) -> Value;
    /// Called once when the bot stops: wake whatever `run` blocks on (close listeners and
    /// connections), so that it returns within a second.
    fn stop(&self);
}

/// Hands a received message to the pipeline.
pub type Sink = Arc<dyn Fn(Inbound) + Send + Sync>;
/// Stores received bytes as an attachment: kind, file name, MIME type, data, size cap.
pub type MediaStore = Arc<
    dyn Fn(&str, Option<&str>, Option<&str>, &mut dyn std::io::Read, u64) -> Result<Media, String>
        + Send
        + Sync,
>;

/// What an adapter sees of the server while it runs.
pub struct Hub {
    pub bot_id: String,
    pub(crate) adapter: Arc<dyn Adapter>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) state: Arc<StateCell>,
    pub(crate) sink: Sink,
    pub(crate) media: MediaStore,
}

impl Hub {
    /// The bot is being stopped (disabled, changed, deleted, or the server is going down).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d`, returning early (true) when the bot is being stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = std::time::Instant::now() + d;
        while !self.stopping() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        true
    }

    /// Hands a received message to the pipeline; returns at once (the answer is made and
    /// sent on a thread of its own). Nothing is delivered once the bot is stopping.
    pub fn deliver(&self, msg: Inbound) {
        if !self.stopping() {
            (self.sink)(msg);
        }
    }

    /// Records that the adapter is connected and receiving.
    pub fn running(&self) {
        self.state.set(Status::Running, None);
    }

    /// Records a problem the adapter keeps running through (a failed poll it will retry):
    /// shown in the bot's state, and logged once per change.
    pub fn trouble(&self, message: &str) {
        self.state.set(Status::Error, Some(message.to_owned()));
    }

    /// Stores received bytes as an attachment (as an upload would be) and returns it.
    /// `max` bounds what is read; more is an error and nothing is kept.
    pub fn store_media(
        &self,
        kind: &str,
        filename: Option<&str>,
        mime: Option<&str>,
        data: &mut dyn std::io::Read,
        max: u64,
    ) -> Result<Media, String> {
        (self.media)(kind, filename, mime, data, max)
    }
}

/// An adapter's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Starting,
    Running,
    Stopped,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Error => "error",
        }
    }
}

/// A bot's state as shown: the status, the last error and since when.
#[derive(Debug, Clone)]
pub struct State {
    pub status: Status,
    pub error: Option<String>,
    /// When the status last changed, in microseconds.
    pub since: i64,
    /// Restarts after failures since the bot was started.
    pub restarts: u32,
}

impl State {
    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status.as_str(),
            "error": self.error,
            "since": crate::timefmt::iso(self.since),
            "restarts": self.restarts,
        })
    }

    pub fn stopped() -> State {
        State { status: Status::Stopped, error: None, since: now_micros(), restarts: 0 }
    }
}

/// A bot's state, shared by its supervisor, its adapter (through the hub) and readers.
pub struct StateCell {
    bot_id: String,
    state: Mutex<State>,
}

impl StateCell {
    pub fn new(bot_id: &str) -> StateCell {
        StateCell {
            bot_id: bot_id.to_owned(),
            state: Mutex::new(State {
                status: Status::Starting,
                error: None,
                since: now_micros(),
                restarts: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the status; a change is logged (an error at warn, with its text).
    pub fn set(&self, status: Status, error: Option<String>) {
        let mut state = self.lock();
        let changed = state.status != status || state.error != error;
        if !changed {
            return;
        }
        match (&error, status) {
            (Some(e), _) => log::warn!("bot {}: {} ({e})", self.bot_id, status.as_str()),
            (None, _) => log::info!("bot {}: {}", self.bot_id, status.as_str()),
        }
        state.status = status;
        if status != Status::Error || error.is_some() {
            state.error = error;
        }
        state.since = now_micros();
    }

    pub fn get(&self) -> State {
        self.lock().clone()
    }

    pub fn restarted(&self) {
        self.lock().restarts += 1;
    }
}
