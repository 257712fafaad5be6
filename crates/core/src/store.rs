//! [`Store`]: the handle every caller holds. It wraps a [`Backend`] and is
//! where the guarantees live: every byte fetched or pushed is verified
//! against its descriptor, manifests are checked before they are stored,
//! unsupported operations are refused from the capabilities, and tags are
//! validated before any backend sees them. It also keeps referrers listable
//! on backends that do not index subjects, through the tag schema of
//! the [`referrers`] module.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::backend::{Backend, PushOptions};
use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::reference::validate_tag;
use crate::model::{Descriptor, MediaType, RawManifest, Selector};
use crate::referrers::{self, Batcher, Change, ReferrerList, Settings, Via};
use crate::verify::{length_checked, verified, verified_once};

mod list;

/// A verifying handle on a backend. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    capabilities: Capabilities,
    place: Arc<str>,
    referrers: Arc<Batcher>,
    referrers_gc: bool,
    referrers_upkeep: bool,
}

impl Store {
    /// Wraps a backend.
    pub fn new(backend: impl Backend) -> Self {
        Store::from_arc(Arc::new(backend))
    }

    /// Wraps a shared backend.
    pub fn from_arc(backend: Arc<dyn Backend>) -> Self {
        let capabilities = backend.capabilities();
        let place = backend.to_string().into();
        Store {
            backend,
            capabilities,
            place,
            referrers: Arc::default(),
            referrers_gc: true,
            referrers_upkeep: true,
        }
    }

    /// Another handle on the same backend that does not share this one's
    /// in-process batching of referrers changes, as a second process would
    /// not.
    #[cfg(feature = "conformance")]
    pub(crate) fn clone_unshared(&self) -> Self {
        Store {
            referrers: Arc::default(),
            ..self.clone()
        }
    }

    /// Whether superseded referrers indexes (tag schema) are deleted once
    /// the tag has moved on; on by default.
    pub fn with_referrers_gc(mut self, gc: bool) -> Self {
        self.referrers_gc = gc;
        self
    }

    /// Whether pushing a manifest with a `subject` (or deleting one) keeps
    /// its subject's referrers index (tag schema) up to date; on by
    /// default. Off only for a copy of a whole bundle's names, whose
    /// indexes come along under their own names (`REPO:sha256-…`) and
    /// must not gain plain `sha256-…` ones beside them.
    pub fn with_referrers_upkeep(mut self, upkeep: bool) -> Self {
        self.referrers_upkeep = upkeep;
        self
    }

    fn referrers_settings(&self) -> Settings {
        Settings {
            gc: self.referrers_gc,
            max: self.capabilities.max_manifest_size,
        }
    }

    /// Whether the backend indexes subjects itself. Read live: a registry
    /// learns it from `OCI-Subject` on the first push of a referrer.
    fn indexes_subjects(&self) -> bool {
        self.backend.capabilities().referrers_api
    }

    /// What the backend supports. Every flag is fixed when the store is
    /// made, except `referrers_api`, which is read live: a registry learns
    /// it from `OCI-Subject` on the first push of a referrer.
    pub fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.capabilities;
        capabilities.referrers_api = self.indexes_subjects();
        capabilities
    }

    fn require(&self, supported: bool, operation: &'static str) -> Result<()> {
        if supported {
            Ok(())
        } else {
            Err(Error::Unsupported {
                operation,
                place: self.place.to_string(),
            })
        }
    }

    fn check_manifest_size(&self, descriptor: &Descriptor) -> Result<()> {
        let limit = self.capabilities.max_manifest_size;
        if descriptor.media_type.is_manifest() && descriptor.size > limit {
            return Err(Error::LimitExceeded {
                what: format!(
                    "manifest {} of {} bytes",
                    descriptor.digest, descriptor.size
                ),
                limit,
            });
        }
        Ok(())
    }

    fn check_body_len(&self, descriptor: &Descriptor, body: &Body) -> Result<()> {
        if body.len() != descriptor.size {
            return Err(Error::SizeMismatch {
                what: format!("content {}", descriptor.digest),
                place: self.place.to_string(),
                expected: descriptor.size,
                actual: body.len(),
            });
        }
        Ok(())
    }

    /// Whether the content is present.
    pub async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        let found = self.backend.exists(descriptor).await;
        found.map_err(|e| e.during(|| format!("looking for {} in {self}", subject(descriptor))))
    }

    /// The size of what is stored under the descriptor's digest (its size
    /// field is not used); `None` when absent. For content known only by
    /// digest.
    pub async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        let found = self.backend.stat(descriptor).await;
        found.map_err(|e| e.during(|| format!("looking for {} in {self}", subject(descriptor))))
    }

    /// Streams the content; the stream ends with an error unless the bytes
    /// match the descriptor's size and digest. Read it to the end.
    pub async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        self.check_manifest_size(descriptor)?;
        let body =
            self.backend.fetch(descriptor).await.map_err(|e| {
                e.during(|| format!("fetching {} from {self}", subject(descriptor)))
            })?;
        self.checked(descriptor, body)
    }

    /// A body the backend answered for `descriptor`, checked: its length
    /// now, its digest as it streams, and a read that fails mid-way names
    /// the content.
    fn checked(&self, descriptor: &Descriptor, body: Body) -> Result<Body> {
        self.check_body_len(descriptor, &body)?;
        let body = verified(body, descriptor, &self.place);
        let (what, place) = (subject(descriptor), self.place.clone());
        Ok(body.observed(|chunks| {
            chunks.map_err(move |e| e.during(|| format!("reading {what} from {place}")))
        }))
    }

    /// Fetches small content (configs, manifests) into memory, verified.
    /// Refused with `LimitExceeded` above the manifest size limit.
    pub async fn fetch_bytes(&self, descriptor: &Descriptor) -> Result<Bytes> {
        let limit = self.capabilities.max_manifest_size;
        if descriptor.size > limit {
            return Err(Error::LimitExceeded {
                what: format!("content {} of {} bytes", descriptor.digest, descriptor.size),
                limit,
            });
        }
        self.fetch(descriptor).await?.bytes(limit).await
    }

    /// Resolves a tag or digest and fetches the manifest's exact bytes,
    /// verified against the resolved descriptor.
    /// A tag costs one request where the backend can answer both at once.
    pub async fn fetch_manifest(&self, selector: &Selector) -> Result<(Descriptor, RawManifest)> {
        let Selector::Tag(tag) = selector else {
            let descriptor = self.resolve(selector).await?;
            let bytes = self.fetch_bytes(&descriptor).await?;
            return Ok((
                descriptor.clone(),
                RawManifest::new(descriptor.media_type, bytes),
            ));
        };
        self.check_tag(tag)?;
        let (descriptor, body) = self
            .backend
            .fetch_tagged(tag)
            .await
            .map_err(|e| e.during(|| format!("fetching tag {tag} from {self}")))?;
        self.check_manifest_size(&descriptor)?;
        let bytes = self
            .checked(&descriptor, body)?
            .bytes(self.capabilities.max_manifest_size)
            .await?;
        Ok((
            descriptor.clone(),
            RawManifest::new(descriptor.media_type, bytes),
        ))
    }

    /// Pushes content, verifying it as it streams: nothing is published
    /// unless the bytes match the descriptor.
    pub async fn push(&self, descriptor: &Descriptor, body: Body) -> Result<()> {
        self.push_opts(descriptor, body, PushOptions::default())
            .await
    }

    /// [`Store::push`] with options (tagging a manifest in the same step).
    ///
    /// Manifests are read into memory (they are capped by
    /// `max_manifest_size`) and must parse as the document their media type
    /// says before they reach the backend. A manifest with a `subject` is
    /// added to the subject's referrers index (tag schema) when the backend
    /// does not index it itself.
    pub async fn push_opts(
        &self,
        descriptor: &Descriptor,
        body: Body,
        options: PushOptions,
    ) -> Result<()> {
        if let Some(tag) = &options.tag {
            self.check_tag(tag)?;
            if !descriptor.media_type.is_manifest() {
                return Err(Error::InvalidInput {
                    what: format!("push of {} with tag {tag}", descriptor.media_type),
                    reason: "only manifests and indexes can be tagged".into(),
                });
            }
        }
        if options.offset > 0 {
            return self.push_resumed(descriptor, body, options).await;
        }
        self.check_body_len(descriptor, &body)?;
        if descriptor.media_type.is_manifest() {
            self.check_manifest_size(descriptor)?;
            let bytes = verified(body, descriptor, &self.place)
                .bytes(self.capabilities.max_manifest_size)
                .await?;
            let document = RawManifest::new(descriptor.media_type.clone(), bytes.clone())
                .parse()
                .map_err(|e| e.naming(&descriptor.digest))?;
            self.backend
                .push(descriptor, Body::from_bytes(bytes), &options)
                .await
                .map_err(|e| self.pushing(e, descriptor))?;
            if let Some(subject) = document.subject()
                && self.referrers_upkeep
                && !self.indexes_subjects()
            {
                let entry = referrers::referrer_entry(descriptor, &document);
                self.referrers
                    .submit(
                        self.backend.as_ref(),
                        &subject.digest,
                        Change::add(entry),
                        self.referrers_settings(),
                    )
                    .await?;
            }
            return Ok(());
        }
        // A body fetched through a `Store` checks itself; hashing it again
        // would only double the CPU a copy spends.
        let body = verified_once(body, descriptor, &self.place);
        let pushed = self.backend.push(descriptor, body, &options).await;
        pushed.map_err(|e| self.pushing(e, descriptor))
    }

    fn pushing(&self, e: Error, descriptor: &Descriptor) -> Error {
        e.during(|| format!("pushing {} to {self}", subject(descriptor)))
    }

    /// Continues an interrupted blob push from `options.offset`; `body`
    /// holds the rest of the content. Only the length can be checked here:
    /// the backend checks the whole content's digest (see
    /// [`Backend::push`]). Needs the `resume` capability.
    async fn push_resumed(
        &self,
        descriptor: &Descriptor,
        body: Body,
        options: PushOptions,
    ) -> Result<()> {
        self.require(self.capabilities.resume, "resume")?;
        let offset = options.offset;
        if descriptor.media_type.is_manifest() || options.tag.is_some() || offset >= descriptor.size
        {
            return Err(Error::InvalidInput {
                what: format!("resumed push of {} at byte {offset}", descriptor.digest),
                reason: "only a blob's missing tail can be pushed, untagged".into(),
            });
        }
        let rest = descriptor.size - offset;
        if body.len() != rest {
            return Err(Error::SizeMismatch {
                what: format!("the rest of {} from byte {offset}", descriptor.digest),
                place: self.place.to_string(),
                expected: rest,
                actual: body.len(),
            });
        }
        let what = format!("bytes {offset}.. of blob {}", descriptor.digest);
        let body = length_checked(body, rest, what, &self.place);
        let pushed = self.backend.push(descriptor, body, &options).await;
        pushed.map_err(|e| self.pushing(e, descriptor))
    }

    /// How many leading bytes of a blob an interrupted push left in the
    /// backend, to be continued with [`PushOptions::resumed`]; zero when
    /// none or when the backend cannot resume.
    pub async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        if !self.capabilities.resume || descriptor.media_type.is_manifest() {
            return Ok(0);
        }
        let held = self.backend.partial(descriptor).await.map_err(|e| {
            e.during(|| format!("looking for a partial {} in {self}", subject(descriptor)))
        })?;
        Ok(if held < descriptor.size { held } else { 0 })
    }

    /// Pushes small content held in memory and returns its descriptor.
    pub async fn push_bytes(
        &self,
        media_type: MediaType,
        bytes: impl Into<Bytes>,
    ) -> Result<Descriptor> {
        let bytes: Bytes = bytes.into();
        let descriptor = Descriptor::of(media_type, &bytes);
        self.push(&descriptor, Body::from_bytes(bytes)).await?;
        Ok(descriptor)
    }

    /// Pushes a manifest's exact bytes, optionally tagging it, and returns
    /// its descriptor.
    pub async fn push_manifest(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<Descriptor> {
        let descriptor = manifest.descriptor();
        let options = PushOptions {
            tag: tag.map(str::to_owned),
            ..PushOptions::default()
        };
        self.push_opts(
            &descriptor,
            Body::from_bytes(manifest.bytes().clone()),
            options,
        )
        .await?;
        Ok(descriptor)
    }

    /// Deletes content. Needs the `delete` capability. A manifest with a
    /// `subject` leaves its subject's referrers index (tag schema) first,
    /// and is deleted only once it is no longer listed, so a failure
    /// between the two leaves an unlisted manifest (a retry deletes it),
    /// never a listed referrer that is gone.
    pub async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        self.require(self.capabilities.delete, "delete")?;
        let referred = if descriptor.media_type.is_manifest() && !self.indexes_subjects() {
            self.subject_of(descriptor).await?
        } else {
            None
        };
        if let Some(subject) = referred {
            self.referrers
                .submit(
                    self.backend.as_ref(),
                    &subject.digest,
                    Change::remove(descriptor.digest.clone()),
                    self.referrers_settings(),
                )
                .await?;
        }
        let deleted = self.backend.delete(descriptor).await;
        deleted.map_err(|e| e.during(|| format!("deleting {} from {self}", subject(descriptor))))
    }

    /// The subject of a stored manifest, if it has one. An absent manifest
    /// or one that does not parse has none; a failed read is an error.
    async fn subject_of(&self, descriptor: &Descriptor) -> Result<Option<Descriptor>> {
        let bytes = match self.fetch_bytes(descriptor).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(RawManifest::new(descriptor.media_type.clone(), bytes)
            .parse()
            .ok()
            .and_then(|document| document.subject().cloned()))
    }

    /// Resolves a tag or digest to the manifest's descriptor.
    pub async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        if let Selector::Tag(tag) = selector {
            self.check_tag(tag)?;
        }
        let descriptor = self.backend.resolve(selector).await.map_err(|e| {
            e.during(|| match selector {
                Selector::Tag(tag) => format!("resolving tag {tag} in {self}"),
                Selector::Digest(digest) => format!("resolving manifest {digest} in {self}"),
            })
        })?;
        if let Selector::Digest(wanted) = selector
            && &descriptor.digest != wanted
        {
            return Err(Error::DigestMismatch {
                what: format!("manifest resolved from {wanted}"),
                place: self.place.to_string(),
                expected: wanted.clone(),
                actual: descriptor.digest,
            });
        }
        Ok(descriptor)
    }

    /// Points a tag at a manifest that is present.
    pub async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        self.check_tag(tag)?;
        if !descriptor.media_type.is_manifest() {
            return Err(Error::InvalidInput {
                what: format!(
                    "tag {tag} for {} {}",
                    descriptor.media_type, descriptor.digest
                ),
                reason: "only manifests and indexes can be tagged".into(),
            });
        }
        let tagged = self.backend.tag(descriptor, tag).await;
        tagged.map_err(|e| e.during(|| format!("tagging {} as {tag} in {self}", descriptor.digest)))
    }

    /// Removes a tag. Needs the `untag` capability.
    pub async fn untag(&self, tag: &str) -> Result<()> {
        self.check_tag(tag)?;
        self.require(self.capabilities.untag, "untag")?;
        let untagged = self.backend.untag(tag).await;
        untagged.map_err(|e| e.during(|| format!("removing tag {tag} from {self}")))
    }

    /// The manifests that refer to `subject`, optionally only those of one
    /// artifact type: from the backend's own index (`referrers_api`) or
    /// else from the tag schema, filtered here when the backend did not.
    /// An index at the fallback tag that is not an image index, or that
    /// lists the subject itself, is refused as `InvalidManifest`.
    pub async fn referrers(
        &self,
        subject: &Descriptor,
        artifact_type: Option<&MediaType>,
    ) -> Result<ReferrerList> {
        let (mut manifests, filtered, via) = if self.indexes_subjects() {
            let listing = self
                .backend
                .referrers(subject, artifact_type)
                .await
                .map_err(|e| {
                    e.during(|| format!("listing the referrers of {} in {self}", subject.digest))
                })?;
            (listing.manifests, listing.filtered, Via::Api)
        } else {
            let max = self.capabilities.max_manifest_size;
            let all = referrers::list(self.backend.as_ref(), &subject.digest, max).await?;
            (all, false, Via::TagSchema)
        };
        if let (Some(wanted), false) = (artifact_type, filtered) {
            manifests.retain(|d| d.artifact_type.as_ref() == Some(wanted));
        }
        Ok(ReferrerList::new(manifests, via))
    }

    /// Mounts a blob from another repository of the same backend; `false`
    /// when the caller must push instead. Needs the `mount` capability.
    pub async fn mount(&self, descriptor: &Descriptor, from: &str) -> Result<bool> {
        self.require(self.capabilities.mount, "mount")?;
        let mounted = self.backend.mount(descriptor, from).await;
        mounted.map_err(|e| {
            e.during(|| format!("mounting {} from {from} into {self}", subject(descriptor)))
        })
    }

    /// Streams a byte range of a blob. A range cannot be checked against the
    /// digest, so only its length is verified. Needs `fetch_range`.
    pub async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        self.require(self.capabilities.fetch_range, "fetch_range")?;
        if range.start > range.end || range.end > descriptor.size {
            return Err(Error::InvalidInput {
                what: format!(
                    "range {}..{} of {}",
                    range.start, range.end, descriptor.digest
                ),
                reason: format!("the content has {} bytes", descriptor.size),
            });
        }
        let len = range.end - range.start;
        let what = format!(
            "bytes {}..{} of {}",
            range.start, range.end, descriptor.digest
        );
        let body = self
            .backend
            .fetch_range(descriptor, range)
            .await
            .map_err(|e| e.during(|| format!("fetching {what} from {self}")))?;
        if body.len() != len {
            return Err(Error::SizeMismatch {
                what,
                place: self.place.to_string(),
                expected: len,
                actual: body.len(),
            });
        }
        Ok(length_checked(body, len, what, &self.place))
    }

    fn check_tag(&self, tag: &str) -> Result<()> {
        validate_tag(tag).map_err(|reason| Error::InvalidReference {
            input: crate::model::digest::shorten(tag),
            reason,
        })
    }
}

/// How errors name content: `manifest sha256:…` or `blob sha256:…`.
fn subject(descriptor: &Descriptor) -> String {
    descriptor.label()
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.place)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}
