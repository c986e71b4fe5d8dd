//! A chat run: from a validated user message to the stored reply.
//!
//! [`save_user_message`] commits what a message writes before its run (the session, the
//! conversation's profile route, the message itself) in one `IMMEDIATE` transaction, so a
//! refused or failed message leaves nothing behind and the user's message is stored
//! before the first event is sent. [`run`] then decides the [`answer`] (a command, the
//! built-in knowledge provider, or an LLM with its context), emits AstrBot's events
//! through [`Events`] and stores the reply in one transaction at the end, whether or not
//! anyone still listens. [`spawn`] gives a run a thread of its own, detached from the
//! connection (the only thread a request starts); a [`RunSlot`] bounds how many run at
//! once. Upstream errors become the reply's text: a run never fails its request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use rusqlite::Connection;
use serde_json::{Value, json};

use super::commands::{self, Scope};
use super::provider::{Provider, Turn, Usage};
use super::{adapters, context, events};
use crate::app::App;
use crate::config::{self, Effective, ProviderChoice, SessionChoice};
use crate::db::chat::{self as store, Session};
use crate::db::kb::Passage;
use crate::db::resources;
use crate::db::write_tx;
use crate::error::ApiError;
use crate::mirror::Draft;
use crate::sse;
use crate::timefmt::now_micros;

/// A validated chat message, as the run takes it.
pub struct UserMessage {
    pub username: String,
    pub session_id: String,
    /// `webchat:FriendMessage:webchat!<username>!<session_id>`.
    pub umo: String,
    /// The user's parts as stored (no server paths).
    pub parts: Vec<Value>,
    /// The plain text of the message (for commands, search and the model).
    pub text: String,
    pub streaming: bool,
    pub selected_provider: Option<String>,
    pub selected_model: Option<String>,
    /// The sender may use administrator commands.
    pub is_admin: bool,
    /// `webchat`, or the id of the IM bot the message came through.
    pub platform_id: String,
    /// A group chat of an IM bot.
    pub is_group: bool,
    /// Who sent it, as the history shows them (the username on webchat; an IM user's name).
    pub sender_name: String,
}

/// Chat runs at once; each holds a thread (and a stream's writer another), so beyond this
/// the chat answers 503 with `Retry-After` instead of letting threads pile up.
pub const MAX_RUNS: usize = 512;
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// LLM requests that failed (after their retries) since the server started.
static UPSTREAM_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Chat runs in progress now, for the operator's statistics.
pub fn runs_in_progress() -> usize {
    RUNS.load(Ordering::SeqCst)
}

/// LLM requests that failed since the server started, for the operator's statistics.
pub fn upstream_errors() -> u64 {
    UPSTREAM_ERRORS.load(Ordering::Relaxed)
}

/// A place among the running chats; freed when it drops, at the run's end.
pub struct RunSlot;

impl RunSlot {
    pub fn take() -> Result<RunSlot, ApiError> {
        if RUNS.fetch_add(1, Ordering::SeqCst) >= MAX_RUNS {
            RUNS.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Busy {
                message: "Too many chats in progress, try again shortly".into(),
                retry_after: 1,
            });
        }
        Ok(RunSlot)
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        RUNS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn soft(message: impl Into<String>) -> ApiError {
    ApiError::Soft(message.into())
}

/// Stores what a chat message writes before its run, in one `IMMEDIATE` transaction: the
/// session (created if new), the conversation's route to `profile` (the request's
/// `config_id` / `config_name`, if any), the user message, and the session's activity.
/// The session's owner is checked again inside the transaction, so a session deleted or
/// recreated by someone else since the request was checked is handled, never assumed.
/// Returns the message's row id.
pub fn save_user_message(
    conn: &mut Connection,
    msg: &UserMessage,
    profile: Option<&str>,
    checkpoint: &str,
    now: i64,
) -> Result<i64, ApiError> {
    let first_text: String = msg.text.chars().take(40).collect();
    write_tx(conn, |tx| {
        let session = store::ensure_platform_session(
            tx,
            &msg.session_id,
            &msg.username,
            &msg.platform_id,
            msg.is_group,
            now,
        )
        .map_err(|e| soft(format!("Failed to create session: {e}")))?;
        if session.creator != msg.username {
            return Err(soft("session_id belongs to another username"));
        }
        if let Some(profile) = profile {
            let routed = if profile == config::DEFAULT_PROFILE {
                resources::delete_route(tx, &msg.umo).map(|_| ())
            } else if resources::profile(tx, profile)?.is_none() {
                // Deleted since the request named it: no route to a profile that is gone.
                return Err(soft(format!("config_id not found: {profile}")));
            } else {
                resources::set_route(tx, &msg.umo, profile)
            };
            routed.map_err(|e| soft(format!("Failed to update chat config route: {e}")))?;
        }
        let id = store::insert_message(
            tx,
            &msg.session_id,
            "user",
            &msg.sender_name,
            &json!({"type": "user", "message": msg.parts}),
            Some(checkpoint),
            now,
        )?;
        store::touch_session(tx, &msg.session_id, Some(first_text.as_str()).filter(|t| !t.is_empty()), now)?;
        Ok(id)
    })
}

/// Starts the run of a stored message on a thread of its own and returns its events: the
/// session, the saved user message (`saved_id` at `now`), then the run's. The slot is
/// freed when the run ends; the request's webhook event, if its key is mirrored, is
/// finished then with the whole reply.
pub fn spawn(
    app: Arc<App>,
    slot: RunSlot,
    msg: UserMessage,
    checkpoint: String,
    saved_id: i64,
    now: i64,
    mirror: Option<Draft>,
) -> Result<Receiver<String>, ApiError> {
    let (tx, rx) = channel::<String>();
    let _ = tx.send(sse::frame(&events::session_id(&msg.session_id)));
    let _ = tx.send(sse::frame(&events::user_message_saved(saved_id, now, &checkpoint)));
    std::thread::Builder::new()
        .name("chat-run".into())
        .spawn(move || {
            let outcome = run(&app, msg, checkpoint, Some(tx));
            drop(slot);
            if let Some(draft) = mirror {
                let response = json!({"response": outcome.text, "session_id": outcome.session_id, "message_id": outcome.message_id});
                app.outbox.push(draft.finish(200, response));
            }
        })
        .map_err(|e| ApiError::internal(format!("cannot start the chat run: {e}")))?;
    Ok(rx)
}

/// What a finished run produced.
pub struct Outcome {
    pub session_id: String,
    pub message_id: String,
    pub text: String,
    pub sources: Vec<Passage>,
}

/// Sends events of one run; a gone client only makes sends fail, which is ignored.
pub struct Events {
    tx: Option<Sender<String>>,
    run_id: String,
}

impl Events {
    pub fn send(&self, event: Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(sse::frame(&event));
        }
    }
}

/// The run: a command or the provider's answer, then the stats, the complete text, the
/// stored reply and `end`. With `tx` the run's stream is live (proactive messages reach
/// it) until the run ends. Never fails: upstream errors become the reply's text.
pub fn run(app: &App, msg: UserMessage, checkpoint: String, tx: Option<Sender<String>>) -> Outcome {
    let run_id = uuid::Uuid::new_v4().to_string();
    let registration =
        tx.as_ref().map(|tx| app.streams.register(&msg.session_id, &run_id, &msg.username, tx.clone()));
    let ev = Events { tx, run_id: run_id.clone() };
    ev.send(events::run_started(&run_id));
    let started = now_micros();
    let reply = compose(app, &msg, &ev);
    let ended = now_micros();
    let stats = events::stats(reply.usage, started, ended, reply.first_token);
    ev.send(events::agent_stats(&stats));
    let refs = events::refs(&reply.sources);
    ev.send(events::reply(&reply.text, msg.streaming, &run_id, &refs));
    let mut content = json!({"type": "bot", "message": [{"type": "plain", "text": reply.text}], "agent_stats": stats, "refs": refs});
    if reply.command {
        // A command's exchange stays in the history but never reaches the model.
        content["command"] = json!(true);
    }
    match store_reply(app, &msg, &content, &checkpoint, ended) {
        Ok(Some(id)) => ev.send(events::message_saved(id, ended, Some(&checkpoint))),
        // The session was deleted during the run, or is another username's now: its reply has
        // nowhere to go.
        Ok(None) => {
            log::info!(
                "chat run {run_id}: session {} was deleted or is another's, reply not stored",
                msg.session_id
            )
        }
        Err(e) => {
            log::error!("chat run {run_id}: cannot store the reply: {e}");
            ev.send(events::run_failed());
        }
    }
    ev.send(events::end(&run_id));
    drop(registration);
    Outcome { session_id: msg.session_id, message_id: run_id, text: reply.text, sources: reply.sources }
}

/// The reply's row id, or `None` when its session is gone or another username's.
fn store_reply(
    app: &App,
    msg: &UserMessage,
    content: &Value,
    checkpoint: &str,
    ended: i64,
) -> Result<Option<i64>, String> {
    let mut conn = app.db.conn().map_err(|e| e.to_string())?;
    write_tx(&mut conn, |tx| {
        // A session made anew under the same id by (or for) another username while the
        // run went on is not this run's: the reply is dropped as for a deleted one.
        if store::session(tx, &msg.session_id)?.is_some_and(|s| s.creator != msg.username) {
            return Ok(None);
        }
        let id = store::insert_session_message(
            tx,
            &msg.session_id,
            "bot",
            "bot",
            content,
            Some(checkpoint),
            ended,
        )?;
        store::touch_session(tx, &msg.session_id, None, ended)?;
        Ok::<_, rusqlite::Error>(id)
    })
    .map_err(|e| e.to_string())
}

/// The text a run produced, and how.
struct Reply {
    text: String,
    sources: Vec<Passage>,
    usage: Usage,
    /// A command's reply (kept from the model's context).
    command: bool,
    /// Seconds from the start to the first text.
    first_token: Option<f64>,
}

/// Collects a reply's text as it comes, streaming each delta when the client asked.
struct Collector<'a> {
    ev: &'a Events,
    streaming: bool,
    clock: Instant,
    first_token: Option<f64>,
    text: String,
}

impl Collector<'_> {
    fn deliver(&mut self, delta: &str) {
        if self.first_token.is_none() {
            self.first_token = Some(self.clock.elapsed().as_secs_f64());
        }
        self.text.push_str(delta);
        if self.streaming {
            self.ev.send(events::plain(delta, true, &self.ev.run_id));
        }
    }
}

/// Produces the reply's text from the [`answer`], delivering it as it comes.
fn compose(app: &App, msg: &UserMessage, ev: &Events) -> Reply {
    let mut out = Collector {
        ev,
        streaming: msg.streaming,
        clock: Instant::now(),
        first_token: None,
        text: String::new(),
    };
    let mut sources = Vec::new();
    let mut usage = Usage::default();
    let mut command = false;
    match answer(app, msg) {
        Answer::Text(reply) => {
            command = true;
            out.deliver(&reply);
        }
        Answer::Builtin { passages, fallback } => {
            match passages.first() {
                // The passage itself, in small deltas: the built-in provider never invents text.
                Some(best) => split_deltas(&best.body).iter().for_each(|piece| out.deliver(piece)),
                None => out.deliver(&fallback),
            }
            sources = passages;
        }
        Answer::Llm(request) => {
            let result = adapters::generate(
                &request.provider,
                request.model.as_deref(),
                &request.turns,
                msg.streaming,
                request.retries,
                &mut |d| out.deliver(d),
            );
            match result {
                Ok(u) => usage = u,
                Err(e) => {
                    UPSTREAM_ERRORS.fetch_add(1, Ordering::Relaxed);
                    // The persona's own error message replaces the technical one, as in AstrBot.
                    let message = request.custom_error.unwrap_or_else(|| format!("LLM 响应错误: {e}"));
                    log::warn!("chat run {}: {e}", ev.run_id);
                    out.deliver(&message);
                }
            }
            sources = request.sources;
        }
    }
    Reply { text: out.text, sources, usage, command, first_token: out.first_token }
}

/// Splits a text into deltas of a few words, keeping every character.
fn split_deltas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut words = 0;
    for c in text.chars() {
        current.push(c);
        if c.is_whitespace() {
            words += 1;
            if words >= 6 {
                out.push(std::mem::take(&mut current));
                words = 0;
            }
        } else if current.chars().count() >= 48 {
            out.push(std::mem::take(&mut current));
            words = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// How a message is answered.
pub enum Answer {
    /// A command's reply, made by the server.
    Text(String),
    /// The built-in provider: the best passages (the first is the answer).
    Builtin { passages: Vec<Passage>, fallback: String },
    /// A configured LLM with its request (boxed: it is by far the largest answer).
    Llm(Box<LlmRequest>),
}

/// A request to a configured LLM.
pub struct LlmRequest {
    pub provider: Provider,
    pub turns: Vec<Turn>,
    /// The session's (or this message's) model over the provider's.
    pub model: Option<String>,
    pub retries: u32,
    /// Knowledge-base passages in the prompt, listed as the reply's sources.
    pub sources: Vec<Passage>,
    /// The persona's message for a failed request.
    pub custom_error: Option<String>,
}

const NO_MATCH: &str = "I could not find anything about that in the knowledge base. \
To get answers beyond the bundled documents, connect an LLM provider: see /docs/providers";

/// Decides the answer: a command, the built-in provider, or an LLM request with context.
pub fn answer(app: &App, msg: &UserMessage) -> Answer {
    let mut conn = match app.db.conn() {
        Ok(c) => c,
        Err(e) => return Answer::Text(format!("LLM 响应错误: {e}")),
    };
    let session = store::session(&conn, &msg.session_id).ok().flatten();
    let choice = SessionChoice {
        provider_id: msg
            .selected_provider
            .clone()
            .or_else(|| session.as_ref().and_then(|s| s.selected_provider.clone())),
        persona_id: session.as_ref().and_then(|s| s.persona_id.clone()),
    };
    let effective = match config::effective(&conn, &msg.umo, &choice) {
        Ok(e) => e,
        Err(e) => return Answer::Text(format!("LLM 响应错误: {e}")),
    };
    let prefixes: Vec<String> = effective.config["wake_prefix"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_else(|| vec!["/".into()]);
    let scope =
        Scope { session_id: &msg.session_id, umo: &msg.umo, is_admin: msg.is_admin, effective: &effective };
    if let Some(reply) = commands::run(&mut conn, msg.text.trim(), &prefixes, &scope) {
        return Answer::Text(reply);
    }
    match &effective.provider {
        ProviderChoice::Builtin => {
            // A bot with its own collections answers from them only (a website's bot must
            // not answer from our guides); otherwise from everything, guides included.
            let passages = crate::kb::search(&conn, &msg.text, &kb_names(&effective), 3).unwrap_or_default();
            Answer::Builtin { passages, fallback: NO_MATCH.into() }
        }
        ProviderChoice::Configured { config: provider, .. } => {
            let provider = Provider::parse(provider);
            Answer::Llm(Box::new(llm_request(app, &conn, msg, &effective, provider, session.as_ref())))
        }
    }
}

/// The knowledge collections the profile names (`kb_names`).
fn kb_names(effective: &Effective) -> Vec<String> {
    effective.config["kb_names"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The request to a configured provider: the profile's knowledge bases searched for the
/// message, its history and retry settings, the session's model.
fn llm_request(
    app: &App,
    conn: &Connection,
    msg: &UserMessage,
    effective: &Effective,
    provider: Provider,
    session: Option<&Session>,
) -> LlmRequest {
    let kb_names = kb_names(effective);
    let sources = if kb_names.is_empty() {
        Vec::new()
    } else {
        crate::kb::search(conn, &msg.text, &kb_names, 3).unwrap_or_default()
    };
    let settings = &effective.config["provider_settings"];
    let max_turns = settings["max_context_length"].as_i64().unwrap_or(-1);
    let retries = settings["request_max_retries"].as_u64().unwrap_or(3).min(10) as u32;
    let turns = context::context(
        conn,
        &app.settings.data_dir,
        &effective.persona,
        &msg.session_id,
        &msg.parts,
        max_turns,
        &sources,
    );
    let model = msg.selected_model.clone().or_else(|| session.and_then(|s| s.selected_model.clone()));
    let custom_error = effective.persona.custom_error_message.clone();
    LlmRequest { provider, turns, model, retries, sources, custom_error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_keep_every_character() {
        let text = "one two three four five six seven eight nine ten eleven twelve thirteen";
        let d = split_deltas(text);
        assert!(d.len() >= 2);
        assert_eq!(d.concat(), text);
    }
}
