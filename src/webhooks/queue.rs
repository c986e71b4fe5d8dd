//! The memory side of the outbox: the bounded queue that `Outbox::push` appends to and the
//! writer thread drains, and the rate limit of the log lines about dropped events.
//!
//! The queue is plain data under the outbox's mutex; it never blocks, never allocates
//! beyond its bound and reads no clock (the caller passes `Instant`s), so a request
//! thread pays a push and nothing else.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Event;

/// At most this many events wait in memory...
pub const MAX_QUEUED: usize = 10_000;
/// ...and at most this many bytes of them (see [`event_size`]).
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// The memory an event holds, roughly: its strings and the bookkeeping around them.
pub fn event_size(e: &Event) -> usize {
    e.body.len() + e.event_id.len() + e.key_id.len() + 96
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
#[derive(Debug, Default, PartialEq)]
pub struct Pushed {
    /// The queue was empty: the writer may be asleep and must be woken.
    pub was_empty: bool,
    /// Events dropped that are due to be logged now.
    pub log_dropped: Option<u64>,
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
        let log_dropped = if dropped > 0 { self.drop_log.note(dropped, now) } else { None };
        Pushed { was_empty, log_dropped }
    }

    /// Takes up to `max` of the oldest events and the dropped counts, for one write.
    pub fn take(&mut self, max: usize) -> (Vec<Event>, HashMap<String, i64>) {
        let n = max.min(self.events.len());
        let batch: Vec<Event> = self.events.drain(..n).collect();
        self.bytes -= batch.iter().map(event_size).sum::<usize>();
        (batch, std::mem::take(&mut self.dropped))
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
        self.enforce_bound()
    }

    fn enforce_bound(&mut self) -> u64 {
        let mut dropped = 0;
        while self.events.len() > MAX_QUEUED || self.bytes > MAX_QUEUED_BYTES {
            let Some(oldest) = self.events.pop_front() else { break };
            self.bytes -= event_size(&oldest);
            *self.dropped.entry(oldest.key_id).or_default() += 1;
            dropped += 1;
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
            body: "x".repeat(body_len),
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
        assert_eq!(q.put_back(batch, dropped), 0);
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
