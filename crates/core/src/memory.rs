//! An in-memory registry: every operation of the contract, for tests and
//! for programs that stage content before copying it elsewhere. Repositories
//! of one [`MemoryRegistry`] share it, so mount and catalog work between them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::backend::{Backend, ListPage, ListQuery, PushOptions, Referrers};
use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, MediaType, RawManifest, Selector};

/// Chunk size of fetched bodies: big enough to hash efficiently, small
/// enough that nothing downstream holds a whole blob.
const CHUNK: usize = 1024 * 1024;

/// A registry held in memory; open repositories with [`MemoryRegistry::repository`].
#[derive(Clone, Default)]
pub struct MemoryRegistry {
    repositories: Arc<Mutex<BTreeMap<String, Repository>>>,
}

#[derive(Default)]
struct Repository {
    content: HashMap<Digest, Entry>,
    tags: BTreeMap<String, Digest>,
    /// What interrupted blob pushes left, to be continued.
    partials: HashMap<Digest, Bytes>,
}

#[derive(Clone)]
struct Entry {
    media_type: MediaType,
    bytes: Bytes,
    /// For manifests with a `subject`: the descriptor the Referrers API lists.
    referrer_of: Option<(Digest, Descriptor)>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MemoryRegistry::default()
    }

    /// A backend for repository `name` with every capability.
    pub fn repository(&self, name: &str) -> MemoryBackend {
        MemoryBackend {
            registry: self.clone(),
            name: name.to_owned(),
            capabilities: Capabilities::ALL,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Repository>> {
        // A panic elsewhere while holding the lock leaves consistent data:
        // every change below is a single insert or remove.
        self.repositories
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegistry").finish_non_exhaustive()
    }
}

/// One repository of a [`MemoryRegistry`].
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    registry: MemoryRegistry,
    name: String,
    capabilities: Capabilities,
}

impl MemoryBackend {
    /// A backend over a fresh registry, repository `default`, every capability.
    pub fn new() -> Self {
        MemoryRegistry::new().repository("default")
    }

    /// The same repository offering only `capabilities`: operations whose
    /// flag is off return `Unsupported`, and with `referrers_api` off no
    /// referrers index is kept, as on a registry without the API.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// The repository name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn unsupported(&self, operation: &'static str) -> Error {
        Error::Unsupported {
            operation,
            place: self.to_string(),
        }
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            what,
            place: self.to_string(),
        }
    }

    fn entry(&self, digest: &Digest) -> Option<Entry> {
        let repos = self.registry.lock();
        repos.get(&self.name)?.content.get(digest).cloned()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl fmt::Display for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory:{}", self.name)
    }
}

/// The bytes of a push in progress, kept as a partial if it is interrupted.
struct Holding<'a> {
    backend: &'a MemoryBackend,
    digest: Digest,
    buffer: Option<BytesMut>,
    keep: bool,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take().filter(|b| self.keep && !b.is_empty()) {
            let mut repos = self.backend.registry.lock();
            let repo = repos.entry(self.backend.name.clone()).or_default();
            repo.partials.insert(self.digest.clone(), buffer.freeze());
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        Ok(self.entry(&descriptor.digest).is_some())
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        Ok(self
            .entry(&descriptor.digest)
            .map(|entry| entry.bytes.len() as u64))
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        let entry = self
            .entry(&descriptor.digest)
            .ok_or_else(|| self.not_found(descriptor.label()))?;
        Ok(crate::body::chunked(entry.bytes))
    }

    async fn push(
        &self,
        descriptor: &Descriptor,
        mut body: Body,
        options: &PushOptions,
    ) -> Result<()> {
        let resumable = self.capabilities.resume && !descriptor.media_type.is_manifest();
        // Copy chunks out as they arrive, so the caller's buffers are
        // released while the body streams; publish only after a clean end.
        let buffer = if options.offset > 0 {
            if !resumable {
                return Err(self.unsupported("resume"));
            }
            let held = self
                .registry
                .lock()
                .get_mut(&self.name)
                .and_then(|repo| repo.partials.remove(&descriptor.digest))
                .unwrap_or_default();
            if held.len() as u64 != options.offset {
                return Err(Error::Conflict {
                    what: format!(
                        "resumed push of {} at byte {} (holding {})",
                        descriptor.digest,
                        options.offset,
                        held.len()
                    ),
                    place: self.to_string(),
                });
            }
            BytesMut::from(held)
        } else {
            let capacity = usize::try_from(descriptor.size.min(64 * CHUNK as u64)).unwrap_or(CHUNK);
            BytesMut::with_capacity(capacity)
        };
        // What arrived stays for a later push when this one is interrupted
        // (an error from the source, or the future dropped), unless the
        // content was found wrong.
        let mut holding = Holding {
            backend: self,
            digest: descriptor.digest.clone(),
            buffer: Some(buffer),
            keep: resumable,
        };
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    if let Some(buffer) = &mut holding.buffer {
                        buffer.extend_from_slice(&chunk);
                    }
                }
                Err(e) => {
                    holding.keep &=
                        !matches!(e, Error::DigestMismatch { .. } | Error::SizeMismatch { .. });
                    return Err(e);
                }
            }
        }
        let buffer = holding.buffer.take().unwrap_or_default();
        let bytes = buffer.freeze();
        if options.offset > 0 {
            let actual = Digest::compute(descriptor.digest.algorithm(), &bytes);
            if actual != descriptor.digest || bytes.len() as u64 != descriptor.size {
                return Err(Error::DigestMismatch {
                    what: format!("resumed blob {}", descriptor.digest),
                    place: self.to_string(),
                    expected: descriptor.digest.clone(),
                    actual,
                });
            }
        }
        let referrer_of = if descriptor.media_type.is_manifest() && self.capabilities.referrers_api
        {
            referrer_entry(descriptor, &bytes)
        } else {
            None
        };
        let mut repos = self.registry.lock();
        let repo = repos.entry(self.name.clone()).or_default();
        repo.content
            .entry(descriptor.digest.clone())
            .or_insert(Entry {
                media_type: descriptor.media_type.clone(),
                bytes,
                referrer_of,
            });
        if let Some(tag) = &options.tag {
            repo.tags.insert(tag.clone(), descriptor.digest.clone());
        }
        Ok(())
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        if !self.capabilities.resume {
            return Ok(0);
        }
        Ok(self
            .registry
            .lock()
            .get(&self.name)
            .and_then(|repo| repo.partials.get(&descriptor.digest))
            .map_or(0, |held| held.len() as u64))
    }

    async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        if !self.capabilities.delete {
            return Err(self.unsupported("delete"));
        }
        let mut repos = self.registry.lock();
        let removed = repos
            .get_mut(&self.name)
            .and_then(|repo| {
                let entry = repo.content.remove(&descriptor.digest)?;
                repo.tags.retain(|_, d| *d != descriptor.digest);
                Some(entry)
            })
            .is_some();
        if removed {
            Ok(())
        } else {
            Err(self.not_found(descriptor.label()))
        }
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        let repos = self.registry.lock();
        let repo = repos.get(&self.name);
        let (digest, what) = match selector {
            Selector::Tag(tag) => (
                repo.and_then(|r| r.tags.get(tag)).cloned(),
                format!("tag {tag}"),
            ),
            Selector::Digest(d) => (Some(d.clone()), format!("manifest {d}")),
        };
        let found = digest.and_then(|d| {
            let entry = repo?.content.get(&d)?;
            entry
                .media_type
                .is_manifest()
                .then(|| Descriptor::new(entry.media_type.clone(), d, entry.bytes.len() as u64))
        });
        found.ok_or_else(|| self.not_found(what))
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        let mut repos = self.registry.lock();
        let repo = repos
            .get_mut(&self.name)
            .filter(|r| r.content.contains_key(&descriptor.digest))
            .ok_or_else(|| self.not_found(format!("manifest {}", descriptor.digest)))?;
        repo.tags.insert(tag.to_owned(), descriptor.digest.clone());
        Ok(())
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        if !self.capabilities.untag {
            return Err(self.unsupported("untag"));
        }
        let mut repos = self.registry.lock();
        repos
            .get_mut(&self.name)
            .and_then(|r| r.tags.remove(tag))
            .map(drop)
            .ok_or_else(|| self.not_found(format!("tag {tag}")))
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        if !self.capabilities.tag_compare_and_swap {
            return Err(self.unsupported("swap_tag"));
        }
        let mut repos = self.registry.lock();
        let repo = repos.entry(self.name.clone()).or_default();
        if repo.tags.get(tag) != expected {
            return Err(Error::Conflict {
                what: format!("tag {tag}"),
                place: self.to_string(),
            });
        }
        match new {
            Some(d) if !repo.content.contains_key(&d.digest) => {
                return Err(self.not_found(format!("manifest {}", d.digest)));
            }
            Some(d) => {
                repo.tags.insert(tag.to_owned(), d.digest.clone());
            }
            None => {
                repo.tags.remove(tag);
            }
        }
        Ok(())
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let repos = self.registry.lock();
        let all: Vec<String> = repos
            .get(&self.name)
            .map(|r| r.tags.keys().cloned().collect())
            .unwrap_or_default();
        if self.capabilities.tag_list_pagination {
            Ok(ListPage::slice(&all, query))
        } else {
            Ok(ListPage::new(all, None))
        }
    }

    async fn referrers(
        &self,
        subject: &Descriptor,
        artifact_type: Option<&MediaType>,
    ) -> Result<Referrers> {
        if !self.capabilities.referrers_api {
            return Err(self.unsupported("referrers"));
        }
        let repos = self.registry.lock();
        let mut manifests: Vec<Descriptor> = repos
            .get(&self.name)
            .map(|r| {
                r.content
                    .values()
                    .filter_map(|e| e.referrer_of.as_ref())
                    .filter(|(s, _)| *s == subject.digest)
                    .map(|(_, d)| d.clone())
                    .filter(|d| {
                        artifact_type.is_none() || d.artifact_type.as_ref() == artifact_type
                    })
                    .collect()
            })
            .unwrap_or_default();
        manifests.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(Referrers::new(manifests, true))
    }

    async fn mount(&self, descriptor: &Descriptor, from: &str) -> Result<bool> {
        if !self.capabilities.mount {
            return Err(self.unsupported("mount"));
        }
        let mut repos = self.registry.lock();
        let Some(entry) = repos
            .get(from)
            .and_then(|r| r.content.get(&descriptor.digest))
            .cloned()
        else {
            return Ok(false);
        };
        repos
            .entry(self.name.clone())
            .or_default()
            .content
            .entry(descriptor.digest.clone())
            .or_insert(entry);
        Ok(true)
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        if !self.capabilities.fetch_range {
            return Err(self.unsupported("fetch_range"));
        }
        let entry = self
            .entry(&descriptor.digest)
            .ok_or_else(|| self.not_found(descriptor.label()))?;
        let len = entry.bytes.len() as u64;
        if range.start > range.end || range.end > len {
            return Err(Error::InvalidInput {
                what: format!("range {}..{}", range.start, range.end),
                reason: format!("{} has {len} bytes", descriptor.digest),
            });
        }
        // In bounds of an in-memory buffer, so the conversions cannot fail.
        let (start, end) = (range.start as usize, range.end as usize);
        Ok(crate::body::chunked(entry.bytes.slice(start..end)))
    }

    async fn catalog(&self, query: &ListQuery) -> Result<ListPage> {
        if !self.capabilities.catalog {
            return Err(self.unsupported("catalog"));
        }
        let repos = self.registry.lock();
        let names: Vec<String> = repos
            .iter()
            .filter(|(_, r)| !r.content.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        Ok(ListPage::slice(&names, query))
    }
}

/// The Referrers API entry for a manifest with a subject: its descriptor
/// with `artifactType` (or config media type) and annotations.
fn referrer_entry(descriptor: &Descriptor, bytes: &Bytes) -> Option<(Digest, Descriptor)> {
    let document = RawManifest::new(descriptor.media_type.clone(), bytes.clone())
        .parse()
        .ok()?;
    let subject = document.subject()?.digest.clone();
    Some((
        subject,
        crate::referrers::referrer_entry(descriptor, &document),
    ))
}
