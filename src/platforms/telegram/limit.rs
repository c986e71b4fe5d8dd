//! Pacing of the bot's sends, below Telegram's flood limits (the Bot FAQ's numbers): about
//! 30 messages a second in all, one a second per chat, 20 a minute per group. AstrBot has
//! no limiter and meets 429s instead; here every send-type call first books a time slot and
//! waits for it, so a long reply or a burst of proactive messages is spread out rather than
//! refused. A 429 that still comes is honoured by the caller (`retry_after`).
//!
//! A booking takes `now` as an argument (time is an argument, so the rules are tested
//! without sleeping) and returns the instant the call may go; it is recorded at once, so
//! threads sending concurrently get successive slots.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Sends a second for the whole bot, with a burst of as many.
const GLOBAL_PER_SEC: u32 = 25;
/// Spacing of two sends to one chat.
const CHAT_SPACING: Duration = Duration::from_secs(1);
/// Sends to one group per [`GROUP_WINDOW`].
const GROUP_PER_WINDOW: usize = 20;
const GROUP_WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Limiter {
    /// The global bucket as a theoretical arrival time (GCRA): a send may go once
    /// `now >= tat - burst`.
    tat: Option<Instant>,
    /// Per chat: the booked times of its sends in the last window (increasing).
    chats: HashMap<String, VecDeque<Instant>>,
}

impl Limiter {
    /// Books a send to `chat` (a group when `group`) and returns when it may go, by the
    /// chat's own limits. Then, at that time, [`Limiter::global`] is booked.
    ///
    /// A send that would have to wait longer than `max_wait` is not booked: `Err` says when
    /// it could go, so a flood of messages to one chat is refused rather than queued for
    /// minutes on the callers' threads.
    pub fn chat(
        &mut self,
        chat: &str,
        group: bool,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Instant, Instant> {
        // Forget chats whose last send left every window: the map stays as small as the
        // last minute's traffic.
        self.chats.retain(|_, times| times.back().is_some_and(|t| *t + GROUP_WINDOW > now));
        let mut at = now;
        let times = self.chats.entry(chat.to_owned()).or_default();
        if let Some(last) = times.back() {
            at = at.max(*last + CHAT_SPACING);
        }
        if group && times.len() >= GROUP_PER_WINDOW {
            at = at.max(times[times.len() - GROUP_PER_WINDOW] + GROUP_WINDOW);
        }
        if at.saturating_duration_since(now) > max_wait {
            return Err(at);
        }
        times.push_back(at);
        while times.len() > GROUP_PER_WINDOW {
            times.pop_front();
        }
        Ok(at)
    }

    /// Books a send in the whole bot's bucket and returns when it may go. Booked only
    /// when the chat's slot has come, so that bookings arrive in time order (a chat's
    /// sends booked seconds ahead must not hold other chats back).
    pub fn global(&mut self, now: Instant) -> Instant {
        let interval = Duration::from_secs(1) / GLOBAL_PER_SEC;
        let burst = interval * (GLOBAL_PER_SEC - 1);
        let tat = self.tat.unwrap_or(now);
        let at = match tat.checked_sub(burst) {
            Some(earliest) => now.max(earliest),
            None => now,
        };
        self.tat = Some(tat.max(at) + interval);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const W: Duration = Duration::from_secs(3600);

    #[test]
    fn one_chat_gets_one_send_a_second_and_other_chats_are_not_held() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        assert_eq!(l.chat("42", false, t0, W).unwrap(), t0);
        assert_eq!(l.chat("42", false, t0, W).unwrap(), t0 + S);
        assert_eq!(l.chat("42", false, t0, W).unwrap(), t0 + 2 * S);
        assert_eq!(l.chat("43", false, t0, W).unwrap(), t0);
        // Later than the spacing: at once.
        assert_eq!(l.chat("43", false, t0 + 5 * S, W).unwrap(), t0 + 5 * S);
    }

    #[test]
    fn a_group_gets_twenty_sends_a_minute() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let mut slots = Vec::new();
        for _ in 0..21 {
            slots.push(l.chat("-100123", true, t0, W).unwrap());
        }
        assert_eq!(slots[19], t0 + 19 * S);
        assert_eq!(slots[20], t0 + 60 * S, "the 21st waits for the first to leave the window");
        // A private chat with as many sends is only spaced.
        let mut l = Limiter::default();
        let last = (0..21).map(|_| l.chat("42", false, t0, W).unwrap()).last().unwrap();
        assert_eq!(last, t0 + 20 * S);
    }

    #[test]
    fn the_whole_bot_gets_a_burst_of_25_then_25_a_second() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let slots: Vec<Instant> = (0..30).map(|_| l.global(t0)).collect();
        assert!(slots[..25].iter().all(|t| *t == t0));
        assert_eq!(slots[25], t0 + S / 25);
        assert_eq!(slots[29], t0 + 5 * S / 25);
        // After a quiet second the burst is available again.
        let later = t0 + 3 * S;
        assert!((0..25).all(|_| l.global(later) == later));
    }

    #[test]
    fn a_send_that_would_wait_too_long_is_not_booked() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let max = Duration::from_secs(2);
        for i in 0..3 {
            assert_eq!(l.chat("42", false, t0, max), Ok(t0 + i * S));
        }
        assert_eq!(l.chat("42", false, t0, max), Err(t0 + 3 * S), "refused, not booked");
        assert_eq!(l.chat("42", false, t0 + S, max), Ok(t0 + 3 * S));
    }

    #[test]
    fn idle_chats_are_forgotten() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        for i in 0..100 {
            l.chat(&i.to_string(), false, t0, W).unwrap();
        }
        l.chat("x", false, t0 + 61 * S, W).unwrap();
        assert_eq!(l.chats.len(), 1);
    }
}
