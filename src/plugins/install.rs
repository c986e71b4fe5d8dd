//! Installing a plugin: from a URL (`POST /api/v1/plugins/install/url`: an archive
//! downloaded with caps, or a GitHub repository's branch archive) or an upload, unpacked
//! through `archive` into a staging folder inside `DIR/plugins`, one top folder
//! stripped, `metadata.yaml` required in the root, the whole folder read and checked as
//! the registry will read it (`manifest::read_folder`), the name and the version gate
//! checked, and only then renamed into `DIR/plugins/<name>`. A refused install leaves
//! nothing behind: the download is a temporary file removed when dropped, the staging
//! folder removes itself.
//!
//! Unlike AstrBot, nothing is fetched with git (a repository on another host must give a
//! `download_url`), no `requirements.txt` is installed (a plugin brings its own program),
//! and archive entries are checked (no `..`, absolute paths, links, bombs). The archive's
//! file modes are not kept, so the manifest's program is made executable here.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::archive::{self, ArchiveError, Kind, Limits, Staging};

use super::manifest::{self, Folder};

/// The AstrBot version this server answers as: plugins' `astrbot_version` ranges are
/// checked against it.
pub const ASTRBOT_VERSION: &str = "4.27.4";

/// What a plugin archive may unpack to.
pub const PLUGIN_LIMITS: Limits =
    Limits { max_total: 64 << 20, max_entry: 16 << 20, max_files: 2000, max_depth: 16, max_ratio: 200 };

/// The most a download may be.
pub const MAX_DOWNLOAD: u64 = 64 << 20;

/// GitHub, unless `ASTRBOT_GITHUB_BASE` names another (tests, a mirror).
const GITHUB_BASE: &str = "https://github.com";

pub const MISSING_METADATA: &str = "压缩包不是合法的 AstrBot 插件：未找到 metadata.yaml 或 metadata.yml。";
pub const INVALID_REPO: &str = "请输入有效的 Git 仓库地址。";
pub const VERSION_UNSUPPORTED: &str = "当前 AstrBot 版本不满足插件要求";

/// Why an install failed.
#[derive(Debug, PartialEq)]
pub enum InstallError {
    /// Refused, with the text the client sees.
    Refused(String),
    /// `astrbot_version` does not admit this server; the client may retry ignoring it.
    Version(String),
}

impl From<String> for InstallError {
    fn from(e: String) -> Self {
        InstallError::Refused(e)
    }
}

/// A temporary file, removed when dropped.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl TempFile {
    /// A new empty file `dir/.download-<pid>-<nanos>`.
    pub fn create(dir: &Path) -> io::Result<(TempFile, fs::File)> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(".download-{}-{nanos}", std::process::id()));
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok((TempFile(path), file))
    }
}

/// Where an install URL leads.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetch {
    /// The archive to download.
    pub download: String,
    /// The repository it came from (`https://github.com/o/r`), or `""`.
    pub repo: String,
    /// `github` for a GitHub repository, else `url` (the install record's method).
    pub method: &'static str,
}

/// A URL as the log shows it: without its query and fragment, where a signed download
/// URL keeps its signature.
pub fn for_log(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or_default()
}

/// An http(s) URL without credentials, whitespace, or a missing host.
pub fn check_http_url(url: &str) -> Result<ureq::http::Uri, String> {
    // The URL is not echoed: it may carry a password, and the message goes back in a webhook event.
    let bad = || "not an http(s) URL without credentials (the URL is not repeated here)".to_owned();
    if url.is_empty() || url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if !scheme_ok || uri.host().is_none_or(str::is_empty) || authority.contains('@') {
        return Err(bad());
    }
    Ok(uri)
}

/// Whether a URL's path names an archive (`.zip`, `.tar.gz`, `.tgz`).
fn names_archive(url: &str) -> bool {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    Kind::from_name(path).is_some()
}

/// A GitHub repository named by `owner/repo` or `[https://]github.com/o/r[.git][/tree/b]`:
/// (owner, repo, branch).
pub fn github_repo(url: &str) -> Option<(String, String, Option<String>)> {
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    let text = url.trim().trim_end_matches('/');
    if text.contains(['?', '#', '@']) || text.chars().any(char::is_whitespace) {
        return None;
    }
    let rest = match text.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some(_) => return None,
        None => text,
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let path: &[&str] = match segments.first() {
        Some(host)
            if host.eq_ignore_ascii_case("github.com") || host.eq_ignore_ascii_case("www.github.com") =>
        {
            &segments[1..]
        }
        _ if !text.contains("://") && segments.len() == 2 && !segments[0].contains('.') => &segments,
        _ => return None,
    };
    let (owner, repo, branch) = match path {
        [o, r] => (*o, *r, None),
        [o, r, "tree", b @ ..] if !b.is_empty() => (*o, *r, Some(b.join("/"))),
        _ => return None,
    };
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    if !part(owner) || !part(repo) {
        return None;
    }
    if let Some(b) = &branch
        && !b.split('/').all(part)
    {
        return None;
    }
    Some((owner.to_owned(), repo.to_owned(), branch))
}

/// AstrBot's mapping of the install body (`url := url or repository`): a `download_url`
/// is fetched as is; a `url` naming an archive is fetched; a GitHub repository fetches
/// its branch's archive (`main` unless `/tree/<branch>`); any other repository is refused
/// (no git here).
pub fn resolve(url: &str, download_url: &str) -> Result<Fetch, String> {
    let url = url.trim();
    let download_url = download_url.trim();
    let repo_of = |u: &str| github_repo(u).map(|(o, r, _)| format!("https://github.com/{o}/{r}"));
    if !download_url.is_empty() && download_url != url {
        check_http_url(download_url)?;
        let repo = repo_of(url).unwrap_or_else(|| url.to_owned());
        let method = if repo_of(url).is_some() { "github" } else { "url" };
        return Ok(Fetch { download: download_url.to_owned(), repo, method });
    }
    if url.is_empty() {
        return Err("缺少插件仓库地址".into());
    }
    if names_archive(url) {
        check_http_url(url)?;
        return Ok(Fetch { download: url.to_owned(), repo: String::new(), method: "url" });
    }
    if let Some((owner, repo, branch)) = github_repo(url) {
        let base = std::env::var("ASTRBOT_GITHUB_BASE")
            .ok()
            .map(|b| b.trim().trim_end_matches('/').to_owned())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| GITHUB_BASE.to_owned());
        let branch = branch.unwrap_or_else(|| "main".into());
        return Ok(Fetch {
            download: format!("{base}/{owner}/{repo}/archive/refs/heads/{branch}.zip"),
            repo: format!("https://github.com/{owner}/{repo}"),
            method: "github",
        });
    }
    if check_http_url(url).is_ok() {
        return Err(format!(
            "{url} is not a GitHub repository, and this server does not run git: give download_url, a .zip or .tar.gz archive of the plugin"
        ));
    }
    Err(INVALID_REPO.into())
}

/// The agent every plugin download and registry fetch uses: connect and total timeouts,
/// a few redirects, statuses as answers.
pub fn agent(total: Duration, redirects: u32) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(total))
        .max_redirects(redirects)
        .http_status_as_error(false)
        .user_agent(concat!("astrbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Downloads `url` into a temporary file in `dir` (at most [`MAX_DOWNLOAD`] bytes, 120 s
/// in all, 5 redirects), streamed, never held in memory.
pub fn download(url: &str, dir: &Path) -> Result<TempFile, String> {
    check_http_url(url)?;
    let fail = |e: &dyn std::fmt::Display| format!("cannot download the plugin: {e}");
    let mut resp = agent(Duration::from_secs(120), 5).get(url).call().map_err(|e| fail(&e))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(fail(&format!("HTTP {status} from {url}")));
    }
    if resp.body().content_length().is_some_and(|n| n > MAX_DOWNLOAD) {
        return Err(fail(&format!("the archive is larger than {} MiB", MAX_DOWNLOAD >> 20)));
    }
    fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    let (tmp, mut out) = TempFile::create(dir).map_err(|e| fail(&e))?;
    let mut body = resp.body_mut().as_reader().take(MAX_DOWNLOAD + 1);
    let n = io::copy(&mut body, &mut out).map_err(|e| fail(&e))?;
    if n > MAX_DOWNLOAD {
        return Err(fail(&format!("the archive is larger than {} MiB", MAX_DOWNLOAD >> 20)));
    }
    out.flush().map_err(|e| fail(&e))?;
    Ok(tmp)
}

/// The archive kind by its first bytes (`PK` zip, gzip's magic), whatever its name says.
pub fn sniff(path: &Path) -> Option<Kind> {
    let mut magic = [0u8; 2];
    fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).ok()?;
    match magic {
        [b'P', b'K'] => Some(Kind::Zip),
        [0x1f, 0x8b] => Some(Kind::TarGz),
        _ => None,
    }
}

/// A plugin installed into `DIR/plugins/<name>`.
#[derive(Debug)]
pub struct Installed {
    pub name: String,
    pub folder: Folder,
}

/// The folder holding the plugin in a staging folder: the only top folder (AstrBot's
/// archive root, as GitHub's `repo-branch/`), else the staging folder itself.
fn archive_root(staging: &Path) -> io::Result<PathBuf> {
    let entries: Vec<fs::DirEntry> =
        fs::read_dir(staging)?.flatten().filter(|e| e.file_name() != "__MACOSX").collect();
    match entries.as_slice() {
        [only] if only.file_type()?.is_dir() => Ok(only.path()),
        _ => Ok(staging.to_path_buf()),
    }
}

/// Installs the plugin in `archive` (its kind sniffed): unpacked into a staging folder in
/// `DIR/plugins`, checked, renamed into place. The caller records and loads it.
pub fn install_archive(
    data_dir: &Path,
    archive: &Path,
    ignore_version_check: bool,
) -> Result<Installed, InstallError> {
    let kind = sniff(archive).ok_or_else(|| ArchiveError::NotArchive.to_string())?;
    let plugins = super::root(data_dir);
    fs::create_dir_all(&plugins).map_err(|e| format!("cannot install the plugin: {e}"))?;
    let staging: Staging =
        archive::extract(archive, kind, &plugins, &PLUGIN_LIMITS).map_err(|e| e.to_string())?;
    let root = archive_root(&staging.path).map_err(|e| format!("cannot install the plugin: {e}"))?;
    if !root.join("metadata.yaml").is_file() && !root.join("metadata.yml").is_file() {
        return Err(InstallError::Refused(MISSING_METADATA.into()));
    }
    let folder = manifest::read_folder(&root)?;
    let name = folder.metadata.name.clone();
    if !super::valid_name(&name) {
        return Err(InstallError::Refused(
            "metadata.yaml 中 name 不是合法的模块名称（应为合法 Python 标识符且非关键字）。".into(),
        ));
    }
    let target = plugins.join(&name);
    if fs::symlink_metadata(&target).is_ok() {
        return Err(InstallError::Refused(format!("安装失败：目录 {name} 已存在。")));
    }
    if let Some(spec) = folder.metadata.astrbot_version.as_deref()
        && let Err(why) = version_gate(spec, ASTRBOT_VERSION)
        && !ignore_version_check
    {
        return Err(InstallError::Version(why));
    }
    if let Some(m) = &folder.manifest {
        make_executable(&m.exec.command).map_err(|e| format!("cannot install the plugin: {e}"))?;
    }
    fs::rename(&root, &target).map_err(|e| format!("cannot install the plugin: {e}"))?;
    drop(staging);
    let folder = manifest::read_folder(&target)?;
    Ok(Installed { name, folder })
}

fn make_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)?.permissions().mode();
    fs::set_permissions(path, fs::Permissions::from_mode((mode | 0o755) & 0o755))
}

/// A folder name of `DIR/plugins` that a path may be built from: one plain component,
/// not hidden (staging folders are), no NUL.
pub fn plain_dir_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

/// A plugin's folder removed: renamed to a hidden staging name inside `DIR/plugins`
/// first (so it leaves the listing at once, and a half-deleted folder is never read as a
/// plugin), then deleted.
pub fn remove_folder(data_dir: &Path, name: &str) -> io::Result<()> {
    if !plain_dir_name(name) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plugin name"));
    }
    let plugins = super::root(data_dir);
    let dir = plugins.join(name);
    let meta = match fs::symlink_metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(&dir);
    }
    let doomed = Staging::new(&plugins)?;
    fs::rename(&dir, doomed.path.join(name))?;
    drop(doomed);
    Ok(())
}

/// AstrBot's version gate (`_validate_astrbot_version_specifier`): `Ok` when `spec` is
/// empty or admits `version`, else the reason.
pub fn version_gate(spec: &str, version: &str) -> Result<(), String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(());
    }
    match specifier_admits(spec, version) {
        None => Err("astrbot_version 格式无效，请使用 PEP 440 版本范围格式，例如 >=4.16,<5。".into()),
        Some(true) => Ok(()),
        Some(false) => {
            Err(format!("当前 AstrBot 版本为 {version}，不满足插件要求的 astrbot_version: {spec}"))
        }
    }
}

/// A release version as numbers (`v4.16.0` and `4.16` read; pre/post/dev parts are
/// refused: `None`).
fn release(text: &str) -> Option<Vec<u64>> {
    let text = text.trim();
    let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    text.split('.').map(|p| p.parse::<u64>().ok().filter(|_| !p.starts_with('+'))).collect()
}

fn cmp_release(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// PEP 440 specifiers separated by commas (`>=4.16,<5`, `~=4.2`, `==4.*`, `!=4.1`,
/// `===4.27.4`): `None` when one does not parse. Pre-releases are not modelled: our version
/// is a release.
pub fn specifier_admits(spec: &str, version: &str) -> Option<bool> {
    let v = release(version)?;
    let mut all = true;
    for clause in spec.split(',') {
        let clause = clause.trim();
        let (op, rest) = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"]
            .iter()
            .find_map(|op| clause.strip_prefix(op).map(|r| (*op, r.trim())))?;
        let ok = match (op, rest.strip_suffix(".*")) {
            ("===", _) => rest == version,
            ("==" | "!=", Some(prefix)) => {
                let p = release(prefix)?;
                let matches = v.len() >= p.len() && cmp_release(&v[..p.len()], &p).is_eq()
                    || v.len() < p.len() && cmp_release(&v, &p).is_eq();
                if op == "==" { matches } else { !matches }
            }
            (_, Some(_)) => return None,
            (_, None) => {
                let w = release(rest)?;
                let ord = cmp_release(&v, &w);
                match op {
                    "==" => ord.is_eq(),
                    "!=" => !ord.is_eq(),
                    "<=" => ord.is_le(),
                    ">=" => ord.is_ge(),
                    "<" => ord.is_lt(),
                    ">" => ord.is_gt(),
                    _ => {
                        // ~=X.Y(.Z): >= it, and == its prefix without the last part.
                        if w.len() < 2 {
                            return None;
                        }
                        let prefix = &w[..w.len() - 1];
                        ord.is_ge() && cmp_release(&v[..prefix.len().min(v.len())], prefix).is_eq()
                    }
                }
            }
        };
        all &= ok;
    }
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_keep_no_query() {
        assert_eq!(for_log("https://h/p.zip?X-Amz-Signature=abc#f"), "https://h/p.zip");
        assert_eq!(for_log("https://h/p.zip"), "https://h/p.zip");
        assert!(!check_http_url("http://u:secret@h/x.zip").unwrap_err().contains("secret"));
    }

    #[test]
    fn specifiers_as_pep_440() {
        let v = "4.27.4";
        for (spec, ok) in [
            (">=4.16,<5", true),
            (">=4.28", false),
            ("<4.27.4", false),
            ("<=4.27.4", true),
            ("==4.*", true),
            ("==4.26.*", false),
            ("!=4.27.*", false),
            ("~=4.20", true),
            ("~=4.20.0", false),
            ("==4.27.4", true),
            ("== 4.27.4.0", true),
            (">4", true),
            ("===4.27.4", true),
        ] {
            assert_eq!(specifier_admits(spec, v), Some(ok), "{spec}");
        }
        for bad in ["4.16", ">=four", ">=4.*", "~=4", ">=4.1a1", ""] {
            assert_eq!(specifier_admits(bad, v), None, "{bad}");
        }
        assert_eq!(version_gate("  ", v), Ok(()));
        assert_eq!(
            version_gate(">=5", v).unwrap_err(),
            "当前 AstrBot 版本为 4.27.4，不满足插件要求的 astrbot_version: >=5"
        );
        assert!(version_gate("nonsense", v).unwrap_err().starts_with("astrbot_version 格式无效"));
    }

    #[test]
    fn install_urls_follow_astrbots_mapping() {
        let gh = resolve("someone/astrbot_plugin_x", "").unwrap();
        assert_eq!(gh.download, "https://github.com/someone/astrbot_plugin_x/archive/refs/heads/main.zip");
        assert_eq!((gh.repo.as_str(), gh.method), ("https://github.com/someone/astrbot_plugin_x", "github"));
        let tree = resolve("https://github.com/o/r.git/tree/dev", "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree.download, "https://github.com/o/r/archive/refs/heads/dev.zip");
        let zip = resolve("https://example.com/p.zip?x=1", "").unwrap();
        assert_eq!((zip.download.as_str(), zip.method), ("https://example.com/p.zip?x=1", "url"));
        let both = resolve("https://github.com/o/r", "http://127.0.0.1:9/p.tgz").unwrap();
        assert_eq!(
            (both.download.as_str(), both.repo.as_str()),
            ("http://127.0.0.1:9/p.tgz", "https://github.com/o/r")
        );
        assert_eq!(resolve("", "").unwrap_err(), "缺少插件仓库地址");
        assert_eq!(resolve("ftp://x/y", "").unwrap_err(), INVALID_REPO);
        assert!(resolve("https://gitlab.com/o/r", "").unwrap_err().contains("does not run git"));
        assert!(resolve("", "https://user:pw@example.com/p.zip").is_err());
        assert!(resolve("", "file:///etc/passwd").is_err());
        assert!(resolve("https://u:p@example.com/a.zip", "").is_err());
        assert!(github_repo("o/r/x").is_none());
        assert!(github_repo("../r").is_none());
        assert!(github_repo("https://github.com/o/r?x").is_none());
    }
}
