//! The memory side of the outbox: the bounded queue that `Outbox::push` appends to and the
//! writer thread drains, and the rate limit of the log lines about dropped events.
//!
//! The queue is plain data under the outbox's mutex; it never blocks, never allocates
//! beyond its bound and reads no clock (the caller passes `Instant`s), so a request
//! thread pays a push and nothing else.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One event: the JSON text to POST, made by the HTTP side for a keyed request.
#[derive(Debug)]
pub struct Event {
    pub event_id: String,
    pub key_id: String,
    pub created_at: i64,
    pub body: Body,
}

/// An event's JSON text, or what makes it: the HTTP side defers the formatting to the
/// writer's thread, so that a request pays a memory push and nothing else, and an event
/// dropped from a full queue is never formatted at all.
pub enum Body {
    Ready(String),
    /// `size`: the memory the parts hold until they are rendered (for the queue's bound).
    Deferred {
        size: usize,
        render: Box<dyn FnOnce() -> String + Send>,
    },
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Ready(text) => f.debug_tuple("Ready").field(text).finish(),
            Body::Deferred { size, .. } => f.debug_struct("Deferred").field("size", size).finish(),
        }
    }
}

impl Event {
    /// The event with its text made (on the writer's thread).
    pub fn rendered(self) -> Event {
        match self.body {
            Body::Ready(_) => self,
            Body::Deferred { render, .. } => Event { body: Body::Ready(render()), ..self },
        }
    }

    /// The JSON text; empty while it is deferred (the writer renders first).
    pub fn text(&self) -> &str {
        match &self.body {
            Body::Ready(text) => text,
            Body::Deferred { .. } => "",
        }
    }
}

/// At most this many events wait in memory...
pub const MAX_QUEUED: usize = 10_000;
/// ...and at most this many bytes of them (see [`event_size`]).
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// The memory an event holds, roughly: its strings and the bookkeeping around them.
pub fn event_size(e: &Event) -> usize {
    let body = match &e.body {
        Body::Ready(text) => text.len(),
        Body::Deferred { size, .. } => *size,
    };
    body + e.event_id.len() + e.key_id.len() + 96
}

/// Events waiting for the writer, in push order, and the events dropped per key since the
/// last write (the writer adds them to `api_keys.webhook_dropped`).
#[derive(Default)]
pub struct Queue {
    events: VecDeque<Event>,
    bytes: usize,
    dropped: HashMap<String, i64>,
    pub drop_log: DropLog,
}

/// What a push did, for the caller to act on outside the lock.
#[derive(Debug, Default)]
pub struct Pushed {
    /// The queue was empty: the writer may be asleep and must be woken.
    pub was_empty: bool,
    /// Events dropped that are due to be logged now.
    pub log_dropped: Option<u64>,
    /// The events this push dropped, freed by the caller after the lock is released.
    pub dropped: Vec<Event>,
}

impl Queue {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.dropped.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Appends an event, dropping the oldest beyond the bound.
    pub fn push(&mut self, event: Event, now: Instant) -> Pushed {
        let was_empty = self.is_empty();
        self.bytes += event_size(&event);
        self.events.push_back(event);
        let dropped = self.enforce_bound();
        let log_dropped = match dropped.is_empty() {
            true => None,
            false => self.drop_log.note(dropped.len() as u64, now),
        };
        Pushed { was_empty, log_dropped, dropped }
    }

    /// Takes up to `max` of the oldest events and the dropped counts, for one write. The
    /// writer runs at a low priority and request threads wait for this lock, so the usual
    /// case (everything fits) swaps the whole queue out in constant time: a writer
    /// preempted while holding the lock would stall every request that pushes.
    pub fn take(&mut self, max: usize) -> (VecDeque<Event>, HashMap<String, i64>) {
        let dropped = std::mem::take(&mut self.dropped);
        if self.events.len() <= max {
            self.bytes = 0;
            return (std::mem::take(&mut self.events), dropped);
        }
        let batch: VecDeque<Event> = self.events.drain(..max).collect();
        self.bytes -= batch.iter().map(event_size).sum::<usize>();
        (batch, dropped)
    }

    /// Puts back a batch whose write failed, ahead of what came since, so that the order
    /// is kept; the bound still holds, so a database that refuses writes for long costs
    /// dropped events, not memory. Returns how many were dropped now.
    pub fn put_back(&mut self, batch: Vec<Event>, dropped: HashMap<String, i64>) -> u64 {
        self.bytes += batch.iter().map(event_size).sum::<usize>();
        for e in batch.into_iter().rev() {
            self.events.push_front(e);
        }
        for (key_id, n) in dropped {
            *self.dropped.entry(key_id).or_default() += n;
        }
        self.enforce_bound().len() as u64
    }

    /// Drops the oldest events beyond the bound and returns them, to be freed outside
    /// the lock.
    fn enforce_bound(&mut self) -> Vec<Event> {
        let mut dropped = Vec::new();
        while self.events.len() > MAX_QUEUED || self.bytes > MAX_QUEUED_BYTES {
            let Some(oldest) = self.events.pop_front() else { break };
            self.bytes -= event_size(&oldest);
            match self.dropped.get_mut(&oldest.key_id) {
                Some(n) => *n += 1,
                None => {
                    self.dropped.insert(oldest.key_id.clone(), 1);
                }
            }
            dropped.push(oldest);
        }
        dropped
    }
}

/// At most one log line per interval about dropped events, carrying the count since the
/// previous line: an outbox that overflows for hours must not flood the log.
#[derive(Debug, Default)]
pub struct DropLog {
    unlogged: u64,
    last: Option<Instant>,
}

const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl DropLog {
    /// Counts `n` dropped events; returns the count to log if a line is due at `now`.
    pub fn note(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.unlogged += n;
        if self.last.is_some_and(|last| now.duration_since(last) < DROP_LOG_INTERVAL) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, i: usize, body_len: usize) -> Event {
        Event {
            event_id: format!("msg_{i}"),
            key_id: key.into(),
            created_at: i as i64,
            body: Body::Ready("x".repeat(body_len)),
        }
    }

    #[test]
    fn the_oldest_are_dropped_beyond_the_count_and_counted_per_key() {
        let mut q = Queue::default();
        let t = Instant::now();
        assert!(q.push(event("a", 0, 1), t).was_empty);
        assert!(!q.push(event("b", 1, 1), t).was_empty);
        for i in 2..MAX_QUEUED + 2 {
            q.push(event("c", i, 1), t);
        }
        assert_eq!(q.len(), MAX_QUEUED);
        let (batch, dropped) = q.take(usize::MAX);
        assert_eq!(batch[0].event_id, "msg_2", "the two oldest went");
        assert_eq!(dropped, HashMap::from([("a".into(), 1), ("b".into(), 1)]));
        assert!(q.is_empty());
        assert_eq!(q.bytes, 0);
    }

    #[test]
    fn the_oldest_are_dropped_beyond_the_bytes() {
        let mut q = Queue::default();
        let t = Instant::now();
        for i in 0..17 {
            q.push(event("a", i, 1 << 20), t);
        }
        assert!(q.bytes <= MAX_QUEUED_BYTES);
        let (batch, dropped) = q.take(usize::MAX);
        assert_eq!(batch.len(), 15, "15 MiB plus bookkeeping fit, not 16");
        assert_eq!(batch[0].event_id, "msg_2");
        assert_eq!(dropped["a"], 2);
    }

    #[test]
    fn a_failed_batch_goes_back_in_front() {
        let mut q = Queue::default();
        let t = Instant::now();
        for i in 0..5 {
            q.push(event("a", i, 1), t);
        }
        let (batch, dropped) = q.take(3);
        q.push(event("a", 5, 1), t);
        assert_eq!(q.put_back(Vec::from(batch), dropped), 0);
        let (all, _) = q.take(usize::MAX);
        let ids: Vec<_> = all.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["msg_0", "msg_1", "msg_2", "msg_3", "msg_4", "msg_5"]);
    }

    #[test]
    fn drop_log_lines_are_rate_limited() {
        let mut log = DropLog::default();
        let t = Instant::now();
        assert_eq!(log.note(1, t), Some(1));
        assert_eq!(log.note(5, t + Duration::from_secs(1)), None);
        assert_eq!(log.note(2, t + Duration::from_secs(10)), Some(7));
    }
}
