//! A configured LLM provider as the chat uses it: the typed [`Provider`], parsed once from
//! the stored provider document merged with its source (`config::merged_provider`), and
//! the request a model gets ([`Turn`]) and the usage it reports ([`Usage`]).
//!
//! The stored documents are AstrBot's and anything may stand in a field, so parsing is
//! lenient the way the adapters always read them: a field of the wrong type counts as
//! missing, never as an error, and a chat with odd settings still reaches the upstream
//! (which then says what is wrong). Key entries stay unresolved here: `$NAME` references
//! are read from the environment by [`super::adapters`] at each call, so a changed
//! variable applies without a restart. `config` reads [`endpoint_url`] for its secret
//! target rule; this module imports nothing from `config`, so the two never form a cycle.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::{Map, Value};

/// The wire protocol a provider speaks, from its `type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Adapter {
    /// `openai_chat_completion`, and any other `type`: any OpenAI-compatible server.
    #[default]
    OpenAi,
    /// `anthropic_chat_completion`: the Messages API.
    Anthropic,
}

/// A provider's settings, merged with its source's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Provider {
    #[serde(rename = "type", deserialize_with = "adapter")]
    pub adapter: Adapter,
    #[serde(deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub provider_source_id: Option<String>,
    /// The model when the session chose none; empty when unset.
    #[serde(deserialize_with = "lenient")]
    pub model: String,
    /// The `key` entries as stored: literal keys, `$NAME` or `${NAME}`.
    #[serde(rename = "key", deserialize_with = "key_entries")]
    pub keys: Vec<String>,
    /// `None` is the vendor's own base URL.
    #[serde(deserialize_with = "lenient")]
    pub api_base: Option<String>,
    /// Empty when requests go direct.
    #[serde(deserialize_with = "lenient")]
    pub proxy: String,
    /// Time to the first byte of an answer: the source's `timeout` seconds (default 120,
    /// held within 1 s and an hour).
    #[serde(deserialize_with = "timeout")]
    pub timeout: Duration,
    /// Extra request headers; entries whose value is not a string are left out.
    #[serde(deserialize_with = "string_pairs")]
    pub custom_headers: Vec<(String, String)>,
    /// Fields set on every request body, over the adapter's own.
    #[serde(deserialize_with = "lenient")]
    pub custom_extra_body: Map<String, Value>,
    /// What the model takes (`text`, `image`, `audio`, `tool_use`); `None` when unset.
    #[serde(deserialize_with = "lenient")]
    pub modalities: Option<Vec<String>>,
}

impl Default for Provider {
    fn default() -> Provider {
        Provider {
            adapter: Adapter::OpenAi,
            id: None,
            provider_source_id: None,
            model: String::new(),
            keys: Vec::new(),
            api_base: None,
            proxy: String::new(),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            custom_headers: Vec::new(),
            custom_extra_body: Map::new(),
            modalities: None,
        }
    }
}

const DEFAULT_TIMEOUT_SECS: u64 = 120;

impl Provider {
    /// Parses a merged provider document; anything but an object is a provider with every
    /// setting at its default (a serde struct would otherwise accept an array by position).
    pub fn parse(doc: &Value) -> Provider {
        if !doc.is_object() {
            return Provider::default();
        }
        Provider::deserialize(doc).unwrap_or_default()
    }

    /// The URL the adapter posts to: `api_base` (the vendor's own when missing) and the
    /// adapter's path.
    pub fn endpoint_url(&self) -> String {
        let (default, path) = match self.adapter {
            Adapter::Anthropic => ("https://api.anthropic.com/v1", "messages"),
            Adapter::OpenAi => ("https://api.openai.com/v1", "chat/completions"),
        };
        let base = self.api_base.as_deref().unwrap_or(default).trim_end_matches('/');
        format!("{base}/{path}")
    }

    /// Whether the model may be offered tools: AstrBot sends none to a provider whose
    /// `modalities` list leaves out `tool_use` (mcp.md §2.6, 7); unset means yes.
    pub fn takes_tools(&self) -> bool {
        self.modalities.as_ref().is_none_or(|m| m.iter().any(|x| x == "tool_use"))
    }

    /// The name under which the key that last worked is remembered: the source's id, else
    /// the provider's, so providers sharing a source share its working key.
    pub fn rotation_id(&self) -> &str {
        self.provider_source_id.as_deref().or(self.id.as_deref()).unwrap_or("")
    }
}

/// The URL a stored provider document's adapter posts to. The secret-target rule reads it
/// too (`config::target_change`), so "where the key goes" has one definition.
pub fn endpoint_url(doc: &Value) -> String {
    Provider::parse(doc).endpoint_url()
}

/// One message of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// A string, or OpenAI-style content parts (`text`, `image_url`).
    pub content: Value,
}

/// Token counts from the upstream's usage fields.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
}

impl Usage {
    /// Adds another request's counts (an agent's steps are summed), saturating.
    pub fn add(&mut self, other: Usage) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cached = self.cached.saturating_add(other.cached);
    }
}

/// A tool as a model is offered it: the name it calls, what it is for, and the JSON
/// schema of its arguments (an object schema).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// A tool call a model asked for: its id (the model's), the tool's name and the arguments
/// as the model wrote them (JSON text, parsed only when the call runs: a model may write
/// invalid JSON).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One message of an agent's exchange, in either wire format: a plain turn, the model's
/// own turn that asked for tools, or the results of those tools (in call order).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Turn(Turn),
    /// The model's text before its calls (often empty), its reasoning and the signature of
    /// that reasoning (Anthropic), and the calls. A reasoning model gets its reasoning back
    /// with its calls: DeepSeek refuses (400) a tool turn without its `reasoning_content`,
    /// Anthropic one without its signed `thinking` block.
    Calls {
        text: String,
        reasoning: String,
        signature: String,
        calls: Vec<ToolCall>,
    },
    /// `(tool call id, result text)` for every call of the preceding [`Message::Calls`].
    Results(Vec<(String, String)>),
}

/// What one request to a model gave: its usage, its text, its reasoning (a reasoning
/// model's thoughts: DeepSeek's `reasoning_content`, Anthropic's `thinking` blocks) and the
/// tools it asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    pub usage: Usage,
    pub text: String,
    pub reasoning: String,
    /// Anthropic's signature of the answer's `thinking` block (empty for other vendors).
    pub signature: String,
    pub calls: Vec<ToolCall>,
}

/// A piece of a model's answer as it comes: text of the reply, or reasoning (shown apart,
/// never part of the reply nor of the history the model sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta<'a> {
    Text(&'a str),
    Reasoning(&'a str),
    /// Anthropic's signature of a `thinking` block: nothing to show, but the block must go
    /// back with it when the model called tools.
    Signature(&'a str),
}

/// How a request offers tools: none (the body has no `tools` key at all), offered for the
/// model to choose, or listed but not to be used (the forced final answer after the step
/// limit: Anthropic refuses `tool_use` blocks in a conversation whose request defines no
/// tools, so there they stay listed with `tool_choice: none`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Offer<'a> {
    None,
    Auto(&'a [ToolSpec]),
    Final(&'a [ToolSpec]),
}

/// A field of the wrong type counts as missing.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    Ok(serde_json::from_value(Value::deserialize(d)?).unwrap_or_default())
}

fn adapter<'de, D: Deserializer<'de>>(d: D) -> Result<Adapter, D::Error> {
    Ok(match Value::deserialize(d)?.as_str() {
        Some("anthropic_chat_completion") => Adapter::Anthropic,
        _ => Adapter::OpenAi,
    })
}

fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = Value::deserialize(d)?.as_u64().unwrap_or(DEFAULT_TIMEOUT_SECS);
    Ok(Duration::from_secs(secs.clamp(1, 3600)))
}

/// AstrBot's `key` is a list; a single string is taken as a list of one, and entries that
/// are not strings are skipped.
fn key_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(list) => list.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Value::String(key) => vec![key],
        _ => Vec::new(),
    })
}

fn string_pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(map) => {
            map.into_iter().filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned()))).collect()
        }
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_provider_parses_into_its_fields() {
        let p = Provider::parse(&json!({
            "type": "anthropic_chat_completion", "id": "p1", "provider_source_id": "src",
            "model": "m", "key": ["sk-a", 3, "$X_API_KEY"], "api_base": "http://h/v1/",
            "proxy": "http://proxy:3128", "timeout": 7,
            "custom_headers": {"X-A": "1", "X-B": 2}, "custom_extra_body": {"temperature": 0.2},
            "provider_type": "chat_completion",
        }));
        assert_eq!(p.adapter, Adapter::Anthropic);
        assert_eq!(p.rotation_id(), "src");
        assert_eq!(p.model, "m");
        assert_eq!(p.keys, ["sk-a", "$X_API_KEY"]);
        assert_eq!(p.endpoint_url(), "http://h/v1/messages");
        assert_eq!(p.proxy, "http://proxy:3128");
        assert_eq!(p.timeout, Duration::from_secs(7));
        assert_eq!(p.custom_headers, [("X-A".to_owned(), "1".to_owned())]);
        assert_eq!(p.custom_extra_body["temperature"], 0.2);
    }

    #[test]
    fn fields_of_the_wrong_type_count_as_missing() {
        let p = Provider::parse(&json!({
            "type": 5, "id": "p1", "model": null, "key": "sk-one", "api_base": false,
            "proxy": [], "timeout": "60", "custom_headers": "x", "custom_extra_body": [1],
        }));
        assert_eq!(p.adapter, Adapter::OpenAi);
        assert_eq!(p.rotation_id(), "p1", "no source: the provider's own id");
        assert_eq!(p.model, "");
        assert_eq!(p.keys, ["sk-one"]);
        assert_eq!(p.endpoint_url(), "https://api.openai.com/v1/chat/completions");
        assert_eq!(p.proxy, "");
        assert_eq!(p.timeout, Duration::from_secs(120));
        assert!(p.custom_headers.is_empty() && p.custom_extra_body.is_empty());
        assert!(p.takes_tools());
        assert!(Provider::parse(&json!({"modalities": ["text", "tool_use"]})).takes_tools());
        assert!(!Provider::parse(&json!({"modalities": ["text", "image"]})).takes_tools());
        assert!(Provider::parse(&json!({"modalities": "text"})).takes_tools(), "not a list: unset");
        assert_eq!(Provider::parse(&json!(["anthropic_chat_completion"])), Provider::default());
        assert_eq!(Provider::parse(&json!({"timeout": 0})).timeout, Duration::from_secs(1));
        assert_eq!(Provider::parse(&json!({"timeout": 99999})).timeout, Duration::from_secs(3600));
        assert_eq!(Provider::parse(&json!({"timeout": 30.0})).timeout, Duration::from_secs(120));
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint_url(&json!({"api_base": "http://h/v1/"})), "http://h/v1/chat/completions");
        assert_eq!(
            endpoint_url(&json!({"type": "anthropic_chat_completion"})),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(endpoint_url(&json!({"api_base": ""})), "/chat/completions");
    }
}
