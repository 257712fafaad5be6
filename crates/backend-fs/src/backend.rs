//! [`LayoutBackend`]: an OCI image layout directory implementing the core
//! contract. Blobs stream to a temporary file that is renamed into place
//! only after the body ended cleanly; tags live in `index.json`.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use orca_core::layout;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, ListPage, ListQuery, MediaType,
    PushOptions, Referrers, Result, Selector,
};

use crate::error::{FileError, IoContext};
use crate::files::Layout;

mod write;

use write::still_at;

/// Chunk size for reads and the unit of the writer's queue.
const CHUNK: usize = 1024 * 1024;
/// Chunks in flight between the hashing task and the writing thread.
const QUEUE: usize = 16;

/// An OCI image layout directory as a backend.
///
/// Open one with [`LayoutBackend::open`]; the directory, `oci-layout` and
/// `index.json` are created on first write.
#[derive(Clone)]
pub struct LayoutBackend {
    layout: Arc<Layout>,
}

impl LayoutBackend {
    /// Opens the layout at `root` (which may not exist yet), refusing a
    /// directory that has content but is not a layout of a version orca reads.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(root, true)
    }

    /// Like [`LayoutBackend::open`]; `durable: false` skips fsync (faster,
    /// for scratch layouts that a crash may lose).
    pub fn open_with(root: impl Into<PathBuf>, durable: bool) -> Result<Self> {
        let root = root.into();
        let layout = Layout {
            place: format!("oci:{}", root.display()),
            root,
            durable,
        };
        layout.check()?;
        Ok(LayoutBackend {
            layout: Arc::new(layout),
        })
    }

    /// The layout's root directory.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Runs blocking file work on tokio's blocking pool.
    pub(crate) async fn blocking<T, F>(&self, operation: &'static str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> Result<T> + Send + 'static,
    {
        let layout = self.layout.clone();
        tokio::task::spawn_blocking(move || work(&layout))
            .await
            .map_err(|e| Error::Backend {
                backend: self.layout.place.clone(),
                operation,
                source: Box::new(e),
            })?
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            what,
            place: self.layout.place.clone(),
        }
    }
}

impl fmt::Display for LayoutBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.layout.place)
    }
}

impl fmt::Debug for LayoutBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayoutBackend")
            .field("root", &self.layout.root)
            .field("durable", &self.layout.durable)
            .finish()
    }
}

fn kind(descriptor: &Descriptor) -> &'static str {
    if descriptor.media_type.is_manifest() {
        "manifest"
    } else {
        "blob"
    }
}

/// Streams `len` bytes of `file` from its current position, a chunk per
/// blocking read. A file that ends early simply ends the stream: `Store`
/// reports the short body.
pub(crate) fn file_body(file: File, len: u64, place: String) -> Body {
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

impl LayoutBackend {
    fn open_blob(&self, descriptor: &Descriptor) -> Result<(File, u64)> {
        let path = self.layout.blob_path(&descriptor.digest);
        match File::open(&path) {
            Ok(file) => {
                let len = file
                    .metadata()
                    .at("inspect", &path)
                    .map_err(|e| self.layout.file_error("fetch", e))?
                    .len();
                Ok((file, len))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(self.not_found(format!("{} {}", kind(descriptor), descriptor.digest)))
            }
            Err(e) => Err(self
                .layout
                .file_error("fetch", FileError::new("open", &path, e))),
        }
    }

    /// Reads a blob that may be a manifest and returns its descriptor if it
    /// parses as one (used to resolve digests not listed in `index.json`).
    fn manifest_descriptor(
        layout: &Layout,
        digest: &orca_core::Digest,
    ) -> Result<Option<Descriptor>> {
        let path = layout.blob_path(digest);
        let limit = Capabilities::NONE.max_manifest_size;
        let bytes = match File::open(&path) {
            Ok(file) => {
                let mut bytes = Vec::new();
                file.take(limit + 1)
                    .read_to_end(&mut bytes)
                    .at("read", &path)
                    .map_err(|e| layout.file_error("resolve", e))?;
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(layout.file_error("resolve", FileError::new("open", &path, e))),
        };
        if bytes.len() as u64 > limit {
            return Ok(None);
        }
        Ok(layout::as_manifest(digest, bytes.into()).map(|(descriptor, _)| descriptor))
    }
}

#[async_trait]
impl Backend for LayoutBackend {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = layout::capabilities();
        capabilities.resume = true;
        capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        let digest = descriptor.digest.clone();
        self.blocking("exists", move |layout| {
            let path = layout.blob_path(&digest);
            match fs::metadata(&path) {
                Ok(meta) => Ok(meta.is_file()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(layout.file_error("exists", FileError::new("inspect", &path, e))),
            }
        })
        .await
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        let this = self.clone();
        let desc = descriptor.clone();
        let (file, len) = self
            .blocking("fetch", move |_| this.open_blob(&desc))
            .await?;
        Ok(file_body(file, len, self.to_string()))
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        self.blocking("push", |layout| layout.ensure()).await?;
        if !self.exists(descriptor).await? {
            self.write_blob(descriptor, body, options.offset).await?;
        }
        if let Some(tag) = options.tag.clone() {
            self.tag(descriptor, &tag).await?;
        }
        Ok(())
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        let digest = descriptor.digest.clone();
        self.blocking("partial", move |layout| {
            let path = layout.partial_path(&digest);
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
                Err(e) => Err(layout.file_error("partial", FileError::new("open", &path, e))),
            }
        })
        .await
    }

    async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        let desc = descriptor.clone();
        let this = self.clone();
        self.blocking("delete", move |layout| {
            let path = layout.blob_path(&desc.digest);
            // Untag first, so no tag ever points at a missing blob; and
            // hold the lock until the blob is gone, so no tag is added to
            // it in between.
            let _lock = layout.lock("delete")?;
            let listed = if layout.index_path().exists() {
                layout.update_index_locked("delete", |index| {
                    let removed = index.remove_digest(&desc.digest);
                    Ok((removed, removed))
                })?
            } else {
                false
            };
            match fs::remove_file(&path) {
                Ok(()) => layout
                    .sync_dir(&path)
                    .map_err(|e| layout.file_error("delete", e)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && listed => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Err(this.not_found(format!("{} {}", kind(&desc), desc.digest)))
                }
                Err(e) => Err(layout.file_error("delete", FileError::new("remove", &path, e))),
            }
        })
        .await
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        let selector = selector.clone();
        let this = self.clone();
        self.blocking("resolve", move |layout| {
            let index = layout.read_index()?;
            match &selector {
                Selector::Tag(tag) => index
                    .tagged(tag)
                    .ok_or_else(|| this.not_found(format!("tag {tag}"))),
                Selector::Digest(digest) => {
                    if let Some(entry) = index.find(digest)
                        && layout.blob_path(digest).exists()
                    {
                        return Ok(entry.plain());
                    }
                    LayoutBackend::manifest_descriptor(layout, digest)?
                        .ok_or_else(|| this.not_found(format!("manifest {digest}")))
                }
            }
        })
        .await
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        let desc = descriptor.clone();
        let tag = tag.to_owned();
        let this = self.clone();
        self.blocking("tag", move |layout| {
            layout.update_index("tag", |index| {
                // Under the lock, which delete holds until the blob is gone.
                if !layout.blob_path(&desc.digest).is_file() {
                    return Err(this.not_found(format!("manifest {}", desc.digest)));
                }
                let unchanged = index
                    .resolve_tag(&tag)
                    .is_some_and(|d| d.digest == desc.digest && d.media_type == desc.media_type);
                if !unchanged {
                    index.set_tag(&desc, &tag);
                }
                Ok((!unchanged, ()))
            })
        })
        .await
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        let tag = tag.to_owned();
        let this = self.clone();
        self.blocking("untag", move |layout| {
            let removed = layout.update_index("untag", |index| {
                let removed = index.remove_tag(&tag);
                Ok((removed, removed))
            })?;
            if removed {
                Ok(())
            } else {
                Err(this.not_found(format!("tag {tag}")))
            }
        })
        .await
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        let (tag, expected, new) = (tag.to_owned(), expected.cloned(), new.cloned());
        let this = self.clone();
        self.blocking("swap_tag", move |layout| {
            // Under the index lock, so the checks and the change are one step.
            let place = this.to_string();
            layout.update_index("swap_tag", |index| {
                if let Some(new) = &new
                    && !layout.blob_path(&new.digest).is_file()
                {
                    return Err(this.not_found(format!("manifest {}", new.digest)));
                }
                index
                    .swap_tag(&tag, expected.as_ref(), new.as_ref(), &place)
                    .map(|()| (true, ()))
            })
        })
        .await
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let query = query.clone();
        self.blocking("tags", move |layout| {
            let tags = layout.read_index()?.tags();
            Ok(ListPage::slice(&tags, &query))
        })
        .await
    }

    async fn referrers(&self, _: &Descriptor, _: Option<&MediaType>) -> Result<Referrers> {
        Err(Error::Unsupported {
            operation: "referrers",
            place: self.to_string(),
        })
    }

    async fn mount(&self, _: &Descriptor, _: &str) -> Result<bool> {
        Err(Error::Unsupported {
            operation: "mount",
            place: self.to_string(),
        })
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        let this = self.clone();
        let desc = descriptor.clone();
        let start = range.start;
        let file = self
            .blocking("fetch_range", move |layout| {
                let (mut file, len) = this.open_blob(&desc)?;
                if range.end > len || range.start > range.end {
                    return Err(Error::InvalidInput {
                        what: format!("range {}..{}", range.start, range.end),
                        reason: format!("{} has {len} bytes", desc.digest),
                    });
                }
                file.seek(SeekFrom::Start(start))
                    .at("seek", &layout.blob_path(&desc.digest))
                    .map_err(|e| layout.file_error("fetch_range", e))?;
                Ok(file)
            })
            .await?;
        Ok(file_body(file, range.end - range.start, self.to_string()))
    }

    async fn catalog(&self, _: &ListQuery) -> Result<ListPage> {
        Err(Error::Unsupported {
            operation: "catalog",
            place: self.to_string(),
        })
    }
}
