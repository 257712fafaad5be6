//! Garbage collection of a layout, the same on every storage: which blobs
//! nothing reachable names, and removing them without racing the writers.
//!
//! The collection fences what it removes: once it has marked, it records
//! the manifests it is about to delete in `index.json` (an annotation
//! written by the same compare-and-swap as every tag change, so it only
//! lands if no tag changed since the mark). Tags and pushes of a fenced
//! manifest are refused until the fence is lifted, so a tag made while a
//! collection runs never points at a manifest it removed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::engine::Layout;
use super::storage::ObjectStorage;
use super::{BLOBS_DIR, LayoutIndex, as_manifest, blob_path, ref_name};
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, RawManifest};

/// The annotation prefix of a collection's fence in `index.json`.
const FENCE: &str = "dev.orca.gc.";
/// A fence older than this belongs to a collection that died.
const FENCE_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// A collection stops deleting manifests after this long (well inside
/// the fence's lifetime, so clocks that differ a little do not matter).
const FENCE_LEASE: Duration = Duration::from_secs(30 * 60);
/// Staging older than this belongs to pushes that are gone.
const STALE_STAGING: Duration = Duration::from_secs(60 * 60);
/// Marks begun again because a tag changed meanwhile, before giving up.
const MARK_ATTEMPTS: u32 = 5;

/// What a garbage collection found (and removed, unless it was a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// The unreachable blobs, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Their total size.
    pub bytes: u64,
    /// Whether anything was removed (`false` for a dry run).
    pub removed: bool,
    /// Staging left by killed pushes that was removed.
    pub staging: usize,
}

impl GcReport {
    /// A report on `blobs`.
    pub fn new(blobs: Vec<(Digest, u64)>, removed: bool) -> Self {
        let bytes = blobs.iter().map(|(_, size)| size).sum();
        GcReport {
            blobs,
            bytes,
            removed,
            staging: 0,
        }
    }
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LayoutIndex {
    /// Whether a live collection's fence names `digest`.
    pub(super) fn doomed(&self, digest: &Digest) -> bool {
        let now = now();
        let wanted = digest.to_string();
        self.index.annotations.iter().any(|(key, value)| {
            fence_time(key)
                .is_some_and(|since| now.saturating_sub(since) < FENCE_LIFETIME.as_secs())
                && value.split(',').any(|d| d == wanted)
        })
    }

    /// Puts up the fence `id` around `digests`, and takes down fences of
    /// collections that died.
    fn fence(&mut self, id: &str, digests: &[&Digest]) {
        let now = now();
        self.index.annotations.retain(|key, _| {
            fence_time(key).is_none_or(|since| now.saturating_sub(since) < FENCE_LIFETIME.as_secs())
        });
        let list: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
        self.index
            .annotations
            .insert(format!("{FENCE}{id}"), list.join(","));
    }

    /// Takes down the fence `id`; `false` when it was not up.
    fn lift(&mut self, id: &str) -> bool {
        self.index
            .annotations
            .remove(&format!("{FENCE}{id}"))
            .is_some()
    }
}

/// When the fence with annotation `key` was put up, if it is one.
fn fence_time(key: &str) -> Option<u64> {
    key.strip_prefix(FENCE)?.split('.').next()?.parse().ok()
}

impl<S: ObjectStorage> Layout<S> {
    /// Finds the blobs no root of `index.json` reaches and, unless
    /// `dry_run`, removes them, with staging left by killed pushes.
    ///
    /// Tags made while it runs are safe: it marks again when a tag changed
    /// before its fence went up, and tags of the manifests it removes are
    /// refused after. A layer that was unreachable when it began and that a
    /// push running meanwhile reuses (skipping it as present) can still
    /// be lost, as on a registry: collect when no such push runs.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport> {
        for _ in 0..MARK_ATTEMPTS {
            let (index, version) = self.read_index().await?;
            let blobs = self.list_blobs().await?;
            let (garbage, manifests) = self.unreachable(index.entries(), &blobs).await?;
            if dry_run {
                return Ok(GcReport::new(garbage, false));
            }
            let id = format!(
                "{}.{}.{}",
                now(),
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            );
            let doomed: Vec<&Digest> = garbage
                .iter()
                .map(|(d, _)| d)
                .filter(|d| manifests.contains(*d))
                .collect();
            // Referrers indexes of collected images leave index.json with
            // the fence going up; only if no tag changed since the mark.
            let fenced = self
                .try_swap(
                    std::sync::Arc::unwrap_or_clone(index),
                    version,
                    &mut |index: &mut LayoutIndex| {
                        let mut changed = false;
                        for (digest, _) in &garbage {
                            changed |= index.remove_digest(digest);
                        }
                        if !doomed.is_empty() {
                            index.fence(&id, &doomed);
                            changed = true;
                        }
                        Ok((changed, ()))
                    },
                )
                .await?;
            if fenced.is_none() {
                continue;
            }
            let started = Instant::now();
            let mut outcome = Ok(());
            for digest in &doomed {
                if started.elapsed() > FENCE_LEASE {
                    outcome = Err(Error::Conflict {
                        what: format!(
                            "garbage collection: stopped after {} minutes, before its fence expires; run it again",
                            FENCE_LEASE.as_secs() / 60
                        ),
                        place: self.place(),
                    });
                    break;
                }
                if let Err(e) = self.storage().delete(&blob_path(digest)).await {
                    outcome = Err(e);
                    break;
                }
            }
            if !doomed.is_empty() {
                self.update_index("gc", |index| Ok((index.lift(&id), ())))
                    .await?;
            }
            outcome?;
            for (digest, _) in garbage.iter().filter(|(d, _)| !manifests.contains(d)) {
                self.storage().delete(&blob_path(digest)).await?;
            }
            let staging = self.storage().clean_staging(STALE_STAGING).await?;
            let mut report = GcReport::new(garbage, true);
            report.staging = staging;
            return Ok(report);
        }
        Err(Error::Conflict {
            what: format!(
                "garbage collection: tags changed during each of {MARK_ATTEMPTS} marks; run it again when fewer writers are active"
            ),
            place: self.place(),
        })
    }

    /// Every blob whose key is a digest, with its size, sorted. Other
    /// objects under `blobs/` are not orca's to judge and are left out.
    async fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let mut blobs: Vec<(Digest, u64)> = self
            .storage()
            .list(&format!("{BLOBS_DIR}/"))
            .await?
            .into_iter()
            .filter_map(|(key, size)| {
                let mut parts = key.rsplit('/');
                let (hex, algorithm) = (parts.next()?, parts.next()?);
                let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
                (key == blob_path(&digest)).then_some((digest, size))
            })
            .collect();
        blobs.sort();
        Ok(blobs)
    }

    /// The blobs garbage collection removes, and which of them are
    /// manifests: everything not reachable from the `roots` (the
    /// `index.json` entries) through indexes, manifests, configs, layers
    /// and subjects — except referrers of reachable manifests (manifests
    /// whose `subject` is reachable) and what they name. A referrers index
    /// at a fallback tag (`sha256-<hex>`) is not a root of its own: it
    /// lives while the manifest it names referrers for is reachable, so
    /// deleting an image lets its referrers go too.
    async fn unreachable(
        &self,
        roots: &[Descriptor],
        blobs: &[(Digest, u64)],
    ) -> Result<(Vec<(Digest, u64)>, HashSet<Digest>)> {
        let present: HashMap<&Digest, u64> = blobs.iter().map(|(d, s)| (d, *s)).collect();
        let mut reachable = HashSet::new();
        let (fallback, regular): (Vec<&Descriptor>, Vec<&Descriptor>) =
            roots.iter().partition(|d| {
                // In a bundle the name is `REPO:sha256-<hex>`.
                d.media_type.is_index()
                    && ref_name(d)
                        .is_some_and(|name| crate::referrers::is_fallback_tag(tag_part(name)))
            });
        self.mark(
            regular.into_iter().cloned().collect(),
            &present,
            &mut reachable,
        )
        .await?;

        // Referrers are found by reading every small blob that is not yet
        // reachable and keeping the manifests among them that have a subject.
        let limit = Capabilities::NONE.max_manifest_size;
        let mut manifests = HashSet::new();
        let mut referrers: Vec<(Descriptor, Digest)> = Vec::new();
        for (digest, size) in blobs {
            if reachable.contains(digest) || *size > limit {
                continue;
            }
            // A blob that vanished meanwhile is no referrer; any other
            // failure stops the collection rather than risk deleting one.
            let Some(bytes) = self.read_blob(digest, limit).await? else {
                continue;
            };
            if let Some((descriptor, document)) = as_manifest(digest, bytes) {
                manifests.insert(digest.clone());
                if let Some(subject) = document.subject() {
                    referrers.push((descriptor, subject.digest.clone()));
                }
            }
        }
        loop {
            let tags: HashSet<String> = reachable
                .iter()
                .map(crate::referrers::fallback_tag)
                .collect();
            let found: Vec<Descriptor> = referrers
                .iter()
                .filter(|(d, subject)| {
                    reachable.contains(subject) && !reachable.contains(&d.digest)
                })
                .map(|(d, _)| d.clone())
                .chain(
                    fallback
                        .iter()
                        .filter(|d| !reachable.contains(&d.digest))
                        .filter(|d| ref_name(d).is_some_and(|name| tags.contains(tag_part(name))))
                        .map(|d| (*d).clone()),
                )
                .collect();
            if found.is_empty() {
                break;
            }
            self.mark(found, &present, &mut reachable).await?;
        }
        let garbage = blobs
            .iter()
            .filter(|(d, _)| !reachable.contains(d))
            .cloned()
            .collect();
        Ok((garbage, manifests))
    }

    /// Marks everything reachable from `queue`. Content that is named but
    /// not present is skipped: it cannot be collected anyway.
    async fn mark(
        &self,
        mut queue: Vec<Descriptor>,
        present: &HashMap<&Digest, u64>,
        reachable: &mut HashSet<Digest>,
    ) -> Result<()> {
        let limit = Capabilities::NONE.max_manifest_size;
        while let Some(descriptor) = queue.pop() {
            if !reachable.insert(descriptor.digest.clone()) {
                continue;
            }
            if !descriptor.media_type.is_manifest() || !present.contains_key(&descriptor.digest) {
                continue;
            }
            if present
                .get(&descriptor.digest)
                .is_some_and(|size| *size > limit)
            {
                return Err(Error::LimitExceeded {
                    what: format!("manifest {}", descriptor.digest),
                    limit,
                });
            }
            // Gone since the listing: nothing to collect under it.
            let Some(bytes) = self.read_blob(&descriptor.digest, limit).await? else {
                continue;
            };
            let document = RawManifest::new(descriptor.media_type.clone(), bytes).parse()?;
            queue.extend(document.children().into_iter().cloned());
            queue.extend(document.subject().cloned());
        }
        Ok(())
    }
}

/// The tag of a ref name: itself, or in a bundle (`REPO:TAG`) what follows
/// the repository.
fn tag_part(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, tag)| tag)
}
