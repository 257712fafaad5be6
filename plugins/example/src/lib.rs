//! An example backend plugin, written from scratch against the
//! `orca_core::Backend` contract: `flatdir:///some/dir` keeps every blob
//! and manifest as a file named by its digest and every tag as a small
//! file holding the manifest's descriptor. It has no compare-and-swap and
//! no Referrers API, so `Store` keeps referrers in fallback-tag indexes
//! for it, as on a plain registry. See README.md for building and using it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, ListPage, ListQuery, MediaType,
    PushOptions, Referrers, Result, Selector,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

orca_plugin_abi::export_backend!(name: "example", scheme: "flatdir", open: open);

/// Opens (and creates) the directory `target` names.
async fn open(target: String, _config: String) -> Result<FlatDir> {
    let root = PathBuf::from(&target);
    for dir in [root.join("content"), root.join("tags")] {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io(&target, "create", &dir, e))?;
    }
    Ok(FlatDir {
        root,
        name: format!("flatdir://{target}"),
    })
}

/// A directory of files named by digest, and of tags.
struct FlatDir {
    root: PathBuf,
    name: String,
}

fn io(place: &str, action: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Backend {
        backend: place.to_owned(),
        operation: "flatdir",
        source: format!("cannot {action} {}: {e}", path.display()).into(),
    }
}

impl FlatDir {
    fn content(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("content")
            .join(format!("{}-{}", digest.algorithm(), digest.hex()))
    }

    fn tag_path(&self, tag: &str) -> PathBuf {
        self.root.join("tags").join(tag)
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            what,
            place: self.name.clone(),
        }
    }

    fn unsupported(&self, operation: &'static str) -> Error {
        Error::Unsupported {
            operation,
            place: self.name.clone(),
        }
    }

    async fn open_content(&self, digest: &Digest) -> Result<tokio::fs::File> {
        let path = self.content(digest);
        tokio::fs::File::open(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => self.not_found(format!("content {digest}")),
                _ => io(&self.name, "open", &path, e),
            })
    }

    fn body(file: tokio::fs::File, len: u64) -> Body {
        let chunks = futures::stream::unfold(Some((file.take(len), len)), |state| async move {
            let (mut file, left) = state?;
            if left == 0 {
                return None;
            }
            let mut buffer = vec![0u8; 1024 * 1024];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok(Bytes::from(buffer)), Some((file, left - n as u64))))
                }
                Err(e) => Some((
                    Err(Error::Backend {
                        backend: "flatdir".into(),
                        operation: "fetch",
                        source: Box::new(e),
                    }),
                    None,
                )),
            }
        });
        Body::new(len, chunks)
    }
}

impl fmt::Display for FlatDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for FlatDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlatDir").field("root", &self.root).finish()
    }
}

#[async_trait]
impl Backend for FlatDir {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::NONE;
        capabilities.delete = true;
        capabilities.untag = true;
        capabilities.fetch_range = true;
        capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        Ok(self.stat(descriptor).await?.is_some())
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.content(&descriptor.digest)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(
                &self.name,
                "inspect",
                &self.content(&descriptor.digest),
                e,
            )),
        }
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        let file = self.open_content(&descriptor.digest).await?;
        let len = file
            .metadata()
            .await
            .map(|m| m.len())
            .unwrap_or(descriptor.size);
        Ok(Self::body(file, len))
    }

    async fn push(
        &self,
        descriptor: &Descriptor,
        mut body: Body,
        options: &PushOptions,
    ) -> Result<()> {
        let target = self.content(&descriptor.digest);
        if !self.exists(descriptor).await? {
            // Written beside, renamed into place only once the body ended
            // cleanly: a failed push publishes nothing.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let temp = target.with_extension(format!("partial-{}-{n}", std::process::id()));
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| io(&self.name, "create", &temp, e))?;
            let mut failure = None;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => {
                        if let Err(e) = file.write_all(&chunk).await {
                            failure = Some(io(&self.name, "write", &temp, e));
                            break;
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if failure.is_none()
                && let Err(e) = file.flush().await
            {
                failure = Some(io(&self.name, "write", &temp, e));
            }
            drop(file);
            if let Some(e) = failure {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(e);
            }
            tokio::fs::rename(&temp, &target)
                .await
                .map_err(|e| io(&self.name, "publish", &target, e))?;
        }
        if let Some(tag) = &options.tag {
            self.tag(descriptor, tag).await?;
        }
        Ok(())
    }

    async fn partial(&self, _: &Descriptor) -> Result<u64> {
        Ok(0)
    }

    async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        // Tags of the manifest go first.
        for tag in self.tags(&ListQuery::all()).await?.entries {
            if let Ok(found) = self.resolve(&Selector::Tag(tag.clone())).await
                && found.digest == descriptor.digest
            {
                let _ = tokio::fs::remove_file(self.tag_path(&tag)).await;
            }
        }
        let path = self.content(&descriptor.digest);
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    self.not_found(format!("content {}", descriptor.digest))
                }
                _ => io(&self.name, "remove", &path, e),
            })
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        match selector {
            Selector::Tag(tag) => {
                let path = self.tag_path(tag);
                let bytes = tokio::fs::read(&path).await.map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => self.not_found(format!("tag {tag}")),
                    _ => io(&self.name, "read", &path, e),
                })?;
                tag_file(&bytes, &self.name)
            }
            Selector::Digest(digest) => {
                let mut file = self.open_content(digest).await?;
                let mut bytes = Vec::new();
                (&mut file)
                    .take(Capabilities::NONE.max_manifest_size + 1)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(|e| io(&self.name, "read", &self.content(digest), e))?;
                let raw = orca_core::RawManifest::detect(bytes, orca_core::Schema1::Refuse)
                    .map_err(|_| self.not_found(format!("manifest {digest}")))?;
                let mut descriptor = raw.descriptor();
                descriptor.digest = digest.clone();
                Ok(descriptor)
            }
        }
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        if !self.exists(descriptor).await? {
            return Err(self.not_found(format!("manifest {}", descriptor.digest)));
        }
        let path = self.tag_path(tag);
        let temp = path.with_extension("new");
        let text = format!(
            "{}\n{}\n{}\n",
            descriptor.media_type, descriptor.digest, descriptor.size
        );
        tokio::fs::write(&temp, text)
            .await
            .map_err(|e| io(&self.name, "write", &temp, e))?;
        tokio::fs::rename(&temp, &path)
            .await
            .map_err(|e| io(&self.name, "write", &path, e))
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        let path = self.tag_path(tag);
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => self.not_found(format!("tag {tag}")),
                _ => io(&self.name, "remove", &path, e),
            })
    }

    async fn swap_tag(&self, _: &str, _: Option<&Digest>, _: Option<&Descriptor>) -> Result<()> {
        Err(self.unsupported("swap_tag"))
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let dir = self.root.join("tags");
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(|e| io(&self.name, "list", &dir, e))?;
        let mut tags = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io(&self.name, "list", &dir, e))?
        {
            if let Some(name) = entry.file_name().to_str()
                && !name.ends_with(".new")
            {
                tags.push(name.to_owned());
            }
        }
        tags.sort();
        Ok(ListPage::slice(&tags, query))
    }

    async fn referrers(&self, _: &Descriptor, _: Option<&MediaType>) -> Result<Referrers> {
        Err(self.unsupported("referrers"))
    }

    async fn mount(&self, _: &Descriptor, _: &str) -> Result<bool> {
        Err(self.unsupported("mount"))
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        let mut file = self.open_content(&descriptor.digest).await?;
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(|e| io(&self.name, "seek", &self.content(&descriptor.digest), e))?;
        Ok(Self::body(file, range.end.saturating_sub(range.start)))
    }

    async fn catalog(&self, _: &ListQuery) -> Result<ListPage> {
        Err(self.unsupported("catalog"))
    }
}

/// A tag file: media type, digest and size, a line each.
fn tag_file(bytes: &[u8], place: &str) -> Result<Descriptor> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let (Some(media_type), Some(digest), Some(size)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(Error::InvalidInput {
            what: format!("tag file in {place}"),
            reason: "it is not three lines".into(),
        });
    };
    let size = size.parse().map_err(|_| Error::InvalidInput {
        what: format!("tag file in {place}"),
        reason: format!("size {size:?} is not a number"),
    })?;
    Ok(Descriptor::new(
        MediaType::new(media_type),
        Digest::parse(digest)?,
        size,
    ))
}
