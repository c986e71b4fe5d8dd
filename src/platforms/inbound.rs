//! What happens to a message an IM bot receives: AstrBot's pipeline, in its stage order
//! (platforms reference §3.4-3.9), then the same chat run as `POST /api/v1/chat`.
//!
//! 1. **UMO**: `<bot id>:<FriendMessage|GroupMessage>:<session>`; with the profile's
//!    `platform_settings.unique_session`, a OneBot group session is `<user>_<group>`
//!    (AstrBot has no such rule for Telegram). The profile is the UMO's route, else the
//!    default one (`config::effective`).
//! 2. **Waking**: a wake prefix (`wake_prefix`, default `/`; not in a group whose first
//!    part mentions someone else), an @-mention of the bot, `@all` (unless
//!    `ignore_at_all`), a reply to the bot, or a private chat (unless
//!    `friend_message_needs_wake_prefix`). Anything else is not for the bot and is dropped,
//!    as AstrBot does without plugins.
//! 3. **Admins**: the sender id in `admins_id` may use administrator commands.
//! 4. **Whitelist**: with `enable_id_white_list` and a non-empty `id_whitelist`, the UMO or
//!    the group id must be listed (admins pass when `wl_ignore_admin_on_group` /
//!    `_friend` say so).
//! 5. **Rate limit**: `platform_settings.rate_limit` (`count` per `time` seconds, a sliding
//!    log) per UMO: `stall` waits for room, `discard` drops. AstrBot keys it by the session
//!    part alone, so two bots' chats with the same id share a bucket; we key by UMO.
//! 6. **The run**: the message is stored in the UMO's session (its platform id the bot's,
//!    created by the UMO itself), commands and the provider answer as in the web chat,
//!    with the profile's persona, provider and history.
//! 7. **Decoration and sending**: `reply_prefix`, `reply_with_mention` (groups) and
//!    `reply_with_quote`, then the adapter's `send` to the chat the message came from.
//!
//! Each message is handled on a thread of its own, taking a chat run's slot (so IM traffic
//! and web chats share one bound), and messages of one UMO are answered one at a time, in
//! the order they arrived. Not done (yet): segmented replies, AstrBot's empty-mention
//! prompt (a bare @-mention is dropped), the LLM wake prefix
//! (`provider_settings.wake_prefix`), OneBot's merged-forward for long replies.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Adapter, Inbound, OutPart, Target};
use crate::app::App;
use crate::chat::run::{self, RunSlot, UserMessage};
use crate::config::{self, SessionChoice};
use crate::timefmt::now_micros;

/// UMOs waiting or being answered at once, beyond which a message is dropped (logged): a
/// flood from one platform must not hold unbounded threads.
const MAX_QUEUED: usize = 256;

/// Per-UMO order and rate-limit state.
#[derive(Default)]
struct Lanes {
    /// One lock per UMO that has a message in flight (its count of holders).
    order: HashMap<String, (Arc<Mutex<()>>, usize)>,
    /// When each UMO's recent messages passed the rate limit.
    passed: HashMap<String, VecDeque<Instant>>,
    queued: usize,
}

fn lanes() -> MutexGuard<'static, Lanes> {
    static LANES: OnceLock<Mutex<Lanes>> = OnceLock::new();
    LANES.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a received message: handled on a thread of its own, so the adapter goes on
/// receiving at once.
pub fn dispatch(app: &Arc<App>, bot_id: &str, bot: &Value, adapter: &Arc<dyn Adapter>, msg: Inbound) {
    {
        let mut lanes = lanes();
        if lanes.queued >= MAX_QUEUED {
            log::warn!("bot {bot_id}: too many messages in flight; message {} dropped", msg.message_id);
            return;
        }
        lanes.queued += 1;
    }
    let (app, bot_id, kind, adapter) = (
        app.clone(),
        bot_id.to_owned(),
        bot["type"].as_str().unwrap_or_default().to_owned(),
        adapter.clone(),
    );
    let spawned = std::thread::Builder::new().name("bot-message".into()).spawn(move || {
        let _queued = Queued;
        handle(&app, &bot_id, &kind, adapter.as_ref(), msg);
    });
    if let Err(e) = spawned {
        lanes().queued -= 1;
        log::error!("cannot start a thread for a received message: {e}");
    }
}

/// A message's place among those in flight, given back when its thread ends, panic or not.
struct Queued;

impl Drop for Queued {
    fn drop(&mut self) {
        lanes().queued -= 1;
    }
}

/// A message's turn in its UMO's lane, left when it is answered, panic or not.
struct InLane(String);

impl Drop for InLane {
    fn drop(&mut self) {
        leave_lane(&self.0);
    }
}

/// The settings of `platform_settings` and the top level the pipeline reads.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.trim().to_owned()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn flag(settings: &Value, name: &str, default: bool) -> bool {
    settings[name].as_bool().unwrap_or(default)
}

/// What waking decided: the text to answer (a wake prefix stays on it, so commands see
/// it), and the text the model sees (without the prefix).
struct Woken {
    text: String,
    prompt: String,
}

fn wake(msg: &Inbound, config: &Value) -> Option<Woken> {
    let settings = &config["platform_settings"];
    let text = msg.text.trim().to_owned();
    let prefixes = match config.get("wake_prefix") {
        Some(v) if v.is_array() => strings(v),
        _ => vec!["/".to_owned()],
    };
    let prefix_counts = !(msg.group && msg.first_mention_other);
    if prefix_counts && let Some(p) = prefixes.iter().find(|p| text.starts_with(p.as_str())) {
        let prompt = text[p.len()..].trim().to_owned();
        return Some(Woken { text, prompt });
    }
    let woken = msg.mentions_bot
        || (msg.mentions_all && !flag(settings, "ignore_at_all", false))
        || msg.replies_to_bot
        || (!msg.group && !flag(settings, "friend_message_needs_wake_prefix", false));
    woken.then(|| Woken { prompt: text.clone(), text })
}

fn whitelisted(msg: &Inbound, umo: &str, config: &Value, is_admin: bool) -> bool {
    let settings = &config["platform_settings"];
    let list = strings(&settings["id_whitelist"]);
    if !flag(settings, "enable_id_white_list", true) || list.is_empty() {
        return true;
    }
    let admin_passes = if msg.group {
        flag(settings, "wl_ignore_admin_on_group", true)
    } else {
        flag(settings, "wl_ignore_admin_on_friend", true)
    };
    if is_admin && admin_passes {
        return true;
    }
    list.iter().any(|id| id == umo || msg.group_id.as_deref() == Some(id.as_str()))
}

/// The rate limit's answer for one message now: pass, wait this long, or drop.
#[derive(Debug, PartialEq)]
enum Limit {
    Pass,
    Wait(Duration),
    Drop,
}

/// AstrBot's sliding log: fewer than `count` passes within `window` → pass (recorded);
/// else wait until the oldest leaves the window (+0.3 s), or drop with `discard`.
fn rate_check(
    log: &mut VecDeque<Instant>,
    count: usize,
    window: Duration,
    stall: bool,
    now: Instant,
) -> Limit {
    while log.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
        log.pop_front();
    }
    if log.len() < count {
        log.push_back(now);
        return Limit::Pass;
    }
    if !stall {
        return Limit::Drop;
    }
    let oldest = log.front().copied().unwrap_or(now);
    Limit::Wait((oldest + window).saturating_duration_since(now) + Duration::from_millis(300))
}

/// Waits for room under the UMO's rate limit; false when the message is dropped.
fn rate_limit(umo: &str, config: &Value) -> bool {
    let limit = &config["platform_settings"]["rate_limit"];
    let count = limit["count"].as_i64().unwrap_or(30);
    let secs = limit["time"].as_f64().filter(|t| t.is_finite() && *t > 0.0).unwrap_or(60.0).min(86_400.0);
    if count <= 0 {
        return true;
    }
    let stall = limit["strategy"].as_str() != Some("discard");
    let count = usize::try_from(count).unwrap_or(usize::MAX).min(100_000);
    loop {
        let verdict = {
            let mut lanes = lanes();
            let log = lanes.passed.entry(umo.to_owned()).or_default();
            rate_check(log, count, Duration::from_secs_f64(secs), stall, Instant::now())
        };
        match verdict {
            Limit::Pass => return true,
            Limit::Drop => return false,
            Limit::Wait(d) => std::thread::sleep(d.min(Duration::from_secs(60))),
        }
    }
}

/// Holds the UMO's order lock for the lifetime of the guard's user.
fn lane(umo: &str) -> Arc<Mutex<()>> {
    let mut lanes = lanes();
    let entry = lanes.order.entry(umo.to_owned()).or_insert_with(|| (Arc::new(Mutex::new(())), 0));
    entry.1 += 1;
    entry.0.clone()
}

fn leave_lane(umo: &str) {
    let mut lanes = lanes();
    if let Some(entry) = lanes.order.get_mut(umo) {
        entry.1 -= 1;
        if entry.1 == 0 {
            lanes.order.remove(umo);
        }
    }
    // Old rate logs go with their last message (at most one window later).
    if lanes.passed.len() > 10_000 {
        lanes.passed.retain(|_, log| !log.is_empty());
    }
}

/// The UMO a message belongs to: the session part with `unique_session` applied.
fn umo_of(bot_id: &str, kind: &str, msg: &Inbound, unique: bool) -> String {
    let message_type = if msg.group { "GroupMessage" } else { "FriendMessage" };
    let session = if msg.group && unique && kind == "aiocqhttp" {
        format!("{}_{}", msg.sender_id, msg.session_id)
    } else {
        msg.session_id.clone()
    };
    format!("{bot_id}:{message_type}:{session}")
}

fn handle(app: &Arc<App>, bot_id: &str, kind: &str, adapter: &dyn Adapter, msg: Inbound) {
    let started = Instant::now();
    let conn = match app.db.conn() {
        Ok(c) => c,
        Err(e) => {
            log::error!("bot {bot_id}: cannot read the database for message {}: {e}", msg.message_id);
            return;
        }
    };
    let base = umo_of(bot_id, kind, &msg, false);
    let profile = match config::effective(&conn, &base, &SessionChoice::default()) {
        Ok(e) => e.config,
        Err(e) => {
            log::error!("bot {bot_id}: cannot read the settings for {base}: {e}");
            return;
        }
    };
    drop(conn);
    let unique = flag(&profile["platform_settings"], "unique_session", false);
    let umo = umo_of(bot_id, kind, &msg, unique);
    let Some(woken) = wake(&msg, &profile) else {
        log::debug!("bot {bot_id}: message {} in {umo} is not for the bot", msg.message_id);
        return;
    };
    if woken.prompt.is_empty() && woken.text.is_empty() && msg.media.is_empty() {
        log::debug!("bot {bot_id}: empty message {} in {umo} dropped", msg.message_id);
        return;
    }
    let is_admin = strings(&profile["admins_id"]).contains(&msg.sender_id);
    if !whitelisted(&msg, &umo, &profile, is_admin) {
        if flag(&profile["platform_settings"], "id_whitelist_log", true) {
            log::info!("bot {bot_id}: {umo} is not in the id whitelist; message dropped");
        }
        return;
    }
    let order = lane(&umo);
    let _in_lane = InLane(umo.clone());
    let _turn = order.lock().unwrap_or_else(|e| e.into_inner());
    if rate_limit(&umo, &profile) {
        answer(app, bot_id, adapter, &msg, &umo, woken, is_admin, &profile, started);
    } else {
        log::info!("bot {bot_id}: {umo} is over its rate limit; message {} dropped", msg.message_id);
    }
}

/// Runs the chat for a woken message and sends the reply.
#[allow(clippy::too_many_arguments)]
fn answer(
    app: &Arc<App>,
    bot_id: &str,
    adapter: &dyn Adapter,
    msg: &Inbound,
    umo: &str,
    woken: Woken,
    is_admin: bool,
    profile: &Value,
    started: Instant,
) {
    let slot = match RunSlot::take() {
        Ok(slot) => slot,
        Err(_) => {
            log::warn!(
                "bot {bot_id}: too many chats in progress; message {} in {umo} dropped",
                msg.message_id
            );
            return;
        }
    };
    let mut parts = Vec::new();
    if !woken.prompt.is_empty() {
        parts.push(json!({"type": "plain", "text": woken.prompt}));
    }
    for m in &msg.media {
        parts.push(json!({"type": m.kind, "attachment_id": m.attachment_id, "filename": m.filename}));
    }
    let user = UserMessage {
        username: umo.to_owned(),
        session_id: umo.to_owned(),
        umo: umo.to_owned(),
        parts,
        text: woken.text,
        streaming: false,
        selected_provider: None,
        selected_model: None,
        is_admin,
        platform_id: bot_id.to_owned(),
        is_group: msg.group,
        options: Default::default(),
        sender_name: if msg.sender_name.is_empty() { msg.sender_id.clone() } else { msg.sender_name.clone() },
    };
    let checkpoint = uuid::Uuid::new_v4().to_string();
    let saved = app.db.conn().map_err(|e| e.to_string()).and_then(|mut c| {
        run::save_user_message(&mut c, &user, None, &checkpoint, now_micros()).map_err(|e| e.to_string())
    });
    if let Err(e) = saved {
        log::error!("bot {bot_id}: cannot store message {} of {umo}: {e}", msg.message_id);
        return;
    }
    let outcome = run::run(app, user, checkpoint, None);
    drop(slot);
    let parts = decorate(msg, &outcome.text, profile);
    if parts.iter().all(|p| !matches!(p, OutPart::Text(t) if !t.trim().is_empty())) {
        return;
    }
    let target = Target { group: msg.group, chat: msg.reply_to.clone(), self_id: Some(msg.self_id.clone()) };
    match adapter.send(&target, &parts) {
        Ok(()) => log::debug!("bot {bot_id}: answered {umo} in {} ms", started.elapsed().as_millis()),
        Err(e) => log::warn!("bot {bot_id}: cannot answer {umo}: {e}"),
    }
}

/// The reply's parts: `reply_prefix` on the text, then a quote of the message
/// (`reply_with_quote`) and a mention of the sender in a group (`reply_with_mention`).
fn decorate(msg: &Inbound, text: &str, profile: &Value) -> Vec<OutPart> {
    let settings = &profile["platform_settings"];
    let prefix = settings["reply_prefix"].as_str().unwrap_or_default();
    let mut parts = Vec::new();
    if flag(settings, "reply_with_quote", false) && !msg.message_id.is_empty() {
        parts.push(OutPart::Reply { message_id: msg.message_id.clone() });
    }
    if flag(settings, "reply_with_mention", false) && msg.group {
        parts.push(OutPart::At { id: msg.sender_id.clone(), name: msg.sender_name.clone() });
    }
    parts.push(OutPart::Text(format!("{prefix}{text}")));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_msg(text: &str) -> Inbound {
        Inbound {
            group: true,
            session_id: "20002".into(),
            group_id: Some("20002".into()),
            reply_to: "20002".into(),
            sender_id: "30003".into(),
            sender_name: "Ann".into(),
            self_id: "10001".into(),
            message_id: "555".into(),
            text: text.into(),
            ..Inbound::default()
        }
    }

    fn defaults() -> Value {
        config::default_config()
    }

    #[test]
    fn waking_follows_astrbot() {
        let config = defaults();
        assert!(wake(&group_msg("hello"), &config).is_none(), "an unaddressed group message");
        let w = wake(&group_msg("/help"), &config).unwrap();
        assert_eq!((w.text.as_str(), w.prompt.as_str()), ("/help", "help"));
        let mentioned = Inbound { mentions_bot: true, ..group_msg("hi") };
        assert_eq!(wake(&mentioned, &config).unwrap().prompt, "hi");
        assert!(wake(&Inbound { replies_to_bot: true, ..group_msg("hi") }, &config).is_some());
        assert!(wake(&Inbound { mentions_all: true, ..group_msg("hi") }, &config).is_some());
        assert!(
            wake(&Inbound { first_mention_other: true, ..group_msg("/help") }, &config).is_none(),
            "a prefix after a mention of someone else does not wake"
        );
        let private = Inbound { group: false, group_id: None, ..group_msg("hi") };
        assert!(wake(&private, &config).is_some());
        let mut strict = defaults();
        strict["platform_settings"]["friend_message_needs_wake_prefix"] = json!(true);
        assert!(wake(&private, &strict).is_none());
        let mut no_all = defaults();
        no_all["platform_settings"]["ignore_at_all"] = json!(true);
        assert!(wake(&Inbound { mentions_all: true, ..group_msg("hi") }, &no_all).is_none());
    }

    #[test]
    fn whitelist_by_umo_or_group_id_and_admins() {
        let mut config = defaults();
        let msg = group_msg("hi");
        assert!(whitelisted(&msg, "qq:GroupMessage:20002", &config, false), "an empty list lets all pass");
        config["platform_settings"]["id_whitelist"] = json!(["20002"]);
        assert!(whitelisted(&msg, "qq:GroupMessage:20002", &config, false));
        config["platform_settings"]["id_whitelist"] = json!(["qq:FriendMessage:1"]);
        assert!(!whitelisted(&msg, "qq:GroupMessage:20002", &config, false));
        assert!(whitelisted(&msg, "qq:GroupMessage:20002", &config, true), "admins pass by default");
        config["platform_settings"]["enable_id_white_list"] = json!(false);
        assert!(whitelisted(&msg, "qq:GroupMessage:20002", &config, false));
    }

    #[test]
    fn the_rate_limit_is_a_sliding_log() {
        let t0 = Instant::now();
        let mut log = VecDeque::new();
        let w = Duration::from_secs(10);
        assert_eq!(rate_check(&mut log, 2, w, true, t0), Limit::Pass);
        assert_eq!(rate_check(&mut log, 2, w, true, t0 + Duration::from_secs(1)), Limit::Pass);
        assert_eq!(
            rate_check(&mut log, 2, w, true, t0 + Duration::from_secs(2)),
            Limit::Wait(Duration::from_millis(8300))
        );
        assert_eq!(rate_check(&mut log, 2, w, false, t0 + Duration::from_secs(2)), Limit::Drop);
        assert_eq!(rate_check(&mut log, 2, w, true, t0 + Duration::from_secs(10)), Limit::Pass);
    }

    #[test]
    fn umos_and_unique_sessions() {
        let msg = group_msg("hi");
        assert_eq!(umo_of("qq", "aiocqhttp", &msg, false), "qq:GroupMessage:20002");
        assert_eq!(umo_of("qq", "aiocqhttp", &msg, true), "qq:GroupMessage:30003_20002");
        assert_eq!(umo_of("tg", "telegram", &msg, true), "tg:GroupMessage:20002", "no rule for Telegram");
        let private = Inbound { group: false, session_id: "4242".into(), ..group_msg("hi") };
        assert_eq!(umo_of("tg", "telegram", &private, true), "tg:FriendMessage:4242");
    }

    #[test]
    fn decoration_adds_prefix_quote_and_mention() {
        let mut config = defaults();
        config["platform_settings"]["reply_prefix"] = json!("> ");
        config["platform_settings"]["reply_with_quote"] = json!(true);
        config["platform_settings"]["reply_with_mention"] = json!(true);
        let parts = decorate(&group_msg("hi"), "answer", &config);
        assert_eq!(
            parts,
            vec![
                OutPart::Reply { message_id: "555".into() },
                OutPart::At { id: "30003".into(), name: "Ann".into() },
                OutPart::Text("> answer".into())
            ]
        );
    }
}
