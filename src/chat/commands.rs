//! Chat commands, answered by the server in the chat's stream shape and never sent to the
//! model: `/help`, `/sid`, `/reset`, `/new`, `/provider [id]`, `/model [name]` (both for
//! administrators: the username is in `admins_id` and the key has `chat:admin`) and
//! `/persona [id]`. The prefix is the config's `wake_prefix` (default `/`). A command that
//! writes does so in one `IMMEDIATE` transaction of its own.
//!
//! Plugins' commands are looked up after the built-in ones (`plugins::registry`), with the
//! same prefix rule ([`strip_prefix`]).

use rusqlite::Connection;
use serde_json::json;

use super::provider::Provider;
use crate::config::{self, Effective, ProviderChoice};
use crate::db::chat as store;
use crate::db::resources::{self, Docs};
use crate::db::write_tx;

const HELP: &str = "Commands:\n\
/help: this list\n\
/sid: this session's id and UMO\n\
/reset: clear this session's history\n\
/new: start a new conversation (the model forgets what came before)\n\
/persona [id]: show or switch this session's persona\n\
/provider [id]: show or switch this session's provider (administrators)\n\
/model [name]: show or switch this session's model (administrators)";

/// Where a command runs: the session, its UMO, whether the sender may use administrator
/// commands, and the settings in effect.
pub struct Scope<'a> {
    pub session_id: &'a str,
    pub umo: &'a str,
    pub is_admin: bool,
    pub effective: &'a Effective,
}

/// The text after the first wake prefix it starts with, if any.
pub fn strip_prefix<'t>(text: &'t str, prefixes: &[String]) -> Option<&'t str> {
    prefixes.iter().filter(|p| !p.is_empty()).find_map(|p| text.strip_prefix(p.as_str()))
}

/// The reply to a built-in command, or `None` when the text is not one.
pub fn run(conn: &mut Connection, text: &str, prefixes: &[String], scope: &Scope<'_>) -> Option<String> {
    let rest = strip_prefix(text, prefixes)?;
    let mut words = rest.split_whitespace();
    let name = words.next()?.to_ascii_lowercase();
    let arg = words.next().map(str::to_owned);
    let session_id = scope.session_id;
    let reply = match name.as_str() {
        "help" => HELP.to_owned(),
        "sid" => format!("Session ID: {session_id}\nUMO: {}", scope.umo),
        "reset" => match write_tx(conn, |tx| store::clear_messages(tx, session_id)) {
            Ok(()) => "History cleared.".to_owned(),
            Err(e) => format!("Could not clear the history: {e}"),
        },
        "new" => new_conversation(conn, session_id),
        "provider" | "model" if !scope.is_admin => "Permission denied".to_owned(),
        "provider" => provider(conn, scope, arg),
        "model" => model(conn, scope, arg),
        "persona" => persona(conn, scope, arg),
        _ => return None,
    };
    Some(reply)
}

/// Writes the session's choice; only the choice named is written, the others keep
/// whatever is stored at that moment.
fn choose(
    conn: &mut Connection,
    session_id: &str,
    provider: Option<&str>,
    model: Option<&str>,
    persona: Option<&str>,
) -> rusqlite::Result<()> {
    write_tx(conn, |tx| store::update_session_choice(tx, session_id, provider, model, persona))
}

/// `/new`: a marker in the history; the model's context starts after the last one.
fn new_conversation(conn: &mut Connection, session_id: &str) -> String {
    let marker = json!({"type": "bot", "message": [], "new_conversation": true});
    let now = crate::timefmt::now_micros();
    match write_tx(conn, |tx| store::insert_message(tx, session_id, "bot", "bot", &marker, None, now)) {
        Ok(_) => "Started a new conversation.".to_owned(),
        Err(e) => format!("Could not start a new conversation: {e}"),
    }
}

/// `/provider [id]`
fn provider(conn: &mut Connection, scope: &Scope<'_>, arg: Option<String>) -> String {
    let current = match &scope.effective.provider {
        ProviderChoice::Configured { id, .. } => id.clone(),
        ProviderChoice::Builtin => config::BUILTIN_PROVIDER.to_owned(),
    };
    let ids: Vec<String> = resources::docs(conn, Docs::Providers)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .chain([config::BUILTIN_PROVIDER.to_owned()])
        .collect();
    match arg {
        None => format!(
            "Current provider: {current}\nAvailable: {}",
            ids.iter()
                .map(|i| if *i == current { format!("{i} (current)") } else { i.clone() })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(id) if ids.contains(&id) => match choose(conn, scope.session_id, Some(&id), None, None) {
            Ok(()) => format!("Provider switched to {id}."),
            Err(e) => format!("Could not switch: {e}"),
        },
        Some(id) => format!("Unknown provider: {id}"),
    }
}

/// `/model [name]`: the session's model, else the provider's.
fn model(conn: &mut Connection, scope: &Scope<'_>, arg: Option<String>) -> String {
    match arg {
        None => {
            let session = store::session(conn, scope.session_id).ok().flatten();
            let current =
                session.and_then(|s| s.selected_model).unwrap_or_else(|| match &scope.effective.provider {
                    ProviderChoice::Configured { config, .. } => Provider::parse(config).model,
                    ProviderChoice::Builtin => config::BUILTIN_PROVIDER.to_owned(),
                });
            format!("Current model: {current}")
        }
        Some(m) => match choose(conn, scope.session_id, None, Some(&m), None) {
            Ok(()) => format!("Model switched to {m}."),
            Err(e) => format!("Could not switch: {e}"),
        },
    }
}

/// `/persona [id]`
fn persona(conn: &mut Connection, scope: &Scope<'_>, arg: Option<String>) -> String {
    let ids: Vec<String> = resources::personas(conn, None)
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.persona_id)
        .chain([config::DEFAULT_PERSONA_ID.to_owned()])
        .collect();
    match arg {
        None => {
            format!("Current persona: {}\nAvailable: {}", scope.effective.persona.persona_id, ids.join(", "))
        }
        Some(id) if ids.contains(&id) => match choose(conn, scope.session_id, None, None, Some(&id)) {
            Ok(()) => format!("Persona switched to {id}."),
            Err(e) => format!("Could not switch: {e}"),
        },
        Some(id) => format!("Unknown persona: {id}"),
    }
}
