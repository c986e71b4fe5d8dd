//! The live chat streams: for each conversation (session) id, the runs whose client is
//! still reading, so that a proactive IM message reaches them as events while they run.
//!
//! A run joins with [`LiveStreams::register`] and leaves when the returned
//! [`Registration`] drops: at the run's end, or while a panic unwinds it, so no stream
//! outlives its run and a conversation's entry goes with its last stream. A platform
//! adapter that keeps a connection to its users would register the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::events;
use super::runs::RunLog;

/// The live streams by conversation id.
#[derive(Default)]
pub struct LiveStreams {
    by_conversation: Mutex<HashMap<String, Vec<LiveStream>>>,
}

/// One running chat stream. The username travels with it because a run may outlive its
/// session: a proactive message for one username must not reach another's stream that
/// happens to carry the same conversation id.
#[derive(Clone)]
struct LiveStream {
    run_id: String,
    username: String,
    /// The run's event log, which its readers follow.
    log: Arc<RunLog>,
}

/// A run's place among the live streams; dropping it removes the stream.
#[must_use = "the stream is deregistered when the registration drops"]
pub struct Registration<'a> {
    streams: &'a LiveStreams,
    conversation: String,
    run_id: String,
}

impl LiveStreams {
    /// A poisoned lock still holds a consistent map (every change is one call), so a panic
    /// elsewhere must not stop delivery or deregistration.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<LiveStream>>> {
        self.by_conversation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the stream of run `run_id`, by `username`, to `conversation` until the
    /// registration drops.
    pub fn register(
        &self,
        conversation: &str,
        run_id: &str,
        username: &str,
        log: Arc<RunLog>,
    ) -> Registration<'_> {
        let stream = LiveStream { run_id: run_id.to_owned(), username: username.to_owned(), log };
        self.lock().entry(conversation.to_owned()).or_default().push(stream);
        Registration { streams: self, conversation: conversation.to_owned(), run_id: run_id.to_owned() }
    }

    /// Sends a stored proactive message's events into every live stream of `conversation`;
    /// with an `owner`, only into that username's streams. A stream whose client is gone
    /// only fails its sends, which is ignored.
    pub fn deliver_proactive(
        &self,
        conversation: &str,
        owner: Option<&str>,
        parts: &[Value],
        saved_id: i64,
        created_at: i64,
    ) {
        // A snapshot: the sends happen without the lock, which runs take to register.
        let streams = self.lock().get(conversation).cloned().unwrap_or_default();
        for stream in streams.into_iter().filter(|s| owner.is_none_or(|owner| s.username == owner)) {
            for event in events::proactive(parts, saved_id, created_at, &stream.run_id) {
                stream.log.push(event);
            }
        }
    }

    /// Live streams over every conversation, for the operator's statistics.
    pub fn total(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    #[cfg(test)]
    fn count(&self, conversation: &str) -> usize {
        self.lock().get(conversation).map_or(0, Vec::len)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut streams = self.streams.lock();
        if let Some(list) = streams.get_mut(&self.conversation) {
            list.retain(|stream| stream.run_id != self.run_id);
            if list.is_empty() {
                streams.remove(&self.conversation);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::runs::{Framing, RunLog};
    use serde_json::json;

    #[test]
    fn a_registration_deregisters_on_drop_and_on_panic() {
        let streams = LiveStreams::default();
        let log = RunLog::detached("o", "c", "k");
        let first = streams.register("c", "r1", "alice", log.clone());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _second = streams.register("c", "r2", "alice", log.clone());
            assert_eq!(streams.count("c"), 2);
            panic!("a run fails");
        }));
        assert!(panicked.is_err());
        assert_eq!(streams.count("c"), 1, "the panicking run's stream is gone");
        drop(first);
        assert_eq!(streams.count("c"), 0);
        assert!(streams.lock().is_empty(), "no empty entry is left behind");
    }

    #[test]
    fn proactive_delivery_reaches_only_the_owners_streams() {
        let streams = LiveStreams::default();
        let (alice, bob) = (RunLog::detached("a", "c", "k"), RunLog::detached("b", "c", "k"));
        let alice_rx = alice.subscribe(Framing::Sse, vec![], false, None);
        let bob_rx = bob.subscribe(Framing::Sse, vec![], false, None);
        let _a = streams.register("c", "ra", "alice", alice);
        let _b = streams.register("c", "rb", "bob", bob);
        let parts = [json!({"type": "plain", "text": "hi"})];
        streams.deliver_proactive("c", Some("alice"), &parts, 1, 0);
        assert_eq!(alice_rx.try_iter().count(), 3, "plain, complete, message_saved");
        assert_eq!(bob_rx.try_iter().count(), 0);
        streams.deliver_proactive("c", None, &parts, 2, 0);
        assert_eq!(alice_rx.try_iter().count(), 3);
        assert_eq!(bob_rx.try_iter().count(), 3);
    }
}
