//! Chunked upload sessions (AstrBot 4.29's `/api/v1/files/upload/*`): the bookkeeping of
//! which caller is sending which file in which 1 MiB pieces, kept in memory with bounds.
//!
//! A session owns one file, `DIR/uploads/<upload_id>.part`, created at its declared size
//! (sparse), into which each chunk is written at its own offset as it streams in, so no
//! chunk and no file is ever held in memory, and completing needs no merge: the handler
//! (`api::files`) checks the size on disk and renames the file into the attachments folder,
//! so an attachment is never half-written. This module decides and remembers; the handler
//! moves the bytes. Every function takes `now` (microseconds), so expiry is tested without
//! sleeping.
//!
//! Bounds: a caller may hold [`MAX_SESSIONS_PER_CALLER`] unfinished sessions, everyone
//! together [`MAX_SESSIONS`], and the declared sizes of all unfinished sessions may not add
//! up to more than [`PENDING_FACTOR`] times the largest file allowed ([`MAX_FILE`], or
//! `--max-upload-mb` when larger). A session dies
//! [`SESSION_TTL`] after its last chunk (asking its status does not keep it alive, as in
//! AstrBot), and its file with it; leftovers of an earlier run (session files, and the
//! spool files of chunks that came before their fields) are removed on first use.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

/// The size of every chunk but the last, as AstrBot has it.
pub const CHUNK_SIZE: u64 = 1 << 20;
/// The body limit of `POST /files/upload/chunk` (AstrBot's 2097152): a chunk and its form.
pub const CHUNK_BODY_LIMIT: usize = 2 << 20;
/// A session expires this long (µs) after its last activity.
pub const SESSION_TTL: i64 = 3600 * 1_000_000;
/// Unfinished sessions one caller may hold.
pub const MAX_SESSIONS_PER_CALLER: usize = 8;
/// Unfinished sessions of all callers together.
pub const MAX_SESSIONS: usize = 64;
/// The declared sizes of all unfinished sessions together: at most this many uploads of
/// the largest size allowed (their files are sparse until written).
pub const PENDING_FACTOR: u64 = 4;
/// The largest file a chunked upload may declare (AstrBot 4.29's 512 MB), unless
/// `--max-upload-mb` is larger.
pub const MAX_FILE: u64 = 512 << 20;

/// Why a session operation is refused. `Soft` carries AstrBot's message (a 200-error);
/// `Busy` is a bound we add (429).
#[derive(Debug, PartialEq, Eq)]
pub enum UploadError {
    Soft(String),
    Busy(&'static str),
    Io(String),
}

fn soft(m: &str) -> UploadError {
    UploadError::Soft(m.to_owned())
}

const NOT_FOUND: &str = "Upload session not found or expired";

/// What `init` answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Started {
    pub upload_id: String,
    pub chunk_size: u64,
    pub total_chunks: u64,
}

/// Where one chunk goes: the session's file, the chunk's offset and its exact length.
#[derive(Debug)]
pub struct Slot {
    pub path: PathBuf,
    pub offset: u64,
    pub expected: u64,
}

/// A session handed over for completion, out of the table.
#[derive(Debug)]
pub struct Finished {
    pub path: PathBuf,
    pub filename: String,
    pub content_type: Option<String>,
    pub total_size: u64,
}

/// What `status` answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Status {
    pub received_chunks: Vec<u64>,
    pub total_chunks: u64,
    pub expires_in: i64,
}

struct Session {
    owner: String,
    filename: String,
    content_type: Option<String>,
    total_size: u64,
    total_chunks: u64,
    /// One bit per chunk.
    received: Vec<u64>,
    received_count: u64,
    /// Chunks being written now: not received until their write ends well.
    writing: HashSet<u64>,
    last_activity: i64,
    path: PathBuf,
}

impl Session {
    fn has(&self, i: u64) -> bool {
        self.received[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: u64, on: bool) {
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        let was = self.received[word] & bit != 0;
        if on && !was {
            self.received[word] |= bit;
            self.received_count += 1;
        } else if !on && was {
            self.received[word] &= !bit;
            self.received_count -= 1;
        }
    }

    fn expected_len(&self, i: u64) -> u64 {
        let start = i * CHUNK_SIZE;
        (self.total_size - start).min(CHUNK_SIZE)
    }
}

/// The live sessions, and the folder their files are in.
pub struct Uploads {
    dir: PathBuf,
    sessions: Mutex<HashMap<String, Session>>,
    cleaned: Once,
}

impl Uploads {
    pub fn new(dir: PathBuf) -> Uploads {
        Uploads { dir, sessions: Mutex::new(HashMap::new()), cleaned: Once::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions live in memory only: on first use, files of an earlier run are removed.
    fn clean_leftovers(&self) {
        self.cleaned.call_once(|| {
            let Ok(entries) = fs::read_dir(&self.dir) else { return };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".part") || name.ends_with(".spool") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        });
    }

    /// Removes sessions idle for longer than [`SESSION_TTL`] (none with a chunk being
    /// written) and their files.
    pub fn sweep(&self, now: i64) {
        self.clean_leftovers();
        let mut sessions = self.lock();
        let expired: Vec<String> = sessions
            .iter()
            .filter(|(_, s)| s.writing.is_empty() && now.saturating_sub(s.last_activity) > SESSION_TTL)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(s) = sessions.remove(&id) {
                let _ = fs::remove_file(&s.path);
                log::info!("upload session {id} expired");
            }
        }
    }

    /// Opens a session for `total_size` bytes (already checked to be positive and within
    /// `max_upload`, the largest file allowed), with its file at full size.
    pub fn init(
        &self,
        owner: &str,
        filename: &str,
        content_type: Option<String>,
        total_size: u64,
        max_upload: u64,
        now: i64,
    ) -> Result<Started, UploadError> {
        self.sweep(now);
        if total_size == 0 {
            return Err(soft("Invalid file size"));
        }
        let total_chunks = total_size.div_ceil(CHUNK_SIZE);
        let upload_id = uuid::Uuid::new_v4().to_string();
        let path = self.dir.join(format!("{upload_id}.part"));
        let mut sessions = self.lock();
        if sessions.values().filter(|s| s.owner == owner).count() >= MAX_SESSIONS_PER_CALLER {
            return Err(UploadError::Busy("Too many unfinished uploads for this caller"));
        }
        if sessions.len() >= MAX_SESSIONS {
            return Err(UploadError::Busy("Too many unfinished uploads"));
        }
        let pending: u64 = sessions.values().map(|s| s.total_size).sum();
        if pending.saturating_add(total_size) > max_upload.saturating_mul(PENDING_FACTOR) {
            return Err(UploadError::Busy("Too many unfinished uploads"));
        }
        let io = |e: std::io::Error| UploadError::Io(format!("cannot create {}: {e}", path.display()));
        fs::create_dir_all(&self.dir).map_err(io)?;
        let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(io)?;
        if let Err(e) = file.set_len(total_size) {
            let _ = fs::remove_file(&path);
            return Err(io(e));
        }
        let words = total_chunks.div_ceil(64) as usize;
        sessions.insert(
            upload_id.clone(),
            Session {
                owner: owner.to_owned(),
                filename: filename.to_owned(),
                content_type,
                total_size,
                total_chunks,
                received: vec![0; words],
                received_count: 0,
                writing: HashSet::new(),
                last_activity: now,
                path,
            },
        );
        log::info!(
            "upload session {upload_id} opened by {owner}: {total_size} bytes in {total_chunks} chunks"
        );
        Ok(Started { upload_id, chunk_size: CHUNK_SIZE, total_chunks })
    }

    /// Reserves chunk `index` (`None`: not a number that fits, so out of range) for a
    /// write: it counts as missing until [`Uploads::end_chunk`] says it arrived whole.
    pub fn begin_chunk(
        &self,
        owner: &str,
        upload_id: &str,
        index: Option<u64>,
        now: i64,
    ) -> Result<Slot, UploadError> {
        self.sweep(now);
        let mut sessions = self.lock();
        let s = sessions.get_mut(upload_id).filter(|s| s.owner == owner).ok_or_else(|| soft(NOT_FOUND))?;
        let index = index.filter(|&i| i < s.total_chunks).ok_or_else(|| soft("Chunk index out of range"))?;
        if !s.writing.insert(index) {
            return Err(soft("Chunk is being received"));
        }
        s.set(index, false);
        s.last_activity = now;
        Ok(Slot { path: s.path.clone(), offset: index * CHUNK_SIZE, expected: s.expected_len(index) })
    }

    /// Ends the write of chunk `index`; `whole` says whether it arrived complete. Answers
    /// the number of chunks received and in all.
    pub fn end_chunk(
        &self,
        upload_id: &str,
        index: u64,
        whole: bool,
        now: i64,
    ) -> Result<(u64, u64), UploadError> {
        let mut sessions = self.lock();
        // Aborted (or completed) while the chunk was on its way.
        let s = sessions.get_mut(upload_id).ok_or_else(|| soft(NOT_FOUND))?;
        s.writing.remove(&index);
        s.set(index, whole);
        s.last_activity = now;
        Ok((s.received_count, s.total_chunks))
    }

    pub fn status(&self, owner: &str, upload_id: &str, now: i64) -> Result<Status, UploadError> {
        self.sweep(now);
        let sessions = self.lock();
        let s = sessions.get(upload_id).filter(|s| s.owner == owner).ok_or_else(|| soft(NOT_FOUND))?;
        let received_chunks = (0..s.total_chunks).filter(|&i| s.has(i)).collect();
        let left = SESSION_TTL.saturating_sub(now.saturating_sub(s.last_activity)) / 1_000_000;
        Ok(Status { received_chunks, total_chunks: s.total_chunks, expires_in: left.max(0) })
    }

    /// Takes a session whose every chunk has arrived out of the table, for the handler to
    /// verify and store; a session with chunks missing stays, and the answer names them.
    pub fn finish(&self, owner: &str, upload_id: &str, now: i64) -> Result<Finished, UploadError> {
        self.sweep(now);
        let mut sessions = self.lock();
        let s = sessions.get(upload_id).filter(|s| s.owner == owner).ok_or_else(|| soft(NOT_FOUND))?;
        if s.received_count != s.total_chunks || !s.writing.is_empty() {
            let missing: Vec<u64> = (0..s.total_chunks).filter(|&i| !s.has(i)).take(10).collect();
            let list = missing.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            return Err(UploadError::Soft(format!("Chunks incomplete, missing: [{list}]...")));
        }
        let s = sessions.remove(upload_id).ok_or_else(|| soft(NOT_FOUND))?;
        Ok(Finished {
            path: s.path,
            filename: s.filename,
            content_type: s.content_type,
            total_size: s.total_size,
        })
    }

    /// Drops a session and its file. An unknown id is no error (AstrBot answers `{}`);
    /// another caller's session is not found.
    pub fn abort(&self, owner: &str, upload_id: &str, now: i64) -> Result<(), UploadError> {
        self.sweep(now);
        let mut sessions = self.lock();
        match sessions.get(upload_id) {
            None => Ok(()),
            Some(s) if s.owner != owner => Err(soft(NOT_FOUND)),
            Some(_) => {
                if let Some(s) = sessions.remove(upload_id) {
                    let _ = fs::remove_file(&s.path);
                }
                Ok(())
            }
        }
    }

    /// The folder of the sessions' files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn uploads() -> (Uploads, PathBuf) {
        let dir = std::env::temp_dir().join(format!("astrbot-uploads-{}", uuid::Uuid::new_v4()));
        (Uploads::new(dir.clone()), dir)
    }

    #[test]
    fn a_session_counts_chunks_and_finishes_only_when_whole() {
        let (u, dir) = uploads();
        let started = u.init("api_key:a", "big.bin", None, 2 * MB + 5, 64 * MB, 0).unwrap();
        assert_eq!((started.chunk_size, started.total_chunks), (MB, 3));
        let id = started.upload_id;
        assert_eq!(fs::metadata(dir.join(format!("{id}.part"))).unwrap().len(), 2 * MB + 5);
        let slot = u.begin_chunk("api_key:a", &id, Some(2), 1).unwrap();
        assert_eq!((slot.offset, slot.expected), (2 * MB, 5));
        assert_eq!(u.end_chunk(&id, 2, true, 2), Ok((1, 3)));
        let slot = u.begin_chunk("api_key:a", &id, Some(0), 3).unwrap();
        assert_eq!(slot.expected, MB);
        // A chunk being written counts as missing, and cannot be written twice at once.
        assert_eq!(u.begin_chunk("api_key:a", &id, Some(0), 3).unwrap_err(), soft("Chunk is being received"));
        assert_eq!(
            u.finish("api_key:a", &id, 4).unwrap_err(),
            UploadError::Soft("Chunks incomplete, missing: [0, 1]...".into())
        );
        u.end_chunk(&id, 0, true, 5).unwrap();
        let st = u.status("api_key:a", &id, 6).unwrap();
        assert_eq!((st.received_chunks, st.total_chunks), (vec![0, 2], 3));
        // A chunk that failed is missing again.
        u.begin_chunk("api_key:a", &id, Some(1), 7).unwrap();
        assert_eq!(u.end_chunk(&id, 1, false, 8), Ok((2, 3)));
        u.begin_chunk("api_key:a", &id, Some(1), 9).unwrap();
        assert_eq!(u.end_chunk(&id, 1, true, 10), Ok((3, 3)));
        let done = u.finish("api_key:a", &id, 11).unwrap();
        assert_eq!((done.filename.as_str(), done.total_size), ("big.bin", 2 * MB + 5));
        assert_eq!(u.status("api_key:a", &id, 12).unwrap_err(), soft(NOT_FOUND));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn sessions_belong_to_their_caller_and_hostile_indexes_are_out_of_range() {
        let (u, dir) = uploads();
        let id = u.init("api_key:a", "x", None, 10, MB, 0).unwrap().upload_id;
        assert_eq!(u.begin_chunk("api_key:b", &id, Some(0), 1).unwrap_err(), soft(NOT_FOUND));
        assert_eq!(u.status("api_key:b", &id, 1).unwrap_err(), soft(NOT_FOUND));
        assert_eq!(u.finish("api_key:b", &id, 1).unwrap_err(), soft(NOT_FOUND));
        assert_eq!(u.abort("api_key:b", &id, 1).unwrap_err(), soft(NOT_FOUND));
        for index in [Some(1), Some(u64::MAX), None] {
            assert_eq!(
                u.begin_chunk("api_key:a", &id, index, 1).unwrap_err(),
                soft("Chunk index out of range")
            );
        }
        assert_eq!(u.abort("api_key:a", "no-such-id", 1), Ok(()));
        assert_eq!(u.abort("api_key:a", &id, 1), Ok(()));
        assert!(!dir.join(format!("{id}.part")).exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn sessions_expire_an_hour_after_their_last_chunk_not_their_last_status() {
        let (u, dir) = uploads();
        let id = u.init("o", "x", None, 10, MB, 0).unwrap().upload_id;
        assert_eq!(u.status("o", &id, SESSION_TTL / 2).unwrap().expires_in, 1800);
        assert_eq!(u.status("o", &id, SESSION_TTL).unwrap().expires_in, 0);
        assert_eq!(u.status("o", &id, SESSION_TTL + 1).unwrap_err(), soft(NOT_FOUND));
        assert!(!dir.join(format!("{id}.part")).exists());
        let id = u.init("o", "x", None, 10, MB, 0).unwrap().upload_id;
        u.begin_chunk("o", &id, Some(0), SESSION_TTL).unwrap();
        // Never while a chunk is being written.
        u.sweep(3 * SESSION_TTL);
        u.end_chunk(&id, 0, true, 3 * SESSION_TTL).unwrap();
        assert!(u.finish("o", &id, 3 * SESSION_TTL + 1).is_ok());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn unfinished_sessions_are_bounded_per_caller_overall_and_in_bytes() {
        let (u, dir) = uploads();
        for _ in 0..MAX_SESSIONS_PER_CALLER {
            u.init("greedy", "x", None, 1, MB, 0).unwrap();
        }
        assert!(matches!(u.init("greedy", "x", None, 1, MB, 0), Err(UploadError::Busy(_))));
        // Bytes: four uploads of the largest size in all.
        let big = u.init("other", "x", None, 3 * MB, 1 << 40, 0);
        assert!(big.is_ok());
        assert!(matches!(u.init("third", "x", None, MB, MB, 0), Err(UploadError::Busy(_))));
        let _ = fs::remove_dir_all(dir);
    }
}
