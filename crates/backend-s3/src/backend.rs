//! [`S3Backend`]: the OCI image layout in an object store. Blobs stream in
//! (one `PUT` when small, a multipart upload completed only after the body
//! ended cleanly when large); `index.json` changes are compare-and-swap
//! writes (`If-None-Match: *` to create, `If-Match: <etag>` to update),
//! re-read and re-applied when another writer won.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion, WriteMultipart,
};
use orca_core::layout::{self, LayoutIndex};
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, ListPage, ListQuery, MediaType,
    PushOptions, Referrers, Result, Selector,
};

use crate::error::convert;

/// S3's smallest part (except the last).
const MIN_PART: usize = 5 * 1024 * 1024;
const DEFAULT_PART: usize = 8 * 1024 * 1024;
const DEFAULT_CONCURRENCY: usize = 8;
/// Compare-and-swap attempts on `index.json` before giving up.
const MAX_ATTEMPTS: u32 = 200;

/// An OCI image layout under a prefix of an object store.
#[derive(Clone)]
pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    place: Arc<str>,
    part_size: usize,
    concurrency: usize,
    /// Set once this handle has made sure the marker and index exist.
    initialized: Arc<tokio::sync::OnceCell<()>>,
}

impl S3Backend {
    /// A layout under `prefix` (may be empty) of `store`; `place` names it
    /// in messages (`s3://bucket/prefix`).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, place: impl Into<String>) -> Self {
        S3Backend {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            place: place.into().into(),
            part_size: DEFAULT_PART,
            concurrency: DEFAULT_CONCURRENCY,
            initialized: Arc::default(),
        }
    }

    /// Sets the multipart part size (at least 5 MiB).
    pub fn with_part_size(mut self, bytes: usize) -> Result<Self> {
        if bytes < MIN_PART {
            return Err(Error::InvalidInput {
                what: format!("part size {bytes}"),
                reason: format!("S3 parts are at least {MIN_PART} bytes"),
            });
        }
        self.part_size = bytes;
        Ok(self)
    }

    /// Sets how many parts are uploaded at once (at least 1).
    pub fn with_concurrency(mut self, parts: usize) -> Self {
        self.concurrency = parts.max(1);
        self
    }

    pub(crate) fn key(&self, relative: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{}/{relative}", self.prefix))
        }
    }

    pub(crate) fn blob_key(&self, digest: &Digest) -> Path {
        self.key(&layout::blob_path(digest))
    }

    pub(crate) fn place(&self) -> &str {
        &self.place
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn err(
        &self,
        operation: &'static str,
        what: String,
    ) -> impl FnOnce(object_store::Error) -> Error + '_ {
        move |e| convert(&self.place, operation, what, e)
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            what,
            place: self.place.to_string(),
        }
    }

    /// Creates the `oci-layout` marker if missing and checks it if present.
    async fn ensure_marker(&self) -> Result<()> {
        let key = self.key(layout::OCI_LAYOUT_FILE);
        match self.store.get(&key).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(self.err("read", format!("object {key}")))?;
                layout::check_marker(
                    &bytes,
                    &format!("{}/{}", self.place, layout::OCI_LAYOUT_FILE),
                )
            }
            Err(object_store::Error::NotFound { .. }) => {
                let options = PutOptions::from(PutMode::Create);
                match self
                    .store
                    .put_opts(&key, layout::marker().into(), options)
                    .await
                {
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                    Err(e) => Err(convert(
                        &self.place,
                        "create layout",
                        format!("object {key}"),
                        e,
                    )),
                }
            }
            Err(e) => Err(convert(&self.place, "open", format!("object {key}"), e)),
        }
    }

    /// Reads `index.json` with its version; a missing one is empty.
    pub(crate) async fn read_index(&self) -> Result<(LayoutIndex, Option<UpdateVersion>)> {
        let key = self.key(layout::INDEX_FILE);
        match self.store.get(&key).await {
            Ok(found) => {
                let version = UpdateVersion {
                    e_tag: found.meta.e_tag.clone(),
                    version: found.meta.version.clone(),
                };
                let bytes = found
                    .bytes()
                    .await
                    .map_err(self.err("read index", format!("object {key}")))?;
                let index =
                    LayoutIndex::parse(&bytes, &format!("{}/{}", self.place, layout::INDEX_FILE))?;
                Ok((index, Some(version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok((LayoutIndex::new(), None)),
            Err(e) => Err(convert(
                &self.place,
                "read index",
                format!("object {key}"),
                e,
            )),
        }
    }

    /// Makes sure the layout has its marker and an `index.json`, once per
    /// handle (a layout always has an index, as other tools expect).
    async fn ensure_layout(&self) -> Result<()> {
        self.initialized
            .get_or_try_init(|| async {
                self.ensure_marker().await?;
                self.swap_index("create layout", |_| Ok((false, ()))).await
            })
            .await
            .map(drop)
    }

    /// [`S3Backend::swap_index`] on a layout that surely exists.
    pub(crate) async fn update_index<T>(
        &self,
        operation: &'static str,
        change: impl FnMut(&mut LayoutIndex) -> Result<(bool, T)>,
    ) -> Result<T> {
        self.ensure_layout().await?;
        self.swap_index(operation, change).await
    }

    /// Compare-and-swap update of `index.json`: read it with its ETag, apply
    /// `change`, write it only if nobody else did in between, otherwise
    /// start over. `change` says whether it changed anything; a missing
    /// index is written even when nothing changed.
    async fn swap_index<T>(
        &self,
        operation: &'static str,
        mut change: impl FnMut(&mut LayoutIndex) -> Result<(bool, T)>,
    ) -> Result<T> {
        let key = self.key(layout::INDEX_FILE);
        for attempt in 0..MAX_ATTEMPTS {
            let (mut index, version) = self.read_index().await?;
            let (changed, value) = change(&mut index)?;
            if !changed && version.is_some() {
                return Ok(value);
            }
            let mode = match version {
                Some(version) => PutMode::Update(version),
                None => PutMode::Create,
            };
            let bytes = index.to_bytes()?;
            match self
                .store
                .put_opts(&key, bytes.into(), PutOptions::from(mode))
                .await
            {
                Ok(_) => return Ok(value),
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(convert(&self.place, operation, format!("object {key}"), e)),
            }
        }
        Err(Error::Conflict {
            what: format!("{} after {MAX_ATTEMPTS} attempts", layout::INDEX_FILE),
            place: self.place.to_string(),
        })
    }

    /// Streams a body to its blob key. Small bodies are collected and sent
    /// in one `PUT` after they ended cleanly; large ones go as a multipart
    /// upload that is completed only then, and aborted on any error.
    async fn upload(&self, descriptor: &Descriptor, mut body: Body) -> Result<()> {
        let key = self.blob_key(&descriptor.digest);
        let what = format!("blob {} (object {key})", descriptor.digest);
        if body.len() <= self.part_size as u64 {
            let mut chunks = Vec::new();
            while let Some(chunk) = body.next().await {
                chunks.push(chunk?);
            }
            let payload: PutPayload = chunks.into_iter().collect();
            self.store
                .put(&key, payload)
                .await
                .map_err(self.err("push", what))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(self.err("push", what.clone()))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let outcome: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                writer
                    .wait_for_capacity(self.concurrency)
                    .await
                    .map_err(self.err("push", what.clone()))?;
                // Copied into the part buffer, so the caller's chunks are
                // released at once and memory is bounded by the parts in flight.
                writer.write(&chunk);
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => writer
                .finish()
                .await
                .map(drop)
                .map_err(self.err("push", what)),
            Err(e) => {
                // Abandon the upload so no object ever appears at the key.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    async fn get_body(&self, descriptor: &Descriptor, range: Option<Range<u64>>) -> Result<Body> {
        let key = self.blob_key(&descriptor.digest);
        let what = format!("{} {}", kind(descriptor), descriptor.digest);
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let found = self
            .store
            .get_opts(&key, options)
            .await
            .map_err(self.err("fetch", what))?;
        let len = found.range.end - found.range.start;
        let place = self.place.clone();
        let stream = found
            .into_stream()
            .map_err(move |e| Error::Backend {
                backend: place.to_string(),
                operation: "fetch",
                source: Box::new(e),
            })
            // Some stores hand back a whole object as one chunk; slice it
            // (without copying) so consumers see bounded chunks.
            .map_ok(|chunk| futures::stream::iter(slices(chunk).map(Ok)))
            .try_flatten();
        Ok(Body::new(len, stream))
    }

    /// Reads an object that may be a manifest and returns its descriptor if
    /// it parses as one (digests not listed in `index.json`).
    async fn manifest_descriptor(&self, digest: &Digest) -> Result<Option<Descriptor>> {
        let key = self.blob_key(digest);
        let limit = Capabilities::NONE.max_manifest_size;
        let meta = match self.store.head(&key).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(convert(&self.place, "resolve", format!("object {key}"), e)),
        };
        if meta.size > limit {
            return Ok(None);
        }
        let bytes = self
            .store
            .get(&key)
            .await
            .map_err(self.err("resolve", format!("object {key}")))?
            .bytes()
            .await
            .map_err(self.err("resolve", format!("object {key}")))?;
        Ok(layout::as_manifest(digest, bytes).map(|(descriptor, _)| descriptor))
    }
}

/// Zero-copy slices of at most 1 MiB.
fn slices(chunk: Bytes) -> impl Iterator<Item = Bytes> {
    const MAX: usize = 1024 * 1024;
    (0..chunk.len())
        .step_by(MAX)
        .map(move |start| chunk.slice(start..(start + MAX).min(chunk.len())))
}

/// Jittered exponential backoff for compare-and-swap retries, capped.
fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    let jitter = u64::from(std::process::id() ^ attempt.wrapping_mul(2_654_435_761)) % base.max(1);
    Duration::from_millis(base + jitter).min(Duration::from_millis(500))
}

fn kind(descriptor: &Descriptor) -> &'static str {
    if descriptor.media_type.is_manifest() {
        "manifest"
    } else {
        "blob"
    }
}

impl fmt::Display for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.place)
    }
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            // The store's Display names it; its Debug would print the
            // credentials it was built with.
            .field("store", &format_args!("{}", self.store))
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn capabilities(&self) -> Capabilities {
        layout::capabilities()
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        let key = self.blob_key(&descriptor.digest);
        match self.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(convert(&self.place, "exists", format!("object {key}"), e)),
        }
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        self.get_body(descriptor, None).await
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        self.ensure_layout().await?;
        if !self.exists(descriptor).await? {
            self.upload(descriptor, body).await?;
        }
        if let Some(tag) = &options.tag {
            self.tag(descriptor, tag).await?;
        }
        Ok(())
    }

    async fn partial(&self, _: &Descriptor) -> Result<u64> {
        // Interrupted multipart uploads are aborted, not continued (yet).
        Ok(0)
    }

    async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        let what = format!("{} {}", kind(descriptor), descriptor.digest);
        let present = self.exists(descriptor).await?;
        // Untag first, so no tag ever points at a missing blob.
        let listed = self
            .update_index("delete", |index| {
                let removed = index.remove_digest(&descriptor.digest);
                Ok((removed, removed))
            })
            .await?;
        if !present && !listed {
            return Err(self.not_found(what));
        }
        let key = self.blob_key(&descriptor.digest);
        self.store
            .delete(&key)
            .await
            .map_err(self.err("delete", what))
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        let (index, _) = self.read_index().await?;
        match selector {
            Selector::Tag(tag) => index
                .tagged(tag)
                .ok_or_else(|| self.not_found(format!("tag {tag}"))),
            Selector::Digest(digest) => {
                if let Some(entry) = index.find(digest)
                    && self.exists(entry).await?
                {
                    return Ok(entry.plain());
                }
                self.manifest_descriptor(digest)
                    .await?
                    .ok_or_else(|| self.not_found(format!("manifest {digest}")))
            }
        }
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        if !self.exists(descriptor).await? {
            return Err(self.not_found(format!("manifest {}", descriptor.digest)));
        }
        self.update_index("tag", |index| {
            let unchanged = index.resolve_tag(tag).is_some_and(|d| {
                d.digest == descriptor.digest && d.media_type == descriptor.media_type
            });
            if !unchanged {
                index.set_tag(descriptor, tag);
            }
            Ok((!unchanged, ()))
        })
        .await
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        if let Some(new) = new
            && !self.exists(new).await?
        {
            return Err(self.not_found(format!("manifest {}", new.digest)));
        }
        // The comparison is part of the conditional write of index.json.
        let place = self.to_string();
        self.update_index("swap_tag", |index| {
            index
                .swap_tag(tag, expected, new, &place)
                .map(|()| (true, ()))
        })
        .await
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        let removed = self
            .update_index("untag", |index| {
                let removed = index.remove_tag(tag);
                Ok((removed, removed))
            })
            .await?;
        if removed {
            Ok(())
        } else {
            Err(self.not_found(format!("tag {tag}")))
        }
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let (index, _) = self.read_index().await?;
        Ok(ListPage::slice(&index.tags(), query))
    }

    async fn referrers(&self, _: &Descriptor, _: Option<&MediaType>) -> Result<Referrers> {
        Err(Error::Unsupported {
            operation: "referrers",
            place: self.place.to_string(),
        })
    }

    async fn mount(&self, _: &Descriptor, _: &str) -> Result<bool> {
        Err(Error::Unsupported {
            operation: "mount",
            place: self.place.to_string(),
        })
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        if range.is_empty() {
            // An empty HTTP range cannot be expressed; only existence matters.
            if !self.exists(descriptor).await? {
                return Err(self.not_found(format!("{} {}", kind(descriptor), descriptor.digest)));
            }
            return Ok(Body::from_bytes(Bytes::new()));
        }
        self.get_body(descriptor, Some(range)).await
    }

    async fn catalog(&self, _: &ListQuery) -> Result<ListPage> {
        Err(Error::Unsupported {
            operation: "catalog",
            place: self.place.to_string(),
        })
    }
}
