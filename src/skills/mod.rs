//! The skills store: `DIR/skills/<name>/SKILL.md` plus whatever files a skill brings, as
//! AstrBot keeps them (`core/skills/skill_manager.py`, `svc/skills_service.py`).
//!
//! A skill is a folder holding `SKILL.md`, whose YAML frontmatter `description` the
//! listing and the agent's system prompt show; its name is the folder's. Every path a
//! request or the model names goes through [`skill_dir`] and [`resolve`]: the name must
//! match `^[A-Za-z0-9._-]+$` (not `.` or `..`), a relative path may not be absolute or hold
//! `..`, and the canonical result must stay inside the skill's canonical folder, so no
//! symlink inside a skill leads out. Uploads unpack through `archive` into a staging
//! folder and are renamed into place only when the whole archive passed. Active flags are
//! rows in SQLite (`db::skills`); a skill without a row is active, as in AstrBot.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::archive::{self, ArchiveError, Kind};

pub mod neo;

/// The most of a file shown or written through the file routes (AstrBot's 512 KiB).
pub const MAX_EDIT: u64 = 512 * 1024;

/// The most of a file the model reads through `read_skill_file`.
pub const MAX_TOOL_READ: u64 = 64 * 1024;

/// The most a skill's download archive packs.
const MAX_ARCHIVE: u64 = 64 << 20;

/// File types the file routes show and edit (AstrBot's list).
const EDITABLE: &[&str] =
    &["css", "html", "ini", "js", "json", "md", "py", "sh", "toml", "ts", "txt", "yaml", "yml"];

/// The folder of all skills.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("skills")
}

/// AstrBot's file-route name rule, plus: not `.` or `..`, at most 128 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Whether a file may be shown and edited by type.
pub fn editable_type(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name == "Dockerfile" || name == "Makefile" {
        return true;
    }
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EDITABLE.contains(&e.to_ascii_lowercase().as_str()))
}

/// A skill as listed.
#[derive(Debug, Clone)]
pub struct Skill {
    pub name: String,
    pub description: String,
    /// Its SKILL.md.
    pub path: PathBuf,
}

/// `description` from SKILL.md's frontmatter: a leading `---` line, YAML, a closing `---`.
/// A plain or quoted scalar, or a folded/literal block joined with spaces.
pub fn description(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return String::new();
    }
    let block: Vec<&str> = lines.take_while(|l| l.trim_end() != "---").collect();
    let mut i = 0;
    while i < block.len() {
        if let Some(rest) = block[i].strip_prefix("description:") {
            let v = rest.trim();
            if v.starts_with('|') || v.starts_with('>') {
                let mut out = Vec::new();
                for l in &block[i + 1..] {
                    if !(l.starts_with(' ') || l.starts_with('\t') || l.trim().is_empty()) {
                        break;
                    }
                    if !l.trim().is_empty() {
                        out.push(l.trim());
                    }
                }
                return out.join(" ");
            }
            let unquoted = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            return unquoted.trim().to_owned();
        }
        i += 1;
    }
    String::new()
}

/// Local skills sorted by name: folders (not symlinks) with a valid name and a SKILL.md
/// (a legacy `skill.md` is renamed). SKILL.md is read up to 64 KiB for its description.
pub fn list(data_dir: &Path) -> Vec<Skill> {
    let root = root(data_dir);
    let Ok(entries) = fs::read_dir(&root) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten().take(10_000) {
        let Ok(name) = entry.file_name().into_string() else { continue };
        if !valid_name(&name) || name.starts_with('.') {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() || entry.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
            continue;
        }
        let dir = entry.path();
        let md = dir.join("SKILL.md");
        let legacy = dir.join("skill.md");
        if fs::symlink_metadata(&md).is_err() && fs::symlink_metadata(&legacy).is_ok_and(|m| m.is_file()) {
            let _ = fs::rename(&legacy, &md);
        }
        let Ok(m) = fs::symlink_metadata(&md) else { continue };
        if !m.is_file() {
            continue;
        }
        let text = read_capped(&md, MAX_TOOL_READ).unwrap_or_default();
        out.push(Skill { name, description: description(&String::from_utf8_lossy(&text)), path: md });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    fs::File::open(path)?.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The canonical folder of a local skill (AstrBot's `resolve_local_skill_dir`).
pub fn skill_dir(data_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("Missing skill name".into());
    }
    if !valid_name(name) {
        return Err("Invalid skill name".into());
    }
    // A skill folder that is itself a symlink is not a local skill (the listing skips it).
    if fs::symlink_metadata(root(data_dir).join(name)).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err("Invalid skill path".into());
    }
    let root = fs::canonicalize(root(data_dir)).map_err(|_| "Local skill not found".to_owned())?;
    let dir = fs::canonicalize(root.join(name)).map_err(|_| "Local skill not found".to_owned())?;
    if !dir.starts_with(&root) || dir == root {
        return Err("Invalid skill path".into());
    }
    if !dir.is_dir() || !dir.join("SKILL.md").is_file() {
        return Err("Local skill not found".into());
    }
    Ok(dir)
}

/// What a path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    File,
    Dir,
}

/// A relative path inside a skill's canonical folder (AstrBot's
/// `resolve_skill_relative_path`): `\` read as `/`, absolute paths and `..` refused, the
/// canonical result inside the folder.
pub fn resolve(dir: &Path, rel: &str, want: Want) -> Result<PathBuf, String> {
    let rel = rel.replace('\\', "/");
    let rel = if rel.trim().is_empty() { ".".to_owned() } else { rel };
    if rel.starts_with('/') || rel.contains('\0') || rel.split('/').any(|p| p == "..") {
        return Err("Invalid relative path".into());
    }
    let real = fs::canonicalize(dir.join(&rel)).map_err(|_| match want {
        Want::File => "Skill file not found".to_owned(),
        Want::Dir => "Skill directory not found".to_owned(),
    })?;
    if !real.starts_with(dir) {
        return Err("Path escapes skill directory".into());
    }
    match want {
        Want::File if !real.is_file() => Err("Skill file not found".into()),
        Want::Dir if !real.is_dir() => Err("Skill directory not found".into()),
        _ => Ok(real),
    }
}

/// The path of `real` relative to `dir`, with `/`.
fn relative(dir: &Path, real: &Path) -> String {
    real.strip_prefix(dir)
        .map(|p| p.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"))
        .unwrap_or_default()
}

/// A folder's entries: folders first, then files, case-insensitively by name; entries
/// whose real path leaves the skill are dropped. Returns (the folder's relative path,
/// entries as JSON).
pub fn list_files(dir: &Path, rel: &str) -> Result<(String, Vec<serde_json::Value>), String> {
    let folder = resolve(dir, rel, Want::Dir)?;
    let mut items: Vec<(bool, String, serde_json::Value)> = Vec::new();
    let entries = fs::read_dir(&folder).map_err(|e| format!("Cannot list the folder: {e}"))?;
    for entry in entries.flatten().take(10_000) {
        let Ok(real) = fs::canonicalize(entry.path()) else { continue };
        if !real.starts_with(dir) {
            continue;
        }
        let Ok(meta) = fs::metadata(&real) else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = relative(dir, &folder.join(&name));
        let is_dir = meta.is_dir();
        let size = if is_dir { 0 } else { meta.len() };
        let editable = !is_dir && editable_type(&real) && size <= MAX_EDIT;
        let kind = if is_dir { "directory" } else { "file" };
        let item =
            serde_json::json!({"name": name, "path": path, "type": kind, "size": size, "editable": editable});
        items.push((is_dir, name.to_lowercase(), item));
    }
    items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok((relative(dir, &folder), items.into_iter().map(|i| i.2).collect()))
}

/// A file's text (editable type, ≤ `cap`, UTF-8): its relative path, text and size.
pub fn read_file(dir: &Path, rel: &str, cap: u64) -> Result<(String, String, u64), String> {
    let real = resolve(dir, rel, Want::File)?;
    if !editable_type(&real) {
        return Err("Unsupported file type".into());
    }
    let size = fs::metadata(&real).map_err(|e| format!("Cannot read the file: {e}"))?.len();
    if size > cap {
        return Err("File is too large".into());
    }
    let bytes = read_capped(&real, cap).map_err(|e| format!("Cannot read the file: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "File is not valid UTF-8 text".to_owned())?;
    Ok((relative(dir, &real), text, size))
}

/// Replaces an existing editable file's text (≤ 512 KiB), through a temporary file
/// renamed over it. Returns its relative path and size.
pub fn write_file(dir: &Path, rel: &str, content: &str) -> Result<(String, u64), String> {
    if content.len() as u64 > MAX_EDIT {
        return Err("File content is too large".into());
    }
    let real = resolve(dir, rel, Want::File)?;
    if !editable_type(&real) {
        return Err("Unsupported file type".into());
    }
    // A name of its own per write, so two writes of one file never share a temporary file.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = real.file_name().and_then(|n| n.to_str()).unwrap_or("f");
    let tmp = real.with_file_name(format!(".{file}.{}-{n}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &real)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("Cannot write the file: {e}")
    })?;
    Ok((relative(dir, &real), content.len() as u64))
}

/// A zip of a skill's folder (files whose real path stays inside it), under `<name>/`.
pub fn archive(dir: &Path, name: &str) -> Result<Vec<u8>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("Failed to prepare skill archive: {e}");
    let mut out = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0usize;
    while let Some(folder) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&folder).map_err(|e| fail(&e))?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Ok(real) = fs::canonicalize(entry.path()) else { continue };
            if !real.starts_with(dir) || entry.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
                continue;
            }
            let rel = relative(dir, &entry.path());
            if real.is_dir() {
                stack.push(entry.path());
                continue;
            }
            files += 1;
            let bytes = fs::read(&real).map_err(|e| fail(&e))?;
            total += bytes.len() as u64;
            if total > MAX_ARCHIVE || files > archive::SKILL_LIMITS.max_files {
                return Err(fail(&"the skill is too large to pack"));
            }
            out.start_file(format!("{name}/{rel}"), opts).map_err(|e| fail(&e))?;
            out.write_all(&bytes).map_err(|e| fail(&e))?;
        }
    }
    out.finish().map(|c| c.into_inner()).map_err(|e| fail(&e))
}

/// Installs the skills of an uploaded archive (AstrBot's `install_skill_from_zip` layout,
/// `overwrite=False`): SKILL.md at the root is one skill named after `stem`; otherwise
/// every top-level folder holding SKILL.md, named after the folder, or after `stem` when
/// there is exactly one top-level folder. `__MACOSX` is ignored. Nothing is installed
/// unless every skill can be. Returns the names.
pub fn install(data_dir: &Path, upload: &Path, kind: Kind, stem: &str) -> Result<Vec<String>, String> {
    let staging = archive::extract(upload, kind, data_dir, &archive::SKILL_LIMITS).map_err(|e| match e {
        ArchiveError::NotArchive if kind == Kind::Zip => {
            "Uploaded file is not a valid zip archive.".to_owned()
        }
        ArchiveError::Empty if kind == Kind::Zip => "Zip archive is empty.".to_owned(),
        ArchiveError::Absolute(_) if kind == Kind::Zip => "Zip archive contains absolute paths.".to_owned(),
        ArchiveError::InvalidPath(_) if kind == Kind::Zip => {
            "Zip archive contains invalid relative paths.".to_owned()
        }
        other => other.to_string(),
    })?;
    let top = &staging.path;
    let mut folders = Vec::new();
    let mut root_md = false;
    for entry in fs::read_dir(top).map_err(|e| format!("Cannot read the archive: {e}"))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "__MACOSX" {
            continue;
        }
        if entry.path().is_dir() {
            folders.push(name);
        } else if name == "SKILL.md" || name == "skill.md" {
            root_md = true;
        }
    }
    let has_md = |dir: &Path| dir.join("SKILL.md").is_file() || dir.join("skill.md").is_file();
    let stem_name = stem.split_whitespace().collect::<Vec<_>>().join("_");
    // (source folder, skill name)
    let mut plan: Vec<(PathBuf, String)> = Vec::new();
    if root_md {
        plan.push((top.clone(), stem_name.clone()));
    } else if folders.len() == 1 {
        let src = top.join(&folders[0]);
        if !has_md(&src) {
            return Err("SKILL.md not found in the root of the zip archive.".into());
        }
        plan.push((src, stem_name.clone()));
    } else {
        folders.sort();
        // Folders whose name is not a valid skill name are skipped, as AstrBot skips them.
        for f in &folders {
            let src = top.join(f);
            let name = f.split_whitespace().collect::<Vec<_>>().join("_");
            if has_md(&src) && valid_name(&name) && !name.starts_with('.') {
                plan.push((src, name));
            }
        }
        if plan.is_empty() {
            return Err("No valid SKILL.md found in any folder of the zip archive.".into());
        }
    }
    for (_, name) in &plan {
        if !valid_name(name) || name.starts_with('.') {
            return Err("Invalid skill name.".into());
        }
    }
    let skills = root(data_dir);
    let taken: Vec<String> = plan
        .iter()
        .filter(|(_, n)| fs::symlink_metadata(skills.join(n)).is_ok())
        .map(|(_, n)| skills.join(n).display().to_string())
        .collect();
    if plan.len() == 1 && !taken.is_empty() {
        return Err(format!("Skill {} already exists.", plan[0].1));
    }
    if !taken.is_empty() {
        return Err(format!(
            "One or more skills from the archive already exist and overwrite=False. No skills were installed. Conflicting paths: {}",
            taken.join(", ")
        ));
    }
    if root_md {
        // The whole staging folder is the skill: move its entries into a sub-folder first.
        let inner = top.join(".skill");
        fs::create_dir(&inner).map_err(|e| format!("Cannot install the skill: {e}"))?;
        for entry in fs::read_dir(top).map_err(|e| format!("Cannot install the skill: {e}"))?.flatten() {
            let n = entry.file_name();
            if n == ".skill" || n == "__MACOSX" {
                continue;
            }
            fs::rename(entry.path(), inner.join(&n)).map_err(|e| format!("Cannot install the skill: {e}"))?;
        }
        plan[0].0 = inner;
    }
    fs::create_dir_all(&skills).map_err(|e| format!("Cannot create the skills folder: {e}"))?;
    let mut done: Vec<PathBuf> = Vec::new();
    for (src, name) in &plan {
        let dest = skills.join(name);
        if let Err(e) = fs::rename(src, &dest) {
            for d in done {
                let _ = fs::remove_dir_all(d);
            }
            return Err(format!("Cannot install the skill: {e}"));
        }
        // A legacy `skill.md` becomes `SKILL.md`.
        if !dest.join("SKILL.md").exists() {
            let _ = fs::rename(dest.join("skill.md"), dest.join("SKILL.md"));
        }
        done.push(dest);
    }
    drop(staging);
    Ok(plan.into_iter().map(|(_, n)| n).collect())
}

/// Removes a local skill's folder; an unknown name succeeds (AstrBot). The name must be
/// valid: AstrBot's delete has a traversal we do not copy.
pub fn delete(data_dir: &Path, name: &str) -> Result<(), String> {
    if !valid_name(name) {
        return Err("Invalid skill name".into());
    }
    let dir = root(data_dir).join(name);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() || m.is_file() => {
            fs::remove_file(&dir).map_err(|e| format!("Cannot delete the skill: {e}"))
        }
        Ok(_) => fs::remove_dir_all(&dir).map_err(|e| format!("Cannot delete the skill: {e}")),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontmatter_description() {
        assert_eq!(description("---\nname: x\ndescription: Turn CSV.  \n---\nbody"), "Turn CSV.");
        assert_eq!(description("---\ndescription: \"quoted\"\n---\n"), "quoted");
        assert_eq!(description("---\ndescription: >\n  one\n  two\nname: x\n---\n"), "one two");
        assert_eq!(description("no frontmatter\ndescription: x"), "");
    }

    #[test]
    fn names() {
        assert!(valid_name("csv-report_1.0"));
        for bad in ["", ".", "..", "a/b", "a b", "a\\b", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
