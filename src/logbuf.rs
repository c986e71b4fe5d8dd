//! The recent log lines, in memory, for the operator's routes (`api::operator`): the
//! logger writes every line of ours to stderr as before and also here, into a ring buffer
//! of at most [`MAX_LINES`] lines and [`MAX_BYTES`] bytes, each message cut at
//! [`MAX_MESSAGE_BYTES`]. Live subscribers (at most [`MAX_SUBSCRIBERS`]) get each new line
//! as a finished SSE frame through a bounded channel: a subscriber that does not keep up
//! misses lines, one that is gone is dropped at the next line, and neither ever blocks the
//! thread that logs.
//!
//! Only our own crate's lines are kept (target `astrbot...`): a dependency's debug output
//! (an HTTP client's headers, say) could carry a provider's key, and this buffer is served
//! over HTTP. Our code never logs a key, a token or a password; that rule is what keeps
//! them out of here.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde_json::{Value, json};

/// Lines kept for the history.
pub const MAX_LINES: usize = 2_000;
/// Bytes of messages kept, over all lines.
pub const MAX_BYTES: usize = 2 << 20;
/// Bytes of one message; the rest is cut and marked with `…`.
pub const MAX_MESSAGE_BYTES: usize = 4_096;
/// Live subscribers at once.
pub const MAX_SUBSCRIBERS: usize = 16;
/// Frames a live subscriber may be behind before it misses lines.
const SUBSCRIBER_QUEUE: usize = 256;

/// One log line.
#[derive(Debug, Clone)]
pub struct Line {
    /// Increasing from 1 over the process's life, so a client can tell a gap.
    pub seq: u64,
    /// Microseconds since the epoch.
    pub time: i64,
    pub level: Level,
    pub target: String,
    pub message: String,
}

impl Line {
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "time": crate::timefmt::iso(self.time),
            "level": self.level.as_str(),
            "target": self.target,
            "message": self.message,
        })
    }
}

struct Subscriber {
    level: LevelFilter,
    tx: SyncSender<String>,
}

struct Ring {
    lines: VecDeque<Line>,
    bytes: usize,
    seq: u64,
    subscribers: Vec<Subscriber>,
    /// Set at shutdown: the live streams end and no new one starts.
    closed: bool,
}

static RING: Mutex<Ring> =
    Mutex::new(Ring { lines: VecDeque::new(), bytes: 0, seq: 0, subscribers: Vec::new(), closed: false });

fn ring() -> std::sync::MutexGuard<'static, Ring> {
    // Every change is complete under the lock, so a poisoned ring is still consistent.
    RING.lock().unwrap_or_else(|e| e.into_inner())
}

/// `message` cut to at most `MAX_MESSAGE_BYTES` at a character boundary.
fn bounded(message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES { cut(message) } else { message }
}

/// `message` shortened to make room for `…` within `MAX_MESSAGE_BYTES`, and marked.
fn cut(mut message: String) -> String {
    let mut end = message.len().min(MAX_MESSAGE_BYTES - '…'.len_utf8());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push('…');
    message
}

/// Adds a line; sends it to the live subscribers that want its level.
pub fn push(level: Level, target: &str, message: String, time: i64) {
    let message = bounded(message);
    let mut ring = ring();
    ring.seq += 1;
    let line = Line { seq: ring.seq, time, level, target: target.to_owned(), message };
    if !ring.subscribers.is_empty() {
        let frame = crate::sse::frame(&line.to_json());
        // A full queue misses this line; a gone subscriber is dropped. Never a wait.
        ring.subscribers.retain(|s| {
            level > s.level || !matches!(s.tx.try_send(frame.clone()), Err(TrySendError::Disconnected(_)))
        });
    }
    ring.bytes += line.message.len() + line.target.len();
    ring.lines.push_back(line);
    while ring.lines.len() > MAX_LINES || ring.bytes > MAX_BYTES {
        let Some(old) = ring.lines.pop_front() else { break };
        ring.bytes -= old.message.len() + old.target.len();
    }
}

/// The last `limit` lines at `level` or more severe, oldest first.
pub fn history(limit: usize, level: LevelFilter) -> Vec<Line> {
    let ring = ring();
    let mut lines: Vec<Line> =
        ring.lines.iter().rev().filter(|l| l.level <= level).take(limit).cloned().collect();
    lines.reverse();
    lines
}

/// Why a live subscription was refused.
#[derive(Debug, PartialEq)]
pub enum SubscribeError {
    /// `MAX_SUBSCRIBERS` streams are open.
    Full,
    /// The server is stopping.
    Closed,
}

/// A receiver of the SSE frames of new lines at `level` or more severe.
pub fn subscribe(level: LevelFilter) -> Result<Receiver<String>, SubscribeError> {
    let mut ring = ring();
    if ring.closed {
        return Err(SubscribeError::Closed);
    }
    if ring.subscribers.len() >= MAX_SUBSCRIBERS {
        // Streams whose client left during a quiet spell still hold their place: a comment
        // frame (ignored by SSE clients) finds them.
        ring.subscribers
            .retain(|s| !matches!(s.tx.try_send(":\n\n".into()), Err(TrySendError::Disconnected(_))));
        if ring.subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(SubscribeError::Full);
        }
    }
    let (tx, rx) = sync_channel(SUBSCRIBER_QUEUE);
    ring.subscribers.push(Subscriber { level, tx });
    Ok(rx)
}

/// Ends every live stream and refuses new ones: called when the server stops, so that its
/// drain does not wait for streams that would never end.
pub fn close() {
    let mut ring = ring();
    ring.closed = true;
    ring.subscribers.clear();
}

/// A level filter from a query value: `error`, `warn`, `info`, `debug` or `trace`, any case.
pub fn parse_level(v: &str) -> Option<LevelFilter> {
    let v = v.trim();
    if v.len() > 8 {
        return None;
    }
    match v.to_ascii_lowercase().as_str() {
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// The logger that writes into the ring, beside simplelog's stderr logger.
pub struct BufferLogger {
    level: LevelFilter,
}

impl BufferLogger {
    pub fn new(level: LevelFilter) -> BufferLogger {
        BufferLogger { level }
    }
}

/// Our crate's targets: `astrbot` and its modules.
fn ours(target: &str) -> bool {
    target == "astrbot" || target.starts_with("astrbot::")
}

impl Log for BufferLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level && ours(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // Formatted into a bounded string: a long message is never built whole.
            let mut message = Capped::default();
            let _ = std::fmt::write(&mut message, *record.args());
            let text = if message.cut { cut(message.text) } else { message.text };
            push(record.level(), record.target(), text, crate::timefmt::now_micros());
        }
    }

    fn flush(&self) {}
}

/// A `fmt::Write` that keeps the first `MAX_MESSAGE_BYTES` bytes (at a character
/// boundary) and notes whether anything was dropped.
#[derive(Default)]
struct Capped {
    text: String,
    cut: bool,
}

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = MAX_MESSAGE_BYTES.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
        } else {
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
            self.cut = true;
        }
        Ok(())
    }
}

impl simplelog::SharedLogger for BufferLogger {
    fn level(&self) -> LevelFilter {
        self.level
    }

    fn config(&self) -> Option<&simplelog::Config> {
        None
    }

    fn as_log(self: Box<Self>) -> Box<dyn Log> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded_at_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let short = bounded(long);
        assert!(short.len() <= MAX_MESSAGE_BYTES && short.ends_with('…'));
        assert_eq!(bounded("short".into()), "short");
        let mut capped = Capped::default();
        let _ = std::fmt::write(&mut capped, format_args!("{}{}", "a".repeat(MAX_MESSAGE_BYTES - 1), "€€"));
        assert!(capped.cut && capped.text.len() == MAX_MESSAGE_BYTES - 1, "{}", capped.text.len());
        let marked = cut(capped.text);
        assert!(marked.len() <= MAX_MESSAGE_BYTES && marked.ends_with('…'));
    }

    #[test]
    fn levels_parse_and_filter() {
        assert_eq!(parse_level("WARN"), Some(LevelFilter::Warn));
        assert_eq!(parse_level(&"x".repeat(1 << 20)), None);
        assert_eq!(parse_level("off"), None);
        // The ring is shared by the tests of this binary: look only at our own lines.
        push(Level::Error, "astrbot::test", "ring-test-error".into(), 0);
        push(Level::Debug, "astrbot::test", "ring-test-debug".into(), 0);
        let warn = history(MAX_LINES, LevelFilter::Warn);
        assert!(warn.iter().any(|l| l.message == "ring-test-error"));
        assert!(!warn.iter().any(|l| l.message == "ring-test-debug"));
        assert!(history(MAX_LINES, LevelFilter::Trace).iter().any(|l| l.message == "ring-test-debug"));
        let rx = subscribe(LevelFilter::Info).unwrap();
        push(Level::Debug, "astrbot::test", "ring-test-quiet".into(), 0);
        push(Level::Info, "astrbot::test", "ring-test-live".into(), 0);
        let frame = rx.try_recv().unwrap();
        assert!(frame.starts_with("data: ") && frame.contains("ring-test-live"), "{frame}");
        drop(rx);
        push(Level::Info, "astrbot::test", "ring-test-after".into(), 0);
    }
}
