//! [`Directory`]: an OCI image layout directory as the storage of core's
//! layout engine ([`LayoutBackend`] is that engine over it). Blobs stream
//! to a temporary file that is renamed into place only after the body
//! ended cleanly; small files are replaced atomically, and conditional
//! writes compare under an advisory lock.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use orca_core::layout::{Changed, Condition, Layout, Listed, ObjectStorage, Version};
use orca_core::{Body, Descriptor, Error, Result};

use crate::error::FileError;
use crate::files::Files;

mod staged;
mod write;

use write::still_at;

/// Chunk size for reads and the unit of the writer's queue.
const CHUNK: usize = 1024 * 1024;
/// Chunks in flight between the hashing task and the writing thread.
const QUEUE: usize = 16;

/// An OCI image layout directory as a backend: core's layout engine over
/// a [`Directory`]. Open one with [`crate::open`] or [`crate::LayoutBuilder`].
pub type LayoutBackend = Layout<Directory>;

/// A directory holding an OCI image layout, as object storage for the
/// layout engine. The directory, `oci-layout` and `index.json` are created
/// on first write.
#[derive(Clone)]
pub struct Directory {
    files: Arc<Files>,
}

impl Directory {
    /// The directory at `root` (which may not exist yet), refusing one
    /// that has content but is not a layout of a version orca reads;
    /// `durable: false` skips fsync (faster, for scratch layouts that a
    /// crash may lose).
    pub fn open(root: impl Into<PathBuf>, durable: bool) -> Result<Self> {
        let root = root.into();
        let files = Files {
            place: format!("oci:{}", root.display()),
            root,
            durable,
            seen: Default::default(),
        };
        files.check()?;
        Ok(Directory {
            files: Arc::new(files),
        })
    }

    /// The layout's root directory.
    pub fn root(&self) -> &Path {
        &self.files.root
    }

    /// Runs blocking file work on tokio's blocking pool.
    pub(crate) async fn blocking<T, F>(&self, operation: &'static str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Files) -> Result<T> + Send + 'static,
    {
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || work(&files))
            .await
            .map_err(|e| Error::Backend {
                backend: self.files.place.clone(),
                operation,
                source: Box::new(e),
            })?
    }
}

/// Says, when dropped while `partial` is set, that the partial file there
/// (if it holds anything) is kept for a re-run.
struct KeptIfDropped {
    partial: Option<std::path::PathBuf>,
    digest: String,
    place: String,
}

impl Drop for KeptIfDropped {
    fn drop(&mut self) {
        let Some(partial) = self.partial.take() else {
            return;
        };
        if let Ok(meta) = std::fs::symlink_metadata(&partial)
            && meta.is_file()
            && meta.len() > 0
        {
            orca_core::cleanup::keep(format!(
                "{} bytes of {} in {} (ingest/), kept for a re-run to continue",
                meta.len(),
                self.digest,
                self.place
            ));
        }
    }
}

impl fmt::Display for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.files.place)
    }
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("root", &self.files.root)
            .field("durable", &self.files.durable)
            .finish()
    }
}

/// Streams `len` bytes of `file` from its current position, a chunk per
/// blocking read. A file that ends early simply ends the stream: `Store`
/// reports the short body.
pub fn file_body(file: File, len: u64, place: String) -> Body {
    let chunks = futures::stream::unfold(Some((file, len)), move |state| {
        let place = place.clone();
        async move {
            let (file, left) = state?;
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let read = tokio::task::spawn_blocking(move || read_chunk(file, want)).await;
            let failed = |source: Box<dyn std::error::Error + Send + Sync>| {
                Some((
                    Err(Error::Backend {
                        backend: place.clone(),
                        operation: "read",
                        source,
                    }),
                    None,
                ))
            };
            match read {
                Ok((file, Ok(chunk))) if !chunk.is_empty() => {
                    let left = left - chunk.len() as u64;
                    Some((Ok(chunk), Some((file, left))))
                }
                Ok((_, Ok(_))) => None,
                Ok((_, Err(e))) => failed(Box::new(e)),
                Err(e) => failed(Box::new(e)),
            }
        }
    });
    Body::new(len, chunks)
}

fn read_chunk(mut file: File, want: usize) -> (File, io::Result<Bytes>) {
    let mut buffer = BytesMut::zeroed(want);
    let mut filled = 0;
    while filled < want {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (file, Err(e)),
        }
    }
    buffer.truncate(filled);
    (file, Ok(buffer.freeze()))
}

#[async_trait]
impl ObjectStorage for Directory {
    fn resumable(&self) -> bool {
        true
    }

    async fn read(&self, key: &str, limit: u64) -> Result<Option<(Bytes, Version)>> {
        let key = key.to_owned();
        self.blocking("read", move |files| files.read(&key, limit))
            .await
    }

    async fn read_changed(&self, key: &str, limit: u64, known: &Version) -> Result<Changed> {
        let (key, known) = (key.to_owned(), known.clone());
        self.blocking("read", move |files| {
            if files.unchanged(&key, &known) {
                return Ok(Changed::No);
            }
            Ok(match files.read(&key, limit)? {
                Some((_, version)) if version == known => Changed::No,
                found => Changed::Yes(found),
            })
        })
        .await
    }

    async fn write(&self, key: &str, bytes: Bytes, condition: Condition) -> Result<()> {
        self.write_versioned(key, bytes, condition).await.map(drop)
    }

    async fn write_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        condition: Condition,
    ) -> Result<Option<Version>> {
        let key = key.to_owned();
        self.blocking("write", move |files| {
            files.write_versioned(&key, &bytes, &condition).map(Some)
        })
        .await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.files.root.join(key);
        self.blocking("exists", move |files| match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(files.file_error("exists", FileError::new("inspect", &path, e))),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let prefix = prefix.to_owned();
        self.blocking("list", move |files| files.list(&prefix))
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.files.root.join(key);
        // What is kept beside a layout in directories of its own (a
        // server's upload sessions, `uploads/<id>/`) leaves no empty
        // directory behind; the layout's own directories stay.
        let prune = key.starts_with("uploads/");
        self.blocking("delete", move |files| match fs::remove_file(&path) {
            Ok(()) => {
                files
                    .sync_dir(&path)
                    .map_err(|e| files.file_error("delete", e))?;
                if prune && let Some(parent) = path.parent() {
                    // Fails, harmlessly, while the directory holds more.
                    let _ = fs::remove_dir(parent);
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(files.file_error("delete", FileError::new("remove", &path, e))),
        })
        .await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Body>> {
        let path = self.files.root.join(key);
        let opened = self
            .blocking("fetch", move |files| {
                let failed =
                    |action, e| files.file_error("fetch", FileError::new(action, &path, e));
                let mut file = match File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(failed("open", e)),
                };
                let len = file.metadata().map_err(|e| failed("inspect", e))?.len();
                let range = range.unwrap_or(0..len);
                file.seek(SeekFrom::Start(range.start))
                    .map_err(|e| failed("seek", e))?;
                Ok(Some((file, range.end.saturating_sub(range.start))))
            })
            .await?;
        Ok(opened.map(|(file, len)| file_body(file, len, self.to_string())))
    }

    async fn put_blob(&self, descriptor: &Descriptor, body: Body, offset: u64) -> Result<()> {
        // Dropped part-way (a cancelled copy, an interrupted command), the
        // push leaves what arrived in the blob's partial file for a re-run
        // to continue: said through `orca_core::cleanup`.
        let mut kept = KeptIfDropped {
            partial: Some(self.files.partial_path(&descriptor.digest)),
            digest: descriptor.digest.to_string(),
            place: self.to_string(),
        };
        let written = self.write_blob(descriptor, body, offset).await;
        kept.partial = None;
        written
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        let digest = descriptor.digest.clone();
        self.blocking("partial", move |files| {
            let path = files.partial_path(&digest);
            match File::open(&path) {
                // A partial file another push is writing (or has just
                // published) is not ours to offer.
                Ok(file) => match file.try_lock() {
                    Ok(()) if still_at(&file, &path) => {
                        Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
                    }
                    _ => Ok(0),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(files.file_error("partial", FileError::new("open", &path, e))),
            }
        })
        .await
    }

    async fn read_partial(
        &self,
        descriptor: &Descriptor,
        from: u64,
        to: u64,
    ) -> Result<Option<Body>> {
        let digest = descriptor.digest.clone();
        let place = self.to_string();
        let opened = self
            .blocking("read_partial", move |files| {
                let path = files.partial_path(&digest);
                let failed =
                    |action, e| files.file_error("read_partial", FileError::new(action, &path, e));
                let mut file = match File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(failed("open", e)),
                };
                let held = file.metadata().map_err(|e| failed("inspect", e))?.len();
                let end = held.min(to);
                let start = from.min(end);
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| failed("seek", e))?;
                Ok(Some((file, end - start)))
            })
            .await?;
        Ok(opened.map(|(file, len)| file_body(file, len, place)))
    }

    fn adopts(&self) -> bool {
        true
    }

    fn appends(&self) -> bool {
        true
    }

    async fn append(
        &self,
        key: &str,
        offset: u64,
        body: futures::stream::BoxStream<'static, Result<Bytes>>,
    ) -> Result<u64> {
        self.append_object(key, offset, body).await
    }

    async fn publish(&self, key: &str, descriptor: &Descriptor) -> Result<bool> {
        self.publish_object(key, descriptor).await
    }

    async fn adopt(&self, from: &str, key: &str, size: u64) -> Result<bool> {
        let source = Path::new(from).join(key);
        let target = self.files.root.join(key);
        self.blocking("mount", move |files| {
            // Only a regular file of the right size is taken; a link
            // elsewhere (or across filesystems) is declined, and the blob
            // moves the ordinary way.
            match fs::symlink_metadata(&source) {
                Ok(meta) if meta.is_file() && meta.len() == size => {}
                _ => return Ok(false),
            }
            if let Some(dir) = target.parent() {
                fs::create_dir_all(dir)
                    .map_err(|e| files.file_error("mount", FileError::new("create", dir, e)))?;
            }
            match fs::hard_link(&source, &target) {
                Ok(()) => files
                    .sync_dir(&target)
                    .map(|()| true)
                    .map_err(|e| files.file_error("mount", e)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(true),
                Err(_) => Ok(false),
            }
        })
        .await
    }

    async fn clean_staging(&self, age: Duration) -> Result<usize> {
        self.blocking("gc", move |files| Ok(files.remove_stale_temp_files(age)))
            .await
    }
}
