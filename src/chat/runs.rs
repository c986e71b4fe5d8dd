//! The event log of each chat run, in memory: the one place a run's events go, whoever
//! reads them. The SSE chat (`POST /api/v1/chat`), the WebSocket chat (`/api/v1/chat/ws`)
//! and the resume route (`GET /api/v1/chat/runs/{run_id}/stream`) are subscribers of the
//! same log, each with its own framing, so they carry the same events in the same order.
//!
//! Event ids: a run's events are numbered from 1 (`run_started`) in the order they were
//! logged, proactive messages delivered into the run included. The SSE chat keeps
//! AstrBot's frames (no `id:` line) and the WebSocket its plain JSON; the resume stream
//! writes `id: <n>` before each `data:` line, and a client that counted the events it got
//! resumes with `Last-Event-ID: <n>` (or `?last_event_id=`). The frames written by the
//! HTTP layer before the run (`session_id`, `user_message_saved`) are not run events.
//!
//! Bounds: [`MAX_LOGS`] runs, [`MAX_RUN_BYTES`] of events per run (beyond, its oldest
//! events are dropped: a resume from before them starts at the oldest one kept, and the ids
//! show the gap), [`MAX_TOTAL_BYTES`] over all runs (finished runs are evicted first,
//! oldest first), a finished run kept [`RETAIN`] after its end. A subscriber's queue holds
//! [`QUEUE`] frames beyond its backlog; a subscriber that lets it fill is dropped (its
//! stream ends without `end`, as AstrBot's does) and may resume.
//!
//! Only the caller that started a run may read it: its owner is the caller's identity
//! (`api_key:<key_id>`, or the administrator's name).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sse;

/// Runs whose events are kept.
pub const MAX_LOGS: usize = 1024;
/// Bytes of events kept per run (as serialised JSON).
pub const MAX_RUN_BYTES: usize = 1 << 20;
/// Bytes of events kept over all runs.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;
/// How long a finished run stays resumable.
pub const RETAIN: Duration = Duration::from_secs(600);
/// Frames a subscriber may have pending beyond its backlog.
pub const QUEUE: usize = 1024;

/// How a subscriber wants its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// AstrBot's SSE frame, `data: <json>\n\n`.
    Sse,
    /// `id: <n>\ndata: <json>\n\n`, for the resume stream.
    SseWithIds,
    /// The JSON text alone, for a WebSocket (AstrBot's WebSocket `message_saved` shape).
    Json,
}

impl Framing {
    pub fn frame(self, seq: u64, event: &Value, session_id: &str) -> String {
        match self {
            Framing::Sse => sse::frame(event),
            Framing::SseWithIds => format!("id: {seq}\n{}", sse::frame(event)),
            Framing::Json => sse::python_json(&ws_event(event, session_id)),
        }
    }
}

/// AstrBot's WebSocket sends `message_saved` as `{"type", "data": {"id", "created_at"},
/// "session_id"}` (no checkpoint); every other event as the SSE chat does.
pub fn ws_event(event: &Value, session_id: &str) -> Value {
    if event["type"] == "message_saved" {
        return json!({
            "type": "message_saved",
            "data": {"id": event["data"]["id"], "created_at": event["data"]["created_at"]},
            "session_id": session_id,
        });
    }
    event.clone()
}

struct Sub {
    tx: SyncSender<String>,
    framing: Framing,
}

struct Inner {
    /// `(id, event, its size)`, oldest first.
    events: VecDeque<(u64, Value, usize)>,
    next: u64,
    bytes: usize,
    ended: Option<Instant>,
    subs: Vec<Sub>,
}

/// One run's events and live subscribers.
pub struct RunLog {
    pub run_id: String,
    pub owner: String,
    pub session_id: String,
    pub checkpoint: String,
    inner: Mutex<Inner>,
    registry: Option<Arc<RunsShared>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change is made in one step under the lock: a poisoned lock's data is whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RunLog {
    fn new(owner: &str, session_id: &str, checkpoint: &str, registry: Option<Arc<RunsShared>>) -> RunLog {
        RunLog {
            run_id: uuid::Uuid::new_v4().to_string(),
            owner: owner.to_owned(),
            session_id: session_id.to_owned(),
            checkpoint: checkpoint.to_owned(),
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next: 1,
                bytes: 0,
                ended: None,
                subs: Vec::new(),
            }),
            registry,
        }
    }

    /// A log kept nowhere, for tests.
    #[cfg(test)]
    pub fn detached(owner: &str, session_id: &str, checkpoint: &str) -> Arc<RunLog> {
        Arc::new(RunLog::new(owner, session_id, checkpoint, None))
    }

    /// Logs an event and hands it to every subscriber, in one step, so that every reader
    /// sees the same order. A subscriber whose queue is full or whose reader is gone is
    /// dropped.
    pub fn push(&self, event: Value) {
        let size = sse::python_json(&event).len();
        let mut inner = lock(&self.inner);
        if inner.ended.is_some() {
            return;
        }
        let seq = inner.next;
        inner.next += 1;
        let session = &self.session_id;
        inner.subs.retain(|s| match s.tx.try_send(s.framing.frame(seq, &event, session)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        });
        inner.events.push_back((seq, event, size));
        inner.bytes += size;
        let mut freed = 0;
        while inner.bytes > MAX_RUN_BYTES
            && let Some((_, _, n)) = inner.events.pop_front()
        {
            inner.bytes -= n;
            freed += n;
        }
        drop(inner);
        if let Some(registry) = &self.registry {
            let total = registry.add(size as i64 - freed as i64);
            if total > MAX_TOTAL_BYTES as i64 {
                registry.shrink(self);
            }
        }
    }

    /// Ends the log: no more events; subscribers' streams end once they have read theirs.
    pub fn finish(&self) {
        let mut inner = lock(&self.inner);
        if inner.ended.is_none() {
            inner.ended = Some(Instant::now());
        }
        inner.subs.clear();
    }

    /// A subscription: `prefix` frames first (written by the caller's layer), then, when
    /// `snapshot`, AstrBot's `run_snapshot` event, then the logged events after `after`
    /// (all when `None`), then the live ones until the run ends.
    pub fn subscribe(
        &self,
        framing: Framing,
        prefix: Vec<String>,
        snapshot: bool,
        after: Option<u64>,
    ) -> Receiver<String> {
        let mut inner = lock(&self.inner);
        let after = after.unwrap_or(0);
        let backlog: Vec<String> = inner
            .events
            .iter()
            .filter(|(seq, ..)| *seq > after)
            .map(|(seq, event, _)| framing.frame(*seq, event, &self.session_id))
            .collect();
        let (tx, rx) = sync_channel(prefix.len() + backlog.len() + 1 + QUEUE);
        for frame in prefix {
            let _ = tx.try_send(frame);
        }
        if snapshot {
            let status = if inner.ended.is_some() { "completed" } else { "running" };
            let event = json!({"type": "run_snapshot", "data": {
                "run_id": self.run_id, "session_id": self.session_id, "llm_checkpoint_id": self.checkpoint,
                "status": status, "revision": 0, "content": {"type": "bot", "message": []},
            }});
            let _ = tx.try_send(sse::frame(&event));
        }
        for frame in backlog {
            let _ = tx.try_send(frame);
        }
        if inner.ended.is_none() {
            inner.subs.push(Sub { tx, framing });
        }
        rx
    }

    fn bytes(&self) -> usize {
        lock(&self.inner).bytes
    }

    /// Drops the oldest events until at most `keep` bytes are left; returns bytes freed.
    fn trim_to(&self, keep: usize) -> usize {
        let mut inner = lock(&self.inner);
        let mut freed = 0;
        while inner.bytes > keep
            && let Some((_, _, n)) = inner.events.pop_front()
        {
            inner.bytes -= n;
            freed += n;
        }
        freed
    }

    fn ended(&self) -> Option<Instant> {
        lock(&self.inner).ended
    }
}

/// Ends the run's log when dropped: at the run's end, or while a panic unwinds it.
pub struct Finisher(pub Arc<RunLog>);

impl Drop for Finisher {
    fn drop(&mut self) {
        self.0.finish();
    }
}

#[derive(Default)]
struct RunsShared {
    logs: Mutex<HashMap<String, Arc<RunLog>>>,
    /// Bytes of events in the kept logs.
    total: AtomicI64,
}

impl RunsShared {
    /// Adds `delta` to the total; returns the new total.
    fn add(&self, delta: i64) -> i64 {
        self.total.fetch_add(delta, Ordering::SeqCst) + delta
    }

    /// Removes the logs `drop` picks from `logs`, taking their bytes off the total.
    fn remove_where(&self, logs: &mut HashMap<String, Arc<RunLog>>, mut drop: impl FnMut(&RunLog) -> bool) {
        logs.retain(|_, l| {
            let gone = drop(l);
            if gone {
                self.add(-(l.bytes() as i64));
            }
            !gone
        });
    }

    /// Forgets runs that ended more than [`RETAIN`] ago.
    fn prune(&self, logs: &mut HashMap<String, Arc<RunLog>>) {
        self.remove_where(logs, |l| l.ended().is_some_and(|t| t.elapsed() >= RETAIN));
    }

    /// Brings the total under [`MAX_TOTAL_BYTES`]: finished runs go first, oldest first,
    /// then `log` (which just grew) loses its oldest events.
    fn shrink(&self, log: &RunLog) {
        let mut logs = lock(&self.logs);
        let mut finished: Vec<(Instant, String)> =
            logs.values().filter_map(|l| l.ended().map(|t| (t, l.run_id.clone()))).collect();
        finished.sort();
        for (_, id) in finished {
            if self.total.load(Ordering::SeqCst) <= MAX_TOTAL_BYTES as i64 {
                return;
            }
            self.remove_where(&mut logs, |l| l.run_id == id);
        }
        drop(logs);
        let over = self.total.load(Ordering::SeqCst) - MAX_TOTAL_BYTES as i64;
        if over > 0 {
            let keep = (log.bytes() as i64 - over).max(0) as usize;
            let freed = log.trim_to(keep);
            self.add(-(freed as i64));
        }
    }
}

/// Every kept run log, by run id.
#[derive(Default)]
pub struct RunLogs {
    shared: Arc<RunsShared>,
}

impl RunLogs {
    /// A new run's log, kept for resumption; the oldest finished runs make room.
    pub fn create(&self, owner: &str, session_id: &str, checkpoint: &str) -> Arc<RunLog> {
        let mut logs = lock(&self.shared.logs);
        self.shared.prune(&mut logs);
        while logs.len() >= MAX_LOGS {
            let oldest = logs
                .values()
                .filter_map(|l| l.ended().map(|t| (t, l.run_id.clone())))
                .min_by_key(|(t, _)| *t)
                .map(|(_, id)| id);
            match oldest {
                Some(id) => self.shared.remove_where(&mut logs, |l| l.run_id == id),
                // Every kept run still runs: this one is not kept (nobody can resume it).
                None => return Arc::new(RunLog::new(owner, session_id, checkpoint, None)),
            }
        }
        let log = Arc::new(RunLog::new(owner, session_id, checkpoint, Some(self.shared.clone())));
        logs.insert(log.run_id.clone(), log.clone());
        log
    }

    /// The run `run_id` if `owner` started it and it is still kept.
    pub fn find(&self, run_id: &str, owner: &str) -> Option<Arc<RunLog>> {
        let mut logs = lock(&self.shared.logs);
        self.shared.prune(&mut logs);
        logs.get(run_id).filter(|l| l.owner == owner).cloned()
    }

    /// Runs kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.shared.logs).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize) -> Value {
        json!({"type": "plain", "data": "x".repeat(n)})
    }

    #[test]
    fn subscribers_see_the_same_events_and_a_resume_continues_after_an_id() {
        let logs = RunLogs::default();
        let log = logs.create("api_key:k", "s", "c");
        let sse = log.subscribe(Framing::Sse, vec!["pre".into()], false, None);
        log.push(json!({"type": "run_started"}));
        let ws = log.subscribe(Framing::Json, vec![], false, None);
        log.push(json!({"type": "plain", "data": "a"}));
        log.push(
            json!({"type": "message_saved", "data": {"id": 1, "created_at": "t", "llm_checkpoint_id": "c"}}),
        );
        log.push(json!({"type": "end"}));
        let resumed = log.subscribe(Framing::SseWithIds, vec![], false, Some(2));
        log.finish();
        let sse: Vec<String> = sse.iter().collect();
        assert_eq!(sse.len(), 5);
        assert_eq!(sse[0], "pre");
        assert_eq!(sse[1], "data: {\"type\": \"run_started\"}\n\n");
        let ws: Vec<String> = ws.iter().collect();
        assert_eq!(ws[0], "{\"type\": \"run_started\"}", "a late subscriber gets the backlog");
        assert_eq!(
            ws[2],
            "{\"type\": \"message_saved\", \"data\": {\"id\": 1, \"created_at\": \"t\"}, \"session_id\": \"s\"}"
        );
        let resumed: Vec<String> = resumed.iter().collect();
        assert_eq!(resumed.len(), 2);
        assert!(resumed[0].starts_with("id: 3\ndata: {\"type\": \"message_saved\""));
        assert_eq!(resumed[1], "id: 4\ndata: {\"type\": \"end\"}\n\n");
        assert!(
            log.subscribe(Framing::Sse, vec![], false, None).iter().count() == 4,
            "a finished run replays and ends"
        );
    }

    #[test]
    fn only_the_owner_finds_a_run() {
        let logs = RunLogs::default();
        let log = logs.create("api_key:a", "s", "c");
        assert!(logs.find(&log.run_id, "api_key:a").is_some());
        assert!(logs.find(&log.run_id, "api_key:b").is_none());
        assert!(logs.find("nope", "api_key:a").is_none());
    }

    #[test]
    fn a_run_keeps_at_most_its_byte_cap_and_a_slow_subscriber_is_dropped() {
        let log = RunLog::detached("o", "s", "c");
        let slow = log.subscribe(Framing::Sse, vec![], false, None);
        for _ in 0..(MAX_RUN_BYTES / 1000 + QUEUE + 10) {
            log.push(ev(1000));
        }
        assert!(log.bytes() <= MAX_RUN_BYTES);
        assert!(log.bytes() > MAX_RUN_BYTES - 2000);
        assert_eq!(lock(&log.inner).subs.len(), 0, "the full queue dropped its subscriber");
        assert_eq!(slow.iter().count(), 1 + QUEUE, "what was queued is still read, then the stream ends");
    }

    #[test]
    fn the_number_of_runs_is_capped_finished_ones_make_room() {
        let logs = RunLogs::default();
        let first = logs.create("o", "s", "c");
        first.finish();
        for _ in 1..MAX_LOGS {
            logs.create("o", "s", "c");
        }
        assert_eq!(logs.len(), MAX_LOGS);
        let next = logs.create("o", "s", "c");
        assert_eq!(logs.len(), MAX_LOGS);
        assert!(logs.find(&first.run_id, "o").is_none(), "the finished run made room");
        assert!(logs.find(&next.run_id, "o").is_some());
        let unkept = logs.create("o", "s", "c");
        assert!(logs.find(&unkept.run_id, "o").is_none(), "all running: the new one is not kept");
    }

    #[test]
    fn the_total_is_capped_by_evicting_finished_runs() {
        let logs = RunLogs::default();
        let mut finished = Vec::new();
        for _ in 0..(MAX_TOTAL_BYTES / MAX_RUN_BYTES) {
            let l = logs.create("o", "s", "c");
            for _ in 0..(MAX_RUN_BYTES / 10_000) {
                l.push(ev(10_000));
            }
            l.finish();
            finished.push(l);
        }
        let live = logs.create("o", "s", "c");
        for _ in 0..200 {
            live.push(ev(10_000));
        }
        let total: usize = lock(&logs.shared.logs).values().map(|l| l.bytes()).sum();
        assert!(total <= MAX_TOTAL_BYTES, "{total}");
        assert_eq!(logs.shared.total.load(Ordering::SeqCst), total as i64, "the running total is exact");
        assert!(logs.find(&finished[0].run_id, "o").is_none(), "the oldest finished run went first");
        assert!(logs.find(&live.run_id, "o").is_some());
    }
}
