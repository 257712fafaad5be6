//! The layout on disk: paths, creating the layout on first write, reading
//! and atomically replacing `index.json` under an advisory lock, and unique
//! temporary files in `ingest/` (the directory oras-go uses for the same).
//!
//! Everything here is blocking and runs on tokio's blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use orca_core::layout::{self, LayoutIndex};
use orca_core::{Algorithm, Digest, Error, Result};

use crate::error::{FileError, IoContext};

/// Temporary files live here until they are renamed into place.
const INGEST_DIR: &str = "ingest";
/// The lock taken around every read-modify-write of `index.json`.
const LOCK_FILE: &str = "index.json.lock";

/// Paths and settings of one layout.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    /// The backend's display name, for errors.
    pub(crate) place: String,
    /// Whether writes are fsynced before they become visible.
    pub(crate) durable: bool,
}

impl Layout {
    pub(crate) fn marker_path(&self) -> PathBuf {
        self.root.join(layout::OCI_LAYOUT_FILE)
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join(layout::INDEX_FILE)
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

    /// A fresh temporary path in `ingest/`.
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

    /// Creates the directories, the `oci-layout` marker and an empty
    /// `index.json` if missing, and checks the marker if present.
    pub(crate) fn ensure(&self) -> Result<()> {
        self.ensure_marker()?;
        if !self.index_path().exists() {
            // Under the lock, so an index another process just wrote is
            // never replaced by an empty one.
            self.update_index("create layout", |_| Ok((false, ())))?;
        }
        Ok(())
    }

    fn ensure_marker(&self) -> Result<()> {
        let result = (|| -> std::result::Result<(), FileError> {
            fs::create_dir_all(self.ingest_dir()).at("create", &self.ingest_dir())?;
            let blobs = self.root.join(layout::BLOBS_DIR);
            fs::create_dir_all(&blobs).at("create", &blobs)?;
            let marker = self.marker_path();
            if !marker.exists() {
                self.write_atomic(&marker, &layout::marker())?;
            }
            Ok(())
        })();
        result.map_err(|e| self.file_error("create layout", e))?;
        self.check()
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
    pub(crate) fn sync_dir(&self, path: &Path) -> std::result::Result<(), FileError> {
        if !self.durable {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .at("sync directory", dir)
    }

    /// Reads `index.json`; a layout without one has an empty index.
    pub(crate) fn read_index(&self) -> Result<LayoutIndex> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => LayoutIndex::parse(&bytes, &path.display().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LayoutIndex::new()),
            Err(e) => Err(self.file_error("read index", FileError::new("read", &path, e))),
        }
    }

    /// Takes the layout's exclusive lock (creating the layout if needed);
    /// it is held until the returned file is closed.
    pub(crate) fn lock(&self, operation: &'static str) -> Result<File> {
        self.ensure_marker()?;
        let lock_path = self.ingest_dir().join(LOCK_FILE);
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

    /// Every blob file whose name is a digest, with its size. Other files
    /// under `blobs/` are not orca's to judge and are left out.
    pub(crate) fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let mut blobs = Vec::new();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join(layout::BLOBS_DIR).join(algorithm.as_str());
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(self.file_error("list blobs", FileError::new("list", &dir, e)));
                }
            };
            for entry in entries {
                let entry = entry
                    .at("list", &dir)
                    .map_err(|e| self.file_error("list blobs", e))?;
                let name = entry.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|hex| Digest::parse(&format!("{algorithm}:{hex}")).ok())
                else {
                    continue;
                };
                let meta = entry
                    .metadata()
                    .at("inspect", &entry.path())
                    .map_err(|e| self.file_error("list blobs", e))?;
                if meta.is_file() {
                    blobs.push((digest, meta.len()));
                }
            }
        }
        blobs.sort();
        Ok(blobs)
    }

    /// Temporary files older than `age`: left by processes that died.
    pub(crate) fn stale_temp_files(&self, age: std::time::Duration) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.ingest_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != LOCK_FILE)
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|elapsed| elapsed > age)
            })
            .map(|e| e.path())
            .collect()
    }

    /// Read-modify-write of `index.json` under the layout's exclusive lock:
    /// concurrent processes never lose each other's changes. `change`
    /// returns whether it changed anything; nothing is written otherwise.
    pub(crate) fn update_index<T>(
        &self,
        operation: &'static str,
        change: impl FnOnce(&mut LayoutIndex) -> Result<(bool, T)>,
    ) -> Result<T> {
        let lock = self.lock(operation)?;
        let value = self.update_index_locked(operation, change)?;
        // Closing the file releases the lock.
        drop(lock);
        Ok(value)
    }

    /// [`Layout::update_index`] for a caller that already holds the lock.
    pub(crate) fn update_index_locked<T>(
        &self,
        operation: &'static str,
        change: impl FnOnce(&mut LayoutIndex) -> Result<(bool, T)>,
    ) -> Result<T> {
        let exists = self.index_path().exists();
        let mut index = self.read_index()?;
        let (changed, value) = change(&mut index)?;
        if changed || !exists {
            let bytes = index.to_bytes()?;
            self.write_atomic(&self.index_path(), &bytes)
                .map_err(|e| self.file_error(operation, e))?;
        }
        Ok(value)
    }
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
