//! [`Bucket`]: an OCI image layout under a prefix of an object store, as
//! the storage of core's layout engine ([`S3Backend`] is that engine over
//! it). Small objects are read whole with their ETag and written with
//! `If-None-Match: *` or `If-Match: <etag>`: the compare-and-swap every
//! tag change rests on. Blobs are staged (see `upload`).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion,
};
use orca_core::layout::{Changed, Condition, Layout, Level, Listed, ObjectStorage, Version};
use orca_core::{Body, Descriptor, Error, Result};

use crate::error::convert;

/// S3's smallest part (except the last).
const MIN_PART: usize = 5 * 1024 * 1024;
pub(crate) const DEFAULT_PART: usize = 8 * 1024 * 1024;
/// Parts held at once (filling or in flight), across all the uploads of
/// one bucket handle: upload memory stays within `DEFAULT_CONCURRENCY ×
/// part size` however many blobs move together.
const DEFAULT_CONCURRENCY: usize = 4;
/// The grain of the upload memory budget.
pub(crate) const BUDGET_UNIT: usize = 64 * 1024;

/// The upload memory budget of `parts` parts of `part_size` bytes.
fn budget(parts: usize, part_size: usize) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(
        parts * part_size.div_ceil(BUDGET_UNIT),
    ))
}

/// An OCI image layout under a prefix of an object store: core's layout
/// engine over a [`Bucket`]. Build one with [`crate::S3Builder`].
pub type S3Backend = Layout<Bucket>;

/// A prefix of an object store holding an OCI image layout, as object
/// storage for the layout engine.
#[derive(Clone)]
pub struct Bucket {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// Where blobs are uploaded: the same store, or one with limits for
    /// writes (see [`Bucket::with_writer`]).
    pub(crate) writes: Arc<dyn ObjectStore>,
    pub(crate) multipart: Arc<dyn MultipartStore>,
    prefix: String,
    place: Arc<str>,
    pub(crate) part_size: usize,
    pub(crate) concurrency: usize,
    /// The bytes uploads may hold, in [`BUDGET_UNIT`]s, shared by every
    /// upload of the handle: a part takes its size while it fills and
    /// until it is sent, a small blob its length until its `PUT` ends.
    pub(crate) budget: Arc<tokio::sync::Semaphore>,
    /// Set once the store was seen to honour conditional writes.
    conditional: Arc<tokio::sync::OnceCell<()>>,
    /// Go on without conditional writes (last writer wins).
    unconditional: bool,
}

impl Bucket {
    /// The prefix of the layout in its bucket (empty for the bucket's
    /// root), as [`ObjectStorage::adopt`] takes it from another layout.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Makes sure, once per handle, that the store honours the conditional
    /// writes every guarantee of the layout rests on: a second create of
    /// an object must fail (`If-None-Match: *`), and so must a write
    /// naming a version the object does not have (`If-Match`). A store
    /// that ignores them would make tags, referrers and GC fences last
    /// writer wins without a word, so it is refused.
    async fn check_conditional(&self) -> Result<()> {
        if self.unconditional {
            return Ok(());
        }
        self.conditional
            .get_or_try_init(|| async {
                let key = self.key(&format!("{}/probe-{}", crate::upload::STAGING, crate::upload::nonce()));
                let put = |mode: PutMode| {
                    self.store.put_opts(
                        &key,
                        Bytes::from_static(b"orca conditional-write probe").into(),
                        PutOptions::from(mode),
                    )
                };
                let first = put(PutMode::Create).await;
                let again = put(PutMode::Create).await;
                let wrong = put(PutMode::Update(UpdateVersion {
                    e_tag: Some("\"orca-no-such-version\"".into()),
                    version: None,
                }))
                .await;
                let _ = self.store.delete(&key).await;
                first.map_err(self.err("probe", &key))?;
                let refused = |r: &object_store::Result<_>| {
                    matches!(
                        r,
                        Err(object_store::Error::AlreadyExists { .. }
                            | object_store::Error::Precondition { .. })
                    )
                };
                let ignored = match (refused(&again), refused(&wrong)) {
                    (true, true) => return Ok(()),
                    (false, true) => "If-None-Match",
                    (true, false) => "If-Match",
                    (false, false) => "If-None-Match and If-Match",
                };
                Err(Error::Unsupported {
                    operation: "conditional writes",
                    place: format!(
                        "{}: the server ignores {ignored}, which keep tags, referrers and garbage collection safe beside other writers; use a store that honours them (AWS S3, MinIO and others do), or S3Builder::allow_unconditional_writes if no one else ever writes here",
                        self.place
                    ),
                })
            })
            .await
            .map(drop)
    }

    /// Goes on where the store ignores conditional writes: tags,
    /// referrers and garbage-collection fences become last writer wins.
    /// Only for a store no other process writes to.
    pub fn allow_unconditional_writes(mut self, allow: bool) -> Self {
        self.unconditional = allow;
        self
    }

    /// Reads a small object whole with its version, unless it still has
    /// ETag `unless` (then `Changed::No`, and no bytes move).
    async fn read_unless(&self, key: &str, limit: u64, unless: Option<&str>) -> Result<Changed> {
        let key = self.key(key);
        let options = GetOptions {
            if_none_match: unless.map(str::to_owned),
            ..GetOptions::default()
        };
        let found = match self.store.get_opts(&key, options).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(Changed::Yes(None)),
            Err(object_store::Error::NotModified { .. }) => return Ok(Changed::No),
            Err(e) => return Err(convert(&self.place, "read", format!("object {key}"), e)),
        };
        if found.meta.size > limit {
            return Err(Error::LimitExceeded {
                what: format!("object {key} in {}", self.place),
                limit,
            });
        }
        let version = Version(format!(
            "{}\n{}",
            found.meta.e_tag.as_deref().unwrap_or(""),
            found.meta.version.as_deref().unwrap_or("")
        ));
        let bytes = found.bytes().await.map_err(self.err("read", &key))?;
        Ok(Changed::Yes(Some((bytes, version))))
    }

    /// The layout under `prefix` (may be empty) of `store`; `place` names
    /// it in messages (`s3://bucket/prefix`).
    pub fn new<T: ObjectStore + MultipartStore>(
        store: Arc<T>,
        prefix: &str,
        place: impl Into<String>,
    ) -> Self {
        Bucket {
            store: store.clone(),
            writes: store.clone(),
            multipart: store,
            prefix: prefix.trim_matches('/').to_owned(),
            place: place.into().into(),
            part_size: DEFAULT_PART,
            concurrency: DEFAULT_CONCURRENCY,
            budget: budget(DEFAULT_CONCURRENCY, DEFAULT_PART),
            conditional: Arc::default(),
            unconditional: false,
        }
    }

    /// Uploads blobs through `writer`, the same bucket through another
    /// client (one with time limits fit for writes).
    pub fn with_writer<T: ObjectStore + MultipartStore>(mut self, writer: Arc<T>) -> Self {
        self.writes = writer.clone();
        self.multipart = writer;
        self
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
        self.budget = budget(self.concurrency, self.part_size);
        Ok(self)
    }

    /// Sets how many parts are held at once (at least 1; filling or being
    /// sent), across all the uploads of this handle.
    pub fn with_concurrency(mut self, parts: usize) -> Self {
        self.concurrency = parts.max(1);
        self.budget = budget(self.concurrency, self.part_size);
        self
    }

    /// The object store key of a key relative to the layout.
    pub(crate) fn key(&self, relative: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{}/{relative}", self.prefix))
        }
    }

    pub(crate) fn place(&self) -> &str {
        &self.place
    }

    pub(crate) fn err(
        &self,
        operation: &'static str,
        key: &Path,
    ) -> impl FnOnce(object_store::Error) -> Error + '_ {
        let what = format!("object {key}");
        move |e| convert(&self.place, operation, what, e)
    }
}

/// Zero-copy slices of at most 1 MiB.
fn slices(chunk: Bytes) -> impl Iterator<Item = Bytes> {
    const MAX: usize = 1024 * 1024;
    (0..chunk.len())
        .step_by(MAX)
        .map(move |start| chunk.slice(start..(start + MAX).min(chunk.len())))
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.place)
    }
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
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
impl ObjectStorage for Bucket {
    fn resumable(&self) -> bool {
        // Interrupted multipart uploads are aborted, not continued (yet).
        false
    }

    async fn read(&self, key: &str, limit: u64) -> Result<Option<(Bytes, Version)>> {
        match self.read_unless(key, limit, None).await? {
            Changed::Yes(found) => Ok(found),
            // Asked without a condition, no store answers "not modified".
            Changed::No => Err(Error::Backend {
                backend: self.place.to_string(),
                operation: "read",
                source: format!("{key}: \"not modified\" to an unconditional read").into(),
            }),
        }
    }

    async fn read_changed(&self, key: &str, limit: u64, known: &Version) -> Result<Changed> {
        let (e_tag, version_id) = known.0.split_once('\n').unwrap_or((known.0.as_str(), ""));
        if e_tag.is_empty() {
            // No ETag to ask with: read, and compare a version id if the
            // store gave one (with neither, nothing tells the contents
            // apart, so they count as changed).
            return Ok(match self.read(key, limit).await? {
                Some((_, version)) if !version_id.is_empty() && &version == known => Changed::No,
                found => Changed::Yes(found),
            });
        }
        self.read_unless(key, limit, Some(e_tag)).await
    }

    async fn write(&self, key: &str, bytes: Bytes, condition: Condition) -> Result<()> {
        self.check_conditional().await?;
        let key = self.key(key);
        let mode = match condition {
            Condition::Absent => PutMode::Create,
            Condition::Matches(Version(version)) => {
                let (e_tag, version) = version.split_once('\n').unwrap_or((&version, ""));
                let present = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                PutMode::Update(UpdateVersion {
                    e_tag: present(e_tag),
                    version: present(version),
                })
            }
        };
        self.store
            .put_opts(&key, bytes.into(), PutOptions::from(mode))
            .await
            .map(drop)
            .map_err(self.err("write", &key))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let key = self.key(key);
        match self.store.head(&key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(convert(&self.place, "exists", format!("object {key}"), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let root = self.key("");
        let listed = self.key(prefix.trim_end_matches('/'));
        let objects: Vec<_> = self
            .store
            .list(Some(&listed))
            .try_collect()
            .await
            .map_err(self.err("list", &listed))?;
        Ok(objects
            .into_iter()
            .filter_map(|object| {
                let relative: Vec<_> = object.location.prefix_match(&root)?.collect();
                let key = relative
                    .iter()
                    .map(|part| part.as_ref())
                    .collect::<Vec<_>>()
                    .join("/");
                Some(Listed {
                    key,
                    size: object.size,
                    modified: Some(object.last_modified.into()),
                })
            })
            .collect())
    }

    async fn list_level(&self, prefix: &str) -> Result<Option<Level>> {
        let listed = self.key(prefix.trim_end_matches('/'));
        let found = self
            .store
            .list_with_delimiter(Some(&listed))
            .await
            .map_err(self.err("list", &listed))?;
        let names = |paths: &mut dyn Iterator<Item = &Path>| {
            let mut names: Vec<String> = paths
                .filter_map(|path| path.filename().map(str::to_owned))
                .collect();
            names.sort();
            names
        };
        Ok(Some(Level {
            objects: names(&mut found.objects.iter().map(|object| &object.location)),
            below: names(&mut found.common_prefixes.iter()),
        }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = self.key(key);
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(convert(&self.place, "delete", format!("object {key}"), e)),
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Body>> {
        let key = self.key(key);
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let found = match self.store.get_opts(&key, options).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(convert(&self.place, "fetch", format!("object {key}"), e)),
        };
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
        Ok(Some(Body::new(len, stream)))
    }

    async fn put_blob(&self, descriptor: &Descriptor, body: Body, _offset: u64) -> Result<()> {
        self.upload(descriptor, body).await
    }

    async fn partial(&self, _: &Descriptor) -> Result<u64> {
        Ok(0)
    }

    fn adopts(&self) -> bool {
        true
    }

    async fn adopt(&self, from: &str, key: &str, size: u64) -> Result<bool> {
        // A server-side copy from another prefix of the same bucket.
        let from = from.trim_matches('/');
        let source = if from.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{from}/{key}"))
        };
        match self.store.head(&source).await {
            Ok(meta) if meta.size == size => {}
            Ok(_) | Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(convert(&self.place, "mount", format!("object {source}"), e)),
        }
        let target = self.key(key);
        match self.store.copy_if_not_exists(&source, &target).await {
            Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            // Stores without a conditional copy: a plain copy of content
            // addressed by its digest overwrites only identical bytes.
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => self
                .store
                .copy(&source, &target)
                .await
                .map(|()| true)
                .map_err(self.err("mount", &target)),
            Err(e) => Err(convert(&self.place, "mount", format!("object {target}"), e)),
        }
    }

    async fn clean_staging(&self, age: Duration) -> Result<usize> {
        self.abort_stale_uploads(age).await
    }
}
