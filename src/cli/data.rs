//! The data folder as the command line sees it: where it is, made with the right mode,
//! proven writable, locked by the one `serve` that uses it, and opened as a store.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::db::{self, Db};
use crate::secrets::MacKey;

/// The absolute form of `dir`, for messages a user can act on from any working directory.
pub(super) fn absolute(dir: &Path) -> Result<PathBuf, String> {
    std::path::absolute(dir).map_err(|e| format!("cannot resolve the data folder {}: {e}", dir.display()))
}

/// Creates the data folder with mode 0700 (and tightens an existing one).
pub(super) fn prepare_data_dir(dir: &Path) -> Result<(), String> {
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

pub(super) fn open_store(dir: &Path) -> Result<(Db, MacKey), String> {
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
pub(super) fn open_existing_store(dir: &Path) -> Result<(Db, MacKey), String> {
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
pub(super) fn probe_data_dir(dir: &Path) -> Result<(), String> {
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
pub(super) fn probe_database(db: &Db, dir: &Path) -> Result<(), String> {
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
pub(super) fn lock_data_dir(dir: &Path) -> Result<File, String> {
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
