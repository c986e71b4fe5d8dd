//! The one place that answers "which settings apply to this UMO": the routed profile, the
//! provider and the persona, from the session's own choices, the profile's defaults and
//! what is configured and enabled. The chat and `GET /api/v1/config-routes/{umo}` both ask here.

use rusqlite::Connection;
use serde_json::Value;

use super::defaults::{BUILTIN_PROVIDER, DEFAULT_PERSONA_ID, DEFAULT_PERSONA_PROMPT, DEFAULT_PROFILE};
use super::documents::{profile_config, system_config};
use super::providers::{is_enabled, merged_provider};
use crate::db::resources::{self, Docs, Persona};

/// What a session has chosen for itself (commands like `/provider` and `/persona`).
#[derive(Debug, Default, Clone)]
pub struct SessionChoice {
    pub provider_id: Option<String>,
    pub persona_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderChoice {
    /// A configured chat provider, merged with its source.
    Configured { id: String, config: Value },
    /// No usable LLM provider: the built-in knowledge provider answers.
    Builtin,
}

#[derive(Debug, Clone)]
pub struct Effective {
    /// The profile that applies (`default` when the UMO has no route).
    pub config_id: String,
    /// The profile's whole document, because the chat reads more of it than the provider
    /// and persona: the wake prefixes, the knowledge bases and the provider settings.
    pub config: Value,
    pub provider: ProviderChoice,
    pub persona: Persona,
}

/// The built-in `default` persona.
pub fn builtin_persona() -> Persona {
    Persona {
        persona_id: DEFAULT_PERSONA_ID.into(),
        system_prompt: DEFAULT_PERSONA_PROMPT.into(),
        begin_dialogs: vec![],
        tools: None,
        skills: None,
        custom_error_message: None,
        folder_id: None,
        sort_order: 0,
        created_at: 0,
        updated_at: 0,
    }
}

/// The settings that apply to a UMO: its routed profile (else the default); the provider
/// the session chose, else `default_provider_id`, else the first enabled chat provider,
/// else the built-in one; the persona the session chose, else `default_personality`, else
/// the built-in `default`. Choices that name something missing or disabled are skipped.
pub fn effective(conn: &Connection, umo: &str, choice: &SessionChoice) -> rusqlite::Result<Effective> {
    let (config_id, config) = routed_profile(conn, umo)?;
    let settings = &config["provider_settings"];
    let candidates = chat_candidates(conn)?;
    let wanted = [choice.provider_id.clone(), settings["default_provider_id"].as_str().map(str::to_owned)];
    let provider = if choice.provider_id.as_deref() == Some(BUILTIN_PROVIDER) {
        ProviderChoice::Builtin
    } else {
        choose_provider(&wanted, &candidates)
    };
    let persona_ids =
        [choice.persona_id.clone(), settings["default_personality"].as_str().map(str::to_owned)];
    let persona = choose_persona(conn, &persona_ids)?;
    Ok(Effective { config_id, config, provider, persona })
}

/// The profile a UMO is routed to, else the default one (a route to a profile that no
/// longer exists counts as no route).
fn routed_profile(conn: &Connection, umo: &str) -> rusqlite::Result<(String, Value)> {
    if let Some(id) = resources::route(conn, umo)?
        && let Some(config) = profile_config(conn, &id)?
    {
        return Ok((id, config));
    }
    Ok((DEFAULT_PROFILE.to_owned(), system_config(conn)?))
}

/// Every enabled chat provider on an enabled source (or on none), merged with its source,
/// in list order.
fn chat_candidates(conn: &Connection) -> rusqlite::Result<Vec<Value>> {
    let mut candidates: Vec<Value> = Vec::new();
    for p in resources::docs(conn, Docs::Providers)? {
        let merged = merged_provider(conn, &p)?;
        let source_enabled = match p.get("provider_source_id").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => {
                resources::doc(conn, Docs::ProviderSources, s)?.is_none_or(|s| is_enabled(&s))
            }
            _ => true,
        };
        if is_enabled(&p) && source_enabled && merged["provider_type"] == "chat_completion" {
            candidates.push(merged);
        }
    }
    Ok(candidates)
}

/// The first wanted id among the candidates, else the first candidate, else the built-in
/// provider.
fn choose_provider(wanted: &[Option<String>], candidates: &[Value]) -> ProviderChoice {
    let by_id = |id: &str| candidates.iter().find(|c| c["id"] == id).cloned();
    wanted
        .iter()
        .flatten()
        .filter(|id| !id.is_empty())
        .find_map(|id| by_id(id))
        .or_else(|| candidates.first().cloned())
        .map(|c| ProviderChoice::Configured {
            id: c["id"].as_str().unwrap_or_default().to_owned(),
            config: c,
        })
        .unwrap_or(ProviderChoice::Builtin)
}

/// The first of `ids` that names a persona, else the built-in one; `default` always
/// names one (a stored `default` wins over the built-in).
fn choose_persona(conn: &Connection, ids: &[Option<String>]) -> rusqlite::Result<Persona> {
    for id in ids.iter().flatten().filter(|id| !id.is_empty()) {
        if id == DEFAULT_PERSONA_ID {
            return Ok(resources::persona(conn, id)?.unwrap_or_else(builtin_persona));
        }
        if let Some(p) = resources::persona(conn, id)? {
            return Ok(p);
        }
    }
    Ok(builtin_persona())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, write_tx};
    use serde_json::json;

    fn db(name: &str) -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("astrbot-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (Db::open(&dir).unwrap(), dir)
    }

    fn persona(id: &str) -> Persona {
        Persona { persona_id: id.into(), system_prompt: format!("I am {id}"), ..builtin_persona() }
    }

    #[test]
    fn effective_settings_follow_routes_choices_and_defaults() {
        let (db, _dir) = db("effective");
        let mut conn = db.conn().unwrap();
        let empty = SessionChoice::default();
        let e = effective(&conn, "webchat:FriendMessage:a", &empty).unwrap();
        assert_eq!((e.config_id.as_str(), &e.provider), ("default", &ProviderChoice::Builtin));
        assert_eq!(e.persona.persona_id, "default");
        assert_eq!(e.persona.system_prompt, DEFAULT_PERSONA_PROMPT);

        write_tx(&mut conn, |tx| -> rusqlite::Result<()> {
            resources::put_doc(tx, Docs::ProviderSources, "openai", "openai", &json!({"id": "openai", "type": "openai_chat_completion", "provider_type": "chat_completion", "enable": true, "key": ["sk-1"]}))?;
            resources::put_doc(tx, Docs::Providers, "openai/a", "openai/a", &json!({"id": "openai/a", "provider_source_id": "openai", "model": "a", "enable": true}))?;
            resources::put_doc(tx, Docs::Providers, "openai/b", "openai/b", &json!({"id": "openai/b", "provider_source_id": "openai", "model": "b", "enable": true}))?;
            resources::put_doc(tx, Docs::Providers, "tts", "tts", &json!({"id": "tts", "provider_type": "text_to_speech", "enable": true}))?;
            resources::insert_persona(tx, &persona("tutor"))?;
            resources::insert_persona(tx, &persona("pirate"))?;
            Ok(())
        })
        .unwrap();
        let first = effective(&conn, "u", &empty).unwrap();
        let ProviderChoice::Configured { id, config } = first.provider else { panic!() };
        assert_eq!(id, "openai/a", "the first enabled chat provider");
        assert_eq!(config["key"], json!(["sk-1"]), "merged with its source");
        assert_eq!(config["model"], "a");

        let mut system = resources::profile(&conn, "default").unwrap().unwrap().body;
        system["provider_settings"] =
            json!({"default_provider_id": "openai/b", "default_personality": "tutor"});
        write_tx(&mut conn, |tx| resources::set_profile_body(tx, "default", &system)).unwrap();
        let e = effective(&conn, "u", &empty).unwrap();
        assert_eq!(
            e.provider,
            ProviderChoice::Configured {
                id: "openai/b".into(),
                config: merged_provider(
                    &conn,
                    &resources::doc(&conn, Docs::Providers, "openai/b").unwrap().unwrap()
                )
                .unwrap()
            }
        );
        assert_eq!(e.persona.persona_id, "tutor");

        let chosen =
            SessionChoice { provider_id: Some("openai/a".into()), persona_id: Some("pirate".into()) };
        let e = effective(&conn, "u", &chosen).unwrap();
        assert!(matches!(e.provider, ProviderChoice::Configured { ref id, .. } if id == "openai/a"));
        assert_eq!(e.persona.persona_id, "pirate");
        let builtin =
            SessionChoice { provider_id: Some("builtin".into()), persona_id: Some("nobody".into()) };
        let e = effective(&conn, "u", &builtin).unwrap();
        assert_eq!(e.provider, ProviderChoice::Builtin);
        assert_eq!(e.persona.persona_id, "tutor", "a missing choice falls back to the default personality");

        // A disabled provider is skipped; a routed UMO uses its profile.
        let mut b = resources::doc(&conn, Docs::Providers, "openai/b").unwrap().unwrap();
        b["enable"] = json!(false);
        write_tx(&mut conn, |tx| resources::put_doc(tx, Docs::Providers, "openai/b", "openai/b", &b))
            .unwrap();
        assert!(
            matches!(effective(&conn, "u", &empty).unwrap().provider, ProviderChoice::Configured { ref id, .. } if id == "openai/a")
        );
        let group = json!({"provider_settings": {"default_personality": "pirate"}});
        write_tx(&mut conn, |tx| {
            resources::insert_profile(tx, "p1", "group", &group, 1)?;
            resources::set_route(tx, "webchat:GroupMessage:g", "p1")
        })
        .unwrap();
        let e = effective(&conn, "webchat:GroupMessage:g", &empty).unwrap();
        assert_eq!((e.config_id.as_str(), e.persona.persona_id.as_str()), ("p1", "pirate"));
        assert_eq!(
            e.config["admins_id"],
            json!(["astrbot"]),
            "custom profiles are completed with the defaults"
        );
    }
}
