//! One plugin folder's files, read and checked: `metadata.yaml` (AstrBot's fields and
//! messages, plugins-skills §1.2) and our `plugin.json` (what runs and what it offers).
//!
//! `plugin.json`:
//! ```json
//! {"exec": {"command": "main.py", "args": [], "mode": "long_lived", "timeout_ms": 30000,
//!           "idle_stop_s": 60, "memory_mb": 512},
//!  "commands": [{"name": "roll", "aliases": ["dice"], "group": [], "admin": false,
//!                "description": "Roll a die", "params": [{"name": "sides", "type": "int", "default": 6}]}],
//!  "llm_tools": [{"name": "roll_dice", "description": "...", "inputSchema": {"type": "object", ...}}]}
//! ```
//! A folder without `plugin.json` is a plugin that only shows in the listing (an AstrBot
//! Python plugin, say): it has no commands or tools and nothing ever runs.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// `metadata.yaml` is read up to this size (AstrBot's 1 MiB).
pub const MAX_METADATA: u64 = 1 << 20;
/// `plugin.json` and `_conf_schema.json` are read up to this size.
pub const MAX_MANIFEST: u64 = 1 << 20;
/// Declared commands and tools per plugin, at most.
pub const MAX_COMMANDS: usize = 64;
pub const MAX_TOOLS: usize = 64;

/// `metadata.yaml`'s fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub name: String,
    pub desc: String,
    pub version: String,
    pub author: String,
    pub repo: String,
    pub display_name: Option<String>,
    pub short_desc: Option<String>,
    pub support_platforms: Vec<String>,
    pub astrbot_version: Option<String>,
}

/// How the program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One process, started on the first call and kept until idle.
    LongLived,
    /// A process per call: one request line on stdin, then EOF; the answer on stdout.
    OneShot,
}

/// `exec` of `plugin.json`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Exec {
    /// The program: a file inside the plugin folder (canonical, so no symlink leads out),
    /// executable, run directly (never through a shell).
    pub command: PathBuf,
    pub args: Vec<String>,
    pub mode: Mode,
    /// The longest a command call may take; a tool call takes the lesser of this and the
    /// profile's `tool_call_timeout`.
    pub timeout_ms: u64,
    /// A long-lived process idle this long is stopped.
    pub idle_stop_s: u64,
    /// The address-space limit (`RLIMIT_AS`), in MiB; `None` for runtimes that reserve
    /// large ranges (Node, Go, Java), set with `"memory_mb": 0`.
    pub memory_mb: Option<u64>,
}

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const MAX_TIMEOUT_MS: u64 = 600_000;
pub const DEFAULT_IDLE_STOP_S: u64 = 60;
pub const DEFAULT_MEMORY_MB: u64 = 1024;

/// A parameter's type, as AstrBot's command parameters know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
}

impl ParamType {
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "str",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub kind: ParamType,
    /// `None`: required.
    pub default: Option<Value>,
    /// Takes every remaining word (AstrBot's `GreedyStr`); only the last, a string.
    pub greedy: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub aliases: Vec<String>,
    /// The group path (`["math", "calc"]` for `/math calc add`).
    pub group: Vec<String>,
    pub admin: bool,
    pub description: String,
    pub params: Vec<Param>,
}

impl Command {
    /// Every full name this command answers to: the group path and the name or an alias.
    pub fn full_names(&self) -> Vec<String> {
        let prefix = self.group.join(" ");
        std::iter::once(&self.name)
            .chain(&self.aliases)
            .map(|n| if prefix.is_empty() { n.clone() } else { format!("{prefix} {n}") })
            .collect()
    }

    /// The handler name the plugin is called with: the full primary name, words joined by `_`.
    pub fn handler(&self) -> String {
        self.group.iter().chain(std::iter::once(&self.name)).cloned().collect::<Vec<_>>().join("_")
    }
}

/// An LLM tool in MCP `Tool` shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// A JSON Schema object (`inputSchema`, or `parameters`).
    pub input_schema: Value,
}

/// `plugin.json`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub exec: Exec,
    pub commands: Vec<Command>,
    pub tools: Vec<Tool>,
}

/// Everything read from one plugin folder.
#[derive(Debug, Clone)]
pub struct Folder {
    pub dir: PathBuf,
    pub metadata: Metadata,
    /// `None`: no `plugin.json` (listed, never run).
    pub manifest: Option<Manifest>,
    /// `_conf_schema.json`, an object; `None` when the plugin has no config.
    pub schema: Option<Map<String, Value>>,
}

/// Reads a plugin folder. The error is the text AstrBot's listing shows for a plugin that
/// failed to load.
pub fn read_folder(dir: &Path) -> Result<Folder, String> {
    let metadata = read_metadata(dir)?;
    let manifest = match read_capped(&dir.join("plugin.json"), MAX_MANIFEST)? {
        None => None,
        Some(text) => Some(parse_manifest(dir, &text)?),
    };
    let schema = match read_capped(&dir.join("_conf_schema.json"), MAX_MANIFEST)? {
        None => None,
        Some(text) => {
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => {
                    super::schema::check(&m)?;
                    Some(m)
                }
                Ok(_) => return Err("_conf_schema.json must be a JSON object".into()),
                Err(e) => return Err(format!("_conf_schema.json is not valid JSON: {e}")),
            }
        }
    };
    Ok(Folder { dir: dir.to_path_buf(), metadata, manifest, schema })
}

/// A UTF-8 file of at most `cap` bytes; `None` when it does not exist.
fn read_capped(path: &Path, cap: u64) -> Result<Option<String>, String> {
    use std::io::Read;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {name}: {e}")),
    };
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read {name}: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!("{name} is larger than {} KiB", cap / 1024));
    }
    String::from_utf8(bytes).map(Some).map_err(|_| format!("{name} is not UTF-8"))
}

/// `metadata.yaml` (or `metadata.yml`) of a folder, with AstrBot's required fields.
pub fn read_metadata(dir: &Path) -> Result<Metadata, String> {
    for file in ["metadata.yaml", "metadata.yml"] {
        if let Some(text) = read_capped(&dir.join(file), MAX_METADATA)? {
            return parse_metadata(file, &text);
        }
    }
    Err("压缩包不是合法的 AstrBot 插件：未找到 metadata.yaml 或 metadata.yml。".into())
}

/// The flat YAML AstrBot's metadata files use: `key: value` lines (plain, single- or
/// double-quoted scalars), flow lists `[a, b]` and block lists (`- a` lines under a key);
/// comments and blank lines skipped. Nested maps are skipped whole.
pub fn parse_metadata(file: &str, text: &str) -> Result<Metadata, String> {
    let fields = flat_yaml(text);
    let get = |k: &str| {
        fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or(YamlValue::Missing)
    };
    let mut missing = Vec::new();
    let mut empty = Vec::new();
    let mut required = |k: &str, alias: Option<&str>| -> String {
        let mut v = get(k);
        if matches!(v, YamlValue::Missing)
            && let Some(a) = alias
        {
            v = get(a);
        }
        match v {
            YamlValue::Missing => {
                missing.push(k.to_owned());
                String::new()
            }
            YamlValue::Scalar(s) if !s.trim().is_empty() => s,
            _ => {
                empty.push(k.to_owned());
                String::new()
            }
        }
    };
    let name = required("name", None);
    let desc = required("desc", Some("description"));
    let version = required("version", None);
    let author = required("author", None);
    if !missing.is_empty() {
        return Err(format!("{file} 中缺少必需字段: {}。", missing.join(", ")));
    }
    if !empty.is_empty() {
        return Err(format!("{file} 中字段 {} 必须是非空字符串。", empty.join(", ")));
    }
    let scalar = |k: &str| match get(k) {
        YamlValue::Scalar(s) => Some(s),
        _ => None,
    };
    let support_platforms = match get("support_platforms") {
        YamlValue::List(items) => items,
        YamlValue::Scalar(s) if !s.is_empty() => vec![s],
        _ => Vec::new(),
    };
    Ok(Metadata {
        name: name.trim().to_owned(),
        desc,
        version,
        author,
        repo: scalar("repo").unwrap_or_default(),
        display_name: scalar("display_name"),
        short_desc: scalar("short_desc"),
        support_platforms,
        astrbot_version: scalar("astrbot_version"),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum YamlValue {
    Missing,
    Scalar(String),
    List(Vec<String>),
    /// A nested map or something else we do not read.
    Other,
}

fn flat_yaml(text: &str) -> Vec<(String, YamlValue)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<(String, YamlValue)> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with([' ', '\t']) || line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else { continue };
        let key = unquote(key.trim());
        let rest = strip_comment(rest).trim();
        let value = if rest.is_empty() {
            // A block list, or a nested map (skipped).
            let mut items = Vec::new();
            let mut other = false;
            while let Some(next) = lines.peek() {
                if !(next.starts_with([' ', '\t', '-']) || next.trim().is_empty()) {
                    break;
                }
                let t = next.trim();
                if let Some(item) = t.strip_prefix("- ").or(if t == "-" { Some("") } else { None }) {
                    items.push(unquote(strip_comment(item).trim()));
                } else if !t.is_empty() && !t.starts_with('#') {
                    other = true;
                }
                lines.next();
            }
            if other {
                YamlValue::Other
            } else if items.is_empty() {
                YamlValue::Scalar(String::new())
            } else {
                YamlValue::List(items)
            }
        } else if let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            YamlValue::List(inner.split(',').map(|s| unquote(s.trim())).filter(|s| !s.is_empty()).collect())
        } else if rest.starts_with(['|', '>']) {
            // A literal or folded block: its lines joined.
            let mut parts = Vec::new();
            while let Some(next) = lines.peek() {
                if !(next.starts_with([' ', '\t']) || next.trim().is_empty()) {
                    break;
                }
                parts.push(next.trim().to_owned());
                lines.next();
            }
            let sep = if rest.starts_with('|') { "\n" } else { " " };
            YamlValue::Scalar(parts.join(sep).trim().to_owned())
        } else if rest.starts_with('{') {
            YamlValue::Other
        } else {
            YamlValue::Scalar(unquote(rest))
        };
        out.push((key, value));
    }
    out
}

/// A value without a trailing ` # comment` (outside quotes).
fn strip_comment(s: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return &s[..i],
            None => {}
        }
        prev_space = c == ' ' || c == '\t';
    }
    s
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        // Double quotes: JSON's escapes are YAML's common ones.
        return serde_json::from_str::<String>(s).unwrap_or_else(|_| s[1..s.len() - 1].to_owned());
    }
    if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        return s[1..s.len() - 1].replace("''", "'");
    }
    s.to_owned()
}

/// A command or group word: no whitespace or control characters, at most 64 characters.
fn valid_word(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= 64 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A tool or parameter name: `[A-Za-z0-9_-]{1,64}`.
fn valid_ident(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `plugin.json` of the plugin in `dir`.
pub fn parse_manifest(dir: &Path, text: &str) -> Result<Manifest, String> {
    let bad = |why: String| format!("plugin.json: {why}");
    let doc: Value = serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(text))
        .map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let doc = doc.as_object().ok_or_else(|| bad("must be a JSON object".into()))?;
    let exec = parse_exec(dir, doc.get("exec").unwrap_or(&Value::Null)).map_err(bad)?;
    let commands = match doc.get("commands") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_COMMANDS => {
            items.iter().map(parse_command).collect::<Result<Vec<_>, _>>().map_err(bad)?
        }
        Some(Value::Array(_)) => return Err(bad(format!("at most {MAX_COMMANDS} commands"))),
        Some(_) => return Err(bad("commands must be a list".into())),
    };
    let tools = match doc.get("llm_tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_TOOLS => {
            items.iter().map(parse_tool).collect::<Result<Vec<_>, _>>().map_err(bad)?
        }
        Some(Value::Array(_)) => return Err(bad(format!("at most {MAX_TOOLS} llm_tools"))),
        Some(_) => return Err(bad("llm_tools must be a list".into())),
    };
    for (i, t) in tools.iter().enumerate() {
        if tools[..i].iter().any(|o| o.name == t.name) {
            return Err(bad(format!("the tool {} is declared twice", t.name)));
        }
    }
    Ok(Manifest { exec, commands, tools })
}

fn uint(v: Option<&Value>, field: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if (min..=max).contains(&x) => Ok(x),
            _ => Err(format!("exec.{field} must be an integer from {min} to {max}")),
        },
        Some(_) => Err(format!("exec.{field} must be an integer from {min} to {max}")),
    }
}

fn parse_exec(dir: &Path, v: &Value) -> Result<Exec, String> {
    let v = v.as_object().ok_or("exec must be an object with a command")?;
    let command = v.get("command").and_then(Value::as_str).ok_or("exec.command must be a string")?;
    let rel = Path::new(command);
    if command.is_empty()
        || command.len() > 256
        || rel.is_absolute()
        || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err("exec.command must be a relative path inside the plugin folder".into());
    }
    let root = dir.canonicalize().map_err(|e| format!("cannot read the plugin folder: {e}"))?;
    let path = dir
        .join(rel)
        .canonicalize()
        .map_err(|_| format!("exec.command {command} does not exist in the plugin folder"))?;
    if !path.starts_with(&root) || !path.is_file() {
        return Err(format!("exec.command {command} must be a file inside the plugin folder"));
    }
    let args = match v.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= 32 => items
            .iter()
            .map(|a| match a.as_str() {
                Some(s) if s.len() <= 1024 && !s.contains('\0') => Ok(s.to_owned()),
                _ => Err("exec.args must be strings of at most 1024 bytes".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("exec.args must be a list of at most 32 strings".into()),
    };
    let mode = match v.get("mode").and_then(Value::as_str) {
        None | Some("long_lived") => Mode::LongLived,
        Some("oneshot") => Mode::OneShot,
        Some(other) => return Err(format!("exec.mode must be long_lived or oneshot, not {other}")),
    };
    let timeout_ms = uint(v.get("timeout_ms"), "timeout_ms", DEFAULT_TIMEOUT_MS, 100, MAX_TIMEOUT_MS)?;
    let idle_stop_s = uint(v.get("idle_stop_s"), "idle_stop_s", DEFAULT_IDLE_STOP_S, 1, 86_400)?;
    let memory_mb = match uint(v.get("memory_mb"), "memory_mb", DEFAULT_MEMORY_MB, 0, 1 << 20)? {
        0 => None,
        m if m < 16 => return Err("exec.memory_mb must be 0 (no limit) or at least 16".into()),
        m => Some(m),
    };
    Ok(Exec { command: path, args, mode, timeout_ms, idle_stop_s, memory_mb })
}

fn words(v: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= 16 => items
            .iter()
            .map(|w| match w.as_str() {
                Some(s) if valid_word(s) => Ok(s.to_owned()),
                _ => Err(format!("{field} must be words without spaces")),
            })
            .collect(),
        Some(_) => Err(format!("{field} must be a list of at most 16 words")),
    }
}

fn parse_command(v: &Value) -> Result<Command, String> {
    let v = v.as_object().ok_or("each command must be an object")?;
    let name = match v.get("name").and_then(Value::as_str) {
        Some(n) if valid_word(n) => n.to_owned(),
        _ => return Err("a command's name must be a word without spaces (at most 64 characters)".into()),
    };
    let aliases = words(v.get("aliases"), "aliases")?;
    let group = words(v.get("group"), "group")?;
    let admin = match v.get("admin") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("command {name}: admin must be a boolean")),
    };
    let description = match v.get("description").or(v.get("desc")) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.chars().take(1024).collect(),
        Some(_) => return Err(format!("command {name}: description must be a string")),
    };
    let params = match v.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= 32 => {
            items.iter().map(|p| parse_param(&name, p)).collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err(format!("command {name}: params must be a list of at most 32")),
    };
    if let Some(i) = params.iter().position(|p| p.greedy)
        && i + 1 != params.len()
    {
        return Err(format!("command {name}: only the last parameter may be greedy"));
    }
    Ok(Command { name, aliases, group, admin, description, params })
}

fn parse_param(command: &str, v: &Value) -> Result<Param, String> {
    let v = v.as_object().ok_or_else(|| format!("command {command}: each param must be an object"))?;
    let name = match v.get("name").and_then(Value::as_str) {
        Some(n) if valid_ident(n) => n.to_owned(),
        _ => return Err(format!("command {command}: a param's name must match [A-Za-z0-9_-]{{1,64}}")),
    };
    let kind = match v.get("type").and_then(Value::as_str).unwrap_or("string") {
        "string" | "str" => ParamType::String,
        "int" | "integer" => ParamType::Int,
        "float" | "number" => ParamType::Float,
        "bool" | "boolean" => ParamType::Bool,
        other => return Err(format!("command {command}: param {name} has an unknown type {other}")),
    };
    let greedy = v.get("greedy").and_then(Value::as_bool).unwrap_or(false);
    if greedy && kind != ParamType::String {
        return Err(format!("command {command}: the greedy param {name} must be a string"));
    }
    let required = v.get("required").and_then(Value::as_bool).unwrap_or(false);
    let default = match v.get("default") {
        Some(d) if !d.is_null() => Some(d.clone()),
        _ if required => None,
        // Optional without a default: AstrBot's type default.
        _ => Some(match kind {
            ParamType::String => Value::String(String::new()),
            ParamType::Int => Value::from(0),
            ParamType::Float => Value::from(0.0),
            ParamType::Bool => Value::Bool(false),
        }),
    };
    Ok(Param { name, kind, default, greedy })
}

fn parse_tool(v: &Value) -> Result<Tool, String> {
    let v = v.as_object().ok_or("each tool must be an object")?;
    let name = match v.get("name").and_then(Value::as_str) {
        Some(n) if valid_ident(n) => n.to_owned(),
        _ => return Err("a tool's name must match [A-Za-z0-9_-]{1,64}".into()),
    };
    let description = match v.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.chars().take(4096).collect(),
        Some(_) => return Err(format!("tool {name}: description must be a string")),
    };
    let input_schema = match v.get("inputSchema").or(v.get("parameters")) {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(s @ Value::Object(_)) => s.clone(),
        Some(_) => return Err(format!("tool {name}: inputSchema must be a JSON Schema object")),
    };
    Ok(Tool { name, description, input_schema })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_as_astrbot_reads_it() {
        let text = "# a plugin\nname: astrbot_plugin_weather\ndisplay_name: \"Weather 天气\"\n\
                    desc: Look up the weather. # comment\nversion: v1.2.0\nauthor: 'some one'\n\
                    support_platforms: [telegram, \"aiocqhttp\"]\nastrbot_version: \">=4.16,<5\"\n\
                    social_link:\n  github: x\ntags:\n  - a\n  - b\n";
        let m = parse_metadata("metadata.yaml", text).unwrap();
        assert_eq!(m.name, "astrbot_plugin_weather");
        assert_eq!(m.display_name.as_deref(), Some("Weather 天气"));
        assert_eq!(m.desc, "Look up the weather.");
        assert_eq!(m.author, "some one");
        assert_eq!(m.support_platforms, ["telegram", "aiocqhttp"]);
        assert_eq!(m.astrbot_version.as_deref(), Some(">=4.16,<5"));
        let alias =
            parse_metadata("metadata.yaml", "name: a\ndescription: d\nversion: 1\nauthor: x\n").unwrap();
        assert_eq!(alias.desc, "d");
        assert_eq!(
            parse_metadata("metadata.yaml", "name: a\nversion: 1\n").unwrap_err(),
            "metadata.yaml 中缺少必需字段: desc, author。"
        );
        assert_eq!(
            parse_metadata("metadata.yml", "name: ''\ndesc: d\nversion: 1\nauthor: [x]\n").unwrap_err(),
            "metadata.yml 中字段 name, author 必须是非空字符串。"
        );
    }

    #[test]
    fn manifests_are_checked() {
        let dir = std::env::temp_dir().join(format!("astrbot-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/run"), "#!/bin/sh\n").unwrap();
        let ok = r#"{"exec": {"command": "bin/run", "mode": "oneshot", "timeout_ms": 5000},
            "commands": [{"name": "roll", "aliases": ["dice"], "group": ["game"],
                          "params": [{"name": "sides", "type": "int", "default": 6},
                                     {"name": "note", "greedy": true}]}],
            "llm_tools": [{"name": "roll_dice", "parameters": {"type": "object"}}]}"#;
        let m = parse_manifest(&dir, ok).unwrap();
        assert_eq!(m.exec.mode, Mode::OneShot);
        assert_eq!(m.exec.timeout_ms, 5000);
        assert_eq!(m.exec.memory_mb, Some(DEFAULT_MEMORY_MB));
        assert_eq!(m.commands[0].full_names(), ["game roll", "game dice"]);
        assert_eq!(m.commands[0].handler(), "game_roll");
        assert_eq!(m.commands[0].params[1].default, Some(Value::String(String::new())));
        assert_eq!(m.tools[0].input_schema, serde_json::json!({"type": "object"}));
        for (bad, why) in [
            (r#"{"exec": {"command": "../x"}}"#, "relative path inside"),
            (r#"{"exec": {"command": "/bin/sh"}}"#, "relative path inside"),
            (r#"{"exec": {"command": "nope"}}"#, "does not exist"),
            (r#"{"exec": {"command": "bin"}}"#, "must be a file"),
            (r#"{"exec": {"command": "bin/run", "timeout_ms": 18446744073709551616}}"#, "timeout_ms"),
            (r#"{"exec": {"command": "bin/run", "mode": "daemon"}}"#, "exec.mode"),
            (r#"{"exec": {"command": "bin/run"}, "commands": [{"name": "a b"}]}"#, "without spaces"),
            (
                r#"{"exec": {"command": "bin/run"}, "commands": [{"name": "a", "params": [{"name": "x", "greedy": true}, {"name": "y"}]}]}"#,
                "only the last",
            ),
            (r#"{"exec": {"command": "bin/run"}, "llm_tools": [{"name": "a.b"}]}"#, "[A-Za-z0-9_-]"),
            (r#"{"exec": {"command": "bin/run"}, "llm_tools": [{"name": "a"}, {"name": "a"}]}"#, "twice"),
        ] {
            let e = parse_manifest(&dir, bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/bin/sh", dir.join("sh")).unwrap();
            let e = parse_manifest(&dir, r#"{"exec": {"command": "sh"}}"#).unwrap_err();
            assert!(e.contains("inside the plugin folder"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
