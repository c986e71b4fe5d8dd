//! The config documents as clients and the chat read them: a profile is its stored part
//! merged over [`default_config`]; the default profile is the system config, whose
//! `provider_sources`, `provider` and `platform` sections are mirrored read-only from their
//! tables (`db::resources`).

use rusqlite::Connection;
use serde_json::{Value, json};

use super::defaults::{DEFAULT_PROFILE, default_config};
use crate::db::resources::{self, Docs};

/// `base` with `over` merged in, objects recursively.
pub fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => deep_merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The stored part of a profile merged over the defaults, with the `agent_runner` view of
/// AstrBot 4.29 built from its 4.27 keys (`layouts`).
pub(super) fn with_defaults(stored: &Value) -> Value {
    let mut config = default_config();
    deep_merge(&mut config, stored);
    super::layouts::with_runner_view(config)
}

/// A new profile as it reads before anything is stored in it.
pub fn profile_defaults() -> Value {
    with_defaults(&json!({}))
}

/// The system config (the default profile) in clear, with its mirrored sections.
pub fn system_config(conn: &Connection) -> rusqlite::Result<Value> {
    let stored = resources::profile(conn, DEFAULT_PROFILE)?.map(|p| p.body).unwrap_or_else(|| json!({}));
    let mut config = with_defaults(&stored);
    config["provider_sources"] = Value::Array(resources::docs(conn, Docs::ProviderSources)?);
    config["provider"] = Value::Array(resources::docs(conn, Docs::Providers)?);
    config["platform"] = Value::Array(resources::bots(conn)?.into_iter().map(|b| b.config).collect());
    Ok(config)
}

/// A profile's config in clear (the default profile is the system config).
pub fn profile_config(conn: &Connection, id: &str) -> rusqlite::Result<Option<Value>> {
    if id == DEFAULT_PROFILE {
        return system_config(conn).map(Some);
    }
    Ok(resources::profile(conn, id)?.map(|p| with_defaults(&p.body)))
}

/// Every profile's `admins_id`: the chat reserves these usernames for the admin token and
/// keys with `chat:admin`, so an ordinary key cannot chat as, or read, an administrator.
pub fn all_admin_ids(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut push = |config: &Value| {
        for id in config["admins_id"].as_array().into_iter().flatten() {
            let s = match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !ids.contains(&s) {
                ids.push(s);
            }
        }
    };
    push(&system_config(conn)?);
    for p in resources::custom_profiles(conn)? {
        push(&with_defaults(&p.body));
    }
    Ok(ids)
}

/// What a bot id names (decisions 14 and 15): a config profile by its id, else by its
/// name; `default` is the default profile.
#[derive(Debug, PartialEq, Eq)]
pub enum BotLookup {
    Found(String),
    Missing,
    /// Several profiles have that name and none that id.
    Ambiguous,
}

/// Resolves a bot id (trimmed) to a config profile id.
pub fn find_bot(conn: &Connection, bot_id: &str) -> rusqlite::Result<BotLookup> {
    let wanted = bot_id.trim();
    if wanted == DEFAULT_PROFILE {
        return Ok(BotLookup::Found(DEFAULT_PROFILE.into()));
    }
    let profiles = resources::custom_profiles(conn)?;
    if profiles.iter().any(|p| p.id == wanted) {
        return Ok(BotLookup::Found(wanted.to_owned()));
    }
    let mut named = profiles.iter().filter(|p| p.name == wanted);
    Ok(match (named.next(), named.next()) {
        (Some(p), None) => BotLookup::Found(p.id.clone()),
        (Some(_), Some(_)) => BotLookup::Ambiguous,
        (None, _) => BotLookup::Missing,
    })
}
