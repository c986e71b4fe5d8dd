//! Safe extraction of uploaded archives (zip with deflate or stored entries, tar.gz),
//! shared by skills and, later, plugins.
//!
//! An archive is someone else's bytes: it may name `../x` or `/etc/x`, carry symlinks,
//! hard links or devices, declare a small size and inflate to gigabytes, or hold a
//! hundred thousand files. So entries are read one by one, each name checked (relative,
//! no `..`, no NUL, no backslash, no drive letter, bounded depth) and each size checked
//! before writing (the declared size, the total so far, the compression ratio) and again
//! while writing (a zip's declared size can lie), and everything goes into a fresh
//! staging folder inside the data folder. The caller moves what it wants out of the
//! staging folder; [`Staging`] removes the folder and whatever is left when dropped, so a
//! refused archive leaves nothing behind.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Caps on what one archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of all files together, unpacked.
    pub max_total: u64,
    /// Bytes of one file, unpacked.
    pub max_entry: u64,
    /// Entries (files and folders).
    pub max_files: usize,
    /// Path components of one entry.
    pub max_depth: usize,
    /// Unpacked/packed ratio refused for a zip entry above 1 MiB (a zip bomb).
    pub max_ratio: u64,
}

/// The caps for skills: 64 MiB unpacked, 16 MiB per file, 1000 entries, depth 16.
pub const SKILL_LIMITS: Limits =
    Limits { max_total: 64 << 20, max_entry: 16 << 20, max_files: 1000, max_depth: 16, max_ratio: 200 };

/// The archive formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Zip,
    TarGz,
}

impl Kind {
    /// The kind a file name's extension says (`.zip`, `.tar.gz`, `.tgz`), if any.
    pub fn from_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".zip") {
            Some(Kind::Zip)
        } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(Kind::TarGz)
        } else {
            None
        }
    }
}

/// Why an archive was refused; the text says what and why.
#[derive(Debug)]
pub enum ArchiveError {
    /// Not a readable archive of its kind.
    NotArchive,
    /// No entries.
    Empty,
    /// An entry names an absolute path.
    Absolute(String),
    /// An entry names `..`, NUL, a backslash or too deep a path.
    InvalidPath(String),
    /// A symlink, hard link, device or other non-regular entry.
    Unsafe(String),
    /// A cap was passed.
    TooLarge(String),
    /// The same path twice.
    Duplicate(String),
    /// Writing the staging folder failed.
    Io(io::Error),
}

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveError::NotArchive => write!(f, "Uploaded file is not a valid archive."),
            ArchiveError::Empty => write!(f, "Archive is empty."),
            ArchiveError::Absolute(n) => write!(f, "Archive contains absolute paths: {n}"),
            ArchiveError::InvalidPath(n) => write!(f, "Archive contains invalid relative paths: {n}"),
            ArchiveError::Unsafe(n) => write!(f, "Archive contains a link or special file: {n}"),
            ArchiveError::TooLarge(why) => write!(f, "Archive is too large: {why}"),
            ArchiveError::Duplicate(n) => write!(f, "Archive contains the same path twice: {n}"),
            ArchiveError::Io(e) => write!(f, "Cannot unpack the archive: {e}"),
        }
    }
}

impl From<io::Error> for ArchiveError {
    fn from(e: io::Error) -> Self {
        ArchiveError::Io(e)
    }
}

/// A staging folder, removed with its contents when dropped.
#[derive(Debug)]
pub struct Staging {
    pub path: PathBuf,
}

impl Staging {
    /// A new empty folder `parent/.staging-<pid>-<n>`.
    pub fn new(parent: &Path) -> io::Result<Staging> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(".staging-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = parent.join(name);
        fs::create_dir(&path)?;
        Ok(Staging { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("cannot remove staging folder {}: {e}", self.path.display());
        }
    }
}

/// Removes what an interrupted unpack or download left in `dir` (a crash or kill -9
/// mid-install): `.staging-*` folders and `.download-*` files. Called at start, before
/// anything unpacks; returns how many were removed.
pub fn remove_leftovers(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".staging-") || name.starts_with(".download-")) {
            continue;
        }
        let path = entry.path();
        // Never follows a link: a link is removed itself.
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) => log::warn!("cannot remove the leftover {}: {e}", path.display()),
        }
    }
    removed
}

/// An entry name as relative components, or why it is refused. Empty and `.` components
/// are dropped; an entry that is only those is `None` (the root itself).
pub fn safe_components(name: &str, limits: &Limits) -> Result<Option<Vec<String>>, ArchiveError> {
    if name.contains('\0') || name.contains('\\') || name.chars().any(|c| c.is_control()) {
        return Err(ArchiveError::InvalidPath(name.escape_debug().to_string()));
    }
    let bytes = name.as_bytes();
    if name.starts_with('/') || (bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic()) {
        return Err(ArchiveError::Absolute(name.to_owned()));
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ArchiveError::InvalidPath(name.to_owned())),
            p => parts.push(p.to_owned()),
        }
    }
    if parts.len() > limits.max_depth {
        return Err(ArchiveError::InvalidPath(format!("{name} (deeper than {} levels)", limits.max_depth)));
    }
    Ok(if parts.is_empty() { None } else { Some(parts) })
}

/// Counts and caps shared by both formats.
struct Budget<'l> {
    limits: &'l Limits,
    total: u64,
    entries: usize,
    seen: HashSet<Vec<String>>,
}

impl Budget<'_> {
    fn entry(&mut self, parts: &[String], is_dir: bool) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_files {
            return Err(ArchiveError::TooLarge(format!("more than {} entries", self.limits.max_files)));
        }
        if !self.seen.insert(parts.to_vec()) && !is_dir {
            return Err(ArchiveError::Duplicate(parts.join("/")));
        }
        Ok(())
    }

    fn declared(&self, name: &str, size: u64) -> Result<(), ArchiveError> {
        if size > self.limits.max_entry {
            return Err(ArchiveError::TooLarge(format!(
                "{name} is {size} bytes, over {}",
                self.limits.max_entry
            )));
        }
        if self.total.saturating_add(size) > self.limits.max_total {
            return Err(ArchiveError::TooLarge(format!(
                "more than {} bytes unpacked",
                self.limits.max_total
            )));
        }
        Ok(())
    }

    /// Writes one file, refusing it as soon as it passes the entry or total cap, or when
    /// its real size differs from the declared one.
    fn write(
        &mut self,
        root: &Path,
        parts: &[String],
        declared: u64,
        data: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        let name = parts.join("/");
        self.declared(&name, declared)?;
        let path = join(root, parts);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut out = OpenOptions::new().write(true).create_new(true).open(&path)?;
        let room = self.limits.max_entry.min(self.limits.max_total - self.total);
        let mut limited = data.take(room + 1);
        let mut buf = [0u8; 16 * 1024];
        let mut written: u64 = 0;
        loop {
            let n = limited.read(&mut buf).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    ArchiveError::NotArchive
                } else {
                    ArchiveError::Io(e)
                }
            })?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > room {
                return Err(ArchiveError::TooLarge(format!("{name} unpacks beyond the caps")));
            }
            out.write_all(&buf[..n])?;
        }
        if written != declared {
            return Err(ArchiveError::TooLarge(format!("{name} is {written} bytes, declared {declared}")));
        }
        self.total += written;
        Ok(())
    }
}

fn join(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}

/// Unpacks `src` into a new staging folder in `parent`. On error nothing is left.
pub fn extract(src: &Path, kind: Kind, parent: &Path, limits: &Limits) -> Result<Staging, ArchiveError> {
    let staging = Staging::new(parent)?;
    let mut budget = Budget { limits, total: 0, entries: 0, seen: HashSet::new() };
    match kind {
        Kind::Zip => extract_zip(src, &staging.path, &mut budget)?,
        Kind::TarGz => extract_tar_gz(src, &staging.path, &mut budget)?,
    }
    if budget.entries == 0 {
        return Err(ArchiveError::Empty);
    }
    Ok(staging)
}

fn extract_zip(src: &Path, root: &Path, budget: &mut Budget<'_>) -> Result<(), ArchiveError> {
    let declared = declared_entries(src)?;
    let file = File::open(src)?;
    let mut zip = zip::ZipArchive::new(file).map_err(|_| ArchiveError::NotArchive)?;
    // The reader keys entries by name, so a repeated name shows only as fewer entries than
    // the end record declares.
    if declared.is_some_and(|n| n != zip.len()) {
        return Err(ArchiveError::Duplicate("a name appears more than once".into()));
    }
    if zip.len() > budget.limits.max_files {
        return Err(ArchiveError::TooLarge(format!("more than {} entries", budget.limits.max_files)));
    }
    // Every name is checked before anything is written, in AstrBot's order: absolute
    // paths first, then `..`.
    let mut names = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let entry = zip.by_index(i).map_err(|_| ArchiveError::NotArchive)?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        names.push(name);
    }
    for name in &names {
        if name.starts_with('/') {
            return Err(ArchiveError::Absolute(name.clone()));
        }
    }
    for (i, name) in names.into_iter().enumerate() {
        let mut entry = zip.by_index(i).map_err(|_| ArchiveError::NotArchive)?;
        let Some(parts) = safe_components(&name, budget.limits)? else { continue };
        let mode = entry.unix_mode().unwrap_or(0);
        let file_type = mode & 0o170000;
        if entry.is_symlink() || (file_type != 0 && file_type != 0o100000 && file_type != 0o040000) {
            return Err(ArchiveError::Unsafe(name));
        }
        let is_dir = entry.is_dir() || file_type == 0o040000;
        budget.entry(&parts, is_dir)?;
        if is_dir {
            fs::create_dir_all(join(root, &parts))?;
            continue;
        }
        let size = entry.size();
        let packed = entry.compressed_size().max(1);
        if size > (1 << 20) && size / packed > budget.limits.max_ratio {
            return Err(ArchiveError::TooLarge(format!("{name} compresses {}:1, a zip bomb", size / packed)));
        }
        budget.write(root, &parts, size, &mut entry)?;
    }
    Ok(())
}

/// The entry count of a zip's end-of-central-directory record (`None` for zip64's
/// placeholder or when there is none: the reader then decides).
fn declared_entries(src: &Path) -> Result<Option<usize>, ArchiveError> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(src)?;
    let len = f.metadata()?.len();
    let tail = len.min(22 + 65535);
    f.seek(SeekFrom::Start(len - tail))?;
    let mut buf = Vec::with_capacity(tail as usize);
    f.take(tail).read_to_end(&mut buf)?;
    let Some(at) = buf.windows(4).rposition(|w| w == b"PK\x05\x06") else { return Ok(None) };
    let Some(bytes) = buf.get(at + 10..at + 12) else { return Ok(None) };
    let n = u16::from_le_bytes([bytes[0], bytes[1]]);
    Ok((n != 0xFFFF).then_some(n as usize))
}

fn extract_tar_gz(src: &Path, root: &Path, budget: &mut Budget<'_>) -> Result<(), ArchiveError> {
    let file = File::open(src)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar.entries().map_err(|_| ArchiveError::NotArchive)?;
    for entry in entries {
        let mut entry = entry.map_err(|_| ArchiveError::NotArchive)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(parts) = safe_components(&name, budget.limits)? else { continue };
        let kind = entry.header().entry_type();
        let is_dir = kind.is_dir();
        if !(is_dir || kind.is_file()) {
            if kind.is_pax_global_extensions() {
                continue;
            }
            return Err(ArchiveError::Unsafe(name));
        }
        budget.entry(&parts, is_dir)?;
        if is_dir {
            fs::create_dir_all(join(root, &parts))?;
            continue;
        }
        let size = entry.header().size().map_err(|_| ArchiveError::NotArchive)?;
        budget.write(root, &parts, size, &mut entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_an_interrupted_install_are_removed() {
        let dir = std::env::temp_dir().join(format!("astrbot-leftovers-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join(".staging-1-2-3/inner")).unwrap();
        fs::write(dir.join(".staging-1-2-3/inner/f"), b"x").unwrap();
        fs::write(dir.join(".download-9-9"), b"partial").unwrap();
        fs::create_dir(dir.join("kept_plugin")).unwrap();
        fs::write(dir.join(".hidden"), b"kept").unwrap();
        assert_eq!(remove_leftovers(&dir), 2);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".hidden", "kept_plugin"]);
        assert_eq!(remove_leftovers(&dir.join("missing")), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_checked() {
        let l = SKILL_LIMITS;
        assert!(matches!(safe_components("/etc/x", &l), Err(ArchiveError::Absolute(_))));
        assert!(matches!(safe_components("C:/x", &l), Err(ArchiveError::Absolute(_))));
        assert!(matches!(safe_components("a/../../x", &l), Err(ArchiveError::InvalidPath(_))));
        assert!(matches!(safe_components("a\\..\\x", &l), Err(ArchiveError::InvalidPath(_))));
        assert!(matches!(safe_components("a\0b", &l), Err(ArchiveError::InvalidPath(_))));
        assert!(safe_components(&"a/".repeat(17), &l).is_err());
        assert_eq!(safe_components("./a//b", &l).unwrap(), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(safe_components("./", &l).unwrap(), None);
    }
}
