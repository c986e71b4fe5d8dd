//! Shipyard Neo's skill sync (AstrBot's `NeoSkillSyncManager.sync_release`): a release is
//! looked up on Bay's registry (by `release_id`, or the active stable release of a
//! `skill_key`), its candidate's payload fetched, and its `skill_markdown` written as
//! `DIR/skills/<local name>/SKILL.md`, with the mapping from `skill_key` to the local
//! name kept in `DIR/skills/neo_skill_map.json`.
//!
//! Bay is a peer we do not control: every call has a connect and a total timeout, no
//! redirects, and an answer is read up to 4 MiB; listing pages are bounded; the markdown
//! is capped at the file routes' 512 KiB. Errors are texts for AstrBot's 200-errors.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The most of one Bay answer read.
const MAX_ANSWER: u64 = 4 << 20;
/// Release pages read when looking for a `release_id` (100 each).
const MAX_PAGES: usize = 50;

/// What to sync.
pub struct Request {
    pub release_id: Option<String>,
    pub skill_key: Option<String>,
    pub require_stable: bool,
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Bay {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Bay {
    fn get(&self, path_and_query: &str) -> Result<Value, String> {
        let url = format!("{}{path_and_query}", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|e| format!("Shipyard Neo request failed: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| format!("Shipyard Neo answer unreadable: {e}"))?;
        if status != 200 {
            let detail: String = text.chars().take(300).collect();
            return Err(format!("Shipyard Neo answered HTTP {status}: {detail}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("Shipyard Neo answered invalid JSON: {e}"))
    }
}

fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v[key].as_str().filter(|s| !s.trim().is_empty())
}

/// AstrBot's slug: lower case, runs of other characters as `-`, `._-` trimmed, else `skill`.
fn slug(key: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in key.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
            dash = false;
        } else if !dash {
            out.push('-');
            dash = true;
        }
    }
    let trimmed = out.trim_matches(|c| matches!(c, '.' | '_' | '-'));
    if trimmed.is_empty() { "skill".into() } else { trimmed.to_owned() }
}

fn sha1_hex8(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes());
    d.as_ref().iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Splits frontmatter from a markdown: (name, description, body).
fn split_markdown(md: &str) -> (Option<String>, Option<String>, String) {
    let mut lines = md.lines();
    if lines.next().map(str::trim_end) == Some("---") {
        let rest: Vec<&str> = md.lines().skip(1).collect();
        if let Some(end) = rest.iter().position(|l| l.trim_end() == "---") {
            let mut name = None;
            for l in &rest[..end] {
                if let Some(v) = l.strip_prefix("name:") {
                    name = Some(v.trim().trim_matches(['\u{22}', '\'']).to_owned()).filter(|s| !s.is_empty());
                }
            }
            let front = rest[..end].join("\n");
            let d = super::description(&format!("---\n{front}\n---\n"));
            let body = rest[end + 1..].join("\n");
            return (name, Some(d).filter(|d| !d.is_empty()), body.trim().to_owned());
        }
    }
    (None, None, md.trim().to_owned())
}

/// The description when the frontmatter has none: the first text line under a
/// `## Description` (or `## 描述`) heading, else the first line that is not a heading.
fn description_of(body: &str) -> Option<String> {
    let lines: Vec<&str> = body.lines().map(str::trim).collect();
    if let Some(at) = lines.iter().position(|l| *l == "## Description" || *l == "## 描述")
        && let Some(l) = lines[at + 1..].iter().find(|l| !l.is_empty() && !l.starts_with('#'))
    {
        return Some(l.to_string());
    }
    lines.iter().find(|l| !l.is_empty() && !l.starts_with('#')).map(|l| l.to_string())
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs the sync; the answer's `data` on success. The caller marks the skill active.
pub fn sync(
    data_dir: &Path,
    endpoint: &str,
    token: &str,
    req: &Request,
    now_micros: i64,
) -> Result<Value, String> {
    let base = endpoint.trim().trim_end_matches('/').to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(format!("Shipyard Neo endpoint must be an http(s) URL: {base}"));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(20)))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("astrbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let bay = Bay { agent, base, token: token.to_owned() };
    let release = if let Some(id) = req.release_id.as_deref().filter(|s| !s.trim().is_empty()) {
        let mut found = None;
        for page in 0..MAX_PAGES {
            let v =
                bay.get(&format!("/v1/skills/releases?active_only=false&limit=100&offset={}", page * 100))?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if let Some(r) = items.iter().find(|r| r["id"] == id) {
                found = Some(r.clone());
                break;
            }
            if items.len() < 100 {
                break;
            }
        }
        found.ok_or_else(|| format!("Release not found: {id}"))?
    } else if let Some(key) = req.skill_key.as_deref().filter(|s| !s.trim().is_empty()) {
        let v = bay.get(&format!(
            "/v1/skills/releases?skill_key={}&active_only=true&stage=stable&limit=1&offset=0",
            encode(key)
        ))?;
        v["items"]
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .ok_or_else(|| format!("No active stable release found for skill_key: {key}"))?
    } else {
        return Err("Missing release_id or skill_key".into());
    };
    let (Some(release_id), Some(skill_key), Some(candidate_id)) =
        (str_of(&release, "id"), str_of(&release, "skill_key"), str_of(&release, "candidate_id"))
    else {
        return Err("Release payload is incomplete.".into());
    };
    let stage = release["stage"].as_str().unwrap_or_default();
    if req.require_stable && stage != "stable" {
        return Err(format!("Only stable releases can be synced to local SKILL.md (got: {stage})."));
    }
    let candidate = bay.get(&format!("/v1/skills/candidates/{}", encode(candidate_id)))?;
    let payload_ref =
        str_of(&candidate, "payload_ref").ok_or("Candidate payload_ref is missing.")?.to_owned();
    let payload = bay.get(&format!("/v1/skills/payloads/{}", encode(&payload_ref)))?;
    let Some(payload) = payload["payload"].as_object() else {
        return Err("Skill payload must be a JSON object.".into());
    };
    let markdown = payload
        .get("skill_markdown")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or("payload.skill_markdown is required for stable sync to local skill.")?;
    if markdown.len() as u64 > super::MAX_EDIT {
        return Err("payload.skill_markdown is too large (over 512 KiB).".into());
    }

    let root = super::root(data_dir);
    fs::create_dir_all(&root).map_err(|e| format!("Cannot create the skills folder: {e}"))?;
    let map_path = root.join("neo_skill_map.json");
    let mut map: Value = fs::read_to_string(&map_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"version": 1, "items": {}}));
    let mapped = map["items"][skill_key]["local_skill_name"]
        .as_str()
        .filter(|n| super::valid_name(n))
        .map(str::to_owned);
    let local = match mapped {
        Some(n) => n,
        None => {
            let first = format!("neo_{}", slug(skill_key));
            if fs::symlink_metadata(root.join(&first)).is_ok() {
                format!("{first}-{}", sha1_hex8(skill_key))
            } else {
                first
            }
        }
    };
    if !super::valid_name(&local) {
        return Err("Invalid skill name.".into());
    }
    let (name, description, body) = split_markdown(markdown);
    let name = collapse(&name.unwrap_or_else(|| local.clone()));
    let description = collapse(
        &description
            .or_else(|| description_of(&body))
            .unwrap_or_else(|| format!("Synced skill for `{skill_key}`.")),
    );
    let dir = root.join(&local);
    if fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir() || m.file_type().is_symlink()) {
        return Err("Invalid skill path".into());
    }
    fs::create_dir_all(&dir).map_err(|e| format!("Cannot create the skill: {e}"))?;
    let text = format!("---\nname: {name}\ndescription: {description}\n---\n\n{body}\n");
    let tmp = dir.join(".SKILL.md.tmp");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, dir.join("SKILL.md")))
        .map_err(|e| format!("Cannot write the skill: {e}"))?;
    let synced_at = crate::timefmt::iso(now_micros);
    if !map["items"].is_object() {
        map["items"] = Value::Object(Map::new());
    }
    map["version"] = json!(1);
    map["items"][skill_key] = json!({
        "local_skill_name": local, "latest_release_id": release_id, "latest_candidate_id": candidate_id,
        "latest_payload_ref": payload_ref, "updated_at": synced_at,
    });
    let map_text = serde_json::to_string_pretty(&map).unwrap_or_default();
    let tmp = root.join(".neo_skill_map.json.tmp");
    fs::write(&tmp, map_text)
        .and_then(|()| fs::rename(&tmp, &map_path))
        .map_err(|e| format!("Cannot write the Neo skill map: {e}"))?;
    Ok(json!({
        "skill_key": skill_key, "local_skill_name": local, "release_id": release_id,
        "candidate_id": candidate_id, "payload_ref": payload_ref,
        "map_path": map_path.display().to_string(), "synced_at": synced_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_descriptions() {
        assert_eq!(slug("CSV Report!!"), "csv-report");
        assert_eq!(slug("..."), "skill");
        assert_eq!(sha1_hex8("abc"), "a9993e36");
        let (n, d, b) = split_markdown("---\nname: x\ndescription: d  e\n---\n# T\nbody");
        assert_eq!((n.as_deref(), d.as_deref(), b.as_str()), (Some("x"), Some("d  e"), "# T\nbody"));
        assert_eq!(description_of("# T\n## Description\n\nThe one.\nmore"), Some("The one.".into()));
        assert_eq!(description_of("# T\nfirst"), Some("first".into()));
    }
}
