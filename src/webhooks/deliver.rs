//! Delivery: one round of the deliverer over the outbox, the state an attempt leaves an
//! event in, and the signed HTTP POST itself.
//!
//! A round finds each key's oldest pending event (its head). A key whose head is due gets
//! its pending events sent in creation order until one fails, at most a batch and a time
//! budget per key, so that one busy key cannot starve the others (round-robin); the results
//! of a batch are stored in one transaction after it. The receiver and its secret come from
//! the key's row at the time of the round, so a changed `webhook_url` or a rotated secret
//! applies to the next attempt. The round takes the clock and the send function as
//! arguments: the tests drive it with a fixed time and a fake receiver, the deliverer
//! thread with the real ones.

use std::io::Read;
use std::time::Duration;

use rusqlite::Connection;

use crate::db::{self, webhooks::AttemptResult, webhooks::PendingEvent};
use crate::secrets::MacKey;
use crate::timefmt::MICROS_PER_SEC;

use super::signing::{sign, webhook_secret};

/// At most this many events of one key per round...
pub const BATCH: i64 = 200;
/// ...and no new attempt for a key after this long in its batch (microseconds).
pub const BATCH_BUDGET: i64 = 2 * MICROS_PER_SEC;

/// The error of the pending events of a key whose receiver was removed.
pub const URL_REMOVED: &str = "webhook_url removed";

/// What one POST came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered { code: u16 },
    /// Any other answer (`code`), or no answer at all (`error`).
    Failed { code: Option<u16>, error: Option<String> },
}

/// Where a key's events go: the key's current receiver and its signing secret.
pub struct Target {
    pub key_id: String,
    pub url: String,
    pub secret: String,
}

/// The state an attempt at `now` leaves an event in. A failure is retried after
/// `backoff[attempts - 1]` (the last entry repeats), but never later than the deadline;
/// a failure at or after the deadline gives the event up, and the key's next events go on.
pub fn after_attempt(event: &PendingEvent, outcome: &Outcome, now: i64, backoff: &[i64]) -> AttemptResult {
    let attempts = event.attempts + 1;
    let base = AttemptResult {
        id: event.id,
        status: "pending",
        attempts,
        next_attempt_at: event.next_attempt_at,
        last_attempt_at: now,
        response_code: None,
        error: None,
        delivered_at: None,
    };
    match outcome {
        Outcome::Delivered { code } => AttemptResult {
            status: "delivered",
            response_code: Some(i64::from(*code)),
            delivered_at: Some(now),
            ..base
        },
        Outcome::Failed { code, error } => {
            let step = (attempts as usize).clamp(1, backoff.len().max(1)) - 1;
            let delay = backoff.get(step).copied().unwrap_or(0);
            AttemptResult {
                status: if now >= event.deadline { "failed" } else { "pending" },
                next_attempt_at: now.saturating_add(delay).min(event.deadline),
                response_code: code.map(i64::from),
                error: error.clone(),
                ..base
            }
        }
    }
}

/// What the deliverer needs besides the database: the server's MAC key (the secrets are
/// derived from it) and the backoff in microseconds.
pub struct Plan<'a> {
    pub mac: &'a MacKey,
    pub backoff: &'a [i64],
}

/// What a round did.
#[derive(Debug, Default, PartialEq)]
pub struct Round {
    /// Attempts made (0: nothing was due).
    pub attempted: usize,
    /// The earliest time a head that was not yet due becomes due.
    pub next_due: Option<i64>,
}

/// One round over every key with pending events. `clock` gives the time of each attempt,
/// `send` makes one, `stop` ends the round early (the results so far are stored).
pub fn delivery_round(
    conn: &mut Connection,
    plan: &Plan<'_>,
    clock: &mut dyn FnMut() -> i64,
    send: &mut dyn FnMut(&Target, &PendingEvent, i64) -> Outcome,
    stop: &dyn Fn() -> bool,
) -> rusqlite::Result<Round> {
    let mut round = Round::default();
    for head in db::webhooks::pending_heads(conn)? {
        if stop() {
            break;
        }
        let receiver =
            head.webhook_url.filter(|u| !u.is_empty()).zip(head.webhook_nonce.filter(|n| !n.is_empty()));
        let Some((url, nonce)) = receiver else {
            // A key deleted without its events (or by an older binary) leaves rows that
            // nothing else would ever read; a key whose receiver was removed keeps them
            // for the listing, given up.
            let gone = db::write_tx(conn, |tx| match head.key_exists {
                true => db::webhooks::fail_pending(tx, &head.key_id, URL_REMOVED),
                false => db::webhooks::delete_key_events(tx, &head.key_id),
            })?;
            log::info!("webhook: {gone} pending events of key {} given up: no receiver", head.key_id);
            continue;
        };
        let started = clock();
        if head.next_attempt_at > started {
            round.next_due =
                Some(round.next_due.map_or(head.next_attempt_at, |d| d.min(head.next_attempt_at)));
            continue;
        }
        let target =
            Target { secret: webhook_secret(plan.mac, &head.key_id, &nonce), key_id: head.key_id, url };
        let mut results = Vec::new();
        for event in db::webhooks::pending_batch(conn, &target.key_id, BATCH)? {
            let now = clock();
            // A later event may wait on a backoff of its own (its predecessor was moved
            // back to pending by hand); it becomes the head and is waited for.
            if event.next_attempt_at > now || now - started > BATCH_BUDGET || stop() {
                break;
            }
            let outcome = send(&target, &event, now);
            let result = after_attempt(&event, &outcome, now, plan.backoff);
            let delivered = result.status == "delivered";
            results.push(result);
            if !delivered {
                break;
            }
        }
        round.attempted += results.len();
        db::write_tx(conn, |tx| db::webhooks::record_attempts(tx, &target.key_id, &results))?;
    }
    Ok(round)
}

/// The deliverer's HTTP client: one agent, so connections to a receiver are kept alive
/// between events. No redirects are followed (a 3xx is a failed attempt), statuses are
/// answers rather than errors, and an attempt ends after 15 s whatever the receiver does.
pub fn build_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(15)))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("astrbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// How much of a receiver's answer is read (and thrown away): enough to keep the
/// connection alive after a short answer, bounded against a receiver that talks forever.
const ANSWER_LIMIT: u64 = 4096;

/// POSTs one event, signed for this attempt's time. Only the Standard Webhooks headers go
/// with it: no credential of ours ever does.
pub fn post(agent: &ureq::Agent, target: &Target, event: &PendingEvent, now: i64) -> Outcome {
    let timestamp = now.div_euclid(MICROS_PER_SEC);
    let signature = sign(&target.secret, &event.event_id, timestamp, &event.body);
    let sent = agent
        .post(&target.url)
        .header("content-type", "application/json")
        .header("webhook-id", &event.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .send(event.body.as_bytes());
    match sent {
        Ok(mut answer) => {
            let code = answer.status().as_u16();
            let _ =
                std::io::copy(&mut answer.body_mut().as_reader().take(ANSWER_LIMIT), &mut std::io::sink());
            match code {
                200..=299 => Outcome::Delivered { code },
                _ => Outcome::Failed { code: Some(code), error: None },
            }
        }
        Err(e) => {
            // Bounded, as a receiver's host name is only bounded by the URL's length.
            let error: String = e.to_string().chars().take(300).collect();
            Outcome::Failed { code: None, error: Some(error) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::webhooks::{NewEvent, deliveries, insert_events, retry_delivery};
    use crate::db::{Db, temp_dir, write_tx};

    const S: i64 = MICROS_PER_SEC;
    const BACKOFF: [i64; 3] = [5 * S, 30 * S, 120 * S];

    fn pending(attempts: i64, deadline: i64) -> PendingEvent {
        PendingEvent {
            id: 1,
            event_id: "msg_x".into(),
            body: "{}".into(),
            attempts,
            next_attempt_at: 0,
            deadline,
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed { code: Some(500), error: None }
    }

    #[test]
    fn failures_back_off_then_repeat_the_last_step() {
        let r = after_attempt(&pending(0, 1000 * S), &failed(), 10 * S, &BACKOFF);
        assert_eq!(
            (r.status, r.attempts, r.next_attempt_at, r.response_code),
            ("pending", 1, 15 * S, Some(500))
        );
        let r = after_attempt(&pending(1, 1000 * S), &failed(), 20 * S, &BACKOFF);
        assert_eq!(r.next_attempt_at, 50 * S);
        let r = after_attempt(&pending(6, 1000 * S), &failed(), 20 * S, &BACKOFF);
        assert_eq!((r.attempts, r.next_attempt_at), (7, 140 * S), "the last step repeats");
    }

    #[test]
    fn the_deadline_caps_the_wait_and_then_gives_up() {
        let r = after_attempt(&pending(2, 100 * S), &failed(), 90 * S, &BACKOFF);
        assert_eq!((r.status, r.next_attempt_at), ("pending", 100 * S), "retried at the deadline");
        let r = after_attempt(&pending(3, 100 * S), &failed(), 100 * S, &BACKOFF);
        assert_eq!((r.status, r.attempts, r.last_attempt_at), ("failed", 4, 100 * S));
    }

    #[test]
    fn success_is_delivered() {
        let r = after_attempt(&pending(3, 100 * S), &Outcome::Delivered { code: 204 }, 200 * S, &BACKOFF);
        assert_eq!(
            (r.status, r.attempts, r.delivered_at, r.response_code),
            ("delivered", 4, Some(200 * S), Some(204))
        );
    }

    /// A database with keys `a` (receiver `http://a`) and `b` (none).
    fn setup(name: &str) -> (Db, MacKey) {
        let dir = temp_dir(name);
        let db = Db::open(&dir).unwrap();
        db.conn()
            .unwrap()
            .execute_batch(
                "INSERT INTO api_keys (key_id, name, key_hash, key_prefix, created_by, created_at, updated_at,
                                       webhook_url, webhook_nonce)
                 VALUES ('a', 'a', x'01', 'abk_', 'admin', 0, 0, 'http://a', 'n1'),
                        ('b', 'b', x'02', 'abk_', 'admin', 0, 0, NULL, NULL);",
            )
            .unwrap();
        (db, MacKey::fixed(7))
    }

    fn push(db: &Db, key: &str, ids: std::ops::Range<usize>, at: i64) {
        let ids: Vec<String> = ids.map(|i| format!("msg_{key}{i:03}")).collect();
        let events: Vec<NewEvent<'_>> =
            ids.iter().map(|id| NewEvent { event_id: id, key_id: key, body: "{}", created_at: at }).collect();
        let mut conn = db.conn().unwrap();
        write_tx(&mut conn, |tx| insert_events(tx, &events, 86_400 * S)).unwrap();
    }

    fn statuses(db: &Db, key: &str) -> Vec<(String, String, i64)> {
        let mut list = deliveries(&db.conn().unwrap(), key, 1000).unwrap();
        list.reverse();
        list.into_iter().map(|d| (d.event_id, d.status, d.attempts)).collect()
    }

    /// Runs a round at a fixed time; `answer` decides each attempt, the sent ids are returned.
    fn round(
        db: &Db,
        mac: &MacKey,
        now: i64,
        answer: &mut dyn FnMut(&str) -> Outcome,
    ) -> (Round, Vec<String>) {
        let mut sent = Vec::new();
        let plan = Plan { mac, backoff: &BACKOFF };
        let mut conn = db.conn().unwrap();
        let round = delivery_round(
            &mut conn,
            &plan,
            &mut || now,
            &mut |t, e, at| {
                assert_eq!((t.url.as_str(), at), ("http://a", now));
                assert_eq!(t.secret, webhook_secret(mac, "a", "n1"));
                sent.push(e.event_id.clone());
                answer(&e.event_id)
            },
            &|| false,
        )
        .unwrap();
        (round, sent)
    }

    #[test]
    fn a_key_is_delivered_in_order_and_waits_behind_a_failure() {
        let (db, mac) = setup("webhooks-order");
        push(&db, "a", 0..5, 0);
        // msg_a002 fails: the two before it are delivered, nothing after it is tried.
        let (r, sent) = round(&db, &mac, 10 * S, &mut |id| match id {
            "msg_a002" => failed(),
            _ => Outcome::Delivered { code: 200 },
        });
        assert_eq!(sent, ["msg_a000", "msg_a001", "msg_a002"]);
        assert_eq!(r.attempted, 3);
        assert_eq!(statuses(&db, "a")[2], ("msg_a002".into(), "pending".into(), 1));
        // Not due before its backoff of 5 s.
        let (r, sent) = round(&db, &mac, 14 * S, &mut |_| unreachable!());
        assert!(sent.is_empty());
        assert_eq!(r, Round { attempted: 0, next_due: Some(15 * S) });
        // Due: the rest goes, in order.
        let (_, sent) = round(&db, &mac, 15 * S, &mut |_| Outcome::Delivered { code: 200 });
        assert_eq!(sent, ["msg_a002", "msg_a003", "msg_a004"]);
        assert!(statuses(&db, "a").iter().all(|s| s.1 == "delivered"));
    }

    #[test]
    fn an_event_is_given_up_at_its_deadline_and_the_next_goes_on() {
        let (db, mac) = setup("webhooks-deadline");
        push(&db, "a", 0..2, 0);
        let day = 86_400 * S;
        // First attempt at the deadline itself: one try, then failed.
        let (_, sent) = round(&db, &mac, day, &mut |_| failed());
        assert_eq!(sent, ["msg_a000"]);
        let (_, sent) = round(&db, &mac, day, &mut |_| Outcome::Delivered { code: 200 });
        assert_eq!(sent, ["msg_a001"], "the next event is not held up by a failed one");
        let s = statuses(&db, "a");
        assert_eq!(s[0], ("msg_a000".into(), "failed".into(), 1));
        assert_eq!(s[1], ("msg_a001".into(), "delivered".into(), 1));
        // A manual retry makes it pending and due, with a fresh day.
        let mut conn = db.conn().unwrap();
        let id = deliveries(&conn, "a", 10).unwrap()[1].id;
        let d = write_tx(&mut conn, |tx| retry_delivery(tx, "a", id, 2 * day)).unwrap().unwrap();
        assert_eq!((d.status.as_str(), d.next_attempt_at), ("pending", Some(2 * day)));
        assert_eq!(write_tx(&mut conn, |tx| retry_delivery(tx, "b", id, 2 * day)).unwrap(), None, "not b's");
        drop(conn);
        let (_, sent) = round(&db, &mac, 2 * day, &mut |_| failed());
        assert_eq!(sent, ["msg_a000"]);
        assert_eq!(
            statuses(&db, "a")[0],
            ("msg_a000".into(), "pending".into(), 1),
            "alive for another day, its count started again"
        );
    }

    #[test]
    fn a_key_without_receiver_gives_its_events_up_and_a_deleted_key_loses_them() {
        let (db, mac) = setup("webhooks-removed");
        push(&db, "a", 0..1, 0);
        push(&db, "b", 0..2, 0);
        db.conn()
            .unwrap()
            .execute_batch("UPDATE api_keys SET webhook_url = NULL WHERE key_id = 'a'")
            .unwrap();
        let (r, sent) = round(&db, &mac, S, &mut |_| unreachable!());
        assert!(sent.is_empty());
        assert_eq!(r.attempted, 0);
        let s = deliveries(&db.conn().unwrap(), "b", 10).unwrap();
        assert!(s.iter().all(|d| d.status == "failed" && d.error.as_deref() == Some(URL_REMOVED)));
        assert_eq!(deliveries(&db.conn().unwrap(), "a", 10).unwrap()[0].status, "failed");
        // Events whose key row is gone are deleted rather than kept.
        db.conn()
            .unwrap()
            .execute_batch(
                "INSERT INTO webhook_events (event_id, key_id, body, created_at, next_attempt_at, deadline)
                 VALUES ('msg_orphan', 'gone', '{}', 0, 0, 1);",
            )
            .unwrap();
        round(&db, &mac, S, &mut |_| unreachable!());
        assert!(deliveries(&db.conn().unwrap(), "gone", 10).unwrap().is_empty());
    }
}
