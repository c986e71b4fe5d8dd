//! Plugin sources and the marketplace: the custom sources list (a JSON list stored as
//! sent, preferences key `custom_plugin_sources`), and the registry JSON fetched from a
//! source with AstrBot's cache (`PluginService.get_online_plugins`): `DIR/plugins.json`
//! for the default registry, `DIR/plugins_custom_<8 hex of the URL's SHA-256>.json` for a custom one,
//! `{"timestamp","data","md5"}`; used while its md5 matches the remote one (or the
//! remote md5 cannot be fetched), and answered offline with AstrBot's warning.
//!
//! Every fetch has a connect and a total timeout and a body cap; the default registry
//! URLs may be replaced with `ASTRBOT_PLUGIN_REGISTRY_URL` (tests, CI, a mirror).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

/// AstrBot's default registry URLs, tried in order, and their md5 endpoint.
pub const DEFAULT_URLS: [&str; 2] = [
    "https://api.soulter.top/astrbot/plugins",
    "https://github.com/AstrBotDevs/AstrBot_Plugins_Collection/raw/refs/heads/main/plugin_cache_original.json",
];
pub const DEFAULT_MD5_URL: &str = "https://api.soulter.top/astrbot/plugins-md5";

/// The most of a registry answer read.
pub const MAX_REGISTRY: u64 = 16 << 20;
/// The whole of one registry fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// The preference holding the custom sources.
pub const SOURCES_KEY: &str = "custom_plugin_sources";
/// At most this many sources, and this many bytes of them as JSON.
pub const MAX_SOURCES: usize = 100;
pub const MAX_SOURCES_BYTES: usize = 64 << 10;

pub const CACHE_USED: &str = "使用缓存数据，可能不是最新版本";
pub const NO_DATA: &str = "获取插件列表失败，且没有可用的缓存数据";

/// Where a registry is fetched from and cached.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub urls: Vec<String>,
    pub cache_file: PathBuf,
    pub md5_url: Option<String>,
}

/// A custom registry's md5 URL: `.json` replaced by `-md5.json`, else `-md5.json` appended.
fn md5_url_of(url: &str) -> String {
    match url.strip_suffix(".json") {
        Some(stem) => format!("{stem}-md5.json"),
        None => format!("{url}-md5.json"),
    }
}

/// AstrBot's `build_registry_source`; the default URLs replaced by the environment's.
pub fn source(data_dir: &Path, custom: Option<&str>) -> Source {
    if let Some(url) = custom.map(str::trim).filter(|u| !u.is_empty()) {
        return Source {
            urls: vec![url.to_owned()],
            cache_file: data_dir.join(format!("plugins_custom_{}.json", cache_tag(url))),
            md5_url: Some(md5_url_of(url)),
        };
    }
    let cache_file = data_dir.join("plugins.json");
    match std::env::var("ASTRBOT_PLUGIN_REGISTRY_URL")
        .ok()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
    {
        Some(url) => Source { md5_url: Some(md5_url_of(&url)), urls: vec![url], cache_file },
        None => Source {
            urls: DEFAULT_URLS.iter().map(|u| (*u).to_owned()).collect(),
            cache_file,
            md5_url: Some(DEFAULT_MD5_URL.to_owned()),
        },
    }
}

/// GETs `url` as JSON within the caps; `None` on any failure (logged).
fn get_json(url: &str) -> Option<Value> {
    if let Err(e) = super::install::check_http_url(url) {
        log::warn!("plugin registry: {e}");
        return None;
    }
    let mut resp = match super::install::agent(FETCH_TIMEOUT, 5).get(url).call() {
        Ok(r) => r,
        Err(e) => {
            log::warn!("plugin registry {}: {e}", super::install::for_log(url));
            return None;
        }
    };
    let status = resp.status().as_u16();
    if status != 200 {
        log::warn!("plugin registry {}: HTTP {status}", super::install::for_log(url));
        return None;
    }
    let text = match resp.body_mut().with_config().limit(MAX_REGISTRY).read_to_string() {
        Ok(t) => t,
        Err(e) => {
            log::warn!("plugin registry {}: {e}", super::install::for_log(url));
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            log::warn!("plugin registry {}: not JSON: {e}", super::install::for_log(url));
            None
        }
    }
}

fn remote_md5(source: &Source) -> Option<String> {
    let v = get_json(source.md5_url.as_deref()?)?;
    Some(v.get("md5").and_then(Value::as_str).unwrap_or_default().to_owned())
}

/// The cache file's `{"data","md5"}` when it has both `data` and `timestamp`.
fn read_cache(path: &Path) -> Option<(Value, String)> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(MAX_REGISTRY * 2).read_to_string(&mut text).ok()?;
    let mut v: Value = serde_json::from_str(&text).ok()?;
    let obj = v.as_object_mut()?;
    if !obj.contains_key("timestamp") {
        return None;
    }
    let md5 = obj.get("md5").and_then(Value::as_str).unwrap_or_default().to_owned();
    Some((obj.remove("data")?, md5))
}

fn write_cache(path: &Path, data: &Value, md5: &str) {
    let doc =
        json!({"timestamp": crate::timefmt::iso(crate::timefmt::now_micros()), "data": data, "md5": md5});
    let written = serde_json::to_string_pretty(&doc)
        .map_err(std::io::Error::other)
        .and_then(|text| super::schema::replace_file(path, text.as_bytes()));
    if let Err(e) = written {
        log::warn!("cannot write the plugin market cache {}: {e}", path.display());
    }
}

/// Whether a registry answer has entries (AstrBot skips an empty one).
fn has_entries(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Null | Value::Bool(false) => false,
        _ => true,
    }
}

/// The registry JSON and AstrBot's message (`None`, or [`CACHE_USED`] when every URL
/// failed and the cache answered); `Err(NO_DATA)` with neither.
pub fn fetch(
    data_dir: &Path,
    custom: Option<&str>,
    force: bool,
) -> Result<(Value, Option<&'static str>), String> {
    let source = source(data_dir, custom);
    let cached = read_cache(&source.cache_file);
    if !force && let Some((data, md5)) = &cached {
        // AstrBot's `is_cache_valid`: a cached md5 that the remote one equals, or that
        // cannot be checked.
        let valid = !md5.is_empty() && remote_md5(&source).is_none_or(|remote| remote == *md5);
        if valid && has_entries(data) {
            return Ok((data.clone(), None));
        }
    }
    for url in &source.urls {
        let Some(data) = get_json(url) else { continue };
        if !has_entries(&data) {
            log::warn!("plugin registry {}: empty", super::install::for_log(url));
            continue;
        }
        let md5 = remote_md5(&source).unwrap_or_default();
        if let Err(e) = std::fs::create_dir_all(data_dir) {
            log::warn!("cannot create {}: {e}", data_dir.display());
        }
        write_cache(&source.cache_file, &data, &md5);
        return Ok((data, None));
    }
    match cached {
        Some((data, _)) if has_entries(&data) => {
            log::warn!("plugin registry unreachable: the cache answers");
            Ok((data, Some(CACHE_USED)))
        }
        _ => Err(NO_DATA.into()),
    }
}

/// A marketplace entry's id (`PluginService.get_market_plugin_id`): its
/// `market_plugin_id`, else `author/name` (the name defaulting to a key without `/`).
pub fn market_id(entry: &Map<String, Value>, key: Option<&str>) -> String {
    let text = |k: &str| entry.get(k).map(python_str).map(|s| s.trim().to_owned()).unwrap_or_default();
    let explicit = text("market_plugin_id");
    if !explicit.is_empty() && entry.get("market_plugin_id").is_some_and(truthy) {
        return explicit;
    }
    let author = if entry.get("author").is_some_and(truthy) { text("author") } else { String::new() };
    let mut name = if entry.get("name").is_some_and(truthy) { text("name") } else { String::new() };
    if name.is_empty()
        && let Some(k) = key.map(str::trim).filter(|k| !k.contains('/'))
    {
        name = k.to_owned();
    }
    if author.is_empty() || name.is_empty() { String::new() } else { format!("{author}/{name}") }
}

/// The entry of a registry (object keyed by name with `$meta`, or a list) with this id.
pub fn find_entry(data: &Value, id: &str) -> Option<Map<String, Value>> {
    let id = id.trim();
    if id.is_empty() {
        return None;
    }
    match data {
        Value::Object(m) => m.iter().filter(|(k, _)| *k != "$meta").find_map(|(k, v)| {
            let mut entry = v.as_object()?.clone();
            if !k.contains('/') && !entry.get("name").is_some_and(truthy) {
                entry.insert("name".into(), json!(k));
            }
            (market_id(&entry, Some(k)) == id).then_some(entry)
        }),
        Value::Array(items) => {
            items.iter().filter_map(Value::as_object).find(|e| market_id(e, None) == id).cloned()
        }
        _ => None,
    }
}

/// AstrBot's `normalize_registry_url`: trimmed, trailing `/` dropped, `None` when empty.
pub fn normalize_registry_url(url: Option<&str>) -> Option<String> {
    url.map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty())
}

/// AstrBot's `resolve_registry_name`: `Default` for none, the custom source's `name`
/// whose URL matches, else `Custom`.
pub fn registry_name(sources: &[Value], registry_url: Option<&str>) -> String {
    let Some(url) = normalize_registry_url(registry_url) else { return "Default".into() };
    sources
        .iter()
        .filter_map(Value::as_object)
        .find(|s| {
            normalize_registry_url(s.get("url").and_then(Value::as_str)).as_deref() == Some(url.as_str())
        })
        .map(|s| {
            s.get("name")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .unwrap_or("Custom")
                .to_owned()
        })
        .unwrap_or_else(|| "Custom".into())
}

/// A stored sources value as a list (anything else reads as `[]`).
pub fn as_list(v: Option<Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// Refuses a sources list beyond the caps.
pub fn check_size(sources: &[Value]) -> Result<(), String> {
    if sources.len() > MAX_SOURCES {
        return Err(format!("at most {MAX_SOURCES} plugin sources"));
    }
    if Value::Array(sources.to_vec()).to_string().len() > MAX_SOURCES_BYTES {
        return Err(format!("the plugin sources take more than {} KiB", MAX_SOURCES_BYTES >> 10));
    }
    Ok(())
}

/// AstrBot's `delete_custom_source`: drops every object whose `id`, else `url`, else
/// `name` (the first one present and truthy) equals `id`, and every string equal to it.
pub fn without(sources: Vec<Value>, id: &str) -> Vec<Value> {
    let key_of = |m: &serde_json::Map<String, Value>| {
        ["id", "url", "name"]
            .iter()
            .filter_map(|k| m.get(*k))
            .find(|v| truthy(v))
            .map(python_str)
            .unwrap_or_else(|| "None".into())
    };
    sources
        .into_iter()
        .filter(|s| match s {
            Value::Object(m) => key_of(m) != id,
            Value::String(text) => text != id,
            _ => true,
        })
        .collect()
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Python's `str()` of a scalar JSON value (enough for an id).
fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// The first 8 hex digits of the URL's SHA-256 (ring's), naming its cache file. AstrBot
/// names it by MD5; the name is ours alone (no client sees it), so no MD5 is carried.
fn cache_tag(url: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, url.as_bytes()).as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_sources_and_cache_names() {
        let dir = Path::new("/data");
        let s = source(dir, Some("https://example.com/market.json"));
        assert_eq!(s.md5_url.as_deref(), Some("https://example.com/market-md5.json"));
        let name = s.cache_file.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name.len(), "plugins_custom_.json".len() + 8);
        assert_eq!(name, format!("plugins_custom_{}.json", cache_tag("https://example.com/market.json")));
        assert_ne!(cache_tag("https://example.com/market.json"), cache_tag("https://example.com/other.json"));
        assert_eq!(source(dir, Some("http://h/api")).md5_url.as_deref(), Some("http://h/api-md5.json"));
    }

    #[test]
    fn sources_are_removed_as_astrbot_removes_them() {
        let list = vec![
            json!({"name": "A", "url": "https://a/x.json"}),
            json!({"id": "s1", "url": "https://b/x.json"}),
            json!({"id": "", "name": "C"}),
            json!("https://d/x.json"),
            json!(7),
        ];
        let left = without(list.clone(), "https://a/x.json");
        assert_eq!(left.len(), 4);
        assert_eq!(without(list.clone(), "https://b/x.json").len(), 5, "the id wins over the url");
        assert_eq!(without(list.clone(), "s1").len(), 4);
        assert_eq!(without(list.clone(), "C").len(), 4, "an empty id falls through to the name");
        assert_eq!(without(list, "https://d/x.json").len(), 4);
        assert!(check_size(&vec![json!({}); MAX_SOURCES + 1]).is_err());
        assert!(check_size(&[json!("x".repeat(MAX_SOURCES_BYTES))]).is_err());
        assert!(check_size(&[json!({"name": "A"})]).is_ok());
        assert_eq!(as_list(Some(json!({"x": 1}))), Vec::<Value>::new());
    }

    #[test]
    fn market_entries_by_id() {
        let data = json!({"$meta": {"schema_version": 1},
            "astrbot_plugin_dice": {"author": "someone", "repo": "https://github.com/someone/astrbot_plugin_dice"},
            "other/x": {"author": "other", "name": "x", "repo": "r"},
            "pinned": {"market_plugin_id": "me/pinned", "repo": "p"}});
        assert_eq!(find_entry(&data, "someone/astrbot_plugin_dice").unwrap()["name"], "astrbot_plugin_dice");
        assert_eq!(find_entry(&data, "other/x").unwrap()["repo"], "r");
        assert_eq!(find_entry(&data, "me/pinned").unwrap()["repo"], "p");
        assert!(find_entry(&data, "nobody/none").is_none());
        assert!(find_entry(&json!([{"author": "a", "name": "b"}]), "a/b").is_some());
        let sources = vec![json!({"name": "Mine", "url": "https://m/x.json"}), json!({"url": "https://n/"})];
        assert_eq!(registry_name(&sources, None), "Default");
        assert_eq!(registry_name(&sources, Some("https://m/x.json/")), "Mine");
        assert_eq!(registry_name(&sources, Some("https://n")), "Custom");
        assert_eq!(registry_name(&sources, Some("https://z")), "Custom");
    }
}
