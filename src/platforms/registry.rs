//! The bots this server has started, by id: what `App` holds. The starting, stopping and
//! supervising is `manager`'s; this map only keeps each bot's adapter, stop flag, state
//! and the signal of its thread's end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};

use super::adapter::{Adapter, State, StateCell};

/// One started bot.
pub struct Running {
    pub kind: String,
    /// `None` for a bot with nothing to run (webchat, disabled, failed to build).
    pub adapter: Option<Arc<dyn Adapter>>,
    pub stop: Arc<AtomicBool>,
    pub state: Arc<StateCell>,
    /// Disconnected when the supervisor thread ends.
    pub done: Option<Receiver<()>>,
}

/// The bots this server runs.
#[derive(Default)]
pub struct Platforms {
    running: Mutex<HashMap<String, Running>>,
    /// Held while a bot is stopped and started, so two saves of one bot (or a save and
    /// the shutdown) never leave two adapters, or one the database no longer describes.
    changing: Mutex<()>,
}

impl Platforms {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken by whoever stops or starts bots, for the whole change.
    pub fn changing(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, id: &str, running: Running) {
        self.lock().insert(id.to_owned(), running);
    }

    pub fn remove(&self, id: &str) -> Option<Running> {
        self.lock().remove(id)
    }

    pub fn drain(&self) -> Vec<(String, Running)> {
        self.lock().drain().collect()
    }

    /// The adapter of a started bot, for a send.
    pub fn adapter(&self, id: &str) -> Option<Arc<dyn Adapter>> {
        let running = self.lock();
        let r = running.get(id)?;
        if r.stop.load(Ordering::SeqCst) {
            return None;
        }
        r.adapter.clone()
    }

    /// A bot's state; a bot this server has not started is `stopped`.
    pub fn state(&self, id: &str) -> State {
        self.lock().get(id).map(|r| r.state.get()).unwrap_or_else(State::stopped)
    }

    /// Every started bot's type and state (by id), for the operator's statistics.
    pub fn states(&self) -> Vec<(String, String, State)> {
        let mut all: Vec<_> =
            self.lock().iter().map(|(id, r)| (id.clone(), r.kind.clone(), r.state.get())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}
