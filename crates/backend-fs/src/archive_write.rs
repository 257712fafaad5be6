//! [`ArchiveWriter`]: an `oci-archive` or `docker-archive` tar written as a
//! backend. Every pushed blob and manifest streams straight into a
//! temporary tar next to the destination (a push that arrives while
//! another is writing is spooled to its own temporary file and appended
//! after, so sources keep flowing); tags are kept in memory. Only
//! [`ArchiveWriter::finish`] writes `oci-layout`, `index.json` (and, for a
//! docker-archive, `manifest.json`) and renames the tar into place. An
//! archive dropped unfinished — a failed or cancelled copy — leaves no
//! file behind. A push whose body fails is cut back out of the tar.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use orca_core::layout;
use orca_core::{Body, Descriptor, Digest, Error, MediaType, Platform, Result};

use crate::archive::Span;
use crate::backend::file_body;
use crate::docker_archive::MANIFEST_JSON;
use crate::error::{FileError, IoContext};
use crate::files::Flusher;

mod backend;
mod listing;
mod tar;

use tar::{BLOCK, header, header_len};

/// Which kind of archive to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchiveFormat {
    /// An OCI image layout in a tar (`oci-archive`).
    Oci,
    /// The `docker save` format (`docker-archive`), which also carries the
    /// OCI layout.
    Docker,
}

/// What the tar holds so far.
struct Written {
    span: Span,
    media_type: MediaType,
    /// For manifests: their children (config and layers, or members).
    names: Vec<Descriptor>,
}

#[derive(Default)]
struct State {
    content: HashMap<Digest, Written>,
    /// `(repository, tag)` → manifest.
    tags: BTreeMap<(Option<String>, String), Descriptor>,
    finished: bool,
}

/// The tar being written; `committed` is where the last whole entry ends.
struct Out {
    file: Arc<File>,
    committed: u64,
    /// Every write to the file holds this, and writes only while the
    /// number in it is its entry's: an entry whose push was cancelled may
    /// leave a write running on the blocking pool, and it must neither
    /// interleave with the next entry nor land after it.
    gate: Arc<Mutex<u64>>,
}

struct Inner {
    target: PathBuf,
    temp: PathBuf,
    format: ArchiveFormat,
    place: String,
    platform: Platform,
    durable: bool,
    out: tokio::sync::Mutex<Out>,
    state: Mutex<State>,
    spools: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Renamed away when finished; otherwise nothing is left behind.
        let _ = fs::remove_file(&self.temp);
    }
}

/// An image archive being written. Cheap to clone; all clones write the
/// same archive.
#[derive(Clone)]
pub struct ArchiveWriter {
    inner: Arc<Inner>,
    repository: Option<String>,
}

/// Temporary files younger than this are never taken for left over.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

impl ArchiveWriter {
    /// Starts an archive that will appear at `path` when finished,
    /// replacing whatever is there then.
    pub fn create(path: impl Into<PathBuf>, format: ArchiveFormat) -> Result<Self> {
        let target: PathBuf = path.into();
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::InvalidInput {
                what: format!("archive path {}", target.display()),
                reason: "it names no file".into(),
            })?;
        remove_stale(&target, &name);
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let temp = target.with_file_name(format!(
            ".{name}.orca-{}-{}.tmp",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let place = format!(
            "{}:{}",
            match format {
                ArchiveFormat::Oci => "oci-archive",
                ArchiveFormat::Docker => "docker-archive",
            },
            target.display()
        );
        let file = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&temp)
            .at("create", &temp)
            .map_err(|e| e.into_core(&place, "create"))?;
        // Held while the writer lives: it tells other writers the file is
        // not left over.
        file.lock()
            .at("lock", &temp)
            .map_err(|e| e.into_core(&place, "create"))?;
        Ok(ArchiveWriter {
            inner: Arc::new(Inner {
                target,
                temp,
                format,
                place,
                platform: Platform::new("linux", "amd64"),
                durable: true,
                out: tokio::sync::Mutex::new(Out {
                    file: Arc::new(file),
                    committed: 0,
                    gate: Arc::new(Mutex::new(0)),
                }),
                state: Mutex::new(State::default()),
                spools: AtomicU64::new(0),
            }),
            repository: None,
        })
    }

    /// A view whose tags are `repository:tag` names (docker-archive
    /// `RepoTags`, and the containerd name annotation in `index.json`).
    pub fn repository(&self, repository: &str) -> Self {
        ArchiveWriter {
            inner: self.inner.clone(),
            repository: Some(repository.to_owned()),
        }
    }

    /// The destination path.
    pub fn path(&self) -> &Path {
        &self.inner.target
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change under the lock is a single insert or remove.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn file_error(&self, operation: &'static str, e: FileError) -> Error {
        e.into_core(&self.inner.place, operation)
    }

    fn joined(&self, operation: &'static str, e: tokio::task::JoinError) -> Error {
        Error::Backend {
            backend: self.inner.place.clone(),
            operation,
            source: Box::new(e),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.state().finished {
            return Err(Error::InvalidInput {
                what: self.to_string(),
                reason: "the archive is already finished".into(),
            });
        }
        Ok(())
    }

    /// Streams `body` into the tar as entry `name`, directly when the tar
    /// is free and through a spool file when another push is writing, and
    /// records it (while the tar is still held, so `finish` sees every
    /// entry a push reported written).
    async fn write_entry(
        &self,
        name: &str,
        body: Body,
        record: impl FnOnce(Span) + Send,
    ) -> Result<()> {
        let body = match self.inner.out.try_lock() {
            Ok(mut out) => {
                self.check_open()?;
                let span = self.write_direct(&mut out, name, body).await?;
                record(span);
                return Ok(());
            }
            Err(_) => body,
        };
        let spool = self.inner.temp.with_extension(format!(
            "spool-{}",
            self.inner.spools.fetch_add(1, Ordering::Relaxed)
        ));
        let _remove = crate::files::RemoveOnDrop(Some(spool.clone()));
        // Created new: a file or symlink planted at the name is refused.
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&spool)
            .at("create", &spool)
            .map_err(|e| self.file_error("push", e))?;
        let file = Arc::new(file);
        let size = body.len();
        self.pump(&file, &spool, body, None).await?;
        let spooled = File::open(&spool)
            .at("open", &spool)
            .map_err(|e| self.file_error("push", e))?;
        let body = file_body(spooled, size, self.to_string());
        let mut out = self.inner.out.lock().await;
        self.check_open()?;
        let span = self.write_direct(&mut out, name, body).await?;
        record(span);
        Ok(())
    }

    /// Writes the chunks of `body` to `file` at its current position; for
    /// the tar, through its gate as entry `epoch`. One chunk is written
    /// while the next is read (and hashed), in order.
    async fn pump(
        &self,
        file: &Arc<File>,
        path: &Path,
        mut body: Body,
        gate: Option<(&Arc<Mutex<u64>>, u64)>,
    ) -> Result<u64> {
        let mut written = 0u64;
        let mut flusher = self
            .inner
            .durable
            .then(|| Flusher::start(file, body.len()))
            .flatten();
        let mut writing: Option<tokio::task::JoinHandle<std::result::Result<(), FileError>>> = None;
        loop {
            let chunk = body.next().await.transpose();
            if let Some(previous) = writing.take() {
                previous
                    .await
                    .map_err(|e| self.joined("push", e))?
                    .map_err(|e| self.file_error("push", e))?;
            }
            let Some(chunk) = chunk? else {
                // A flush that failed fails the push: the final fsync
                // would not hear of it again.
                if let Some(flusher) = flusher {
                    let place = path.to_owned();
                    tokio::task::spawn_blocking(move || flusher.finish().at("sync", &place))
                        .await
                        .map_err(|e| self.joined("push", e))?
                        .map_err(|e| self.file_error("push", e))?;
                }
                return Ok(written);
            };
            written += chunk.len() as u64;
            if let Some(flusher) = &mut flusher {
                flusher.wrote(chunk.len());
            }
            let (file, path) = (file.clone(), path.to_owned());
            let gate = gate.map(|(g, epoch)| (g.clone(), epoch));
            writing = Some(tokio::task::spawn_blocking(move || {
                gated(gate.as_ref(), || {
                    (&*file).write_all(&chunk).at("write", &path)
                })
            }));
        }
    }

    /// Writes one whole entry at the end of the committed tar; anything a
    /// cancelled or failed entry left after that point is cut off first.
    async fn write_direct(&self, out: &mut Out, name: &str, body: Body) -> Result<Span> {
        let start = out.committed;
        let size = body.len();
        let header = header(name, size)?;
        let file = out.file.clone();
        let temp = self.inner.temp.clone();
        let gate = out.gate.clone();
        // A new entry: earlier entries' late writes are shut out, and
        // whatever they left past the committed end is cut off.
        let epoch = tokio::task::spawn_blocking(move || -> std::result::Result<u64, FileError> {
            let mut current = gate.lock().unwrap_or_else(|p| p.into_inner());
            *current += 1;
            file.set_len(start).at("truncate", &temp)?;
            (&*file).seek(SeekFrom::Start(start)).at("seek", &temp)?;
            (&*file).write_all(&header).at("write", &temp)?;
            Ok(*current)
        })
        .await
        .map_err(|e| self.joined("push", e))?
        .map_err(|e| self.file_error("push", e))?;
        let offset = start + header_len(name);
        let written = self
            .pump(&out.file, &self.inner.temp, body, Some((&out.gate, epoch)))
            .await?;
        if written != size {
            return Err(Error::SizeMismatch {
                what: format!("archive entry {name}"),
                place: self.to_string(),
                expected: size,
                actual: written,
            });
        }
        let padding = (BLOCK - size % BLOCK) % BLOCK;
        if padding > 0 {
            let file = out.file.clone();
            let temp = self.inner.temp.clone();
            let gate = (out.gate.clone(), epoch);
            tokio::task::spawn_blocking(move || {
                gated(Some(&gate), || {
                    (&*file)
                        .write_all(&vec![0u8; padding as usize])
                        .at("write", &temp)
                })
            })
            .await
            .map_err(|e| self.joined("push", e))?
            .map_err(|e| self.file_error("push", e))?;
        }
        out.committed = offset + size + padding;
        Ok(Span { offset, size })
    }

    /// Finishes the archive: writes its index files and moves it into
    /// place. Every clone and view is finished with it.
    pub async fn finish(&self) -> Result<()> {
        let mut out = self.inner.out.lock().await;
        let (index, listing) = {
            let mut state = self.state();
            if state.finished {
                return Err(Error::InvalidInput {
                    what: self.to_string(),
                    reason: "the archive is already finished".into(),
                });
            }
            state.finished = true;
            (self.index(&state)?, self.listing(&state)?)
        };
        if let Some(listing) = listing {
            self.write_direct(&mut out, MANIFEST_JSON, Body::from_bytes(listing))
                .await?;
        }
        self.write_direct(
            &mut out,
            layout::OCI_LAYOUT_FILE,
            Body::from_bytes(layout::marker()),
        )
        .await?;
        self.write_direct(&mut out, layout::INDEX_FILE, Body::from_bytes(index))
            .await?;
        let file = out.file.clone();
        let (temp, target, durable) = (
            self.inner.temp.clone(),
            self.inner.target.clone(),
            self.inner.durable,
        );
        let end = out.committed;
        let gate = out.gate.clone();
        tokio::task::spawn_blocking(move || -> std::result::Result<(), FileError> {
            let mut current = gate.lock().unwrap_or_else(|p| p.into_inner());
            *current += 1;
            file.set_len(end).at("truncate", &temp)?;
            (&*file).seek(SeekFrom::Start(end)).at("seek", &temp)?;
            (&*file)
                .write_all(&[0u8; 2 * BLOCK as usize])
                .at("write", &temp)?;
            if durable {
                file.sync_all().at("sync", &temp)?;
            }
            fs::rename(&temp, &target).at("rename into place", &target)?;
            // The rename lasts only once its directory is on disk too.
            if durable && let Some(dir) = target.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    dir
                };
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .at("sync directory", dir)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| self.joined("finish", e))?
        .map_err(|e| self.file_error("finish", e))
    }

    /// `index.json`: every tag, and every manifest nothing else names.
    fn key(&self, tag: &str) -> (Option<String>, String) {
        (self.repository.clone(), tag.to_owned())
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            what,
            place: self.to_string(),
        }
    }
}

/// Runs `write` holding the tar's gate, and only while the gate still
/// belongs to entry `epoch` (a write of a cancelled entry that runs late
/// does nothing). Without a gate (a spool file), just runs it.
fn gated(
    gate: Option<&(Arc<Mutex<u64>>, u64)>,
    write: impl FnOnce() -> std::result::Result<(), FileError>,
) -> std::result::Result<(), FileError> {
    match gate {
        None => write(),
        Some((gate, epoch)) => {
            let current = gate.lock().unwrap_or_else(|p| p.into_inner());
            if *current == *epoch { write() } else { Ok(()) }
        }
    }
}

/// Removes the temporary files of archives at `target` that writers no
/// longer running left (killed before they could clean up). A writer holds
/// an exclusive lock on its temporary file while it lives, so a file no one
/// holds (and that is not brand new, as one is between its creation and its
/// lock) is left over, with its spool files; a spool file whose temporary
/// file is gone is too.
fn remove_stale(target: &Path, name: &str) {
    let Some(dir) = target.parent() else { return };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{name}.orca-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let old = |path: &Path| {
        fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER)
    };
    let unheld = |path: &Path| File::open(path).is_ok_and(|file| file.try_lock().is_ok());
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(rest) = entry
            .file_name()
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .map(str::to_owned)
        else {
            continue;
        };
        let stale = if rest.ends_with(".tmp") {
            old(&path) && unheld(&path)
        } else if let Some((stem, _)) = rest.rsplit_once(".spool-") {
            let temp = dir.join(format!("{prefix}{stem}.tmp"));
            old(&path) && (!temp.exists() || unheld(&temp))
        } else {
            false
        };
        if stale {
            let _ = fs::remove_file(path);
        }
    }
}

impl fmt::Display for ArchiveWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.place)?;
        match &self.repository {
            Some(repository) => write!(f, ":{repository}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("place", &self.inner.place)
            .field("repository", &self.repository)
            .finish()
    }
}
