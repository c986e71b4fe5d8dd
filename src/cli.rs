//! The command line: parsed once into a typed [`Command`], then run.
//!
//! `serve` runs the server; `admin password` and `key ...` work on the data folder
//! directly, whether a server is running or not (SQLite serialises the writers, and a
//! running server notices key changes within a second).
//!
//! Start-up refuses what would otherwise fail later and far from its cause: `serve` proves
//! the data folder takes writes and holds `astrbot.lock` in it before it announces its
//! address, and the other commands only work on a data folder that exists, naming it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::app::{App, Settings};
use crate::auth::DEFAULT_ADMIN;
use crate::db::{self, Db};
use crate::keys::{self, NewKey};
use crate::secrets::{self, MacKey};
use crate::timefmt::{iso, now_micros};

/// The help text; the scope list comes from the scope definitions.
pub fn usage() -> String {
    format!(
        "\
astrbot: AstrBot's developer HTTP API as a single-binary appliance

Usage:
  astrbot serve [--listen ADDR] [--data DIR] [--max-connections N]
                [--default-daily-limit N] [--max-upload-mb N] [--log-level LEVEL]
  astrbot admin password [--data DIR] [--username NAME]   (new password on stdin)
  astrbot key create --name NAME --scopes SCOPES [--expires-in-days N]
                     [--daily-limit N] [--json] [--data DIR]
  astrbot key list [--json] [--data DIR]
  astrbot key revoke KEY_ID [--data DIR]
  astrbot key delete KEY_ID [--data DIR]
  astrbot kb add --collection NAME PATH... [--data DIR]   (Markdown, text, HTML)
  astrbot kb list [--data DIR]
  astrbot kb remove NAME [--data DIR]
  astrbot --version

--scopes is required: comma-separated, from {scopes}.
--max-connections: open connections served at once, 1 to 65536 (default {DEFAULT_MAX_CONNECTIONS}).
Commands other than serve need an existing data folder and print the one they use.

Environment: ASTRBOT_LISTEN (default 127.0.0.1:6185), ASTRBOT_DATA (default ./data),
ASTRBOT_MAX_CONNECTIONS (default {DEFAULT_MAX_CONNECTIONS}), ASTRBOT_ADMIN_PASSWORD (first start only).
Flags win over the environment.
",
        scopes = keys::valid_scopes().join(", ")
    )
}

/// Connections served at once when neither `--max-connections` nor the environment says.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The most `--max-connections` accepts: each connection costs two file descriptors and a
/// thread, and the unit's `LimitNOFILE=65536` would be exhausted beyond this.
const MAX_CONNECTIONS_LIMIT: usize = 65536;

#[derive(Debug, PartialEq)]
pub struct ServeArgs {
    pub listen: String,
    pub data: PathBuf,
    /// Beyond this many open connections the transport answers 503 and closes.
    pub max_connections: usize,
    pub default_daily_limit: Option<i64>,
    pub max_upload_mb: u64,
    pub log_level: log::LevelFilter,
    /// `ASTRBOT_ADMIN_PASSWORD` as set (possibly empty): the first start's admin password.
    pub admin_password: Option<Password>,
}

/// A password read from the environment; `Debug` does not show it, so a printed command
/// line cannot leak it.
#[derive(PartialEq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// The password, unless it is empty: an empty variable counts as not set.
    fn given(&self) -> Option<&str> {
        Some(self.0.as_str()).filter(|p| !p.is_empty())
    }
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Serve(ServeArgs),
    AdminPassword { data: PathBuf, username: Option<String> },
    KeyCreate { data: PathBuf, key: NewKey, json: bool },
    KeyList { data: PathBuf, json: bool },
    KeyRevoke { data: PathBuf, key_id: String },
    KeyDelete { data: PathBuf, key_id: String },
    KbAdd { data: PathBuf, collection: String, paths: Vec<PathBuf> },
    KbList { data: PathBuf },
    KbRemove { data: PathBuf, collection: String },
    Help,
    Version,
}

impl PartialEq for NewKey {
    fn eq(&self, o: &NewKey) -> bool {
        (&self.name, &self.scopes, self.expires_in_days, self.daily_limit)
            == (&o.name, &o.scopes, o.expires_in_days, o.daily_limit)
    }
}

/// Flags and positional arguments of one subcommand.
struct Args {
    flags: Vec<(String, Option<String>)>,
    positional: Vec<String>,
}

const BOOL_FLAGS: &[&str] = &["--json", "--help", "-h"];

fn split_args(args: &[String]) -> Result<Args, String> {
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some((name, value)) = arg.split_once('=').filter(|_| arg.starts_with("--")) {
            flags.push((name.to_owned(), Some(value.to_owned())));
        } else if BOOL_FLAGS.contains(&arg.as_str()) {
            flags.push((arg.clone(), None));
        } else if arg.starts_with("--") {
            let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
            flags.push((arg.clone(), Some(value.clone())));
        } else {
            positional.push(arg.clone());
        }
    }
    Ok(Args { flags, positional })
}

impl Args {
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.flags.iter().position(|(n, _)| n == name)?;
        self.flags.remove(i).1
    }

    fn has(&mut self, name: &str) -> bool {
        let i = self.flags.iter().position(|(n, _)| n == name);
        i.map(|i| self.flags.remove(i)).is_some()
    }

    fn int(&mut self, name: &str) -> Result<Option<i64>, String> {
        self.take(name)
            .map(|v| v.parse::<i64>().map_err(|_| format!("{name} must be an integer, not {v:?}")))
            .transpose()
    }

    fn data(&mut self, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
        self.take("--data").or_else(|| env("ASTRBOT_DATA")).unwrap_or_else(|| "./data".into()).into()
    }

    /// Refuses anything not consumed.
    fn finish(self, max_positional: usize) -> Result<Vec<String>, String> {
        if let Some((flag, _)) = self.flags.first() {
            return Err(format!("unknown option {flag}"));
        }
        if self.positional.len() > max_positional {
            return Err(format!("unexpected argument {:?}", self.positional[max_positional]));
        }
        Ok(self.positional)
    }
}

/// Parses `argv[1..]` with an environment lookup.
pub fn parse(argv: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, String> {
    let Some(first) = argv.first() else { return Ok(Command::Help) };
    match first.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "-V" | "--version" | "version" => return Ok(Command::Version),
        _ => {}
    }
    let (sub, rest) = match (first.as_str(), argv.get(1).map(String::as_str)) {
        ("serve", _) => ("serve", &argv[1..]),
        ("admin", Some("password")) => ("admin password", &argv[2..]),
        ("key", Some(s @ ("create" | "list" | "revoke" | "delete"))) => (s, &argv[2..]),
        ("kb", Some("add")) => ("kb add", &argv[2..]),
        ("kb", Some("list")) => ("kb list", &argv[2..]),
        ("kb", Some("remove")) => ("kb remove", &argv[2..]),
        ("admin" | "key" | "kb", Some("--help" | "-h")) => return Ok(Command::Help),
        _ => return Err(format!("unknown command {:?}; see astrbot --help", argv.join(" "))),
    };
    let mut a = split_args(rest)?;
    if a.has("--help") || a.has("-h") {
        return Ok(Command::Help);
    }
    let data = a.data(env);
    let command = match sub {
        "serve" => Command::Serve(serve_args(a, data, env)?),
        "admin password" => {
            let username = a.take("--username");
            a.finish(0)?;
            Command::AdminPassword { data, username }
        }
        "create" => key_create_args(a, data)?,
        "list" => {
            let json = a.has("--json");
            a.finish(0)?;
            Command::KeyList { data, json }
        }
        "revoke" | "delete" => {
            let mut pos = a.finish(1)?;
            let key_id = pos.pop().ok_or_else(|| format!("key {sub} needs a KEY_ID"))?;
            if sub == "revoke" {
                Command::KeyRevoke { data, key_id }
            } else {
                Command::KeyDelete { data, key_id }
            }
        }
        "kb add" => {
            let collection = a
                .take("--collection")
                .filter(|c| !c.trim().is_empty())
                .ok_or("kb add needs --collection NAME")?;
            let paths: Vec<PathBuf> = a.finish(usize::MAX)?.into_iter().map(PathBuf::from).collect();
            if paths.is_empty() {
                return Err("kb add needs at least one PATH".into());
            }
            Command::KbAdd { data, collection, paths }
        }
        "kb list" => {
            a.finish(0)?;
            Command::KbList { data }
        }
        "kb remove" => {
            let mut pos = a.finish(1)?;
            let collection = pos.pop().ok_or("kb remove needs a collection NAME")?;
            Command::KbRemove { data, collection }
        }
        _ => unreachable!("matched above"),
    };
    Ok(command)
}

/// The arguments of `serve`, flags first, then the environment, then the defaults.
fn serve_args(mut a: Args, data: PathBuf, env: &dyn Fn(&str) -> Option<String>) -> Result<ServeArgs, String> {
    let listen =
        a.take("--listen").or_else(|| env("ASTRBOT_LISTEN")).unwrap_or_else(|| "127.0.0.1:6185".into());
    let max_connections = match a.take("--max-connections") {
        Some(v) => max_connections("--max-connections", &v)?,
        None => match env("ASTRBOT_MAX_CONNECTIONS") {
            Some(v) => max_connections("ASTRBOT_MAX_CONNECTIONS", &v)?,
            None => DEFAULT_MAX_CONNECTIONS,
        },
    };
    let default_daily_limit = a.int("--default-daily-limit")?;
    if default_daily_limit.is_some_and(|n| n < 0) {
        return Err("--default-daily-limit must be 0 or greater".into());
    }
    let max_upload_mb = a.int("--max-upload-mb")?.unwrap_or(64);
    if !(1..=1_000_000).contains(&max_upload_mb) {
        return Err("--max-upload-mb must be between 1 and 1000000".into());
    }
    let level = a.take("--log-level").unwrap_or_else(|| "info".into());
    let log_level = level
        .parse()
        .map_err(|_| format!("--log-level must be error, warn, info, debug or trace, not {level:?}"))?;
    a.finish(0)?;
    Ok(ServeArgs {
        listen,
        data,
        max_connections,
        default_daily_limit: default_daily_limit.filter(|n| *n > 0),
        max_upload_mb: max_upload_mb as u64,
        log_level,
        admin_password: env("ASTRBOT_ADMIN_PASSWORD").map(Password),
    })
}

/// The arguments of `key create`.
fn key_create_args(mut a: Args, data: PathBuf) -> Result<Command, String> {
    let name = a.take("--name");
    // Required: without it the key would silently get every default scope.
    let scopes = a.take("--scopes").ok_or_else(|| {
        format!("key create needs --scopes, a comma-separated list from: {}", keys::valid_scopes().join(", "))
    })?;
    let scopes =
        Some(scopes.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect());
    let key = NewKey {
        name,
        scopes,
        expires_in_days: a.int("--expires-in-days")?,
        daily_limit: a.int("--daily-limit")?,
    };
    let json = a.has("--json");
    a.finish(0)?;
    Ok(Command::KeyCreate { data, key, json })
}

/// `--max-connections` or `ASTRBOT_MAX_CONNECTIONS` (named by `source`), checked.
fn max_connections(source: &str, value: &str) -> Result<usize, String> {
    value.parse::<usize>().ok().filter(|n| (1..=MAX_CONNECTIONS_LIMIT).contains(n)).ok_or_else(|| {
        format!("{source} must be an integer from 1 to {MAX_CONNECTIONS_LIMIT}, not {value:?}")
    })
}

/// The absolute form of `dir`, for messages a user can act on from any working directory.
fn absolute(dir: &Path) -> Result<PathBuf, String> {
    std::path::absolute(dir).map_err(|e| format!("cannot resolve the data folder {}: {e}", dir.display()))
}

/// Creates the data folder with mode 0700 (and tightens an existing one).
pub fn prepare_data_dir(dir: &Path) -> Result<(), String> {
    if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(format!("the data folder {} is not a folder", dir.display()));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the data folder {}: {e}", dir.display()))?;
    let mode = std::fs::metadata(dir).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot restrict {} to mode 0700: {e}", dir.display()))?;
    }
    Ok(())
}

fn open_store(dir: &Path) -> Result<(Db, MacKey), String> {
    prepare_data_dir(dir)?;
    let mac = MacKey::load_or_create(dir)
        .map_err(|e| format!("cannot read the secret in {}: {e}", dir.display()))?;
    let db = Db::open(dir)?;
    Ok((db, mac))
}

/// The store of a command other than `serve`. Only `serve` creates a data folder: a key
/// made in a new `./data` by a command run from the wrong directory is one the running
/// server has never heard of. The folder used is named on stderr, where it does not mix
/// with the output.
fn open_existing_store(dir: &Path) -> Result<(Db, MacKey), String> {
    let dir = absolute(dir)?;
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("the data folder {} is not a folder", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "no data folder at {}: run `astrbot serve` first or pass --data",
                dir.display()
            ));
        }
        Err(e) => return Err(format!("cannot use the data folder {}: {e}", dir.display())),
    }
    eprintln!("using data folder {}", dir.display());
    open_store(&dir)
}

/// Proves that files can be created in the data folder, before anything is announced: a
/// folder that only reads would otherwise answer `/healthz` and fail at the first login.
fn probe_data_dir(dir: &Path) -> Result<(), String> {
    let not_writable =
        |what: &str, e: io::Error| format!("the data folder {} is not writable: {what}: {e}", dir.display());
    let probe = dir.join(format!(".astrbot-probe-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .map_err(|e| not_writable("cannot create a file in it", e))?;
    // No fsync: creating, writing and removing proves the folder takes writes, and a sync
    // would cost several milliseconds of every start.
    let written = file.write_all(b"probe");
    let removed = std::fs::remove_file(&probe);
    written.map_err(|e| not_writable("cannot write a file in it", e))?;
    removed.map_err(|e| not_writable("cannot remove a file from it", e))
}

/// Proves that the database takes writes: SQLite opens a file it may only read read-only
/// without complaint, and then refuses the first write (a login) with a 500.
fn probe_database(db: &Db, dir: &Path) -> Result<(), String> {
    let not_writable =
        |e: String| format!("the data folder {} is not writable: astrbot.db: {e}", dir.display());
    let mut conn = db.conn().map_err(|e| not_writable(e.to_string()))?;
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
        return Err(not_writable("the database file is read-only".into()));
    }
    db::probe_write(&mut conn).map_err(|e| not_writable(e.to_string()))
}

/// Holds `astrbot.lock` in the data folder for the life of `serve`, so that two servers
/// never share one folder (their upkeep and usage counts would fight). The lock is an
/// `flock(LOCK_EX | LOCK_NB)` (std's `try_lock`), which the kernel drops when the holder
/// dies however it dies, so a stale file after a `kill -9` is harmless; the pid in it is
/// only for the message. The CLI's other commands do not take it: they are meant to work
/// beside a running server.
fn lock_data_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join("astrbot.lock");
    // Not truncated on open: the pid in it belongs to the holder until the lock is ours.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = Some(pid.trim()).filter(|p| !p.is_empty()).unwrap_or("unknown");
            return Err(format!("another astrbot (pid {pid}) is already serving {}", dir.display()));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(format!("cannot lock {}: {e}", path.display())),
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(file)
}

/// Runs a command; the error is the one line `main` prints.
pub fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Help => {
            print!("{}", usage());
            Ok(())
        }
        Command::Version => {
            println!("astrbot {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Serve(args) => serve(args),
        Command::AdminPassword { data, username } => admin_password(&data, username),
        Command::KeyCreate { data, key, json } => key_create(&data, &key, json),
        Command::KeyList { data, json } => key_list(&data, json),
        Command::KbAdd { data, collection, paths } => kb_add(&data, &collection, &paths),
        Command::KbList { data } => {
            let (db, _) = open_existing_store(&data)?;
            let conn = db.conn().map_err(|e| e.to_string())?;
            for (name, count) in crate::db::kb::collections(&conn).map_err(|e| e.to_string())? {
                println!("{name}\t{count} passages");
            }
            Ok(())
        }
        Command::KbRemove { data, collection } => {
            if collection == "docs" {
                return Err("collection docs holds the bundled guides and is rebuilt at every start".into());
            }
            let (db, _) = open_existing_store(&data)?;
            let mut conn = db.conn().map_err(|e| e.to_string())?;
            let exists = crate::db::kb::collections(&conn)
                .map_err(|e| e.to_string())?
                .iter()
                .any(|(c, _)| *c == collection);
            if !exists {
                return Err(format!("no collection named {collection}"));
            }
            crate::db::write_tx(&mut conn, |tx| crate::db::kb::replace_collection(tx, &collection, &[]))
                .map_err(|e| e.to_string())?;
            println!("removed collection {collection}");
            Ok(())
        }
        Command::KeyRevoke { data, key_id } => {
            let (db, _) = open_existing_store(&data)?;
            let mut conn = db.conn().map_err(|e| e.to_string())?;
            match db::write_tx(&mut conn, |tx| db::revoke_key(tx, &key_id, now_micros()))
                .map_err(|e| e.to_string())?
            {
                true => {
                    println!("revoked {key_id}");
                    Ok(())
                }
                false => Err("API key not found".into()),
            }
        }
        Command::KeyDelete { data, key_id } => {
            let (db, _) = open_existing_store(&data)?;
            let mut conn = db.conn().map_err(|e| e.to_string())?;
            match db::write_tx(&mut conn, |tx| db::delete_key(tx, &key_id)).map_err(|e| e.to_string())? {
                true => {
                    println!("deleted {key_id}");
                    Ok(())
                }
                false => Err("API key not found".into()),
            }
        }
    }
}

fn key_create(data: &Path, key: &NewKey, json: bool) -> Result<(), String> {
    let (db, mac) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    let now = now_micros();
    let (row, raw) = keys::create(&mut conn, &mac, key, "cli", now).map_err(|e| e.message())?;
    if json {
        println!("{}", keys::created_json(&row, &raw, now));
    } else {
        println!("{raw}");
        eprintln!(
            "created key {} \"{}\" with scopes {}; the key above is shown only once",
            row.key_id,
            row.name,
            row.scopes.unwrap_or_default().join(",")
        );
    }
    Ok(())
}

/// Adds documents to a collection, replacing what it held: each file is split at its
/// headings; directories are read one level deep.
fn kb_add(data: &Path, collection: &str, paths: &[PathBuf]) -> Result<(), String> {
    if collection == "docs" {
        return Err("collection docs holds the bundled guides; choose another name".into());
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(p.clone());
        }
    }
    let mut passages = Vec::new();
    let mut used = 0;
    for f in &files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if !matches!(ext.as_str(), "md" | "markdown" | "txt" | "text" | "html" | "htm") {
            eprintln!("skipping {} (not Markdown, text or HTML)", f.display());
            continue;
        }
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let name = f.file_stem().and_then(|s| s.to_str()).unwrap_or("document");
        let html_title = text
            .split_once("<h1>")
            .and_then(|(_, rest)| rest.split_once("</h1>"))
            .map(|(t, _)| t.trim().to_owned())
            .filter(|t| !t.is_empty() && ext.starts_with("htm"));
        let title = html_title.unwrap_or_else(|| crate::markdown::title(&text).unwrap_or(name).to_owned());
        used += 1;
        let url = format!("kb:{collection}/{}", f.file_name().and_then(|s| s.to_str()).unwrap_or(name));
        let found = if ext.starts_with("htm") {
            crate::kb::split_html(&text, &title, &url)
        } else {
            crate::kb::split_markdown(&text, &title, &url)
        };
        passages.extend(found);
    }
    let (db, _) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    crate::db::write_tx(&mut conn, |tx| crate::db::kb::replace_collection(tx, collection, &passages))
        .map_err(|e| e.to_string())?;
    println!("collection {collection}: {} passages from {used} files", passages.len());
    Ok(())
}

fn key_list(data: &Path, json: bool) -> Result<(), String> {
    let (db, _) = open_existing_store(data)?;
    let conn = db.conn().map_err(|e| e.to_string())?;
    let rows = db::list_keys(&conn).map_err(|e| e.to_string())?;
    let now = now_micros();
    if json {
        let items: Vec<Value> = rows.iter().map(|r| keys::to_json(r, now)).collect();
        println!("{}", Value::Array(items));
        return Ok(());
    }
    println!(
        "{:<36}  {:<12}  {:<8}  {:<20}  {:<25}  NAME  SCOPES",
        "KEY_ID", "PREFIX", "STATE", "LAST_USED", "EXPIRES"
    );
    for r in rows {
        let state = if r.revoked_at.is_some() {
            "revoked"
        } else if r.expires_at.is_some_and(|t| t < now) {
            "expired"
        } else {
            "active"
        };
        let last = r.last_used_at.map(|t| iso(t)[..19].to_owned()).unwrap_or_else(|| "never".into());
        let expires = r.expires_at.map(iso).unwrap_or_else(|| "never".into());
        let scopes = r.scopes.unwrap_or_default().join(",");
        println!(
            "{:<36}  {:<12}  {state:<8}  {last:<20}  {expires:<25}  {}  {scopes}",
            r.key_id, r.key_prefix, r.name
        );
    }
    Ok(())
}

fn admin_password(data: &Path, username: Option<String>) -> Result<(), String> {
    let (db, _) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    let username = match username {
        Some(u) => u,
        None => db::admin_username(&conn).map_err(|e| e.to_string())?.unwrap_or_else(|| DEFAULT_ADMIN.into()),
    };
    if io::stdin().is_terminal() {
        eprint!("new password for {username}: ");
        let _ = io::stderr().flush();
    }
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']);
    crate::auth::check_new_password(password)?;
    let phc = secrets::hash_password(password)?;
    db::write_tx(&mut conn, |tx| db::set_admin_password(tx, &username, &phc, now_micros()))
        .map_err(|e| e.to_string())?;
    println!("password of {username} changed; every admin token of {username} has been signed out");
    Ok(())
}

/// Creates the administrator on the first start, from `ASTRBOT_ADMIN_PASSWORD` or a
/// generated password printed once.
fn ensure_admin(db: &Db, from_env: Option<&Password>) -> Result<(), String> {
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    if db::admin_exists(&conn).map_err(|e| e.to_string())? {
        if from_env.is_some() {
            log::info!("ASTRBOT_ADMIN_PASSWORD is ignored: the administrator already exists");
        }
        return Ok(());
    }
    let from_env = from_env.and_then(Password::given);
    if let Some(p) = from_env {
        crate::auth::check_new_password(p).map_err(|e| format!("ASTRBOT_ADMIN_PASSWORD: {e}"))?;
    }
    let password = from_env.map(str::to_owned).unwrap_or_else(secrets::new_password);
    let phc = secrets::hash_password(&password)?;
    let created = db::write_tx(&mut conn, |tx| db::create_first_admin(tx, DEFAULT_ADMIN, &phc, now_micros()))
        .map_err(|e| e.to_string())?;
    if created {
        if from_env.is_some() {
            log::info!(
                "administrator \"{DEFAULT_ADMIN}\" created with the password from ASTRBOT_ADMIN_PASSWORD"
            );
        } else {
            // Printed once, outside the log filter, so it cannot be lost to --log-level.
            eprintln!(
                "admin password for \"{DEFAULT_ADMIN}\": {password}  (shown once; change it with `astrbot admin password`)"
            );
        }
    }
    Ok(())
}

fn init_logging(level: log::LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    let _ = simplelog::WriteLogger::init(level, config, io::stderr());
}

fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(args.log_level);
    crate::system::return_large_frees_to_the_os();
    // Everything that can refuse the start runs before the address is announced.
    let data = absolute(&args.data)?;
    prepare_data_dir(&data)?;
    probe_data_dir(&data)?;
    let _lock = lock_data_dir(&data)?;
    let (db, mac) = open_store(&data)?;
    probe_database(&db, &data)?;
    let settings = Settings {
        data_dir: data.clone(),
        default_daily_limit: args.default_daily_limit,
        max_upload_bytes: (args.max_upload_mb as usize).saturating_mul(1 << 20),
    };
    let openapi_json = serde_json::to_vec(&crate::openapi::document()).unwrap_or_default();
    let app = Arc::new(App::new(settings, db, mac, openapi_json)?);

    // The signal pipe is registered before anything listens, so no signal is missed.
    let (mut signal_rx, signal_tx) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(sig, signal_tx.try_clone().map_err(|e| e.to_string())?)
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }

    // Started before the listener, so a flood of connections cannot take the last thread.
    let maintainer = app.clone();
    std::thread::Builder::new()
        .name("maintain".into())
        .spawn(move || {
            let mut tick = 0u64;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                tick += 1;
                if let Err(e) = maintainer.maintain(tick.is_multiple_of(4)) {
                    log::error!("background upkeep failed: {e}");
                }
            }
        })
        .map_err(|e| e.to_string())?;

    // A first-start password that will be refused is refused before anything listens.
    if let Some(p) = args.admin_password.as_ref().and_then(Password::given)
        && !app.db.conn().and_then(|c| db::admin_exists(&c)).map_err(|e| e.to_string())?
    {
        crate::auth::check_new_password(p).map_err(|e| format!("ASTRBOT_ADMIN_PASSWORD: {e}"))?;
    }
    let server = crate::server::Server::bind(app.clone(), &args.listen, args.max_connections)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("listening on http://{}", server.local_addr());
    let _ = io::stdout().flush();
    // The first start hashes the admin password (argon2, tens of milliseconds) after the
    // address is announced; requests arriving meanwhile wait in the queue.
    ensure_admin(&app.db, args.admin_password.as_ref())?;
    // The bundled guides are the built-in provider's knowledge; rebuilt at every start.
    match app
        .db
        .conn()
        .map_err(|e| e.to_string())
        .and_then(|mut c| crate::kb::index_bundled_docs(&mut c).map_err(|e| e.to_string()))
    {
        Ok(n) => log::info!("knowledge base: {n} passages from the bundled docs"),
        Err(e) => log::error!("cannot index the bundled docs: {e}"),
    }
    log::info!("astrbot {} serving data folder {}", env!("CARGO_PKG_VERSION"), data.display());

    server
        .run(|| {
            let mut byte = [0u8; 1];
            let _ = io::Read::read(&mut signal_rx, &mut byte);
        })
        .map_err(|e| e.to_string())?;
    app.flush_usage()?;
    if let Ok(conn) = app.db.conn() {
        let _ = db::checkpoint(&conn);
    }
    log::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn serve_flags_win_over_env() {
        let env = |k: &str| match k {
            "ASTRBOT_LISTEN" => Some("0.0.0.0:1".to_owned()),
            "ASTRBOT_DATA" => Some("/env".to_owned()),
            _ => None,
        };
        let Command::Serve(s) =
            parse(&args("serve --listen 127.0.0.1:0 --default-daily-limit 5"), &env).unwrap()
        else {
            panic!()
        };
        assert_eq!((s.listen.as_str(), s.data.to_str().unwrap()), ("127.0.0.1:0", "/env"));
        assert_eq!(s.default_daily_limit, Some(5));
        let Command::Serve(s) = parse(&args("serve"), &no_env).unwrap() else { panic!() };
        assert_eq!(
            (s.listen.as_str(), s.data.to_str().unwrap(), s.max_upload_mb),
            ("127.0.0.1:6185", "./data", 64)
        );
    }

    #[test]
    fn admin_password_is_read_with_the_arguments_and_never_printed() {
        let env = |k: &str| (k == "ASTRBOT_ADMIN_PASSWORD").then(|| "correct horse".to_owned());
        let Command::Serve(s) = parse(&args("serve"), &env).unwrap() else { panic!() };
        assert_eq!(s.admin_password.as_ref().and_then(Password::given), Some("correct horse"));
        assert!(!format!("{s:?}").contains("horse"), "{s:?}");
        let Command::Serve(s) = parse(&args("serve"), &no_env).unwrap() else { panic!() };
        assert_eq!(s.admin_password, None);
        let empty = |k: &str| (k == "ASTRBOT_ADMIN_PASSWORD").then(String::new);
        let Command::Serve(s) = parse(&args("serve"), &empty).unwrap() else { panic!() };
        assert_eq!(s.admin_password.as_ref().and_then(Password::given), None, "empty is not a password");
    }

    #[test]
    fn key_commands() {
        let c = parse(
            &args("key create --name bot --scopes chat,file --daily-limit 3 --json --data /d"),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c,
            Command::KeyCreate {
                data: "/d".into(),
                key: NewKey {
                    name: Some("bot".into()),
                    scopes: Some(vec!["chat".into(), "file".into()]),
                    expires_in_days: None,
                    daily_limit: Some(3)
                },
                json: true
            }
        );
        assert_eq!(
            parse(&args("key revoke abc"), &no_env).unwrap(),
            Command::KeyRevoke { data: "./data".into(), key_id: "abc".into() }
        );
        assert!(parse(&args("key revoke"), &no_env).is_err());
        assert!(parse(&args("key list --bogus x"), &no_env).unwrap_err().contains("unknown option --bogus"));
        assert!(parse(&args("serve --max-upload-mb x"), &no_env).is_err());
        assert!(parse(&args("frobnicate"), &no_env).is_err());
        assert_eq!(parse(&args("key --help"), &no_env).unwrap(), Command::Help);
    }

    #[test]
    fn key_create_requires_scopes_and_lists_them() {
        let err = parse(&args("key create --name bot"), &no_env).unwrap_err();
        assert!(err.starts_with("key create needs --scopes"), "{err}");
        for scope in keys::valid_scopes() {
            assert!(err.contains(scope), "{scope} listed in {err}");
            assert!(usage().contains(scope), "{scope} listed in the usage");
        }
    }

    #[test]
    fn max_connections_from_flag_or_env_within_bounds() {
        let serve = |argv: &str, env: &dyn Fn(&str) -> Option<String>| match parse(&args(argv), env) {
            Ok(Command::Serve(s)) => Ok(s.max_connections),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let env = |k: &str| (k == "ASTRBOT_MAX_CONNECTIONS").then(|| "77".to_owned());
        assert_eq!(serve("serve", &no_env), Ok(1024));
        assert_eq!(serve("serve", &env), Ok(77));
        assert_eq!(serve("serve --max-connections 5", &env), Ok(5), "the flag wins");
        assert_eq!(serve("serve --max-connections=65536", &no_env), Ok(65536));
        assert_eq!(serve("serve --max-connections 1", &no_env), Ok(1));
        for bad in ["0", "65537", "-1", "x", "1e3", ""] {
            let err = serve(&format!("serve --max-connections={bad}"), &no_env).unwrap_err();
            assert_eq!(err, format!("--max-connections must be an integer from 1 to 65536, not {bad:?}"));
        }
        let env = |k: &str| (k == "ASTRBOT_MAX_CONNECTIONS").then(|| "0".to_owned());
        assert!(serve("serve", &env).unwrap_err().starts_with("ASTRBOT_MAX_CONNECTIONS must be an integer"));
    }
}
