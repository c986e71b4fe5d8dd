//! Per-key daily request quotas and the write-behind of key usage: a key may carry a
//! `daily_limit` (requests per UTC day), beyond which it gets 429 until midnight UTC.
//!
//! Counting happens in memory, under one mutex, on every keyed request; the database sees
//! the counts (and each key's `last_used_at`) once a second from the flusher in `app`, and
//! once more at shutdown, so a restart keeps the day's counts without a write per request.
//! A key's count for today is loaded from the database the first time the key is seen that
//! day. Time is an argument: nothing here reads the clock.

use std::collections::HashMap;

use crate::timefmt::{secs_until_day_end, utc_day};

/// What the quota says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted. `limit` is `None` for an unlimited key.
    Allowed { limit: Option<i64>, remaining: i64, reset_secs: i64 },
    /// Over the limit; not counted.
    Exceeded { limit: i64, retry_after: i64 },
}

#[derive(Debug, Default)]
struct Usage {
    day: i64,
    count: i64,
    saved_count: i64,
    last_used: Option<i64>,
    last_used_dirty: bool,
}

/// Usage not yet written: `(key_id, last_used_at)` and `(key_id, day, count)`.
pub type Pending = (Vec<(String, i64)>, Vec<(String, i64, i64)>);

#[derive(Debug, Default)]
pub struct DailyQuota {
    keys: HashMap<String, Usage>,
}

impl DailyQuota {
    /// Checks one request of `key_id` against `limit` (`None`: unlimited) at `now`, counts it
    /// if allowed, and records the use. `load_count(day)` gives the stored count of a day the
    /// first time this key is seen on it.
    pub fn check(
        &mut self,
        key_id: &str,
        limit: Option<i64>,
        now: i64,
        load_count: impl FnOnce(i64) -> i64,
    ) -> Verdict {
        let day = utc_day(now);
        let reset_secs = secs_until_day_end(now);
        let usage = match self.keys.get_mut(key_id) {
            Some(u) => u,
            None => self.keys.entry(key_id.to_owned()).or_insert(Usage { day: i64::MIN, ..Usage::default() }),
        };
        if usage.day != day {
            let stored = load_count(day);
            usage.day = day;
            usage.count = stored;
            usage.saved_count = stored;
        }
        if let Some(limit) = limit
            && usage.count >= limit
        {
            return Verdict::Exceeded { limit, retry_after: reset_secs };
        }
        usage.count += 1;
        usage.last_used = Some(now);
        usage.last_used_dirty = true;
        Verdict::Allowed { limit, remaining: limit.map_or(i64::MAX, |l| l - usage.count), reset_secs }
    }

    /// Takes what changed since the last call, marking it written.
    pub fn take_pending(&mut self) -> Pending {
        let mut touched = Vec::new();
        let mut counts = Vec::new();
        for (key_id, usage) in &mut self.keys {
            if usage.last_used_dirty {
                if let Some(at) = usage.last_used {
                    touched.push((key_id.clone(), at));
                }
                usage.last_used_dirty = false;
            }
            if usage.count != usage.saved_count {
                counts.push((key_id.clone(), usage.day, usage.count));
                usage.saved_count = usage.count;
            }
        }
        (touched, counts)
    }

    /// Puts back usage whose write failed, so the next flush tries again.
    pub fn restore_pending(&mut self, pending: Pending) {
        for (key_id, _) in pending.0 {
            if let Some(u) = self.keys.get_mut(&key_id) {
                u.last_used_dirty = true;
            }
        }
        for (key_id, day, _) in pending.1 {
            if let Some(u) = self.keys.get_mut(&key_id).filter(|u| u.day == day) {
                u.saved_count = -1;
            }
        }
    }

    /// The requests counted for a key on the UTC day of `now`, if this process has seen
    /// the key that day (else the stored count is the truth).
    pub fn today(&self, key_id: &str, now: i64) -> Option<i64> {
        self.keys.get(key_id).filter(|u| u.day == utc_day(now)).map(|u| u.count)
    }

    /// Drops a key (deleted or revoked): its counts must not be written back.
    pub fn forget(&mut self, key_id: &str) {
        self.keys.remove(key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::{MICROS_PER_DAY, MICROS_PER_SEC};

    const DAY: i64 = 20_000;
    const NOON: i64 = DAY * MICROS_PER_DAY + 12 * 3_600 * MICROS_PER_SEC;

    #[test]
    fn counts_up_to_the_limit_then_refuses_without_counting() {
        let mut q = DailyQuota::default();
        let v1 = q.check("k", Some(2), NOON, |_| 0);
        assert_eq!(v1, Verdict::Allowed { limit: Some(2), remaining: 1, reset_secs: 43_200 });
        assert!(matches!(q.check("k", Some(2), NOON, |_| 0), Verdict::Allowed { remaining: 0, .. }));
        let over = q.check("k", Some(2), NOON + MICROS_PER_SEC, |_| 0);
        assert_eq!(over, Verdict::Exceeded { limit: 2, retry_after: 43_199 });
        let (_, counts) = q.take_pending();
        assert_eq!(counts, vec![("k".to_owned(), DAY, 2)], "the refused request is not counted");
    }

    #[test]
    fn a_new_day_starts_from_the_stored_count() {
        let mut q = DailyQuota::default();
        assert!(matches!(q.check("k", Some(1), NOON, |_| 0), Verdict::Allowed { .. }));
        assert!(matches!(q.check("k", Some(1), NOON, |_| 0), Verdict::Exceeded { .. }));
        let tomorrow = NOON + MICROS_PER_DAY;
        let mut loaded = None;
        assert!(matches!(
            q.check("k", Some(1), tomorrow, |d| {
                loaded = Some(d);
                0
            }),
            Verdict::Allowed { .. }
        ));
        assert_eq!(loaded, Some(DAY + 1));
    }

    #[test]
    fn stored_counts_survive_a_restart() {
        let mut q = DailyQuota::default();
        assert!(matches!(q.check("k", Some(3), NOON, |_| 3), Verdict::Exceeded { .. }));
    }

    #[test]
    fn unlimited_keys_are_counted_but_never_refused() {
        let mut q = DailyQuota::default();
        for _ in 0..100 {
            assert!(matches!(q.check("k", None, NOON, |_| 0), Verdict::Allowed { limit: None, .. }));
        }
        let (touched, counts) = q.take_pending();
        assert_eq!(touched, vec![("k".to_owned(), NOON)]);
        assert_eq!(counts, vec![("k".to_owned(), DAY, 100)]);
        assert_eq!(q.take_pending(), (vec![], vec![]), "nothing new to write");
    }

    #[test]
    fn failed_writes_are_retried_and_forgotten_keys_are_not() {
        let mut q = DailyQuota::default();
        q.check("a", None, NOON, |_| 0);
        q.check("b", None, NOON, |_| 0);
        let pending = q.take_pending();
        q.restore_pending(pending);
        q.forget("b");
        let (touched, counts) = q.take_pending();
        assert_eq!(touched, vec![("a".to_owned(), NOON)]);
        assert_eq!(counts, vec![("a".to_owned(), DAY, 1)]);
    }
}
