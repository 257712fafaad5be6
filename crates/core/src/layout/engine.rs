//! [`Layout`]: the one layout engine. Tags, untag, compare-and-swap of
//! tags, delete, resolve and garbage collection are written here once,
//! over an [`ObjectStorage`]; the directory and object-store backends
//! differ only in how they store objects.
//!
//! Every change to `index.json` is a read, a change and a conditional
//! write, retried when another writer won. A tag is checked against its
//! manifest after it is written (and taken back if the manifest is gone),
//! and a delete sweeps `index.json` again after removing the blob, so a
//! tag racing a delete never outlives the manifest. Once a garbage
//! collection has run, a tag also checks the graph under its manifest
//! against the collection's fence and after writing (see `gc`).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::OnceCell;

use super::fence;
use super::storage::{Changed, Condition, ObjectStorage, Version};
use super::{INDEX_FILE, LayoutIndex, OCI_LAYOUT_FILE, blob_path, capabilities, check_marker};
use crate::backend::{Backend, ListPage, ListQuery, PushOptions, Referrers};
use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, Digester, MediaType, RawManifest, Selector};

pub(super) use crate::retry::{CAS_ATTEMPTS as MAX_ATTEMPTS, backoff};
/// The longest `index.json` orca reads.
const INDEX_LIMIT: u64 = 64 * 1024 * 1024;

/// An `index.json` as read, with its version (the index `None` while a
/// writer has taken it).
type Seen = (Version, Option<Arc<LayoutIndex>>);

/// An OCI image layout kept in an [`ObjectStorage`], as a [`Backend`].
/// Clones share the storage, what was read and the queue of tags.
#[derive(Debug)]
pub struct Layout<S> {
    storage: Arc<S>,
    /// The storage's name, for errors and for what this process saw of
    /// its collections.
    pub(super) place: Arc<str>,
    /// Set once this handle (or a clone) made sure the marker and index exist.
    ready: Arc<OnceCell<()>>,
    /// The `index.json` last read, with its version: asked about again on
    /// every read, and read whole only when it changed.
    known: Arc<Mutex<Option<Seen>>>,
    /// Tags waiting to be written together (see `commit`).
    pub(super) queue: Arc<Mutex<super::commit::Queue>>,
}

impl<S: ObjectStorage> Layout<S> {
    /// The layout kept in `storage`.
    pub fn new(storage: S) -> Self {
        Layout {
            place: storage.to_string().into(),
            storage: Arc::new(storage),
            ready: Arc::default(),
            known: Arc::default(),
            queue: Arc::default(),
        }
    }

    /// The storage the layout is kept in.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub(super) fn place(&self) -> String {
        self.place.to_string()
    }

    pub(super) fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            what,
            place: self.place(),
        }
    }

    /// Reads `index.json` with its version; a missing one is empty.
    pub(super) async fn read_index(&self) -> Result<(Arc<LayoutIndex>, Option<Version>)> {
        self.read_index_kept(true).await
    }

    /// [`Layout::read_index`]; `keep` says whether what is read is kept
    /// for the next read to ask about (a writer about to change it does
    /// not keep it, so it can take the index without a copy).
    pub(super) async fn read_index_kept(
        &self,
        keep: bool,
    ) -> Result<(Arc<LayoutIndex>, Option<Version>)> {
        let known = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let found = match known {
            Some((version, index)) => {
                match self
                    .storage
                    .read_changed(INDEX_FILE, INDEX_LIMIT, &version)
                    .await?
                {
                    Changed::No if !keep => {
                        // A writer takes the index it is about to change
                        // (no copy), leaving the version to ask about; it
                        // keeps what it writes when the storage says what
                        // version that is.
                        drop(index);
                        let taken = self
                            .known
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .as_mut()
                            .filter(|(v, _)| *v == version)
                            .and_then(|(_, index)| index.take());
                        match taken {
                            Some(index) => return Ok((index, Some(version))),
                            None => self.storage.read(INDEX_FILE, INDEX_LIMIT).await?,
                        }
                    }
                    Changed::No => match index {
                        Some(index) => return Ok((index, Some(version))),
                        // Taken by a writer: read it whole.
                        None => self.storage.read(INDEX_FILE, INDEX_LIMIT).await?,
                    },
                    Changed::Yes(found) => found,
                }
            }
            None => self.storage.read(INDEX_FILE, INDEX_LIMIT).await?,
        };
        let (index, version) = match found {
            Some((bytes, version)) => (
                Arc::new(LayoutIndex::parse(&bytes, &format!("{self}/{INDEX_FILE}"))?),
                Some(version),
            ),
            None => (Arc::new(LayoutIndex::new()), None),
        };
        if keep {
            let seen = version.clone().map(|v| (v, Some(index.clone())));
            *self.known.lock().unwrap_or_else(PoisonError::into_inner) = seen;
        }
        Ok((index, version))
    }

    /// Makes sure the layout has its marker (checking one that is there)
    /// and an `index.json`, once per handle.
    pub(super) async fn ready(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                let marker = format!("{self}/{OCI_LAYOUT_FILE}");
                match self.storage.read(OCI_LAYOUT_FILE, 64 * 1024).await? {
                    Some((bytes, _)) => check_marker(&bytes, &marker)?,
                    None => match self
                        .storage
                        .write(OCI_LAYOUT_FILE, super::marker(), Condition::Absent)
                        .await
                    {
                        Ok(()) => {}
                        // Another writer created it first: it must be a marker we read.
                        Err(Error::Conflict { .. }) => {
                            let bytes = self.storage.read(OCI_LAYOUT_FILE, 64 * 1024).await?;
                            check_marker(bytes.map(|(b, _)| b).as_deref().unwrap_or(b""), &marker)?;
                        }
                        Err(e) => return Err(e),
                    },
                }
                self.swap_index("create layout", |_| Ok((false, ()))).await
            })
            .await
            .map(drop)
    }

    /// Compare-and-swap update of `index.json` on a layout that surely
    /// exists: read it with its version, apply `change`, write it only if
    /// nobody else did in between, otherwise start over. `change` says
    /// whether it changed anything; nothing is written when not.
    pub(super) async fn update_index<T>(
        &self,
        operation: &'static str,
        change: impl FnMut(&mut LayoutIndex) -> Result<(bool, T)>,
    ) -> Result<T> {
        self.ready().await?;
        self.swap_index(operation, change).await
    }

    /// [`Layout::update_index`], also writing a missing index when
    /// `change` changed nothing.
    async fn swap_index<T>(
        &self,
        operation: &'static str,
        mut change: impl FnMut(&mut LayoutIndex) -> Result<(bool, T)>,
    ) -> Result<T> {
        for attempt in 0..MAX_ATTEMPTS {
            let (index, version) = self.read_index_kept(false).await?;
            let index = Arc::unwrap_or_clone(index);
            match self.try_swap(index, version, &mut change).await {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => tokio::time::sleep(backoff(attempt)).await,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            what: format!("{INDEX_FILE} ({operation}) after {MAX_ATTEMPTS} attempts"),
            place: self.place(),
        })
    }

    /// One attempt: `None` when another writer changed the index since
    /// `version` was read.
    pub(super) async fn try_swap<T>(
        &self,
        mut index: LayoutIndex,
        version: Option<Version>,
        change: &mut impl FnMut(&mut LayoutIndex) -> Result<(bool, T)>,
    ) -> Result<Option<T>> {
        let (changed, value) = change(&mut index)?;
        if !changed && version.is_some() {
            return Ok(Some(value));
        }
        let condition = match version {
            Some(version) => Condition::Matches(version),
            None => Condition::Absent,
        };
        match self.write_index(index, condition).await {
            Ok(true) => Ok(Some(value)),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `index` if `condition` holds (`false` when another writer
    /// won), and keeps it as the index last read when the storage says
    /// what version it wrote.
    pub(super) async fn write_index(
        &self,
        index: LayoutIndex,
        condition: Condition,
    ) -> Result<bool> {
        match self
            .storage
            .write_versioned(INDEX_FILE, index.to_bytes()?, condition)
            .await
        {
            Ok(version) => {
                if let Some(version) = version {
                    *self.known.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((version, Some(Arc::new(index))));
                }
                Ok(true)
            }
            Err(Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the blob is stored.
    pub(super) async fn has(&self, digest: &Digest) -> Result<bool> {
        Ok(self.size(digest).await?.is_some())
    }

    /// The size of a stored blob. What this process sees present is seen
    /// after its first look at the layout's collections.
    pub(super) async fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        if !fence::looked(&self.place) {
            let (index, _) = self.read_index().await?;
            fence::note_first_look(&self.place, &index);
        }
        self.storage.size(&blob_path(digest)).await
    }

    /// Reads a small blob whole and checks it against its digest; `None`
    /// when it is absent or longer than `limit`.
    pub(super) async fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Option<Bytes>> {
        let bytes = match self.storage.read(&blob_path(digest), limit).await {
            Ok(Some((bytes, _))) => bytes,
            Ok(None) | Err(Error::LimitExceeded { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut digester = Digester::new(digest.algorithm());
        digester.update(&bytes);
        let actual = digester.finish();
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.clone(),
                actual,
                place: self.place(),
            });
        }
        Ok(Some(bytes))
    }

    /// Refuses a tag on (or the push of) a manifest a garbage collection
    /// is removing right now.
    fn refuse_doomed(&self, index: &LayoutIndex, digest: &Digest) -> Result<()> {
        if index.doomed(digest) {
            return Err(Error::Conflict {
                what: format!(
                    "manifest {digest}: a garbage collection is removing it; push it again when the collection has ended"
                ),
                place: self.place(),
            });
        }
        Ok(())
    }
}

impl<S> Clone for Layout<S> {
    fn clone(&self) -> Self {
        Layout {
            storage: self.storage.clone(),
            place: self.place.clone(),
            ready: self.ready.clone(),
            known: self.known.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<S: ObjectStorage> fmt::Display for Layout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.storage, f)
    }
}

#[async_trait]
impl<S: ObjectStorage> Backend for Layout<S> {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume: self.storage.resumable(),
            mount: self.storage.adopts(),
            batched_tags: true,
            ..capabilities()
        }
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        self.has(&descriptor.digest).await
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        self.size(&descriptor.digest).await
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        self.storage
            .get(&blob_path(&descriptor.digest), None)
            .await?
            .ok_or_else(|| self.not_found(descriptor.label()))
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        if descriptor.media_type.essence() == MediaType::DOCKER_SCHEMA1_SIGNED.as_str() {
            return Err(Error::Unsupported {
                operation: "storing a signed schema-1 manifest (it is named by the digest of its payload, not of its bytes, which an OCI image layout needs; copy it between registries, or ask its publisher for an OCI or Docker schema 2 image)",
                place: self.place(),
            });
        }
        self.ready().await?;
        if descriptor.media_type.is_manifest() {
            let (index, _) = self.read_index().await?;
            self.refuse_doomed(&index, &descriptor.digest)?;
        }
        if !self.has(&descriptor.digest).await? {
            self.storage
                .put_blob(descriptor, body, options.offset)
                .await?;
        }
        let checked = !options.sparse;
        if let Some(tag) = &options.tag {
            let (entry, name) = (descriptor.clone(), tag.clone());
            self.commit("tag", Some(tag), descriptor, None, checked, move |index| {
                Ok(set_tag(index, &entry, &name))
            })
            .await?;
        } else if options.list && descriptor.media_type.is_manifest() {
            let entry = descriptor.clone();
            self.commit("list", None, descriptor, None, checked, move |index| {
                Ok(index.list_untagged(&entry))
            })
            .await?;
        }
        Ok(())
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        self.storage.partial(descriptor).await
    }

    async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        let digest = &descriptor.digest;
        let present = self.has(digest).await?;
        // Untag first, so no tag ever points at a missing blob…
        let remove = |index: &mut LayoutIndex| {
            let removed = index.remove_digest(digest);
            Ok((removed, removed))
        };
        let listed = self.update_index("delete", remove).await?;
        if !present && !listed {
            return Err(self.not_found(descriptor.label()));
        }
        self.storage.delete(&blob_path(digest)).await?;
        // …and sweep again: a tag written between the first sweep and the
        // removal checked a blob that was still there.
        self.update_index("delete", remove).await?;
        Ok(())
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        let (index, _) = self.read_index().await?;
        match selector {
            Selector::Tag(tag) => index
                .tagged(tag)
                .ok_or_else(|| self.not_found(format!("tag {tag}"))),
            Selector::Digest(digest) => {
                if let Some(entry) = index.find(digest)
                    && self.has(digest).await?
                {
                    return Ok(entry.plain());
                }
                // Not a root: read it to learn its media type. What it is
                // when it is no manifest orca reads (schema 1, too large,
                // not JSON) is said, not taken for absence.
                let limit = Capabilities::NONE.max_manifest_size;
                let Some(size) = self.size(digest).await? else {
                    return Err(self.not_found(format!("manifest {digest}")));
                };
                if size > limit {
                    return Err(Error::LimitExceeded {
                        what: format!("manifest {digest} in {}", self.place),
                        limit,
                    });
                }
                let bytes = self
                    .read_blob(digest, limit)
                    .await?
                    .ok_or_else(|| self.not_found(format!("manifest {digest}")))?;
                let what = || format!("manifest {digest} in {}", self.place);
                let raw = RawManifest::detect(bytes, crate::model::Schema1::here()).map_err(
                    |e| match e {
                        Error::Schema1Refused { .. } => Error::Schema1Refused { what: what() },
                        other => other.naming(digest),
                    },
                )?;
                raw.parse().map_err(|e| e.naming(digest))?;
                let mut descriptor = raw.descriptor();
                descriptor.digest = digest.clone();
                Ok(descriptor)
            }
        }
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        let (entry, name) = (descriptor.clone(), tag.to_owned());
        self.commit("tag", Some(tag), descriptor, None, true, move |index| {
            Ok(set_tag(index, &entry, &name))
        })
        .await
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        if self.untag_batched(tag).await? {
            Ok(())
        } else {
            Err(self.not_found(format!("tag {tag}")))
        }
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        let place = self.place();
        let Some(new) = new else {
            // The comparison is part of the conditional write of index.json.
            return self
                .update_index("swap_tag", |index| {
                    index
                        .swap_tag(tag, expected, None, &place)
                        .map(|()| (true, ()))
                })
                .await;
        };
        let (name, from, to) = (tag.to_owned(), expected.cloned(), new.clone());
        self.commit("swap_tag", Some(tag), new, expected, true, move |index| {
            index
                .swap_tag(&name, from.as_ref(), Some(&to), &place)
                .map(|()| true)
        })
        .await
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let (index, _) = self.read_index().await?;
        Ok(index.tag_page(query))
    }

    async fn referrers(&self, _: &Descriptor, _: Option<&MediaType>) -> Result<Referrers> {
        Err(Error::Unsupported {
            operation: "referrers",
            place: self.place(),
        })
    }

    async fn mount(&self, descriptor: &Descriptor, from: &str) -> Result<bool> {
        if !self.storage.adopts() {
            return Err(Error::Unsupported {
                operation: "mount",
                place: self.place(),
            });
        }
        self.ready().await?;
        if self.has(&descriptor.digest).await? {
            return Ok(true);
        }
        self.storage
            .adopt(from, &blob_path(&descriptor.digest), descriptor.size)
            .await
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        let key = blob_path(&descriptor.digest);
        let missing = || self.not_found(descriptor.label());
        let len = self.storage.size(&key).await?.ok_or_else(missing)?;
        if range.end > len || range.start > range.end {
            return Err(Error::InvalidInput {
                what: format!("range {}..{}", range.start, range.end),
                reason: format!("{} has {len} bytes", descriptor.digest),
            });
        }
        if range.is_empty() {
            return Ok(Body::from_bytes(Bytes::new()));
        }
        self.storage
            .get(&key, Some(range))
            .await?
            .ok_or_else(missing)
    }

    async fn catalog(&self, _: &ListQuery) -> Result<ListPage> {
        Err(Error::Unsupported {
            operation: "catalog",
            place: self.place(),
        })
    }
}

/// Points `tag` at `descriptor` in `index`; whether that changed it.
fn set_tag(index: &mut LayoutIndex, descriptor: &Descriptor, tag: &str) -> bool {
    let unchanged = index
        .resolve_tag(tag)
        .is_some_and(|d| d.digest == descriptor.digest && d.media_type == descriptor.media_type);
    if !unchanged {
        index.set_tag(descriptor, tag);
    }
    !unchanged
}
