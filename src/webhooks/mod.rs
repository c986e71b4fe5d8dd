//! The webhook mirror (decision 16): every request made with a key that has a
//! `webhook_url` becomes one signed JSON event POSTed there, through a durable outbox in
//! the database, following the Standard Webhooks specification.
//!
//! The request path only pushes the event into memory ([`Outbox::push`]); it never waits
//! on the database or the network. A writer thread stores what is queued in one
//! transaction as soon as it is woken (group commit), so an event is durable within
//! milliseconds and a burst costs one commit per batch rather than one per event. A
//! deliverer thread sends each key's pending events in creation order, retries a failure
//! with backoff until the event's deadline (a day after its creation), and records every
//! attempt in the table, so a restart resumes where the last run stopped; a repeat (killed
//! between sending and recording) carries the same `webhook-id`, which receivers use to
//! drop duplicates. Both threads run at a lower CPU priority: under load the requests win
//! and the outbox grows, within its bounds (in memory: [`queue`]; in the table: at most
//! [`MAX_PENDING_PER_KEY`] pending events per key), and what a bound drops is counted in
//! the key's `webhook_dropped` and logged. The SQL lives in `db::webhooks`; the HTTP side
//! (the key's settings, the event's body, the deliveries listing) lives in `api` and only
//! uses the functions here. Each key's signing secret is derived from the server's MAC key
//! and the key's `webhook_nonce` ([`webhook_secret`]), so it is never stored.

mod deliver;
mod queue;
mod signing;

pub use queue::{Body, Event};
pub use signing::{new_event_id, new_nonce, webhook_secret};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::db::webhooks::{NewEvent, Retention};
use crate::db::{self, Db};
use crate::secrets::MacKey;
use crate::timefmt::{MICROS_PER_DAY, MICROS_PER_SEC, now_micros};

use deliver::Plan;
use queue::{DropLog, Queue};

/// Seconds between the attempts at an event; the last entry repeats until the deadline.
pub const DEFAULT_BACKOFF: [u64; 6] = [5, 30, 120, 600, 3600, 21600];

/// How long an event is retried: a day after its creation (or after a manual retry).
const LIFETIME: i64 = MICROS_PER_DAY;
/// At most this many pending events per key in the table; the oldest beyond are dropped.
pub const MAX_PENDING_PER_KEY: i64 = 10_000;
/// At most this many events per transaction of the writer, so that it never holds the
/// database's write lock for long.
const WRITE_BATCH: usize = 2000;
/// The deliverer looks at the table at least this often, even unwoken.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// How long the writer lets events gather after the first wakes it: a burst becomes a few
/// transactions a second instead of one per handful of events, and an event is still
/// durable within milliseconds of its request.
const GATHER: Duration = Duration::from_millis(10);
/// The gathering time while a key is over its bound of pending events (see `run_writer`).
const SATURATED_GATHER: Duration = Duration::from_millis(500);
/// Pruning runs this often (microseconds)...
const PRUNE_EVERY: i64 = 60 * MICROS_PER_SEC;
/// ...and deletes at most about this many rows per transaction.
const PRUNE_CHUNK: i64 = 5000;
/// Finished events kept for the deliveries listing.
const RETENTION_DELIVERED: i64 = MICROS_PER_DAY;
const RETENTION_FAILED: i64 = 7 * MICROS_PER_DAY;
const KEEP_FINISHED_PER_KEY: i64 = 1000;

/// The outbox: the memory queue, the writer and the deliverer. Shared as an `Arc` by the
/// request threads (which push) and its two threads; it has its own `Db` pool, so the
/// writer never waits for a request's connection.
pub struct Outbox {
    db: Db,
    mac: MacKey,
    /// Microseconds, never empty.
    backoff: Vec<i64>,
    queue: Mutex<Queue>,
    /// Signalled when the queue stops being empty, and at stop.
    queued: Condvar,
    /// Held while a batch is taken from the queue and written, so that batches reach the
    /// table in push order even when `flush` writes beside the writer thread; it also
    /// holds the rate limit of the log lines about events trimmed from the table.
    writing: Mutex<DropLog>,
    woken: Mutex<bool>,
    /// Signalled by `wake` (the writer after each batch, a manual retry) and at stop.
    wakeup: Condvar,
    stopping: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
    deliverer: Mutex<Option<JoinHandle<()>>>,
}

/// A poisoned lock only means a thread panicked while holding it; the data (a queue, a
/// flag) stays consistent, and the outbox must go on for the other threads.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outbox {
    /// An outbox over `db` with the given backoff (empty: [`DEFAULT_BACKOFF`]; each step at
    /// least a millisecond, so that a failing receiver never makes the deliverer spin); no
    /// threads yet, so pushes only queue until [`Outbox::start`] or [`Outbox::flush`].
    pub fn new(db: Db, mac: MacKey, backoff: Vec<Duration>) -> Outbox {
        let mut backoff: Vec<i64> =
            backoff.iter().map(|d| d.as_micros().clamp(1000, i64::MAX as u128) as i64).collect();
        if backoff.is_empty() {
            backoff = DEFAULT_BACKOFF.iter().map(|s| *s as i64 * MICROS_PER_SEC).collect();
        }
        Outbox {
            db,
            mac,
            backoff,
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            writing: Mutex::new(DropLog::default()),
            woken: Mutex::new(false),
            wakeup: Condvar::new(),
            stopping: AtomicBool::new(false),
            writer: Mutex::new(None),
            deliverer: Mutex::new(None),
        }
    }

    /// Spawns the writer and the deliverer. Pending events left by an earlier run are
    /// delivered from here on.
    pub fn start(self: &Arc<Self>) -> Result<(), String> {
        let outbox = self.clone();
        let writer = std::thread::Builder::new()
            .name("webhook-writer".into())
            .spawn(move || run_writer(&outbox))
            .map_err(|e| format!("cannot start the webhook writer: {e}"))?;
        *lock(&self.writer) = Some(writer);
        let outbox = self.clone();
        let deliverer = std::thread::Builder::new()
            .name("webhook-deliverer".into())
            .spawn(move || run_deliverer(&outbox))
            .map_err(|e| format!("cannot start the webhook deliverer: {e}"))?;
        *lock(&self.deliverer) = Some(deliverer);
        Ok(())
    }

    /// Queues an event: a memory push, nothing else. Beyond the queue's bound the oldest
    /// queued event is dropped (counted for its key, and logged at most every 10 s).
    pub fn push(&self, event: Event) {
        // The guard is a temporary: the lock is released at the end of this statement,
        // and what the push dropped is freed after it.
        let pushed = lock(&self.queue).push(event, Instant::now());
        // Only the first event wakes the writer: while the queue is not empty it is
        // awake, and sparing the notification keeps a push free of system calls.
        if pushed.was_empty {
            self.queued.notify_one();
        }
        if let Some(n) = pushed.log_dropped {
            log::warn!("webhook: the outbox queue is full; {n} oldest events dropped");
        }
        drop(pushed.dropped);
    }

    /// Writes everything queued now, on the caller's thread (at shutdown, and by tests).
    pub fn flush(&self) {
        loop {
            match self.write_batch() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    log::error!("{e}");
                    break;
                }
            }
        }
        self.wake();
    }

    /// Ends the threads: the writer writes what is still queued and ends (this waits for
    /// it); the deliverer ends after the attempt in flight, without being waited for, as an
    /// attempt may take 15 s. An event sent but not recorded is sent again after a restart,
    /// with the same id.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Notified under the locks, so that a thread between its check and its wait
        // cannot miss it.
        drop(lock(&self.queue));
        self.queued.notify_all();
        drop(lock(&self.woken));
        self.wakeup.notify_all();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }

    /// Makes the deliverer look at the table now (new events, a manual retry, a changed
    /// `webhook_url`).
    pub fn wake(&self) {
        *lock(&self.woken) = true;
        self.wakeup.notify_one();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Takes one batch from the queue and writes it in one transaction. `None` if there
    /// was nothing to write, else how many pending events the per-key bound dropped. A
    /// batch that fails goes back into the queue.
    fn write_batch(&self) -> Result<Option<u64>, String> {
        let mut table_log = lock(&self.writing);
        let (batch, dropped) = lock(&self.queue).take(WRITE_BATCH);
        // Rendered outside the lock, on this (low-priority) thread.
        let batch: Vec<Event> = batch.into_iter().map(Event::rendered).collect();
        if batch.is_empty() && dropped.is_empty() {
            return Ok(None);
        }
        let written = self
            .db
            .conn()
            .and_then(|mut conn| db::write_tx(&mut conn, |tx| store_batch(tx, &batch, &dropped)));
        match written {
            Ok(trimmed) => {
                if trimmed > 0
                    && let Some(n) = table_log.note(trimmed, Instant::now())
                {
                    log::warn!(
                        "webhook: more than {MAX_PENDING_PER_KEY} events pending for a key; {n} oldest dropped"
                    );
                }
                Ok(Some(trimmed))
            }
            Err(e) => {
                let mut queue = lock(&self.queue);
                let lost = queue.put_back(batch, dropped);
                if lost > 0
                    && let Some(n) = queue.drop_log.note(lost, Instant::now())
                {
                    log::warn!("webhook: the outbox queue is full; {n} oldest events dropped");
                }
                Err(format!("webhook: cannot write events: {e}"))
            }
        }
    }

    /// Deletes finished events past their retention, a chunk per transaction.
    fn prune(&self, now: i64) {
        let retention = Retention {
            delivered_before: now - RETENTION_DELIVERED,
            failed_before: now - RETENTION_FAILED,
            keep_finished: KEEP_FINISHED_PER_KEY,
        };
        while !self.stopping() {
            let pruned = self.db.conn().and_then(|mut conn| {
                db::write_tx(&mut conn, |tx| db::webhooks::prune(tx, retention, PRUNE_CHUNK))
            });
            match pruned {
                Ok(n) if n as i64 >= PRUNE_CHUNK => {}
                Ok(_) => break,
                Err(e) => {
                    log::error!("webhook: cannot prune the outbox: {e}");
                    break;
                }
            }
        }
    }
}

/// Stores a batch of events, adds the counts dropped from memory, and keeps every key of
/// the batch within [`MAX_PENDING_PER_KEY`] pending events. Returns how many the bound
/// dropped.
fn store_batch(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Event],
    dropped: &std::collections::HashMap<String, i64>,
) -> rusqlite::Result<u64> {
    let events: Vec<NewEvent<'_>> = batch
        .iter()
        .map(|e| NewEvent {
            event_id: &e.event_id,
            key_id: &e.key_id,
            body: e.text(),
            created_at: e.created_at,
        })
        .collect();
    db::webhooks::insert_events(tx, &events, LIFETIME)?;
    for (key_id, n) in dropped {
        db::webhooks::add_dropped(tx, key_id, *n)?;
    }
    let mut keys: Vec<&str> = batch.iter().map(|e| e.key_id.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut trimmed = 0;
    for key_id in keys {
        trimmed += db::webhooks::trim_pending(tx, key_id, MAX_PENDING_PER_KEY)? as u64;
    }
    Ok(trimmed)
}

/// Lowers the calling thread's CPU priority to the lowest (nice 19), so that request
/// threads win when the machine is busy. Not `SCHED_IDLE`: a thread that holds the
/// database's write lock must not starve while requests wait for it. Best effort: a
/// failure changes nothing else.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls take plain integers and touch only the calling thread's
    // scheduling priority; on Linux a thread id is a valid `who` for PRIO_PROCESS.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
}

/// The writer: sleeps until the queue has something, then writes it a batch at a time
/// and wakes the deliverer. After a failed write it waits a second before trying again.
fn run_writer(outbox: &Outbox) {
    lower_priority();
    let mut gather = GATHER;
    loop {
        let mut queue = lock(&outbox.queue);
        while queue.is_empty() {
            if outbox.stopping() {
                return;
            }
            queue = outbox.queued.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        drop(queue);
        if !outbox.stopping() {
            std::thread::sleep(gather);
        }
        match outbox.write_batch() {
            Ok(trimmed) => {
                // A key over its bound has a receiver that cannot keep up: every event
                // written now only pushes an older one out. Writing less often lets the
                // memory queue drop the surplus (the oldest, counted) for free instead of
                // inserting and deleting each one; the requests' CPU is not spent on it.
                gather = if trimmed.unwrap_or(0) > 0 { SATURATED_GATHER } else { GATHER };
                outbox.wake();
            }
            Err(e) => {
                log::error!("{e}");
                if outbox.stopping() {
                    return;
                }
                let queue = lock(&outbox.queue);
                let _ = outbox.queued.wait_timeout_while(queue, MAX_IDLE, |_| !outbox.stopping());
            }
        }
    }
}

/// The deliverer: rounds over the table (pruning first when due), back to back while
/// there is work, else asleep until the earliest due head (at most a second) or a wake.
fn run_deliverer(outbox: &Outbox) {
    lower_priority();
    let agent = deliver::build_agent();
    let plan = Plan { mac: &outbox.mac, backoff: &outbox.backoff };
    let stop = || outbox.stopping();
    let mut next_prune = 0;
    while !stop() {
        // Cleared before the round reads the table: a wake during the round means news
        // the round may have missed, so the next round follows at once.
        *lock(&outbox.woken) = false;
        let now = now_micros();
        if now >= next_prune {
            outbox.prune(now);
            next_prune = now + PRUNE_EVERY;
        }
        let round = outbox.db.conn().and_then(|mut conn| {
            deliver::delivery_round(
                &mut conn,
                &plan,
                &mut now_micros,
                &mut |target, event, at| deliver::post(&agent, target, event, at),
                &stop,
            )
        });
        let idle = match round {
            Ok(round) if round.attempted > 0 => continue,
            Ok(round) => round.next_due.map_or(MAX_IDLE, |due| {
                Duration::from_micros((due - now_micros()).max(0) as u64).min(MAX_IDLE)
            }),
            Err(e) => {
                log::error!("webhook: delivery round failed: {e}");
                MAX_IDLE
            }
        };
        let woken = lock(&outbox.woken);
        let _ = outbox.wakeup.wait_timeout_while(woken, idle, |woken| !*woken && !stop());
    }
}

#[cfg(test)]
mod tests {
    use super::signing::sign;
    use super::*;
    use crate::db::webhooks::{deliveries, outbox_counts};
    use crate::db::{Db, temp_dir};
    use base64::Engine as _;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// The test vector of the Standard Webhooks specification.
    #[test]
    fn signature_matches_the_standard_webhooks_vector() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_ids_and_nonces_have_their_shapes() {
        let mac = MacKey::fixed(3);
        let secret = webhook_secret(&mac, "k", "n");
        let key =
            base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(secret, webhook_secret(&mac, "k", "n"));
        assert_ne!(secret, webhook_secret(&mac, "k", "n2"), "a new nonce rotates the secret");
        assert_ne!(secret, webhook_secret(&mac, "k2", "n"));
        let (a, b) = (new_event_id(), new_event_id());
        assert!(
            a.starts_with("msg_") && a.len() == 40 && a[4..].bytes().all(|c| c.is_ascii_hexdigit()),
            "{a}"
        );
        assert!(a < b, "ids of one process sort in creation order");
        assert_eq!(a[..28], b[..28]);
        let nonce = new_nonce();
        assert_eq!(nonce.len(), 22);
        assert_ne!(nonce, new_nonce());
    }

    fn insert_key(db: &Db, key_id: &str, url: &str) {
        db.conn()
            .unwrap()
            .execute(
                "INSERT INTO api_keys (key_id, name, key_hash, key_prefix, created_by, created_at, updated_at,
                                       webhook_url, webhook_nonce)
                 VALUES (?1, ?1, ?1, 'abk_', 'admin', 0, 0, ?2, 'nonce')",
                [key_id, url],
            )
            .unwrap();
    }

    fn event(key_id: &str, i: usize) -> Event {
        Event {
            event_id: format!("msg_{key_id}_{i:06}"),
            key_id: key_id.into(),
            created_at: i as i64,
            body: Body::Ready("{}".into()),
        }
    }

    #[test]
    fn the_bounds_drop_the_oldest_and_count_them() {
        let dir = temp_dir("webhooks-bound");
        let outbox = Outbox::new(Db::open(&dir).unwrap(), MacKey::fixed(1), vec![]);
        insert_key(&outbox.db, "a", "http://a");
        insert_key(&outbox.db, "b", "http://b");
        // The table: 10,005 pending events of `a` keep the newest 10,000.
        for i in 0..6000 {
            outbox.push(event("a", i));
        }
        outbox.push(event("b", 0));
        outbox.flush();
        for i in 6000..10_005 {
            outbox.push(event("a", i));
        }
        outbox.flush();
        let conn = outbox.db.conn().unwrap();
        assert_eq!(outbox_counts(&conn, "a").unwrap(), (10_000, 5));
        assert_eq!(outbox_counts(&conn, "b").unwrap(), (1, 0), "another key is untouched");
        let oldest = deliveries(&conn, "a", 10_000).unwrap().pop().unwrap();
        assert_eq!(oldest.event_id, "msg_a_000005");
        drop(conn);
        // Memory: beyond 10,000 queued the oldest go, and are counted when written.
        for i in 0..10_003 {
            outbox.push(event("b", 100 + i));
        }
        outbox.flush();
        let conn = outbox.db.conn().unwrap();
        assert_eq!(
            outbox_counts(&conn, "b").unwrap(),
            (10_000, 4),
            "3 dropped from memory, 1 from the table"
        );
        assert_eq!(deliveries(&conn, "b", 10_000).unwrap().pop().unwrap().event_id, "msg_b_000103");
        // Events of a key deleted meanwhile are not stored.
        drop(conn);
        outbox.push(event("gone", 0));
        outbox.flush();
        assert!(deliveries(&outbox.db.conn().unwrap(), "gone", 10).unwrap().is_empty());
    }

    /// A request as the loopback receiver saw it.
    struct Received {
        headers: HashMap<String, String>,
        body: String,
    }

    /// A receiver on 127.0.0.1:0 that answers each request with the next status of
    /// `statuses` (then 200) and closes the connection; it reports every request.
    fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = HashMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                assert!(line.starts_with("POST /hook "), "{line}");
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let Some((name, value)) = line.trim_end().split_once(':') else { break };
                    headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
                }
                let len: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let status = statuses.next().unwrap_or(200);
                let answer =
                    format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                stream.write_all(answer.as_bytes()).unwrap();
                drop(stream);
                if tx.send(Received { headers, body: String::from_utf8(body).unwrap() }).is_err() {
                    return;
                }
            }
        });
        (url, rx)
    }

    /// The whole path through the threads: a push is written, sent, refused with a 500,
    /// retried after the backoff and delivered, both times with the same id and a valid
    /// signature, and nothing else is sent.
    #[test]
    fn an_event_is_retried_after_a_500_and_delivered_once() {
        let dir = temp_dir("webhooks-deliver");
        let (url, requests) = receiver(vec![500]);
        let mac = MacKey::fixed(9);
        let outbox =
            Arc::new(Outbox::new(Db::open(&dir).unwrap(), mac.clone(), vec![Duration::from_millis(20)]));
        insert_key(&outbox.db, "k", &url);
        outbox.start().unwrap();
        let event_id = new_event_id();
        let body = r#"{"type":"api.request","data":{"key_id":"k"}}"#;
        outbox.push(Event {
            event_id: event_id.clone(),
            key_id: "k".into(),
            created_at: now_micros(),
            body: Body::Ready(body.into()),
        });
        let secret = webhook_secret(&mac, "k", "nonce");
        let wait = Duration::from_secs(10);
        for _ in 0..2 {
            let r = requests.recv_timeout(wait).expect("an attempt");
            assert_eq!(r.body, body);
            assert_eq!(r.headers["webhook-id"], event_id);
            assert_eq!(r.headers["content-type"], "application/json");
            assert_eq!(r.headers["user-agent"], concat!("astrbot/", env!("CARGO_PKG_VERSION")));
            assert!(!r.headers.contains_key("authorization"));
            let timestamp: i64 = r.headers["webhook-timestamp"].parse().unwrap();
            assert!((timestamp - now_micros() / MICROS_PER_SEC).abs() < 60);
            assert_eq!(r.headers["webhook-signature"], sign(&secret, &event_id, timestamp, body));
        }
        // The 200 has been written; the deliverer records it before it notices the stop.
        outbox.stop();
        lock(&outbox.deliverer).take().unwrap().join().unwrap();
        assert!(requests.try_recv().is_err(), "delivered once");
        let list = deliveries(&outbox.db.conn().unwrap(), "k", 10).unwrap();
        assert_eq!(list.len(), 1);
        let d = &list[0];
        assert_eq!((d.status.as_str(), d.attempts, d.response_code), ("delivered", 2, Some(200)));
        assert!(d.delivered_at.is_some() && d.next_attempt_at.is_none());
    }
}
