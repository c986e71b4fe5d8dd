//! The prompt a model sees for a chat message: the persona's system prompt (with the
//! knowledge-base passages found for the message, and the active skills' names and
//! descriptions with how to read them), its opening dialogue, the session's
//! history since the last `/new`, and the new message with its attachments.
//!
//! The context only reads. History is bounded twice, by the persona's `max_context_length`
//! in exchanges and by a character budget, so a long conversation never overflows a
//! model's window; commands and their replies never reach the model.

use std::path::Path;

use rusqlite::Connection;
use serde_json::{Value, json};

use super::provider::Turn;
use crate::db::chat;
use crate::db::kb::Passage;
use crate::db::resources::Persona;

/// History beyond this many characters is dropped, oldest first, so a long conversation
/// never overflows a model's window.
const HISTORY_CHAR_BUDGET: usize = 24_000;
/// Text-like attachments up to this size are inlined with their name.
const INLINE_TEXT_LIMIT: u64 = 64 << 10;

fn standard_base64(bytes: &[u8]) -> String {
    crate::secrets::base64url(bytes).replace('-', "+").replace('_', "/")
        + match bytes.len() % 3 {
            1 => "==",
            2 => "=",
            _ => "",
        }
}

/// A stored message's text; its files are named with their ids (so the model can read a
/// text file of an earlier message with `read_attachment`).
fn text_of(content: &Value) -> String {
    let line = |p: &Value| match (p["type"].as_str(), p["text"].as_str()) {
        (_, Some(text)) => Some(text.to_owned()),
        (Some("file"), None) => p["attachment_id"]
            .as_str()
            .map(|id| format!("[File: {}, attachment_id: {id}]", p["filename"].as_str().unwrap_or_default())),
        _ => None,
    };
    content["message"]
        .as_array()
        .map(|parts| parts.iter().filter_map(line).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// The user's new message as the model sees it: text, images as data URLs, text files
/// inlined (up to 64 KiB) with their name, other files named only.
fn user_content(data_dir: &Path, conn: &Connection, parts: &[Value]) -> Value {
    let mut out: Vec<Value> = Vec::new();
    let mut has_image = false;
    for p in parts {
        match p["type"].as_str() {
            Some("plain") => out.push(json!({"type": "text", "text": p["text"]})),
            Some(kind @ ("image" | "file" | "record" | "video")) => {
                let id = p["attachment_id"].as_str().unwrap_or_default();
                let Ok(Some(att)) = crate::db::resources::attachment(conn, id) else { continue };
                let path = data_dir.join("attachments").join(&att.attachment_id);
                if kind == "image" {
                    if let Ok(bytes) = std::fs::read(&path) {
                        has_image = true;
                        let url = format!("data:{};base64,{}", att.mime_type, standard_base64(&bytes));
                        out.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    continue;
                }
                let textual = att.mime_type.starts_with("text/") || att.mime_type == "application/json";
                let inline = textual && att.size as u64 <= INLINE_TEXT_LIMIT;
                match std::fs::read_to_string(&path).ok().filter(|_| inline) {
                    Some(text) => out.push(json!({"type": "text", "text": format!("[File: {}]\n{text}", att.filename)})),
                    // Named with its id, which the `read_attachment` tool takes.
                    None => out.push(json!({"type": "text", "text": format!("[File: {} ({}, {} bytes), attachment_id: {}]", att.filename, att.mime_type, att.size, att.attachment_id)})),
                }
            }
            _ => {}
        }
    }
    if has_image {
        return Value::Array(out);
    }
    Value::String(out.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"))
}

/// The system prompt: the persona's, and the knowledge-base passages when some were found.
fn system_prompt(persona: &Persona, passages: &[Passage]) -> String {
    let mut system = persona.system_prompt.clone();
    if !passages.is_empty() {
        system.push_str(
            "\n\nUse these passages from the knowledge base when they help, and cite their titles:\n",
        );
        for p in passages {
            system.push_str(&format!("\n### {} ({})\n{}\n", p.title, p.url, p.body));
        }
    }
    system
}

/// The session's history as turns, oldest first: since the last `/new`, without commands
/// and their replies, at most `max_turns` exchanges (-1 for no limit) and the character
/// budget, starting with the user.
fn history(conn: &Connection, session_id: &str, max_turns: i64) -> Vec<Turn> {
    let mut history = chat::messages(conn, session_id, Some(400)).unwrap_or_default();
    history.pop(); // the new message itself
    if let Some(cut) = history.iter().rposition(|m| m.content["new_conversation"] == true) {
        history.drain(..=cut);
    }
    // A command and the server's reply to it are not part of the conversation.
    let mut skip = vec![false; history.len()];
    for (i, m) in history.iter().enumerate() {
        if m.content["command"] == true {
            skip[i] = true;
            if i > 0 && history[i - 1].sender == "user" {
                skip[i - 1] = true;
            }
        }
    }
    let history: Vec<_> = history.into_iter().zip(skip).filter(|(_, s)| !s).map(|(m, _)| m).collect();
    let mut kept: Vec<Turn> = Vec::new();
    let mut chars = 0;
    let mut users = 0;
    for m in history.iter().rev() {
        let text = text_of(&m.content);
        if text.is_empty() {
            continue;
        }
        let role = if m.sender == "user" { "user" } else { "assistant" };
        if role == "user" {
            users += 1;
            if max_turns >= 0 && users > max_turns {
                break;
            }
        }
        chars += text.chars().count();
        if chars > HISTORY_CHAR_BUDGET {
            break;
        }
        kept.push(Turn { role, content: json!(text) });
    }
    kept.reverse();
    // A model wants the history to start with the user.
    while kept.first().is_some_and(|t| t.role == "assistant") {
        kept.remove(0);
    }
    kept
}

/// The skills section of the system prompt (AstrBot's `build_skills_prompt`, adapted:
/// the model reads a skill's files with the `read_skill_file` tool, there is no shell):
/// the active local skills the persona keeps (`skills`: `None` every one, a list those
/// names), each with its description. Empty when there are none or the persona's tools
/// leave out `read_skill_file` (the model could not open them).
fn skills_prompt(conn: &Connection, data_dir: &Path, persona: &Persona) -> String {
    let tool = super::tools::READ_SKILL_FILE;
    if persona.tools.as_ref().is_some_and(|t| !t.iter().any(|n| n == tool)) {
        return String::new();
    }
    let states = crate::db::skills::states(conn).unwrap_or_default();
    let skills: Vec<_> = crate::skills::list(data_dir)
        .into_iter()
        .filter(|s| states.get(&s.name).copied().unwrap_or(true))
        .filter(|s| persona.skills.as_ref().is_none_or(|names| names.iter().any(|n| n == &s.name)))
        .take(100)
        .collect();
    if skills.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n\n## Skills\n\nSkills are instruction bundles, each described by a `SKILL.md` file with any \
         files it refers to. Read a skill's files with the `{tool}` tool (skill_name, and path: \
         `SKILL.md` by default).\n\n### Available skills\n"
    );
    for s in &skills {
        let description: String = s.description.chars().take(500).collect();
        let description = if description.is_empty() { "(no description)".to_owned() } else { description };
        out.push_str(&format!("- **{}**: {description}\n", s.name));
    }
    out.push_str(&format!(
        "\n### Skill rules\n\
         1. This list is every skill you have.\n\
         2. Use a skill when the user names it or the task clearly matches its description.\n\
         3. Before using a skill, read its `SKILL.md` with `{tool}` and follow it.\n\
         4. Read only the files `SKILL.md` refers to, when you need them.\n\
         5. If a skill needs to run a script, say so: you cannot run programs here.\n"
    ));
    out
}

/// The request: the persona's prompt (with knowledge-base passages when `kb_names` found
/// some), its opening dialogue, the session's history since the last `/new` (at most
/// `max_turns` exchanges, -1 for no limit, and a character budget), then the new message
/// (the session's last stored message).
pub fn context(
    conn: &Connection,
    data_dir: &Path,
    persona: &Persona,
    session_id: &str,
    new_parts: &[Value],
    max_turns: i64,
    passages: &[Passage],
) -> Vec<Turn> {
    let system = system_prompt(persona, passages) + &skills_prompt(conn, data_dir, persona);
    let mut turns = vec![Turn { role: "system", content: json!(system) }];
    for (i, d) in persona.begin_dialogs.iter().enumerate() {
        turns.push(Turn { role: if i % 2 == 0 { "user" } else { "assistant" }, content: json!(d) });
    }
    turns.extend(history(conn, session_id, max_turns));
    turns.push(Turn { role: "user", content: user_content(data_dir, conn, new_parts) });
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_names_files_with_their_ids() {
        let content = json!({"type": "user", "message": [
            {"type": "plain", "text": "see"},
            {"type": "file", "attachment_id": "a1", "filename": "notes.txt"},
            {"type": "image", "attachment_id": "a2", "filename": "x.png"},
            {"type": "tool_call", "tool_calls": []}]});
        assert_eq!(text_of(&content), "see\n[File: notes.txt, attachment_id: a1]");
    }

    #[test]
    fn standard_base64_pads_and_uses_plus_and_slash() {
        assert_eq!(standard_base64(b"\xfb\xff"), "+/8=");
        assert_eq!(standard_base64(b"foo"), "Zm9v");
        assert_eq!(standard_base64(b"f"), "Zg==");
    }
}
