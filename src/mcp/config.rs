//! AstrBot's MCP server configs (`mcp_server.json`'s entries) and the checks a config
//! passes before it is stored or connected to.
//!
//! A config is an object: no `url` means a stdio server (`command`, `args`, `env`, `cwd`),
//! a `url` a remote one (`transport` or `type`: `sse` or `streamable_http`, `headers`,
//! `timeout`, ...); `active` says whether it runs. The stdio rules are AstrBot's
//! (`validate_mcp_stdio_config`), with its messages byte for byte: an allow-list of
//! launchers (`ASTRBOT_MCP_STDIO_ALLOWED_COMMANDS` replaces it), a deny-list of shells and
//! system tools, no shell metacharacters, no inline code (`python -c`, `node -e`), no
//! privileged Docker flags. Beyond AstrBot, because a key with scope `mcp` must not be able
//! to point a child anywhere it likes or smuggle a secret out: a remote server needs an
//! http(s) URL and a known transport, headers and env are objects of strings, and a stdio
//! `cwd` must be a folder inside the data folder.
//!
//! Secrets: header values and env values whose names look secret (`Authorization`,
//! `X-Api-Key`, `GITHUB_TOKEN`, `OPENAI_API_KEY`, `DB_PASSWORD`, ...) are masked in every
//! answer ([`redact`]); a masked value sent back keeps the stored one ([`restore`]) only
//! while it still goes where it went: a header while `url` keeps its scheme, host and port,
//! an env value while `command` and `args` are unchanged.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use serde_json::{Map, Value};

/// AstrBot's default stdio launchers.
pub const DEFAULT_ALLOWED: &[&str] =
    &["python", "python3", "py", "node", "npx", "npm", "pnpm", "yarn", "bun", "bunx", "deno", "uv", "uvx"];

/// Commands never allowed, whatever the allow-list says (AstrBot's `_DENIED_STDIO_COMMANDS`).
const DENIED: &[&str] = &[
    "bash",
    "sh",
    "zsh",
    "fish",
    "cmd",
    "powershell",
    "pwsh",
    "osascript",
    "open",
    "curl",
    "wget",
    "nc",
    "netcat",
    "telnet",
    "ssh",
    "scp",
    "rm",
    "mv",
    "cp",
    "dd",
    "mkfs",
    "sudo",
    "su",
    "chmod",
    "chown",
    "kill",
    "killall",
    "shutdown",
    "reboot",
    "poweroff",
    "halt",
];

/// The env variable that replaces the allow-list.
pub const ALLOWED_ENV: &str = "ASTRBOT_MCP_STDIO_ALLOWED_COMMANDS";

/// Longest server name (it is a path segment and a log field).
pub const MAX_NAME_CHARS: usize = 128;

/// The command's name as AstrBot compares it: the last path part, lowercased, without
/// `.exe`, `.cmd` or `.bat`.
pub fn command_name(command: &str) -> String {
    let command = command.trim();
    let base = command.rsplit(['/', '\\']).next().unwrap_or(command).to_lowercase();
    for suffix in [".exe", ".cmd", ".bat"] {
        if let Some(stem) = base.strip_suffix(suffix) {
            return stem.to_owned();
        }
    }
    base
}

/// The allowed launchers: `ASTRBOT_MCP_STDIO_ALLOWED_COMMANDS` (comma-separated) when set
/// and not blank, else AstrBot's default list.
pub fn allowed_commands() -> BTreeSet<String> {
    match std::env::var(ALLOWED_ENV) {
        Ok(list) if !list.trim().is_empty() => {
            list.split(',').filter(|s| !s.trim().is_empty()).map(command_name).collect()
        }
        _ => DEFAULT_ALLOWED.iter().map(|s| s.to_string()).collect(),
    }
}

/// AstrBot's `extract_mcp_server_config`: the first entry of a `mcpServers` object.
pub fn extract_mcp_servers(v: &Value) -> Result<Map<String, Value>, String> {
    let Value::Object(servers) = v else { return Err("mcpServers must be a JSON object".into()) };
    let Some((_, first)) = servers.iter().next() else {
        return Err("mcpServers configuration cannot be empty".into());
    };
    match first {
        Value::Object(c) => Ok(c.clone()),
        _ => Err("Invalid mcpServers format. Ensure each key in mcpServers is a server name, \
                  and each value is an object containing fields like command/url."
            .into()),
    }
}

/// AstrBot's `_prepare_config`: a wrapped `mcpServers` entry unwrapped, `active` dropped.
/// This is what a client connects with.
pub fn prepared(config: &Map<String, Value>) -> Map<String, Value> {
    let mut cfg = match config.get("mcpServers") {
        Some(Value::Object(servers)) if !servers.is_empty() => match servers.values().next() {
            Some(Value::Object(c)) => c.clone(),
            _ => Map::new(),
        },
        _ => config.clone(),
    };
    cfg.remove("active");
    cfg
}

/// Whether a config runs a child process (no `url`).
pub fn is_stdio(config: &Map<String, Value>) -> bool {
    !prepared(config).contains_key("url")
}

/// A server's `active` flag (AstrBot's default: true; a non-boolean reads as its truth).
pub fn active(config: &Value) -> bool {
    match config.get("active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => true,
    }
}

/// A server name: a non-empty string without control characters, at most 128 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Server name cannot be empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("Server name must be at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("Server name must not contain control characters".into());
    }
    Ok(())
}

/// AstrBot's `validate_mcp_stdio_config`, messages and order as there; a remote config
/// passes.
pub fn validate_stdio(config: &Map<String, Value>) -> Result<(), String> {
    let cfg = prepared(config);
    if cfg.contains_key("url") {
        return Ok(());
    }
    let command = match cfg.get("command") {
        Some(Value::String(c)) if !c.trim().is_empty() => c,
        _ => return Err("MCP stdio server requires a non-empty command.".into()),
    };
    if command.chars().any(|c| matches!(c, '\r' | '\n' | '\0' | ';' | '&' | '|' | '<' | '>' | '`' | '$')) {
        return Err("MCP stdio command contains unsafe shell metacharacters.".into());
    }
    let name = command_name(command);
    if DENIED.contains(&name.as_str()) {
        return Err(format!("MCP stdio command `{name}` is not allowed."));
    }
    let allowed = allowed_commands();
    if !allowed.contains(&name) {
        let shown: Vec<&str> = allowed.iter().map(String::as_str).collect();
        return Err(format!(
            "MCP stdio command `{name}` is not allowed. Allowed commands: {}. Set {ALLOWED_ENV} to override \
             this list if you trust another launcher.",
            shown.join(", ")
        ));
    }
    validate_args(&name, cfg.get("args"))?;
    match cfg.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(env)) => {
            if !env.values().all(Value::is_string) {
                return Err("MCP stdio env keys and values must be strings.".into());
            }
        }
        Some(_) => return Err("MCP stdio env must be an object.".into()),
    }
    Ok(())
}

/// AstrBot's `_validate_stdio_args`.
fn validate_args(name: &str, args: Option<&Value>) -> Result<(), String> {
    let args: Vec<&str> = match args {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) => match items.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
            Some(a) => a,
            None => return Err("MCP stdio args must be a list of strings.".into()),
        },
        Some(_) => return Err("MCP stdio args must be a list of strings.".into()),
    };
    if args.iter().any(|a| a.contains(['\0', '\r', '\n'])) {
        return Err("MCP stdio args cannot contain control characters.".into());
    }
    let short = |a: &str, letters: &str| {
        a.starts_with('-') && !a.starts_with("--") && a.contains(|c| letters.contains(c))
    };
    if name.starts_with("python") || name == "py" {
        if args.iter().any(|a| *a == "-c" || short(a, "c")) {
            return Err(
                "MCP stdio Python servers must be launched from a module or file; inline code flags \
                        such as -c are not allowed."
                    .into(),
            );
        }
    } else if matches!(name, "node" | "deno" | "bun") || name.starts_with("node") {
        if args.iter().any(|a| matches!(*a, "-e" | "--eval" | "-p" | "--print" | "eval") || short(a, "ep")) {
            return Err("MCP stdio JavaScript servers must be launched from a package or file; inline eval \
                        flags are not allowed."
                .into());
        }
    } else if name == "docker" {
        let mut denied = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if matches!(*a, "--privileged" | "--pid=host" | "--network=host" | "--net=host" | "--ipc=host") {
                denied.push(a.to_string());
            } else if matches!(*a, "--network" | "--net" | "--pid" | "--ipc")
                && args.get(i + 1) == Some(&"host")
            {
                denied.push(format!("{a} host"));
            }
        }
        if !denied.is_empty() {
            return Err(format!("MCP stdio Docker args are unsafe and not allowed: {}.", denied.join(", ")));
        }
    }
    Ok(())
}

/// Every check before a config is stored or connected to: AstrBot's stdio rules, then ours
/// on every known field whichever the kind (a field the other kind ignores is still
/// checked, so a config never stores what it could not mean): a remote server's http(s)
/// URL and transport, headers and env as objects of strings, numbers of seconds, a
/// stdio `cwd` inside `data_dir`.
pub fn validate(config: &Map<String, Value>, data_dir: &Path) -> Result<(), String> {
    validate_stdio(config)?;
    check_fields(&prepared(config), data_dir)
}

/// The field rules of [`validate`] alone (no AstrBot stdio rules): also what a request's
/// flat fields must meet when its `config` object is the one used.
pub fn check_fields(cfg: &Map<String, Value>, data_dir: &Path) -> Result<(), String> {
    let present = |k: &str| cfg.get(k).filter(|v| !v.is_null());
    if present("mcpServers").is_some_and(|v| !v.is_object()) {
        return Err("mcpServers must be a JSON object".into());
    }
    if let Some(c) = present("command")
        && !c.is_string()
    {
        return Err("MCP stdio command must be a string.".into());
    }
    if let Some(args) = present("args") {
        validate_args("", Some(args))?;
    }
    match present("env") {
        None => {}
        Some(Value::Object(env)) => {
            if !env.values().all(Value::is_string) {
                return Err("MCP stdio env keys and values must be strings.".into());
            }
            if env.iter().any(|(k, v)| {
                k.is_empty() || k.contains(['=', '\0']) || v.as_str().is_some_and(|s| s.contains('\0'))
            }) {
                return Err("MCP stdio env names must be non-empty and without = or NUL.".into());
            }
        }
        Some(_) => return Err("MCP stdio env must be an object.".into()),
    }
    for field in ["transport", "type"] {
        match present(field) {
            None => {}
            Some(Value::String(t)) if t == "sse" || t == "streamable_http" => {}
            Some(_) => return Err("MCP transport must be sse or streamable_http.".into()),
        }
    }
    match present("headers") {
        None => {}
        Some(Value::Object(h)) => {
            let ok = h.iter().all(|(k, v)| {
                !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                    && v.as_str().is_some_and(|s| !s.contains(['\r', '\n', '\0']))
            });
            if !ok {
                return Err("MCP headers must be an object of header names and string values.".into());
            }
        }
        Some(_) => return Err("MCP headers must be an object of header names and string values.".into()),
    }
    for field in ["timeout", "sse_read_timeout", "session_read_timeout"] {
        match present(field) {
            None => {}
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f > 0.0 && f <= 86_400.0) => {}
            Some(_) => return Err(format!("MCP {field} must be a number of seconds from 0 to 86400.")),
        }
    }
    if cfg.contains_key("url") {
        let url = cfg.get("url").and_then(Value::as_str).unwrap_or_default();
        let parsed: Option<ureq::http::Uri> = url.parse().ok();
        let web = parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
        });
        if !web {
            return Err("MCP server url must be an http or https URL.".into());
        }
        if present("transport").is_none() && present("type").is_none() {
            return Err("MCP connection config missing transport or type field".into());
        }
    }
    match present("cwd") {
        None => {}
        Some(Value::String(cwd)) if inside(Path::new(cwd), data_dir) => {}
        Some(_) => {
            return Err("MCP stdio cwd must be an absolute path inside the server's data folder.".into());
        }
    }
    Ok(())
}

/// Whether `path` is `root` or below it, read lexically (absolute, no `..`).
fn inside(path: &Path, root: &Path) -> bool {
    path.is_absolute()
        && !path.components().any(|c| matches!(c, Component::ParentDir))
        && path.starts_with(root)
}

/// Whether a header or env name looks like it holds a secret.
pub fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["KEY", "TOKEN", "SECRET", "PASS", "AUTH", "CREDENTIAL", "COOKIE", "SESSION", "PRIVATE", "SIGNATURE"]
        .iter()
        .any(|w| n.contains(w))
}

/// Masks secret-looking header and env values, and whatever `config::redact` masks.
pub fn redact(config: &mut Value) {
    for section in ["headers", "env"] {
        if let Some(map) = config.get_mut(section).and_then(Value::as_object_mut) {
            for (k, v) in map.iter_mut() {
                if let Value::String(s) = v
                    && secret_name(k)
                {
                    *s = crate::config::mask(s);
                }
            }
        }
    }
    crate::config::redact(config);
}

/// Puts stored header and env values back where `new` sends their masks: headers only
/// while `url` keeps its scheme, host and port; env values only while `command` and `args`
/// are unchanged. A mask toward a changed target is refused, never stored.
pub fn restore(new: &mut Map<String, Value>, stored: &Value) -> Result<(), String> {
    let same_url = crate::config::same_url_endpoint(
        stored.get("url").and_then(Value::as_str).unwrap_or_default(),
        new.get("url").and_then(Value::as_str).unwrap_or_default(),
    );
    let same_command = stored.get("command") == new.get("command") && stored.get("args") == new.get("args");
    for (section, same, what) in [
        ("headers", same_url, "url changed: send the headers again"),
        ("env", same_command, "command or args changed: send the env values again"),
    ] {
        let Some(old) = stored.get(section).and_then(Value::as_object) else { continue };
        let Some(map) = new.get_mut(section).and_then(Value::as_object_mut) else { continue };
        for (k, v) in map.iter_mut() {
            let Some(secret) = old.get(k).and_then(Value::as_str) else { continue };
            let masked = crate::config::mask(secret);
            if masked == secret || v.as_str() != Some(masked.as_str()) {
                continue;
            }
            if !same {
                return Err(what.into());
            }
            *v = Value::String(secret.to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), String> {
        validate(v.as_object().unwrap(), Path::new("/srv/astrbot"))
    }

    #[test]
    fn stdio_rules_follow_astrbot() {
        assert_eq!(command_name("C:\\Tools\\NODE.EXE"), "node");
        assert_eq!(command_name("/usr/bin/python3"), "python3");
        assert!(
            check(json!({"command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything"]}))
                .is_ok()
        );
        let cases = [
            (json!({"name": "x"}), "MCP stdio server requires a non-empty command."),
            (json!({"command": "node; rm -rf /"}), "MCP stdio command contains unsafe shell metacharacters."),
            (json!({"command": "/bin/bash"}), "MCP stdio command `bash` is not allowed."),
            (json!({"command": "python", "args": "-m x"}), "MCP stdio args must be a list of strings."),
            (
                json!({"command": "python", "args": ["a\nb"]}),
                "MCP stdio args cannot contain control characters.",
            ),
            (
                json!({"command": "python", "args": ["-Ic", "print(1)"]}),
                "MCP stdio Python servers must be launched from a module or file; inline code flags such as -c are not allowed.",
            ),
            (
                json!({"command": "node", "args": ["--eval", "1"]}),
                "MCP stdio JavaScript servers must be launched from a package or file; inline eval flags are not allowed.",
            ),
            (json!({"command": "node", "env": []}), "MCP stdio env must be an object."),
            (json!({"command": "node", "env": {"A": 1}}), "MCP stdio env keys and values must be strings."),
            (
                json!({"command": "node", "cwd": "/tmp"}),
                "MCP stdio cwd must be an absolute path inside the server's data folder.",
            ),
            (
                json!({"command": "node", "cwd": "/srv/astrbot/../etc"}),
                "MCP stdio cwd must be an absolute path inside the server's data folder.",
            ),
            (json!({"url": "ftp://x/y", "transport": "sse"}), "MCP server url must be an http or https URL."),
            (json!({"url": "http://x/y"}), "MCP connection config missing transport or type field"),
            (json!({"url": "http://x/y", "type": "ws"}), "MCP transport must be sse or streamable_http."),
        ];
        for (config, message) in cases {
            assert_eq!(check(config.clone()).unwrap_err(), message, "{config}");
        }
        let e = check(json!({"command": "ruby"})).unwrap_err();
        assert!(
            e.starts_with(
                "MCP stdio command `ruby` is not allowed. Allowed commands: bun, bunx, deno, node,"
            ),
            "{e}"
        );
        assert!(check(json!({"command": "node", "cwd": "/srv/astrbot/mcp"})).is_ok());
        assert!(check(json!({"url": "https://mcp.example.com/mcp", "type": "streamable_http", "headers": {"Authorization": "Bearer x"}})).is_ok());
        assert!(
            check(json!({"mcpServers": {"a": {"command": "sh"}}})).is_err(),
            "the wrapped form is checked too"
        );
    }

    #[test]
    fn secrets_are_masked_and_follow_only_their_target() {
        let stored = json!({"url": "https://a.example/mcp", "transport": "sse", "headers": {"Authorization": "Bearer secret-value", "Accept-Language": "en"},
                            "env": {"GITHUB_TOKEN": "ghp_1234567890", "MODE": "prod"}, "command": "npx"});
        let mut shown = stored.clone();
        redact(&mut shown);
        assert_eq!(shown["headers"]["Authorization"], "Bea****alue");
        assert_eq!(shown["headers"]["Accept-Language"], "en");
        assert_eq!(shown["env"]["GITHUB_TOKEN"], "ghp****7890");
        assert_eq!(shown["env"]["MODE"], "prod");
        let mut back = shown.as_object().unwrap().clone();
        restore(&mut back, &stored).unwrap();
        assert_eq!(Value::Object(back), stored);
        let mut moved = shown.as_object().unwrap().clone();
        moved.insert("url".into(), json!("https://evil.example/mcp"));
        assert_eq!(restore(&mut moved, &stored).unwrap_err(), "url changed: send the headers again");
    }
}
