//! Garbage collection of a layout, the same on every storage: which blobs
//! nothing reachable names, and removing them without racing the writers.
//!
//! Three rules keep it safe beside pushes that run meanwhile, in this
//! process or any other sharing the storage:
//! - **grace**: a blob written less than the grace period ago is never
//!   collected, and a manifest among them keeps what it names, so the
//!   layers and configs a push has written but not yet tagged stay;
//! - **fence**: before deleting, the collection names everything it is
//!   about to delete in `index.json` (see `fence`), by the same
//!   compare-and-swap as every tag change, so it only lands if no tag
//!   changed since the mark. A tag of anything whose graph holds a fenced
//!   blob is refused while the fence is up;
//! - **check after**: a tag made once a collection has run checks after
//!   writing that everything it walked is still there, and is taken back
//!   if not, so a blob a push skipped as present and a collection then
//!   removed fails that push instead of tagging a broken image.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use super::engine::Layout;
use super::fence::{DELETE_WITHIN, RENEW_EVERY, Running};
use super::storage::ObjectStorage;
use super::{BLOBS_DIR, as_manifest, blob_path, ref_name};
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, RawManifest};

/// Staging younger than this may belong to a push still running.
const STALE_STAGING: Duration = Duration::from_secs(60 * 60);
/// Where storages keep staging (blobs' partial files, records of running
/// uploads), relative to the layout.
const STAGING: &str = "ingest/";
/// Marks begun again because a tag changed meanwhile, before giving up.
const MARK_ATTEMPTS: u32 = 5;
/// How many times a collection fences against an index that changed
/// since its mark (but only in ways that spare what it dooms) before it
/// marks again.
const SETTLE_ATTEMPTS: u32 = 20;

/// How a garbage collection runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcOptions {
    /// Only find what would be removed.
    pub dry_run: bool,
    /// Blobs written less than this long ago are kept, with what the
    /// manifests among them name: a push running now has written them and
    /// not yet tagged its image. Zero is safe only when no one else writes.
    pub grace: Duration,
    /// Remove all staging now, whatever its age. A push running now loses
    /// what it staged and fails (nothing it did becomes visible); by
    /// default staging goes once older than the grace period, and never
    /// younger than an hour.
    pub staging_now: bool,
}

impl GcOptions {
    /// The default grace period: a day, longer than any push of one image
    /// over a slow link takes.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

    /// A collection that removes, with the default grace period.
    pub fn new() -> Self {
        GcOptions {
            dry_run: false,
            grace: Self::DEFAULT_GRACE,
            staging_now: false,
        }
    }

    /// Sets whether to remove all staging now (see
    /// [`GcOptions::staging_now`]).
    pub fn staging_now(mut self, now: bool) -> Self {
        self.staging_now = now;
        self
    }

    /// How old staging must be to go.
    pub fn staging_age(&self) -> Duration {
        if self.staging_now {
            Duration::ZERO
        } else {
            self.grace.max(STALE_STAGING)
        }
    }

    /// Sets whether only to find what would be removed.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Sets the grace period.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions::new()
    }
}

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
    /// Staging left by killed pushes that was removed (or, in a dry run,
    /// would be).
    pub staging: usize,
    /// Staging kept, by key and size: younger than
    /// [`GcOptions::staging_age`], so a push may still be writing it (or
    /// held by a push running now).
    pub staging_kept: Vec<(String, u64)>,
    /// Unreachable blobs kept because they are younger than the grace
    /// period (or the storage does not say how old they are).
    pub young: Vec<(Digest, u64)>,
    /// The `index.json` names that go with the blobs they name (referrers
    /// indexes at fallback tags of collected images), or would go.
    pub tags: Vec<String>,
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
            staging_kept: Vec::new(),
            young: Vec::new(),
            tags: Vec::new(),
        }
    }
}

/// A blob as listed: digest, size, and whether it is within the grace.
struct Found {
    digest: Digest,
    size: u64,
    young: bool,
}

impl<S: ObjectStorage> Layout<S> {
    /// The staging there is, with sizes and ages (lock files are no
    /// staging).
    async fn staging(&self) -> Result<Vec<(String, u64, Option<Duration>)>> {
        let listed = self.storage().list(STAGING).await?;
        Ok(listed
            .into_iter()
            .filter(|l| !l.key.ends_with(".lock"))
            .map(|l| {
                let age = l.modified.and_then(|t| t.elapsed().ok());
                (l.key, l.size, age)
            })
            .collect())
    }

    /// Finds the blobs no root of `index.json` reaches and, unless a dry
    /// run, removes them, with staging left by killed pushes. Safe beside
    /// writers in any process: see the module's rules.
    pub async fn gc(&self, options: &GcOptions) -> Result<GcReport> {
        for _ in 0..MARK_ATTEMPTS {
            let (index, version) = self.read_index().await?;
            let blobs = self.list_blobs(options.grace).await?;
            let (garbage, young) = self.unreachable(&index, &blobs).await?;
            // Names whose manifest goes leave index.json with it.
            let doomed_set: HashSet<&Digest> = garbage.iter().map(|(d, _)| d).collect();
            let mut dropped: Vec<String> = index
                .entries()
                .filter(|d| doomed_set.contains(&d.digest))
                .filter_map(|d| super::ref_name(d).map(str::to_owned))
                .collect();
            dropped.sort();
            if options.dry_run {
                let mut report = GcReport::new(garbage, false);
                report.young = young;
                report.tags = dropped;
                let age = options.staging_age();
                for (key, size, old) in self.staging().await? {
                    if old.is_some_and(|old| old >= age) {
                        report.staging += 1;
                    } else {
                        report.staging_kept.push((key, size));
                    }
                }
                return Ok(report);
            }
            let running = Running::start();
            let doomed: Vec<&Digest> = garbage.iter().map(|(d, _)| d).collect();
            // Referrers indexes of collected images leave index.json with
            // the fence going up: against the index as marked, or one whose
            // changes since reach nothing the mark dooms (tags that came
            // and went while it marked need no new mark; one that reaches
            // a doomed blob does).
            let mut fence = |index: &mut super::LayoutIndex| {
                let mut changed = false;
                for digest in &doomed {
                    changed |= index.remove_digest(digest);
                }
                if !doomed.is_empty() {
                    index.fence(running.id(), &doomed);
                    changed = true;
                }
                Ok((changed, ()))
            };
            let mut fenced = self.try_swap((*index).clone(), version, &mut fence).await?;
            for _ in 0..SETTLE_ATTEMPTS {
                if fenced.is_some() {
                    break;
                }
                let (now, now_version) = self.read_index_kept(false).await?;
                if !self
                    .changes_spare(&index, &now, &doomed_set, &blobs)
                    .await?
                {
                    break;
                }
                fenced = self
                    .try_swap(
                        std::sync::Arc::unwrap_or_clone(now),
                        now_version,
                        &mut fence,
                    )
                    .await?;
            }
            if fenced.is_none() {
                continue;
            }
            let outcome = self.delete_fenced(&running, &doomed).await;
            if !doomed.is_empty() {
                self.update_index("gc", |index| {
                    let lifted = index.lift(running.id());
                    Ok((index.drop_dead_fences() || lifted, ()))
                })
                .await?;
            }
            drop(running);
            outcome?;
            let staging = self.storage().clean_staging(options.staging_age()).await?;
            let mut report = GcReport::new(garbage, true);
            report.tags = dropped;
            report.staging = staging;
            report.staging_kept = self
                .staging()
                .await?
                .into_iter()
                .map(|(key, size, _)| (key, size))
                .collect();
            report.young = young;
            return Ok(report);
        }
        Err(Error::Conflict {
            what: format!(
                "garbage collection: tags changed during each of {MARK_ATTEMPTS} marks; run it again when fewer writers are active"
            ),
            place: self.place(),
        })
    }

    /// Deletes what the fence `running` names, renewing its lease as it
    /// goes and stopping when it cannot (the fence was taken over, or the
    /// lease is too close to its end for clocks that disagree).
    async fn delete_fenced(&self, running: &Running, doomed: &[&Digest]) -> Result<()> {
        let mut renewed = Instant::now();
        for digest in doomed {
            if renewed.elapsed() >= RENEW_EVERY {
                let attempt = Instant::now();
                let held = self
                    .update_index("gc", |index| {
                        let held = index.renew(running.id());
                        Ok((held, held))
                    })
                    .await?;
                if !held {
                    return Err(self.gc_stopped("its fence was taken down by another writer"));
                }
                renewed = attempt;
            }
            if renewed.elapsed() >= DELETE_WITHIN {
                return Err(self.gc_stopped("it could not renew its fence in time"));
            }
            self.storage().delete(&blob_path(digest)).await?;
        }
        Ok(())
    }

    fn gc_stopped(&self, why: &str) -> Error {
        Error::Conflict {
            what: format!("garbage collection stopped: {why}; run it again"),
            place: self.place(),
        }
    }

    /// Every blob whose key is a digest, with its size and whether it is
    /// younger than `grace` (a time in the future, or none, counts as
    /// young unless the grace is zero), sorted. Other objects under
    /// `blobs/` are not orca's to judge and are left out.
    async fn list_blobs(&self, grace: Duration) -> Result<Vec<Found>> {
        let now = SystemTime::now();
        let mut blobs: Vec<Found> = self
            .storage()
            .list(&format!("{BLOBS_DIR}/"))
            .await?
            .into_iter()
            .filter_map(|listed| {
                let mut parts = listed.key.rsplit('/');
                let (hex, algorithm) = (parts.next()?, parts.next()?);
                let digest = Digest::parse(&format!("{algorithm}:{hex}")).ok()?;
                let young = !grace.is_zero()
                    && listed.modified.is_none_or(|at| {
                        now.duration_since(at).is_ok_and(|age| age < grace) || at > now
                    });
                (listed.key == blob_path(&digest)).then_some(Found {
                    digest,
                    size: listed.size,
                    young,
                })
            })
            .collect();
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(blobs)
    }

    /// Whether what `now` names beyond what `marked` named (tags added or
    /// moved since the mark) reaches none of `doomed`, through what the
    /// storage holds.
    async fn changes_spare(
        &self,
        marked: &super::LayoutIndex,
        now: &super::LayoutIndex,
        doomed: &HashSet<&Digest>,
        blobs: &[Found],
    ) -> Result<bool> {
        let before: HashSet<(Option<&str>, &Digest)> =
            marked.entries().map(|d| (ref_name(d), &d.digest)).collect();
        let added: Vec<Descriptor> = now
            .entries()
            .filter(|d| !before.contains(&(ref_name(d), &d.digest)))
            .cloned()
            .collect();
        if added.is_empty() {
            return Ok(true);
        }
        let present: HashMap<&Digest, u64> = blobs.iter().map(|b| (&b.digest, b.size)).collect();
        let mut reached = HashSet::new();
        self.mark(added, &present, &mut reached).await?;
        Ok(!reached.iter().any(|d| doomed.contains(d)))
    }

    /// The blobs garbage collection removes, and the unreachable ones it
    /// keeps as young: everything not reachable from the `roots` (the
    /// `index.json` entries) and the young manifests, through indexes,
    /// manifests, configs, layers and subjects — except referrers of
    /// reachable manifests (manifests whose `subject` is reachable) and
    /// what they name. A referrers index at a fallback tag (`sha256-<hex>`)
    /// is not a root of its own: it lives while the manifest it names
    /// referrers for is reachable, so deleting an image lets its referrers
    /// go too.
    async fn unreachable(
        &self,
        roots: &super::LayoutIndex,
        blobs: &[Found],
    ) -> Result<(Vec<(Digest, u64)>, Vec<(Digest, u64)>)> {
        let present: HashMap<&Digest, u64> = blobs.iter().map(|b| (&b.digest, b.size)).collect();
        let mut reachable = HashSet::new();
        let (fallback, regular): (Vec<&Descriptor>, Vec<&Descriptor>) =
            roots.entries().partition(|d| {
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
        // reachable and keeping the manifests among them that have a
        // subject; young manifests are roots of their own.
        let limit = Capabilities::NONE.max_manifest_size;
        let mut referrers: Vec<(Descriptor, Digest)> = Vec::new();
        let mut young_roots = Vec::new();
        for blob in blobs {
            if reachable.contains(&blob.digest) || blob.size > limit {
                continue;
            }
            // A blob that vanished meanwhile is no referrer; any other
            // failure stops the collection rather than risk deleting one.
            let Some(bytes) = self.read_blob(&blob.digest, limit).await? else {
                continue;
            };
            if let Some((descriptor, document)) = as_manifest(&blob.digest, bytes) {
                if blob.young {
                    young_roots.push(descriptor);
                } else if let Some(subject) = document.subject() {
                    referrers.push((descriptor, subject.digest.clone()));
                }
            }
        }
        self.mark(young_roots, &present, &mut reachable).await?;
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
        let (young, garbage): (Vec<&Found>, Vec<&Found>) = blobs
            .iter()
            .filter(|b| !reachable.contains(&b.digest))
            .partition(|b| b.young);
        let pairs = |found: Vec<&Found>| -> Vec<(Digest, u64)> {
            found
                .into_iter()
                .map(|b| (b.digest.clone(), b.size))
                .collect()
        };
        Ok((pairs(garbage), pairs(young)))
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
            let document = RawManifest::new(descriptor.media_type.clone(), bytes)
                .parse_with(crate::model::Schema1::Allow)?;
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
