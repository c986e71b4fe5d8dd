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
//!
//! An LLM answer is an agent loop (AstrBot's `run_agent`, mcp.md §2.6): the model is
//! offered the chat's [`tools::Toolbox`]; when it asks for tools, each call is announced
//! (`tool_call`), run ([`tools::execute`]) and answered (`tool_call_result`), and the
//! calls and results go back to the model, for at most `provider_settings.max_agent_step`
//! steps (default 30). Then one last request offers no tools and asks the model, in
//! AstrBot's (English) words, to answer with what it has. The loop also ends early, the
//! same way, when [`AGENT_BUDGET`] of wall-clock time is spent (a tool call never waits
//! past it) or the results fed back reach [`MAX_FED_BACK`] bytes. A provider whose
//! `modalities` leave out `tool_use` is offered no tools (as in AstrBot), and a model that
//! refuses them with a 4xx naming tools is asked again without.
//!
//! A reasoning model's thoughts ([`Delta::Reasoning`]) are shown apart when the client asks
//! ([`ChatOptions`], AstrBot 4.29's `enable_reasoning`): streamed as `reasoning` events and
//! kept beside the reply, never in it, so the history the model sees has none; they go back
//! to the model only with its own tool calls, as the vendors require. Built-in error texts
//! follow the client's `locale` (`chat::locale`).
//!
//! Every path takes the loop: the SSE stream (events live), `Accept: application/json`,
//! the Astroworld answers and the IM platforms (events to no one). The reply (`complete`,
//! the JSON answer, the stored message) is the text of the last request; text a model
//! wrote before its tool calls is streamed but not part of it. The stored message keeps
//! each call, with its result, as AstrBot's `tool_call` part before the text; the history
//! the model sees next time has only the text (as AstrBot's does).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{Value, json};

use super::commands::{self, Scope};
use super::locale::Locale;
use super::provider::{Delta, Message, Offer, Provider, Turn, Usage};
use super::runs::{self, RunLog};
use super::{adapters, context, events, tools};
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
    /// How the client wants the run shown (webchat's `enable_reasoning` and `locale`).
    pub options: ChatOptions,
}

/// How a client wants its run shown (AstrBot 4.29). The default, for the IM platforms,
/// shows no reasoning and keeps 4.27's texts.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatOptions {
    /// A reasoning model's thoughts are shown: streamed as `plain` events of `chain_type:
    /// "reasoning"` (and in `complete.reasoning`), or at the head of a non-streaming reply
    /// ([`with_reasoning_head`]). Never part of the stored reply nor of the history.
    pub reasoning: bool,
    /// The language of the built-in error texts.
    pub locale: Locale,
}

/// What a non-streaming reply with reasoning begins with (AstrBot's words): the thoughts,
/// then a rule, then the reply.
pub fn with_reasoning_head(reasoning: &str, text: &str) -> String {
    format!("🤔 思考: {reasoning}\n\n────\n{text}")
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
        if session.platform_id != msg.platform_id {
            return Err(soft("Permission denied"));
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

/// Starts the run of a stored message on a thread of its own and returns its SSE frames:
/// the session, the saved user message (`saved_id` at `now`), then the run's. The run's
/// events are logged for `owner` (who may resume them, `chat::runs`). The slot is freed
/// when the run ends; the request's webhook event, if its key is mirrored, is finished
/// then with the whole reply.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    app: Arc<App>,
    slot: RunSlot,
    msg: UserMessage,
    checkpoint: String,
    saved_id: i64,
    now: i64,
    mirror: Option<Draft>,
    owner: &str,
) -> Result<Receiver<String>, ApiError> {
    let log = app.runs.create(owner, &msg.session_id, &checkpoint);
    let prefix = vec![
        sse::frame(&events::session_id(&msg.session_id)),
        sse::frame(&events::user_message_saved(saved_id, now, &checkpoint)),
    ];
    let rx = log.subscribe(runs::Framing::Sse, prefix, false, None);
    start_logged(app, slot, msg, log, mirror)?;
    Ok(rx)
}

/// Runs a stored message on a thread of its own, its events into `log` (which ends with
/// the run, panic or not).
pub fn start_logged(
    app: Arc<App>,
    slot: RunSlot,
    msg: UserMessage,
    log: Arc<RunLog>,
    mirror: Option<Draft>,
) -> Result<(), ApiError> {
    std::thread::Builder::new()
        .name("chat-run".into())
        .spawn(move || {
            let finisher = runs::Finisher(log.clone());
            let checkpoint = log.checkpoint.clone();
            let outcome = run(&app, msg, checkpoint, Some(log));
            drop(finisher);
            drop(slot);
            if let Some(draft) = mirror {
                let response = json!({"response": outcome.text, "session_id": outcome.session_id, "message_id": outcome.message_id});
                app.outbox.push(draft.finish(200, response));
            }
        })
        .map(|_| ())
        .map_err(|e| ApiError::internal(format!("cannot start the chat run: {e}")))
}

/// What a finished run produced.
pub struct Outcome {
    pub session_id: String,
    pub message_id: String,
    pub text: String,
    pub sources: Vec<Passage>,
}

/// Sends events of one run into its log; a gone client is the log's business.
pub struct Events {
    log: Option<Arc<RunLog>>,
    run_id: String,
}

impl Events {
    pub fn send(&self, event: Value) {
        if let Some(log) = &self.log {
            log.push(event);
        }
    }
}

/// The run: a command or the provider's answer, then the stats, the complete text, the
/// stored reply and `end`. With `tx` the run's stream is live (proactive messages reach
/// it) until the run ends. Never fails: upstream errors become the reply's text.
pub fn run(app: &App, msg: UserMessage, checkpoint: String, log: Option<Arc<RunLog>>) -> Outcome {
    let run_id = log.as_ref().map_or_else(|| uuid::Uuid::new_v4().to_string(), |l| l.run_id.clone());
    let registration =
        log.as_ref().map(|log| app.streams.register(&msg.session_id, &run_id, &msg.username, log.clone()));
    let ev = Events { log, run_id: run_id.clone() };
    ev.send(events::run_started(&run_id));
    let started = now_micros();
    let reply = compose(app, &msg, &ev, started);
    let ended = now_micros();
    let stats = events::stats(reply.usage, reply.context_tokens, started, ended, reply.first_token);
    ev.send(events::agent_stats(&stats));
    let refs = events::refs(&reply.sources);
    // The reply as the client sees it: a streamed reply's reasoning went out as events (and
    // rides along in `complete`); a whole reply carries it at its head.
    let shown = match (msg.streaming, reply.reasoning.is_empty()) {
        (false, false) => with_reasoning_head(&reply.reasoning, &reply.text),
        _ => reply.text.clone(),
    };
    let mut last = events::reply(&shown, msg.streaming, &run_id, &refs);
    if msg.streaming && !reply.reasoning.is_empty() {
        last["reasoning"] = json!(reply.reasoning);
    }
    ev.send(last);
    let mut parts = reply.tool_parts;
    parts.push(json!({"type": "plain", "text": reply.text}));
    let mut content = json!({"type": "bot", "message": parts, "agent_stats": stats, "refs": refs});
    if !reply.reasoning.is_empty() {
        content["reasoning"] = json!(reply.reasoning);
    }
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
    Outcome { session_id: msg.session_id, message_id: run_id, text: shown, sources: reply.sources }
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
    /// A reasoning model's thoughts, when the client asked to see them.
    reasoning: String,
    sources: Vec<Passage>,
    usage: Usage,
    /// The input tokens of the last request.
    context_tokens: u64,
    /// A command's reply (kept from the model's context).
    command: bool,
    /// Seconds from the start to the first text.
    first_token: Option<f64>,
    /// The tool calls made, as stored parts (AstrBot's `tool_call` parts).
    tool_parts: Vec<Value>,
}

/// The reasoning a reply keeps (for `complete`, the head of a whole reply and the stored
/// message): a model that thinks at length over many tool steps must not grow them
/// without bound. Pieces past it are still streamed.
const MAX_KEPT_REASONING: usize = 256 << 10;

/// Collects a reply's text (and reasoning) as it comes, streaming each delta when the
/// client asked.
struct Collector<'a> {
    ev: &'a Events,
    streaming: bool,
    /// Reasoning is kept and shown; otherwise it is dropped as it comes.
    show_reasoning: bool,
    clock: Instant,
    first_token: Option<f64>,
    text: String,
    reasoning: String,
}

impl Collector<'_> {
    fn deliver(&mut self, delta: &str) {
        self.take(Delta::Text(delta));
    }

    fn take(&mut self, delta: Delta<'_>) {
        if self.first_token.is_none() {
            self.first_token = Some(self.clock.elapsed().as_secs_f64());
        }
        match delta {
            Delta::Text(t) => {
                self.text.push_str(t);
                if self.streaming {
                    self.ev.send(events::plain(t, true, &self.ev.run_id));
                }
            }
            Delta::Reasoning(r) if self.show_reasoning => {
                // Kept whole up to a bound (it is stored with the reply); streamed always.
                if self.reasoning.len().saturating_add(r.len()) <= MAX_KEPT_REASONING {
                    self.reasoning.push_str(r);
                }
                if self.streaming {
                    self.ev.send(events::reasoning(r, &self.ev.run_id));
                }
            }
            Delta::Reasoning(_) | Delta::Signature(_) => {}
        }
    }
}

/// Produces the reply's text from the [`answer`], delivering it as it comes.
fn compose(app: &App, msg: &UserMessage, ev: &Events, started: i64) -> Reply {
    let mut out = Collector {
        ev,
        streaming: msg.streaming,
        show_reasoning: msg.options.reasoning,
        clock: Instant::now(),
        first_token: None,
        text: String::new(),
        reasoning: String::new(),
    };
    let mut sources = Vec::new();
    let mut usage = Usage::default();
    let mut context_tokens = 0;
    let mut command = false;
    let mut tool_parts = Vec::new();
    let mut final_from = 0;
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
            let mut request = request;
            let done = agent(app, msg, ev, &mut request, &mut out, started);
            (usage, context_tokens, tool_parts, final_from) =
                (done.usage, done.context, done.parts, done.final_from);
            sources = request.sources;
        }
    }
    // `final_from` is a position the collector reached, so a character boundary.
    let text = match final_from {
        0 => out.text,
        from => out.text.get(from..).unwrap_or_default().to_owned(),
    };
    Reply {
        text,
        reasoning: out.reasoning,
        sources,
        usage,
        context_tokens,
        command,
        first_token: out.first_token,
        tool_parts,
    }
}

/// The wall-clock budget of one chat's agent loop: past it, no tool runs and the next
/// request is the final one without tools. A tool call's timeout is cut to what is left.
/// (One request to the model is bounded on its own by the adapters' stream limits.)
pub const AGENT_BUDGET: Duration = Duration::from_secs(600);
/// The tool results fed back to the model in one chat, in bytes; past it the next request
/// is the final one, so a chatty tool cannot grow a request without bound.
pub const MAX_FED_BACK: usize = 1 << 20;
/// A stored `tool_call` part keeps this much of each result (the model got all of it).
const STORED_RESULT: usize = 8 << 10;
/// AstrBot's message for the forced final answer (`MAX_STEPS_REACHED_PROMPT`, the English
/// one of its `step_until_done`; its webchat pipeline says the same in Chinese): a prompt
/// to the model, never shown to the user.
const LIMIT_PROMPT: &str = "Maximum tool call limit reached. Stop calling tools, and based on the information you have gathered, summarize your task and findings, and reply to the user directly.";

/// What the agent loop left: the usage summed over its requests, the last request's input
/// tokens, the stored tool parts, and where the last request's text starts in the reply.
struct Agent {
    usage: Usage,
    context: u64,
    parts: Vec<Value>,
    final_from: usize,
}

fn unix_secs() -> f64 {
    now_micros() as f64 / 1e6
}

/// The agent loop: requests to the model, and the tools it asks for between them.
fn agent(
    app: &App,
    msg: &UserMessage,
    ev: &Events,
    request: &mut LlmRequest,
    out: &mut Collector<'_>,
    started: i64,
) -> Agent {
    let clock = Instant::now();
    let mut done = Agent { usage: Usage::default(), context: 0, parts: Vec::new(), final_from: 0 };
    // The turns move (they may hold images as data URLs): the request needs them no more.
    let mut messages: Vec<Message> =
        std::mem::take(&mut request.turns).into_iter().map(Message::Turn).collect();
    let request = &*request;
    let env = tools::Env {
        app,
        run_id: &ev.run_id,
        session_id: &msg.session_id,
        event: plugin_event(msg),
        timezone: request.timezone.clone(),
        kb_names: request.kb_names.clone(),
        skills: request.skills.clone(),
    };
    let specs = &request.tools.specs;
    let mut steps = 0u32;
    let mut fed_back = 0usize;
    let mut no_tools = false;
    loop {
        let spent = clock.elapsed() >= AGENT_BUDGET || fed_back >= MAX_FED_BACK;
        let offer = if specs.is_empty() || request.max_steps == 0 || no_tools {
            Offer::None
        } else if steps >= request.max_steps || spent {
            if steps > 0 {
                messages.push(Message::Turn(Turn { role: "user", content: json!(LIMIT_PROMPT) }));
            }
            Offer::Final(specs)
        } else {
            Offer::Auto(specs)
        };
        done.final_from = out.text.len();
        let result = adapters::request(
            &request.provider,
            request.model.as_deref(),
            &messages,
            offer,
            msg.streaming,
            request.retries,
            &mut |d| out.take(d),
        );
        let step = match result {
            Ok(step) => step,
            // A model or server that takes no tools says so with a 4xx naming them (Ollama's
            // "does not support tools", vLLM's tool-choice flags): the chat goes on without.
            Err(e)
                if steps == 0
                    && matches!(offer, Offer::Auto(_))
                    && refuses_tools(&e)
                    && out.text.is_empty() =>
            {
                log::warn!(
                    "chat run {}: the model refused the tools ({e}); asking again without tools",
                    ev.run_id
                );
                no_tools = true;
                continue;
            }
            Err(e) => {
                UPSTREAM_ERRORS.fetch_add(1, Ordering::Relaxed);
                // The persona's own error message replaces the technical one, as in AstrBot.
                let message =
                    request.custom_error.clone().unwrap_or_else(|| msg.options.locale.request_failed(&e));
                log::warn!("chat run {}: {e}", ev.run_id);
                out.deliver(&message);
                return done;
            }
        };
        done.usage.add(step.usage);
        done.context = step.usage.input.saturating_add(step.usage.cached);
        // Calls asked for in the final request are not run: it offered none.
        if step.calls.is_empty() || !matches!(offer, Offer::Auto(_)) {
            return done;
        }
        steps += 1;
        // AstrBot's order in a step: the request's statistics (cumulative), then each call
        // and its result.
        let stats = events::stats(done.usage, done.context, started, now_micros(), out.first_token);
        ev.send(events::agent_stats(&stats));
        let mut results = Vec::with_capacity(step.calls.len());
        for call in &step.calls {
            let args = tools::parse_arguments(&call.arguments).unwrap_or_else(|_| json!(call.arguments));
            let ts = unix_secs();
            ev.send(events::tool_call(&call.id, &call.name, &args, ts, &ev.run_id));
            let left = AGENT_BUDGET.saturating_sub(clock.elapsed());
            let text = if left.is_zero() {
                format!("error: the chat's time budget of {} s is spent", AGENT_BUDGET.as_secs())
            } else {
                tools::execute(&env, &request.tools, call, request.tool_timeout.min(left)).0
            };
            let finished = unix_secs();
            ev.send(events::tool_call_result(&call.id, finished, &text, &ev.run_id));
            fed_back = fed_back.saturating_add(text.len());
            done.parts.push(json!({"type": "tool_call", "tool_calls": [{
                "id": call.id, "name": call.name, "args": args, "ts": ts,
                "result": stored_result(&text), "finished_ts": finished,
            }]}));
            results.push((call.id.clone(), text));
        }
        // Arguments go back as the model wrote them, except text that is not a JSON object
        // (or none): that stands as `{}`, as AstrBot sends it, since servers that render
        // the history through a chat template parse it (the error result told the model).
        let mut calls = step.calls;
        for call in &mut calls {
            if tools::parse_arguments(&call.arguments).is_err() || call.arguments.trim().is_empty() {
                call.arguments = "{}".into();
            }
        }
        messages.push(Message::Calls {
            text: step.text,
            reasoning: step.reasoning,
            signature: step.signature,
            calls,
        });
        messages.push(Message::Results(results));
    }
}

/// An upstream error that refuses the tools offered: a 4xx (never retried) naming them.
fn refuses_tools(error: &str) -> bool {
    let status_4xx = error
        .strip_prefix("Error code: 4")
        .is_some_and(|r| !r.starts_with("01") && !r.starts_with("03") && !r.starts_with("29"));
    status_4xx && error.to_ascii_lowercase().contains("tool")
}

/// A result as the history keeps it: at most [`STORED_RESULT`] bytes, with a note.
fn stored_result(text: &str) -> String {
    if text.len() <= STORED_RESULT {
        return text.to_owned();
    }
    let mut end = STORED_RESULT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[stored cut at 8 KiB of {} bytes]", &text[..end], text.len())
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
    /// The tools offered (none: the request is exactly a chat without tools).
    pub tools: tools::Toolbox,
    /// `provider_settings.max_agent_step`: requests that may offer tools.
    pub max_steps: u32,
    /// `provider_settings.tool_call_timeout`: the longest one tool call may take.
    pub tool_timeout: Duration,
    /// The profile's `timezone` and `kb_names`, for the built-in tools.
    pub timezone: String,
    pub kb_names: Vec<String>,
    /// The persona's `skills` (`None`: every active skill).
    pub skills: Option<Vec<String>>,
}

const NO_MATCH: &str = "I could not find anything about that in the knowledge base. \
To get answers beyond the bundled documents, connect an LLM provider: see /docs/providers";

/// Decides the answer: a command, the built-in provider, or an LLM request with context.
pub fn answer(app: &App, msg: &UserMessage) -> Answer {
    let mut conn = match app.db.conn() {
        Ok(c) => c,
        Err(e) => return Answer::Text(msg.options.locale.request_failed(&e.to_string())),
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
        Err(e) => return Answer::Text(msg.options.locale.request_failed(&e.to_string())),
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
    // The plugins' commands, after the built-in ones; their processes run without our
    // connection held.
    if let Some(rest) = commands::strip_prefix(msg.text.trim(), &prefixes) {
        drop(conn);
        if let Some(reply) = app.plugins.run_command(rest, &plugin_event(msg)) {
            return Answer::Text(reply);
        }
        conn = match app.db.conn() {
            Ok(c) => c,
            Err(e) => return Answer::Text(msg.options.locale.request_failed(&e.to_string())),
        };
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

/// The chat a plugin's command or tool is called from.
pub fn plugin_event(msg: &UserMessage) -> crate::plugins::registry::Event {
    crate::plugins::registry::Event {
        umo: msg.umo.clone(),
        session_id: msg.session_id.clone(),
        platform: msg.platform_id.clone(),
        is_group: msg.is_group,
        sender_id: msg.username.clone(),
        sender_name: msg.sender_name.clone(),
        is_admin: msg.is_admin,
        message_str: msg.text.clone(),
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
    let tools = match provider.takes_tools() {
        true => tools::Toolbox::offered(
            app,
            effective.persona.tools.as_deref(),
            effective.persona.skills.as_deref(),
        ),
        false => tools::Toolbox::default(),
    };
    // AstrBot falls back to 30 for anything but a number (a bool too); 0 offers no tools.
    let max_steps = settings["max_agent_step"].as_u64().unwrap_or(30).min(MAX_AGENT_STEPS) as u32;
    let timeout_secs = settings["tool_call_timeout"]
        .as_f64()
        .filter(|t| t.is_finite() && *t > 0.0)
        .unwrap_or(120.0)
        .clamp(1.0, AGENT_BUDGET.as_secs_f64());
    LlmRequest {
        provider,
        turns,
        model,
        retries,
        sources,
        custom_error,
        tools,
        max_steps,
        tool_timeout: Duration::from_secs_f64(timeout_secs),
        timezone: effective.config["timezone"].as_str().unwrap_or_default().to_owned(),
        kb_names,
        skills: effective.persona.skills.clone(),
    }
}

/// `max_agent_step` is held to this: each step is a request to a paid model.
const MAX_AGENT_STEPS: u64 = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_4xx_naming_tools_is_a_refusal_of_tools() {
        assert!(refuses_tools(
            "Error code: 400 - registry.ollama.ai/library/gemma:2b does not support tools"
        ));
        assert!(refuses_tools("Error code: 422 - \"auto\" tool choice requires --enable-auto-tool-choice"));
        assert!(!refuses_tools("Error code: 400 - model not found"));
        assert!(!refuses_tools("Error code: 429 - too many tool requests"));
        assert!(!refuses_tools("Error code: 500 - tool crashed"));
        assert!(!refuses_tools("request failed: tool"));
    }

    #[test]
    fn stored_results_are_cut() {
        assert_eq!(stored_result("short"), "short");
        let long = "x".repeat(STORED_RESULT + 5);
        assert!(stored_result(&long).ends_with(&format!("\n[stored cut at 8 KiB of {} bytes]", long.len())));
    }

    #[test]
    fn deltas_keep_every_character() {
        let text = "one two three four five six seven eight nine ten eleven twelve thirteen";
        let d = split_deltas(text);
        assert!(d.len() >= 2);
        assert_eq!(d.concat(), text);
    }
}
