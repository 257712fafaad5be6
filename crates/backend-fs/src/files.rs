//! The layout on disk: paths, the check that a directory is a layout,
//! atomic replacement of small files, the compare-and-swap of a small file
//! under an advisory lock, and unique temporary files in `ingest/` (the
//! directory oras-go uses for the same), and flushing big files ahead of
//! their final `fsync`.
//!
//! Everything here is blocking and runs on tokio's blocking pool.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use orca_core::layout::{self, Condition, Listed, Version};
use orca_core::{Digest, Error, Result};

use crate::error::{FileError, IoContext};

/// Temporary files live here until they are renamed into place.
const INGEST_DIR: &str = "ingest";
/// The lock taken around every conditional write (of `index.json`, the marker).
const LOCK_FILE: &str = "index.json.lock";

/// Whether `name`, in `ingest/`, is one this layout gives its staging: a
/// blob's partial file (`partial-ALG-HEX`), a temporary file
/// (`LABEL.PID.N.NANOS`) or a link to a shared blob on its way into place
/// (`shared-HEX-PID-N`, see `shared.rs`). Nothing else there is orca's to
/// remove: the directory may hold what others put (a repository named
/// `app/ingest` beside a layout `app` keeps its `oci-layout` and
/// `index.json` there).
fn is_staging_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = name.strip_prefix("shared-") {
        let parts: Vec<&str> = rest.split('-').collect();
        if let [hex, pid, n] = parts[..]
            && !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && digits(pid)
            && digits(n)
        {
            return true;
        }
    }
    if name.strip_prefix("partial-").is_some_and(|rest| {
        rest.split_once('-').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm.bytes().all(|b| b.is_ascii_alphanumeric())
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
    }) {
        return true;
    }
    let mut parts = name.split('.');
    let label = parts.next().unwrap_or_default();
    let numbers: Vec<&str> = parts.collect();
    !label.is_empty()
        && label.bytes().all(|b| b.is_ascii_lowercase())
        && numbers.len() == 3
        && numbers.iter().all(|n| digits(n))
}

/// Paths and settings of one layout.
#[derive(Debug)]
pub(crate) struct Files {
    pub(crate) root: PathBuf,
    /// The backend's display name, for errors.
    pub(crate) place: String,
    /// Whether writes are fsynced before they become visible.
    pub(crate) durable: bool,
    /// What each small file read last was: the file's identity on disk
    /// and the version of its bytes. orca replaces small files by rename
    /// (a new inode each time), so the same identity is the same bytes
    /// and a reader need not read them again to learn nothing changed.
    pub(crate) seen: Mutex<HashMap<String, (Stamp, Version)>>,
}

/// A file's identity on disk: device, inode, size, modification and
/// change times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp([i64; 6]);

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp([
            meta.dev() as i64,
            meta.ino() as i64,
            meta.size() as i64,
            meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            i64::from(meta.is_file()),
        ])
    }
}

impl Files {
    pub(crate) fn marker_path(&self) -> PathBuf {
        self.root.join(layout::OCI_LAYOUT_FILE)
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(layout::blob_path(digest))
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join(INGEST_DIR)
    }

    /// Where an interrupted push of `digest` leaves what arrived.
    pub(crate) fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.ingest_dir()
            .join(format!("partial-{}-{}", digest.algorithm(), digest.hex()))
    }

    /// A fresh temporary path in `ingest/` (see [`is_staging_name`]).
    pub(crate) fn temp_path(&self, label: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.ingest_dir()
            .join(format!("{label}.{}.{n}.{nanos}", std::process::id()))
    }

    pub(crate) fn file_error(&self, operation: &'static str, e: FileError) -> Error {
        e.into_core(&self.place, operation)
    }

    /// Checks an existing layout, refusing a non-empty directory that is not
    /// one. A missing or empty directory is fine: it is created on first write.
    pub(crate) fn check(&self) -> Result<()> {
        let marker = self.marker_path();
        match fs::read(&marker) {
            Ok(bytes) => layout::check_marker(&bytes, &marker.display().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // `ingest/` and `blobs/` alone mean another process is
                // creating the layout right now.
                let foreign =
                    |name: &std::ffi::OsStr| name != INGEST_DIR && name != layout::BLOBS_DIR;
                let non_empty = match fs::read_dir(&self.root) {
                    Ok(entries) => entries
                        .filter_map(|e| e.ok())
                        .any(|e| foreign(&e.file_name())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) => {
                        return Err(self.file_error("open", FileError::new("list", &self.root, e)));
                    }
                };
                // Another process may have finished creating the layout
                // between the two looks: read the marker once more.
                if non_empty && let Ok(bytes) = fs::read(&marker) {
                    return layout::check_marker(&bytes, &marker.display().to_string());
                }
                if non_empty {
                    return Err(Error::InvalidInput {
                        what: format!("image layout {}", self.root.display()),
                        reason: format!(
                            "the directory is not empty and has no {} file",
                            layout::OCI_LAYOUT_FILE
                        ),
                    });
                }
                Ok(())
            }
            Err(e) => Err(self.file_error("open", FileError::new("read", &marker, e))),
        }
    }

    /// Writes `bytes` to a temporary file and renames it over `target`, so
    /// readers see the old or the new content, never a mix.
    pub(crate) fn write_atomic(
        &self,
        target: &Path,
        bytes: &[u8],
    ) -> std::result::Result<(), FileError> {
        let temp = self.temp_path("write");
        let result = (|| {
            let mut file = File::create(&temp).at("create", &temp)?;
            file.write_all(bytes).at("write", &temp)?;
            if self.durable {
                file.sync_all().at("sync", &temp)?;
            }
            fs::rename(&temp, target).at("rename into place", target)?;
            self.sync_dir(target)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Makes a rename in `path`'s directory durable.
    /// Creates `dir` and the directories above it that are missing, each
    /// made durable in its parent (a file renamed into a directory that a
    /// crash forgets is lost with it).
    pub(crate) fn create_dir(&self, dir: &Path) -> std::result::Result<(), FileError> {
        if dir.is_dir() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            missing.push(path.to_owned());
            at = path.parent();
        }
        fs::create_dir_all(dir).at("create", dir)?;
        for created in missing.iter().rev() {
            self.sync_dir(created)?;
        }
        Ok(())
    }

    pub(crate) fn sync_dir(&self, path: &Path) -> std::result::Result<(), FileError> {
        if !self.durable {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .at("sync directory", dir)
    }

    /// Reads the small file at `key` whole, with its version (a hash of
    /// its bytes); `None` when absent.
    pub(crate) fn read(&self, key: &str, limit: u64) -> Result<Option<(Bytes, Version)>> {
        let path = self.root.join(key);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.file_error("read", FileError::new("open", &path, e))),
        };
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(&file, limit + 1), &mut bytes)
            .at("read", &path)
            .map_err(|e| self.file_error("read", e))?;
        if bytes.len() as u64 > limit {
            return Err(Error::LimitExceeded {
                what: format!("{} in {}", key, self.place),
                limit,
            });
        }
        // The identity of the file that was read (not of what the path
        // names by now). The same file as last seen keeps the version it
        // had, which a writer holding it compares against, and is not
        // hashed again.
        let Ok(meta) = file.metadata() else {
            let hashed = version(&bytes);
            return Ok(Some((bytes.into(), hashed)));
        };
        let stamp = Stamp::of(&meta);
        let kept = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|(known, _)| *known == stamp)
            .map(|(_, kept)| kept.clone());
        let version = match kept {
            Some(kept) => kept,
            None => {
                let hashed = version(&bytes);
                self.seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key.to_owned(), (stamp, hashed.clone()));
                hashed
            }
        };
        Ok(Some((bytes.into(), version)))
    }

    /// Whether the small file at `key` is still the one read last as
    /// `known`: the same file on disk (see `seen`). `false` when unsure.
    pub(crate) fn unchanged(&self, key: &str, known: &Version) -> bool {
        let Ok(meta) = fs::metadata(self.root.join(key)) else {
            return false;
        };
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(key)
            .is_some_and(|(stamp, version)| version == known && *stamp == Stamp::of(&meta))
    }

    /// Replaces the small file at `key` if `condition` holds, under the
    /// layout's lock so the comparison and the replacement are one step;
    /// the version written.
    pub(crate) fn write_versioned(
        &self,
        key: &str,
        bytes: &[u8],
        condition: &Condition,
    ) -> Result<Version> {
        let path = self.root.join(key);
        let lock = self.lock("write")?;
        let holds = match condition {
            // The file last read is still there: its bytes need no reading.
            Condition::Matches(expected) if self.unchanged(key, expected) => true,
            _ => {
                let current = match fs::read(&path) {
                    Ok(bytes) => Some(version(&bytes)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => {
                        return Err(self.file_error("write", FileError::new("read", &path, e)));
                    }
                };
                match (condition, &current) {
                    (Condition::Absent, None) => true,
                    (Condition::Matches(expected), Some(current)) => expected == current,
                    _ => false,
                }
            }
        };
        if !holds {
            return Err(Error::Conflict {
                what: format!("{key}: another writer changed it"),
                place: self.place.clone(),
            });
        }
        let written = (|| {
            if let Some(dir) = path.parent() {
                self.create_dir(dir)?;
            }
            self.write_atomic(&path, bytes)?;
            // Still under the lock: no other orca replaced it since. What
            // was written is named by a number of its own and the file's
            // identity, not by hashing its bytes (a bundle's index.json is
            // megabytes): a later compare finds the same write or treats
            // the file as changed, as a version read from disk never
            // equals it, nor another write's (whose file may reuse the
            // inode and the coarse times of this one).
            Ok(match fs::metadata(&path) {
                Ok(meta) => {
                    static WRITES: AtomicU64 = AtomicU64::new(0);
                    let stamp = Stamp::of(&meta);
                    let n = WRITES.fetch_add(1, Ordering::Relaxed);
                    let written = Version(format!("written {n} {:?}", stamp.0));
                    self.seen
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(key.to_owned(), (stamp, written.clone()));
                    written
                }
                Err(_) => version(bytes),
            })
        })();
        drop(lock);
        written.map_err(|e| self.file_error("write", e))
    }

    /// Takes the layout's exclusive lock; it is held until the returned
    /// file is closed.
    fn lock(&self, operation: &'static str) -> Result<File> {
        let ingest = self.ingest_dir();
        fs::create_dir_all(&ingest)
            .at("create", &ingest)
            .map_err(|e| self.file_error(operation, e))?;
        let lock_path = ingest.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at("open lock", &lock_path)
            .map_err(|e| self.file_error(operation, e))?;
        lock.lock()
            .at("lock", &lock_path)
            .map_err(|e| self.file_error(operation, e))?;
        Ok(lock)
    }

    /// Every regular file under `prefix` (a directory relative to the
    /// root), recursively, as keys with sizes and modification times.
    /// Links are not followed.
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut found = Vec::new();
        let mut pending = vec![prefix.trim_end_matches('/').to_owned()];
        while let Some(dir) = pending.pop() {
            let path = self.root.join(&dir);
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.file_error("list", FileError::new("list", &path, e))),
            };
            for entry in entries {
                let entry = entry
                    .at("list", &path)
                    .map_err(|e| self.file_error("list", e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                // Keys are relative to the layout: no leading `/` when the
                // whole layout is listed.
                let key = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                // A file another writer renamed or removed since the
                // directory was read is no longer there to list.
                let meta = match entry.metadata() {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    other => other
                        .at("inspect", &entry.path())
                        .map_err(|e| self.file_error("list", e))?,
                };
                if meta.is_dir() {
                    pending.push(key);
                } else if meta.is_file() {
                    found.push(Listed {
                        key,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
        }
        Ok(found)
    }

    /// Removes the temporary files older than `age` (left by processes
    /// that died) and says how many. Each is locked first and unlinked
    /// while the lock is held, so a partial file a push holds is never
    /// one, and none is taken from under a push that locks it meanwhile
    /// (backends m23: the lock was let go between the look and the
    /// removal).
    pub(crate) fn remove_stale_temp_files(&self, age: std::time::Duration) -> usize {
        let Ok(entries) = fs::read_dir(self.ingest_dir()) else {
            return 0;
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(is_staging_name))
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|elapsed| elapsed >= age)
            })
            .map(|e| e.path())
            .filter(|path| {
                let Ok(file) = File::open(path) else {
                    return false;
                };
                match file.try_lock() {
                    Ok(()) => fs::remove_file(path).is_ok(),
                    Err(_) => false,
                }
            })
            .count()
    }
}

/// The version of a small file: the digest of its bytes. Equal bytes are
/// the same version, which is all a compare-and-swap of a whole file needs.
fn version(bytes: &[u8]) -> Version {
    Version(Digest::sha256(bytes).to_string())
}

/// Deletes a file when dropped, unless disarmed by taking the path out.
pub(crate) struct RemoveOnDrop(pub(crate) Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}
/// Bytes written between two flushes started ahead of the final `fsync`
/// (files smaller than this get no flusher).
const FLUSH_EVERY: usize = 32 * 1024 * 1024;

/// Flushes a file being written on a thread of its own, so the disk
/// writes what has arrived while the rest still streams in (and is
/// hashed) and the `fsync` that publishes the blob finds little left to
/// do. Dropped, it stops after the flush under way; [`Flusher::finish`]
/// also waits for that and reports a flush that failed: the handles share
/// one open file, whose write error the kernel reports only once, so the
/// final `fsync` alone would not see it.
pub(crate) struct Flusher {
    /// Written since the last flush was asked for.
    unflushed: usize,
    kicks: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Flusher {
    /// A flusher of `file`, about to receive `len` bytes; `None` for a
    /// small file, or when no second handle or thread can be had (the
    /// final `fsync` then does all the work).
    pub(crate) fn start(file: &File, len: u64) -> Option<Self> {
        if len < FLUSH_EVERY as u64 {
            return None;
        }
        let file = file.try_clone().ok()?;
        // One flush waiting behind the one under way is enough.
        let (kicks, waiting) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("orca-flush".into())
            .spawn(move || {
                while waiting.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })
            .ok()?;
        Some(Flusher {
            unflushed: 0,
            kicks: Some(kicks),
            thread: Some(thread),
        })
    }

    /// Stops the flusher, waits for the flush under way (blocking), and
    /// says whether any flush failed.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.kicks = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(std::io::Error::other("the flushing thread stopped")),
        }
    }

    /// Counts `bytes` written; every [`FLUSH_EVERY`] bytes, asks for a
    /// flush of what was written so far, unless one is waiting.
    pub(crate) fn wrote(&mut self, bytes: usize) {
        self.unflushed += bytes;
        if self.unflushed >= FLUSH_EVERY {
            self.unflushed = 0;
            if let Some(kicks) = &self.kicks {
                let _ = kicks.try_send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the layout gives its staging, and no others.
    #[test]
    fn staging_names_are_the_layouts_own() {
        let files = Files {
            root: PathBuf::from("/layout"),
            place: "test".into(),
            durable: false,
            seen: Default::default(),
        };
        let partial = files.partial_path(&Digest::sha256(b"x"));
        let temp = files.temp_path("blob");
        for path in [partial, temp] {
            let name = path.file_name().and_then(|n| n.to_str()).expect("name");
            assert!(is_staging_name(name), "{name}");
        }
        let shared = format!("shared-{}-12-0", Digest::sha256(b"x").hex());
        assert!(is_staging_name(&shared), "{shared}");
        for name in [
            "oci-layout",
            "index.json",
            "index.json.lock",
            "blobs",
            "partial-",
            "partial-sha256-",
            "partial-sha256-xyz",
            "blob.1.2",
            "blob.1.2.x",
            "Blob.1.2.3",
            ".1.2.3",
            "shared-xyz-1-2",
            "shared-ab-1",
        ] {
            assert!(!is_staging_name(name), "{name}");
        }
    }
}
