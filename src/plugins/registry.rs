//! The installed plugins ([`Registry`], in `App` as `app.plugins`): read from
//! `DIR/plugins/*` at start, changed by the plugins API, asked by the chat for commands
//! and tools.
//!
//! A folder that fails to read (no or bad `metadata.yaml`, a bad `plugin.json` or
//! schema, a name that is not the folder's) is kept in [`Registry::failed`] with the reason,
//! as AstrBot's `failed_plugin_info`. Each plugin with a `plugin.json` has one
//! [`Runtime`]: its process, started only by a call. Disabling, reloading, uninstalling
//! and a new config stop the process; the next call starts it again with the current
//! config (AstrBot reloads the plugin; the plugin sees the new config at its next call).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::commands::{self, Outcome};
use super::manifest::{self, Folder};
use super::runtime::{CallError, Runtime, Spec, Status};

/// One installed plugin.
pub struct Installed {
    /// Its name: the folder's name and `metadata.yaml`'s `name`.
    pub name: String,
    pub folder: Folder,
    enabled: AtomicBool,
    /// When the folder was last written (AstrBot's `installed_at`), ISO 8601 UTC.
    pub installed_at: String,
    /// `None`: no `plugin.json`, nothing to run.
    pub runtime: Option<Arc<Runtime>>,
}

impl Installed {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> Option<Status> {
        self.runtime.as_ref().map(|r| r.status())
    }

    pub fn commands(&self) -> &[manifest::Command] {
        self.folder.manifest.as_ref().map(|m| m.commands.as_slice()).unwrap_or_default()
    }

    pub fn tools(&self) -> &[manifest::Tool] {
        self.folder.manifest.as_ref().map(|m| m.tools.as_slice()).unwrap_or_default()
    }
}

/// The chat a call comes from, as the plugin sees it (`event` of every call).
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub umo: String,
    pub session_id: String,
    /// `webchat` or the IM bot's id.
    pub platform: String,
    pub is_group: bool,
    pub sender_id: String,
    pub sender_name: String,
    pub is_admin: bool,
    pub message_str: String,
}

impl Event {
    pub fn to_json(&self) -> Value {
        json!({
            "umo": self.umo,
            "session_id": self.session_id,
            "platform": self.platform,
            "message_type": if self.is_group { "GroupMessage" } else { "FriendMessage" },
            "sender": {"id": self.sender_id, "name": self.sender_name},
            "is_admin": self.is_admin,
            "message_str": self.message_str,
        })
    }
}

/// A plugin's tool as the chat offers it.
#[derive(Debug, Clone)]
pub struct OfferedTool {
    pub plugin: String,
    pub tool: manifest::Tool,
}

#[derive(Default)]
pub struct Registry {
    data_dir: OnceLock<PathBuf>,
    plugins: RwLock<BTreeMap<String, Arc<Installed>>>,
    /// Folder name → why it failed to load.
    failed: RwLock<BTreeMap<String, String>>,
    changing: Mutex<()>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The folder's modification time as AstrBot shows `installed_at`.
fn mtime_iso(dir: &Path) -> String {
    let micros = std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    crate::timefmt::iso(micros)
}

impl Registry {
    /// Held by the API while it changes plugins, so two changes never interleave.
    pub fn changing(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn data_dir(&self) -> &Path {
        self.data_dir.get().map(PathBuf::as_path).unwrap_or(Path::new("."))
    }

    /// Reads every folder under `DIR/plugins` (at start).
    pub fn load_all(&self, data_dir: &Path, conn: &Connection) {
        let _ = self.data_dir.set(data_dir.to_path_buf());
        let root = super::root(data_dir);
        let mut names: Vec<String> = match std::fs::read_dir(&root) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        for name in names {
            if let Err(e) = self.load(conn, &name) {
                log::warn!("plugin {name}: not loaded: {e}");
            }
        }
    }

    /// (Re)reads the folder `DIR/plugins/<dir_name>`, replacing what was loaded under that
    /// name (its process stopped). A failure is recorded in [`Registry::failed`].
    pub fn load(&self, conn: &Connection, dir_name: &str) -> Result<Arc<Installed>, String> {
        let result = self.read_one(conn, dir_name);
        let old = write(&self.plugins).remove(dir_name);
        if let Some(old) = old.and_then(|o| o.runtime.clone()) {
            old.stop();
        }
        match result {
            Ok(plugin) => {
                write(&self.failed).remove(dir_name);
                write(&self.plugins).insert(dir_name.to_owned(), plugin.clone());
                Ok(plugin)
            }
            Err(e) => {
                write(&self.failed).insert(dir_name.to_owned(), e.clone());
                Err(e)
            }
        }
    }

    fn read_one(&self, conn: &Connection, dir_name: &str) -> Result<Arc<Installed>, String> {
        if !super::valid_name(dir_name) {
            return Err(format!("the folder name {dir_name} is not a valid plugin name"));
        }
        let dir = super::root(self.data_dir()).join(dir_name);
        let folder = manifest::read_folder(&dir)?;
        if folder.metadata.name != dir_name {
            return Err(format!(
                "metadata.yaml names the plugin {}, but its folder is {dir_name}",
                folder.metadata.name
            ));
        }
        let enabled = crate::db::plugins::states(conn)
            .map_err(|e| format!("cannot read the plugin states: {e}"))?
            .get(dir_name)
            .copied()
            .unwrap_or(true);
        let runtime = folder.manifest.as_ref().map(|m| {
            Arc::new(Runtime::new(Spec {
                name: dir_name.to_owned(),
                exec: m.exec.clone(),
                cwd: super::data_dir_of(self.data_dir(), dir_name),
                plugin_dir: dir.clone(),
            }))
        });
        Ok(Arc::new(Installed {
            name: dir_name.to_owned(),
            installed_at: mtime_iso(&dir),
            folder,
            enabled: AtomicBool::new(enabled),
            runtime,
        }))
    }

    pub fn list(&self) -> Vec<Arc<Installed>> {
        read(&self.plugins).values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Installed>> {
        read(&self.plugins).get(name).cloned()
    }

    /// Folder name → why it failed to load.
    pub fn failed(&self) -> BTreeMap<String, String> {
        read(&self.failed).clone()
    }

    /// AstrBot's `failed_plugin_info`: a line per failed folder, `""` when none.
    pub fn failed_info(&self) -> String {
        read(&self.failed)
            .iter()
            .map(|(dir, e)| format!("加载插件「{dir}」(目录: {dir}, 版本: 未知) 时出现问题，原因：{e}。\n"))
            .collect()
    }

    /// Forgets a folder that failed to load.
    pub fn forget_failed(&self, dir_name: &str) -> bool {
        write(&self.failed).remove(dir_name).is_some()
    }

    /// Sets the in-memory flag (the caller stores it); disabling stops the process.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let Some(p) = self.get(name) else { return false };
        p.enabled.store(enabled, Ordering::SeqCst);
        if !enabled && let Some(rt) = &p.runtime {
            rt.stop();
        }
        true
    }

    /// Stops a plugin's process: its next call starts it again (with the current config).
    pub fn restart(&self, name: &str) {
        if let Some(rt) = self.get(name).and_then(|p| p.runtime.clone()) {
            rt.stop();
        }
    }

    /// Removes a plugin (its process stopped); the caller deletes its folder.
    pub fn remove(&self, name: &str) -> Option<Arc<Installed>> {
        let p = write(&self.plugins).remove(name);
        if let Some(rt) = p.as_ref().and_then(|p| p.runtime.clone()) {
            rt.stop();
        }
        p
    }

    /// Stops every process (at shutdown), all at once.
    pub fn stop_all(&self) {
        let runtimes: Vec<Arc<Runtime>> = self.list().iter().filter_map(|p| p.runtime.clone()).collect();
        let handles: Vec<_> = runtimes
            .into_iter()
            .map(|rt| std::thread::Builder::new().name("plugin-stop".into()).spawn(move || rt.stop()))
            .collect();
        for h in handles.into_iter().flatten() {
            let _ = h.join();
        }
    }

    /// Stops the processes idle past their `idle_stop_s` (called every few seconds).
    pub fn reap_idle(&self) {
        for p in self.list() {
            if let Some(rt) = &p.runtime {
                rt.stop_if_idle();
            }
        }
    }

    /// The config a plugin runs with: its saved file repaired against its schema, or `{}`.
    pub fn config_of(&self, p: &Installed) -> Map<String, Value> {
        match &p.folder.schema {
            Some(schema) => super::schema::load(&super::config_path(self.data_dir(), &p.name), schema),
            None => Map::new(),
        }
    }

    /// The `initialize` params of a plugin's process.
    fn init_params(&self, p: &Installed) -> Value {
        json!({
            "protocol_version": 1,
            "host": {"name": "astrbot", "version": env!("CARGO_PKG_VERSION")},
            "plugin": {
                "name": p.name,
                "version": p.folder.metadata.version,
                "dir": p.folder.dir,
                "data_dir": super::data_dir_of(self.data_dir(), &p.name),
            },
            "config": self.config_of(p),
        })
    }

    /// The tools of the enabled plugins (a name two plugins declare goes to the first).
    pub fn tools(&self) -> Vec<OfferedTool> {
        let mut out: Vec<OfferedTool> = Vec::new();
        for p in self.list().iter().filter(|p| p.enabled()) {
            for tool in p.tools() {
                if !out.iter().any(|o| o.tool.name == tool.name) {
                    out.push(OfferedTool { plugin: p.name.clone(), tool: tool.clone() });
                }
            }
        }
        out
    }

    /// A plugin command in `text` (with its wake prefix already removed), answered: the
    /// plugin's reply, or a refusal. `None` when it is no plugin command.
    pub fn run_command(&self, rest: &str, event: &Event) -> Option<String> {
        let enabled: Vec<Arc<Installed>> = self.list().into_iter().filter(|p| p.enabled()).collect();
        let outcome = commands::find(
            enabled.iter().map(|p| (p.name.as_str(), p.commands())),
            rest,
            event.is_admin,
            &event.sender_id,
        )?;
        let (plugin, command, args) = match outcome {
            Outcome::Reply(text) => return Some(text),
            Outcome::Call { plugin, command, args } => (plugin, command, args),
        };
        let p = enabled.iter().find(|p| p.name == plugin)?;
        let handler = command.handler();
        let fail = |e: &dyn std::fmt::Display| {
            format!(":(\n\n在调用插件 {plugin} 的处理函数 {handler} 时出现异常：{e}")
        };
        let Some(rt) = &p.runtime else { return Some(fail(&"the plugin has no program")) };
        let params = json!({
            "command": command.full_names().first().cloned().unwrap_or_default(),
            "handler": handler,
            "args": args,
            "event": event.to_json(),
        });
        let timeout = Duration::from_millis(rt.spec().exec.timeout_ms);
        let started = std::time::Instant::now();
        let result = rt.call("command/invoke", params, &|| self.init_params(p), timeout);
        log::info!(
            "plugin {plugin}: command {handler} {} ms {}",
            started.elapsed().as_millis(),
            if result.is_ok() { "ok" } else { "error" }
        );
        Some(match result {
            Ok(v) => reply_text(&v),
            Err(e) => fail(&e),
        })
    }

    /// Calls a plugin's tool; the text for the model and whether it succeeded. A timeout
    /// is AstrBot's `tool <name> execution timeout after <n> seconds.`
    pub fn call_tool(
        &self,
        name: &str,
        arguments: &Value,
        event: &Event,
        timeout: Duration,
    ) -> Result<(String, bool), String> {
        let (p, _) = self
            .list()
            .into_iter()
            .filter(|p| p.enabled())
            .find_map(|p| p.tools().iter().any(|t| t.name == name).then_some((p.clone(), ())))
            .ok_or_else(|| format!("Tool {name} not found"))?;
        let rt = p.runtime.clone().ok_or_else(|| format!("the plugin {} has no program", p.name))?;
        let timeout = timeout.min(Duration::from_millis(rt.spec().exec.timeout_ms));
        let params = json!({"name": name, "arguments": arguments, "event": event.to_json()});
        match rt.call("tools/call", params, &|| self.init_params(&p), timeout) {
            Ok(v) => Ok(tool_result(&v)),
            Err(CallError::Timeout(d)) => {
                Err(format!("tool {name} execution timeout after {} seconds.", d.as_secs()))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A command's result as the chat's reply text: a string; `{"text"}`; or `{"replies": [...]}`
/// where each reply is a string or a chain of AstrBot components (`Plain` text, `Image`
/// and `File` as their URL or name on a line of their own, `At` as `@name`).
pub fn reply_text(v: &Value) -> String {
    fn chain(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().map(component).collect::<Vec<_>>().join(""),
            Value::Object(_) => component(v),
            _ => String::new(),
        }
    }
    fn component(c: &Value) -> String {
        let kind = c["type"].as_str().unwrap_or_default().to_ascii_lowercase();
        match kind.as_str() {
            "plain" | "text" => c["text"].as_str().unwrap_or_default().to_owned(),
            "at" => format!("@{} ", c["name"].as_str().or(c["qq"].as_str()).unwrap_or_default()),
            "image" | "file" | "record" | "video" => {
                let url = c["url"].as_str().or(c["file"].as_str()).or(c["name"].as_str()).unwrap_or_default();
                format!("\n{url}\n")
            }
            _ => String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.contains_key("replies") => m["replies"]
            .as_array()
            .map(|rs| rs.iter().map(chain).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("\n\n"))
            .unwrap_or_default(),
        Value::Object(m) if m.contains_key("text") => chain(&m["text"]),
        Value::Object(m) if m.contains_key("content") => tool_result(v).0,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A tool's result in MCP shape (`content` parts joined, `isError`), or a bare string.
pub fn tool_result(v: &Value) -> (String, bool) {
    match v {
        Value::String(s) => (s.clone(), true),
        Value::Object(m) if m.contains_key("content") => {
            let text = m["content"]
                .as_array()
                .map(|parts| {
                    parts
                        .iter()
                        .map(|p| match p["type"].as_str() {
                            Some("text") => p["text"].as_str().unwrap_or_default().to_owned(),
                            Some(other) => format!("[{other} content]"),
                            None => String::new(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n\n")
                })
                .unwrap_or_default();
            (text, !m.get("isError").and_then(Value::as_bool).unwrap_or(false))
        }
        Value::Object(m) if m.contains_key("text") => (reply_text(v), true),
        Value::Null => (String::new(), true),
        other => (other.to_string(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_text() {
        assert_eq!(reply_text(&json!("hi")), "hi");
        assert_eq!(reply_text(&json!({"text": "hi"})), "hi");
        assert_eq!(
            reply_text(
                &json!({"replies": ["one", [{"type": "Plain", "text": "two "}, {"type": "At", "name": "bob"}]]})
            ),
            "one\n\ntwo @bob "
        );
        assert_eq!(tool_result(&json!({"content": [{"type": "text", "text": "3"}]})), ("3".into(), true));
        assert_eq!(tool_result(&json!({"content": [], "isError": true})), ("".into(), false));
        assert_eq!(tool_result(&json!("x")), ("x".into(), true));
    }
}
