//! The tools an agent may call: the built-in ones (`current_time`, `knowledge_search`,
//! `read_attachment`, `read_skill_file`), those of the enabled plugins (`app.plugins`) and
//! those of the MCP servers (`app.mcp`), as a [`Toolbox`] for one chat, and the execution
//! of one call into the text the model gets back. A name already taken hides a later one:
//! built-ins first, then plugins, then MCP.
//!
//! Which tools a chat gets follows AstrBot's persona rule: a persona whose `tools` is
//! `null` has every tool, a list names the ones it has (unknown names are skipped), and an
//! empty list none. A built-in name hides an MCP tool of the same name (the built-ins are
//! the server's own and their behaviour is part of its contract).
//!
//! A call never fails the chat: whatever goes wrong (unknown tool, arguments that are not
//! a JSON object, a failed call, a timeout) becomes a result text starting with
//! `error: `, as AstrBot reports it to the model; an MCP tool's own error result
//! (`isError`) reaches the model unchanged, as in AstrBot. Every result is cut at
//! [`MAX_RESULT`] bytes with a note saying so, and every call is logged with its
//! duration, never with its arguments.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{Value, json};

use super::provider::{ToolCall, ToolSpec};
use crate::app::App;
use crate::timefmt;

/// A tool result longer than this (in bytes) is cut, with a note to the model.
pub const MAX_RESULT: usize = 64 << 10;
/// `knowledge_search` returns at most this many passages.
const SEARCH_LIMIT: i64 = 5;
/// A passage `knowledge_search` returns is cut at this many characters (its page has the
/// rest), so five of them stay well within a model's context.
const PASSAGE_CHARS: usize = 3000;
/// `read_attachment` looks for the attachment among this many of the session's latest
/// messages.
const ATTACHMENT_LOOKBACK: i64 = 1000;

/// Calls of the built-in tools since the server started, and how many failed (the MCP
/// registry counts the MCP calls).
static BUILTIN_CALLS: AtomicU64 = AtomicU64::new(0);
static BUILTIN_ERRORS: AtomicU64 = AtomicU64::new(0);

/// `(calls, errors)` of the built-in tools since the server started, for the statistics.
pub fn builtin_stats() -> (u64, u64) {
    (BUILTIN_CALLS.load(Ordering::Relaxed), BUILTIN_ERRORS.load(Ordering::Relaxed))
}

pub const CURRENT_TIME: &str = "current_time";
pub const KNOWLEDGE_SEARCH: &str = "knowledge_search";
pub const READ_ATTACHMENT: &str = "read_attachment";
pub const READ_SKILL_FILE: &str = "read_skill_file";

/// The built-in tools, as offered to a model.
pub fn builtins() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: CURRENT_TIME.into(),
            description:
                "Get the current date and time (ISO 8601, with the UTC offset of the bot's configured \
                          time zone). Use it whenever the answer depends on today's date or the time of day."
                    .into(),
            parameters: json!({"type": "object", "properties": {}}),
        },
        ToolSpec {
            name: KNOWLEDGE_SEARCH.into(),
            description: "Search the knowledge base (the documents this bot was given) and return the best \
                          matching passages, each with its title and URL. Use it for questions the documents \
                          may answer, and cite the titles."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to look for: a few keywords or a question."}},
                "required": ["query"]
            }),
        },
        ToolSpec {
            name: READ_ATTACHMENT.into(),
            description:
                "Read the text of a file the user attached in this conversation (text files only, at \
                          most 64 KiB). The attachment_id is the one shown in the conversation's messages."
                    .into(),
            parameters: json!({
                "type": "object",
                "properties": {"attachment_id": {"type": "string", "description": "The id of an attachment of this conversation."}},
                "required": ["attachment_id"]
            }),
        },
    ]
}

/// `read_skill_file`, offered only while some skill is active (it has nothing to read
/// otherwise, and the prompt lists no skill).
pub fn skill_tool() -> ToolSpec {
    ToolSpec {
        name: READ_SKILL_FILE.into(),
        description: "Read a text file of an active skill (listed in the system prompt under Skills): \
                          its SKILL.md by default, or a file SKILL.md refers to, by its path inside the \
                          skill. At most 64 KiB."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "skill_name": {"type": "string", "description": "The skill's name, as listed."},
                "path": {"type": "string", "description": "A file inside the skill, e.g. scripts/run.py (default SKILL.md)."}
            },
            "required": ["skill_name"]
        }),
    }
}

/// Whether any local skill is active and kept by the persona (`skills`: `None` every one).
fn any_active_skill(app: &App, persona_skills: Option<&[String]>) -> bool {
    let skills = crate::skills::list(&app.settings.data_dir);
    if skills.is_empty() || persona_skills.is_some_and(|names| names.is_empty()) {
        return false;
    }
    let states = app.db.conn().ok().and_then(|c| crate::db::skills::states(&c).ok()).unwrap_or_default();
    skills
        .iter()
        .any(|s| states.get(&s.name).copied().unwrap_or(true) && persona_keeps(persona_skills, &s.name))
}

/// Whether the persona's `skills` (`None`: every one) keep this skill.
fn persona_keeps(persona_skills: Option<&[String]>, name: &str) -> bool {
    persona_skills.is_none_or(|names| names.iter().any(|n| n == name))
}

/// Where a tool of the toolbox comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    Builtin,
    Plugin,
    Mcp,
}

/// The tools one chat offers.
#[derive(Debug, Clone, Default)]
pub struct Toolbox {
    pub specs: Vec<ToolSpec>,
    origins: Vec<Origin>,
}

impl Toolbox {
    /// The built-in tools and the MCP servers' tools, filtered by the persona's `tools`
    /// (`None`: all). The MCP registry is asked only when the persona may have some.
    pub fn offered(
        app: &App,
        persona_tools: Option<&[String]>,
        persona_skills: Option<&[String]>,
    ) -> Toolbox {
        if persona_tools.is_some_and(|names| names.is_empty()) {
            return Toolbox::default();
        }
        let mut builtins = builtins();
        if any_active_skill(app, persona_skills) {
            builtins.push(skill_tool());
        }
        Toolbox::from_parts(builtins, app.plugins.tools(), app.mcp.tools(), persona_tools)
    }

    fn from_parts(
        builtins: Vec<ToolSpec>,
        plugins: Vec<crate::plugins::registry::OfferedTool>,
        mcp: Vec<crate::mcp::Tool>,
        persona_tools: Option<&[String]>,
    ) -> Toolbox {
        let allowed = |name: &str| persona_tools.is_none_or(|names| names.iter().any(|n| n == name));
        let mut out = Toolbox::default();
        for spec in builtins {
            if allowed(&spec.name) {
                out.specs.push(spec);
                out.origins.push(Origin::Builtin);
            }
        }
        for offered in plugins {
            let tool = offered.tool;
            if !allowed(&tool.name) || out.specs.iter().any(|s| s.name == tool.name) {
                continue;
            }
            out.specs.push(ToolSpec {
                name: tool.name,
                description: tool.description,
                parameters: tool.input_schema,
            });
            out.origins.push(Origin::Plugin);
        }
        for tool in mcp {
            if !allowed(&tool.name) || out.specs.iter().any(|s| s.name == tool.name) {
                continue;
            }
            let parameters = if tool.input_schema.is_object() {
                tool.input_schema
            } else {
                json!({"type": "object", "properties": {}})
            };
            out.specs.push(ToolSpec { name: tool.name, description: tool.description, parameters });
            out.origins.push(Origin::Mcp);
        }
        out
    }

    fn origin(&self, name: &str) -> Option<Origin> {
        self.specs.iter().position(|s| s.name == name).map(|i| self.origins[i])
    }
}

/// What a built-in tool needs to know of its chat.
pub struct Env<'a> {
    pub app: &'a App,
    pub run_id: &'a str,
    pub session_id: &'a str,
    /// The chat as a plugin's tool sees it.
    pub event: crate::plugins::registry::Event,
    /// The profile's `timezone` (an IANA name; empty for the host's).
    pub timezone: String,
    /// The profile's `kb_names` (empty: every collection).
    pub kb_names: Vec<String>,
    /// The persona's `skills` (`None`: every active skill), which `read_skill_file` keeps to.
    pub skills: Option<Vec<String>>,
}

/// The arguments of a call as an object: empty text is `{}` (a call without arguments),
/// as is `null`; anything else must be a JSON object.
pub fn parse_arguments(raw: &str) -> Result<Value, String> {
    if raw.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Null) => Ok(json!({})),
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("the arguments must be a JSON object".into()),
        Err(e) => Err(format!("the arguments are not valid JSON ({e})")),
    }
}

/// A result cut at [`MAX_RESULT`] bytes (on a character boundary), with a note saying how
/// long it was.
pub fn cut(result: String) -> String {
    if result.len() <= MAX_RESULT {
        return result;
    }
    let mut end = MAX_RESULT;
    while !result.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[result cut at 64 KiB of {} bytes]", &result[..end], result.len())
}

/// Runs one call and returns the text for the model (cut at [`MAX_RESULT`]) and whether
/// it succeeded. `timeout` bounds an MCP call; the built-ins are local and quick.
pub fn execute(env: &Env<'_>, tools: &Toolbox, call: &ToolCall, timeout: Duration) -> (String, bool) {
    let started = Instant::now();
    let (text, ok) = match tools.origin(&call.name) {
        None => (
            format!(
                "error: Tool {} not found. Available tools are: {}",
                call.name,
                tools.specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
            false,
        ),
        Some(origin) => match parse_arguments(&call.arguments) {
            Err(e) => (format!("error: {e}"), false),
            Ok(args) => match origin {
                Origin::Builtin => {
                    BUILTIN_CALLS.fetch_add(1, Ordering::Relaxed);
                    match builtin(env, &call.name, &args) {
                        Ok(text) => (text, true),
                        Err(e) => {
                            BUILTIN_ERRORS.fetch_add(1, Ordering::Relaxed);
                            (format!("error: {e}"), false)
                        }
                    }
                }
                Origin::Plugin => match env.app.plugins.call_tool(&call.name, &args, &env.event, timeout) {
                    Ok(r) => r,
                    Err(e) => (format!("error: {e}"), false),
                },
                Origin::Mcp => mcp_result(env.app.mcp.call(&call.name, &args, timeout)),
            },
        },
    };
    // The name is the model's: a line of the log, never more.
    let name: String = call.name.chars().take(80).map(|c| if c.is_control() { '?' } else { c }).collect();
    log::info!(
        "chat run {}: tool {} {} ms {}",
        env.run_id,
        name,
        started.elapsed().as_millis(),
        if ok { "ok" } else { "error" }
    );
    (cut(text), ok)
}

/// An MCP call's outcome as the model gets it, and whether it succeeded: AstrBot passes a
/// tool's own error text on unchanged (`isError` is ignored, mcp.md §2.7; it counts as an
/// error in the log), says so when there is no content, and reports a failed call (the
/// server's JSON-RPC error, a timeout, a dead server) as `error: <message>`.
fn mcp_result(outcome: Result<crate::mcp::CallResult, String>) -> (String, bool) {
    match outcome {
        Ok(r) if r.is_error => (r.text, false),
        Ok(r) if r.text.is_empty() => ("The tool returned no content.".into(), true),
        Ok(r) => (r.text, true),
        Err(e) => (format!("error: {e}"), false),
    }
}

fn builtin(env: &Env<'_>, name: &str, args: &Value) -> Result<String, String> {
    match name {
        CURRENT_TIME => Ok(current_time(&env.timezone, timefmt::now_micros())),
        KNOWLEDGE_SEARCH => {
            let query = args["query"].as_str().map(str::trim).unwrap_or_default();
            if query.is_empty() {
                return Err("knowledge_search needs a non-empty `query` string".into());
            }
            let conn = env.app.db.conn().map_err(|e| format!("the knowledge base is not available: {e}"))?;
            knowledge_search(&conn, query, &env.kb_names)
        }
        READ_ATTACHMENT => {
            let id = args["attachment_id"].as_str().map(str::trim).unwrap_or_default();
            if id.is_empty() {
                return Err("read_attachment needs an `attachment_id` string".into());
            }
            let conn = env.app.db.conn().map_err(|e| format!("the attachments are not available: {e}"))?;
            read_attachment(&conn, &env.app.settings.data_dir, env.session_id, id)
        }
        READ_SKILL_FILE => {
            let skill = args["skill_name"].as_str().map(str::trim).unwrap_or_default();
            if skill.is_empty() {
                return Err("read_skill_file needs a `skill_name` string".into());
            }
            let path = args["path"].as_str().map(str::trim).filter(|p| !p.is_empty()).unwrap_or("SKILL.md");
            if !persona_keeps(env.skills.as_deref(), skill) {
                return Err(format!("the skill {skill} is not available to this persona"));
            }
            let conn = env.app.db.conn().map_err(|e| format!("the skills are not available: {e}"))?;
            read_skill_file(&conn, &env.app.settings.data_dir, skill, path)
        }
        _ => Err(format!("Tool {name} not found")),
    }
}

/// A text file of an active skill, through the file routes' traversal rules.
fn read_skill_file(conn: &Connection, data_dir: &Path, skill: &str, path: &str) -> Result<String, String> {
    let active = crate::db::skills::states(conn).map_err(|e| format!("cannot read the skills: {e}"))?;
    if !active.get(skill).copied().unwrap_or(true) {
        return Err(format!("the skill {skill} is not active"));
    }
    let dir = crate::skills::skill_dir(data_dir, skill).map_err(|e| format!("{e}: {skill}"))?;
    let (_, text, _) = crate::skills::read_file(&dir, path, crate::skills::MAX_TOOL_READ)
        .map_err(|e| format!("{e}: {path}"))?;
    Ok(text)
}

/// `2026-12-01T14:20:23+08:00 (Asia/Shanghai)`: the time in the zone's standard offset.
pub fn current_time(zone: &str, now_micros: i64) -> String {
    let offset = timefmt::utc_offset_minutes(zone);
    let secs = now_micros.div_euclid(timefmt::MICROS_PER_SEC);
    let local =
        timefmt::iso(secs.saturating_add(offset.saturating_mul(60)).saturating_mul(timefmt::MICROS_PER_SEC));
    let base = local.strip_suffix("+00:00").unwrap_or(&local);
    let sign = if offset < 0 { '-' } else { '+' };
    let (h, m) = (offset.abs() / 60, offset.abs() % 60);
    let zone = if zone.is_empty() { "the server's time zone" } else { zone };
    format!("{base}{sign}{h:02}:{m:02} ({zone})")
}

fn knowledge_search(conn: &Connection, query: &str, kb_names: &[String]) -> Result<String, String> {
    let found = crate::kb::search(conn, query, kb_names, SEARCH_LIMIT)
        .map_err(|e| format!("the knowledge base search failed: {e}"))?;
    if found.is_empty() {
        return Ok(format!("No passages in the knowledge base match \"{query}\"."));
    }
    let passage = |p: &crate::db::kb::Passage| {
        let body = match p.body.char_indices().nth(PASSAGE_CHARS) {
            Some((end, _)) => format!("{} […]", &p.body[..end]),
            None => p.body.clone(),
        };
        format!("### {}\nURL: {}\n\n{body}", p.title, p.url)
    };
    Ok(found.iter().map(passage).collect::<Vec<_>>().join("\n\n"))
}

/// An attachment of this session (a part of one of its stored messages), if it is text.
fn read_attachment(conn: &Connection, data_dir: &Path, session_id: &str, id: &str) -> Result<String, String> {
    let not_here = || format!("no attachment {id} in this conversation");
    let messages = crate::db::chat::messages(conn, session_id, Some(ATTACHMENT_LOOKBACK))
        .map_err(|e| format!("cannot read the conversation: {e}"))?;
    let in_session = messages.iter().any(|m| {
        m.content["message"].as_array().is_some_and(|parts| parts.iter().any(|p| p["attachment_id"] == id))
    });
    if !in_session {
        return Err(not_here());
    }
    let att = crate::db::resources::attachment(conn, id)
        .map_err(|e| format!("cannot read the attachment: {e}"))?
        .ok_or_else(not_here)?;
    let textual = att.mime_type.starts_with("text/")
        || [
            "application/json",
            "application/xml",
            "application/x-yaml",
            "application/yaml",
            "application/csv",
        ]
        .contains(&att.mime_type.as_str());
    if !textual {
        return Err(format!(
            "attachment {id} ({}, {}) is not a text file; only text attachments can be read",
            att.filename, att.mime_type
        ));
    }
    // The id is a stored row's, but it names a file: never a path outside the folder.
    if att.attachment_id.contains(['/', '\\']) || att.attachment_id.starts_with('.') {
        return Err(not_here());
    }
    let path = data_dir.join("attachments").join(&att.attachment_id);
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot open attachment {id}: {e}"))?;
    let mut bytes = Vec::new();
    use std::io::Read;
    file.take(MAX_RESULT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read attachment {id}: {e}"))?;
    let whole = bytes.len() <= MAX_RESULT;
    bytes.truncate(MAX_RESULT);
    let text = String::from_utf8_lossy(&bytes);
    let mut out = format!("[File: {}]\n{text}", att.filename);
    if !whole {
        out.push_str(&format!("\n[attachment cut at 64 KiB of {} bytes]", att.size));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mcp_tool(name: &str) -> crate::mcp::Tool {
        crate::mcp::Tool {
            name: name.into(),
            mcp_name: name.into(),
            description: format!("the {name} tool"),
            input_schema: json!({"type": "object", "properties": {"a": {"type": "number"}}}),
            server: "s".into(),
        }
    }

    fn names(t: &Toolbox) -> Vec<&str> {
        t.specs.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn the_persona_filters_the_tools() {
        let all = Toolbox::from_parts(
            builtins(),
            vec![],
            vec![mcp_tool("get-sum"), mcp_tool("current_time")],
            None,
        );
        assert_eq!(names(&all), ["current_time", "knowledge_search", "read_attachment", "get-sum"]);
        assert_eq!(all.origin("current_time"), Some(Origin::Builtin), "a built-in hides an MCP namesake");
        assert_eq!(all.origin("get-sum"), Some(Origin::Mcp));
        let some = ["get-sum".to_owned(), "current_time".to_owned(), "nope".to_owned()];
        let filtered = Toolbox::from_parts(builtins(), vec![], vec![mcp_tool("get-sum")], Some(&some));
        assert_eq!(names(&filtered), ["current_time", "get-sum"]);
        assert!(Toolbox::from_parts(builtins(), vec![], vec![mcp_tool("x")], Some(&[])).specs.is_empty());
        let odd = crate::mcp::Tool { input_schema: json!(null), ..mcp_tool("odd") };
        let t = Toolbox::from_parts(vec![], vec![], vec![odd], None);
        assert_eq!(t.specs[0].parameters, json!({"type": "object", "properties": {}}));
    }

    #[test]
    fn mcp_outcomes_as_the_model_gets_them() {
        use crate::mcp::CallResult;
        let ok = |text: &str, is_error| Ok(CallResult { text: text.into(), is_error });
        assert_eq!(mcp_result(ok("3", false)), ("3".into(), true));
        assert_eq!(mcp_result(ok("", false)), ("The tool returned no content.".into(), true));
        assert_eq!(mcp_result(ok("bad input", true)), ("bad input".into(), false));
        assert_eq!(
            mcp_result(Err(
                "Timed out while waiting for response to CallToolRequest. Waited 120.0 seconds.".into()
            )),
            (
                "error: Timed out while waiting for response to CallToolRequest. Waited 120.0 seconds."
                    .into(),
                false
            )
        );
    }

    #[test]
    fn arguments_must_be_an_object() {
        assert_eq!(parse_arguments(""), Ok(json!({})));
        assert_eq!(parse_arguments(" null "), Ok(json!({})));
        assert_eq!(parse_arguments("{\"a\": 1}"), Ok(json!({"a": 1})));
        assert_eq!(parse_arguments("[1]"), Err("the arguments must be a JSON object".into()));
        assert!(parse_arguments("{\"a\":").unwrap_err().starts_with("the arguments are not valid JSON ("));
    }

    #[test]
    fn long_results_are_cut_with_a_note() {
        assert_eq!(cut("short".into()), "short");
        let long = "é".repeat(40_000); // 80 000 bytes, two each
        let c = cut(long);
        assert!(c.ends_with("\n[result cut at 64 KiB of 80000 bytes]"), "{}", &c[c.len() - 60..]);
        assert_eq!(c.len(), MAX_RESULT + "\n[result cut at 64 KiB of 80000 bytes]".len());
    }

    #[test]
    fn the_current_time_carries_the_zone_offset() {
        let t = current_time("Asia/Shanghai", 1_795_332_585 * timefmt::MICROS_PER_SEC + 123);
        if std::path::Path::new("/usr/share/zoneinfo/Asia/Shanghai").exists() {
            assert_eq!(t, "2026-11-22T15:29:45+08:00 (Asia/Shanghai)");
        }
        let utc = current_time("UTC", 1_795_332_585 * timefmt::MICROS_PER_SEC);
        if std::path::Path::new("/usr/share/zoneinfo/UTC").exists() {
            assert_eq!(utc, "2026-11-22T07:29:45+00:00 (UTC)");
        }
    }
}
