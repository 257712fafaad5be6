//! The referrers tag schema (OCI distribution-spec 1.1). A backend that does
//! not index subjects itself keeps the referrers of a manifest in an image
//! index tagged `<alg>-<ref>`. This module names that tag, reads and checks
//! the index, and changes it without losing entries when several writers
//! change it at once:
//!
//! - in one process, concurrent changes to one subject are batched into one
//!   update (per [`Store`](crate::Store) and its clones);
//! - backends with `tag_compare_and_swap` move the tag only if it still
//!   points where it did when the index was read, and retry on conflict;
//! - other backends (plain registries) get verify-after-write: the tag is
//!   read again just before it is moved, and again after settling delays;
//!   if another writer replaced the index, both lists are merged and written
//!   again, a bounded number of times.
//!
//! Every change is stamped when its writer first reads the index: the
//! writer's clock, but never less than one past the newest stamp the index
//! records (a hybrid logical clock), so a change made after reading
//! another's is later whatever the two machines' clocks say. The index
//! records, per referrer, the stamp of the last change it reflects
//! (annotations, kept ten minutes, far longer than any update runs). An
//! attach older than the recorded change is done already: a later removal
//! won. A removal is never overtaken: its caller deletes the manifest next,
//! and a listed referrer whose manifest is gone is what must never be.

use std::time::Duration;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, Document, Index, MediaType, RawManifest, Selector};

use crate::retry::CAS_ATTEMPTS as MAX_ATTEMPTS;
/// Confirmations a verify-after-write update waits for.
const CONFIRMATIONS: u32 = 2;

/// The fallback tag for referrers of `digest`: `<alg>-<hex>`, the algorithm
/// cut to 32 characters and the hex to 64, as the distribution spec says.
pub fn fallback_tag(digest: &Digest) -> String {
    let clean = |s: &str, limit: usize| -> String {
        s.chars()
            .take(limit)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "{}-{}",
        clean(digest.algorithm().as_str(), 32),
        clean(digest.hex(), 64)
    )
}

/// Whether `tag` is the fallback tag of some digest orca knows: `sha256-`
/// or `sha512-` and exactly 64 lowercase hex digits (sha512 is cut to 64).
pub fn is_fallback_tag(tag: &str) -> bool {
    tag.split_once('-')
        .is_some_and(|(alg, hex)| matches!(alg, "sha256" | "sha512") && is_hex(hex, 64))
}

/// Whether `tag` names other content by digest, so it is never an image
/// of its own: a referrers fallback tag ([`is_fallback_tag`]; the full
/// 128 digits of sha512 too, as some tools write it), or a tag that
/// cosign and its kind attach to an image, `<alg>-<hex>.<suffix>`
/// (`sha256-<hex>.sig`, `.att`, `.sbom`). The one test of the sync filter,
/// prune and `orca tags --exclude-digest-tags`.
pub fn is_digest_tag(tag: &str) -> bool {
    let Some((algorithm, rest)) = tag.split_once('-') else {
        return false;
    };
    let (hex, suffix) = match rest.split_once('.') {
        Some((hex, suffix)) => (hex, Some(suffix)),
        None => (rest, None),
    };
    let lengths: &[usize] = match algorithm {
        "sha256" => &[64],
        "sha512" => &[64, 128],
        _ => return false,
    };
    suffix != Some("") && lengths.iter().any(|n| is_hex(hex, *n))
}

/// Whether `text` is `len` lowercase hex digits.
fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Annotation that makes every referrers index orca writes unique, so a
/// superseded index is never the same content as a later one (which a
/// collector could otherwise delete from under the tag).
const GENERATION: &str = "dev.orca.referrers.generation";

/// Annotation prefix of the per-referrer change stamps of an index.
const CHANGED: &str = "dev.orca.referrers.changed.";
/// How long an index keeps a change stamp: far longer than any update
/// runs (every attempt of one is bounded), and short enough that stamps do
/// not grow the index towards its size cap.
const STAMP_LIFETIME: u128 = 10 * 60 * 1_000_000_000;

/// Nanoseconds since the epoch.
fn now() -> u128 {
    crate::retry::unix_nanos()
}

/// The change stamps of an index, by referrer digest.
pub(crate) type Stamps = std::collections::BTreeMap<String, u128>;

/// Reads the change stamps from an index's annotations.
fn stamps(annotations: &std::collections::BTreeMap<String, String>) -> Stamps {
    annotations
        .iter()
        .filter_map(|(key, value)| {
            Some((key.strip_prefix(CHANGED)?.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn generation() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = now();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos}-{n}", std::process::id())
}

/// The entry a referrer gets in a referrers listing: its digest, size and
/// media type, its `artifactType` (or, for manifests without one, the
/// config media type), and its annotations.
pub fn referrer_entry(descriptor: &Descriptor, document: &Document) -> Descriptor {
    let mut entry = Descriptor::new(
        descriptor.media_type.clone(),
        descriptor.digest.clone(),
        descriptor.size,
    );
    entry.artifact_type = document.artifact_type().cloned();
    entry.annotations = document.annotations().clone();
    entry
}

/// Where a referrers listing came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Via {
    /// The backend's own index (the registry's Referrers API).
    Api,
    /// The image index at the fallback tag.
    TagSchema,
}

/// The referrers of a subject, and how they were found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReferrerList {
    /// One descriptor per referrer.
    pub manifests: Vec<Descriptor>,
    /// Which path produced the listing.
    pub via: Via,
}

impl ReferrerList {
    /// A listing found through `via`.
    pub fn new(manifests: Vec<Descriptor>, via: Via) -> Self {
        ReferrerList { manifests, via }
    }
}

/// Referrers to add and remove, by digest, each with its stamp (0 until
/// the change is stamped against the index it first reads).
#[derive(Clone, Debug, Default)]
pub(crate) struct Change {
    add: Vec<(Descriptor, u128)>,
    remove: Vec<(Digest, u128)>,
}

/// A referrers index's content: its entries and their change stamps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<Descriptor>,
    pub(crate) stamps: Stamps,
}

impl Listing {
    /// The newest stamp recorded (0 when none).
    fn newest(&self) -> u128 {
        self.stamps.values().copied().max().unwrap_or(0)
    }
}

impl Change {
    pub(crate) fn add(entry: Descriptor) -> Self {
        Change {
            add: vec![(entry, 0)],
            remove: Vec::new(),
        }
    }

    pub(crate) fn remove(digest: Digest) -> Self {
        Change {
            add: Vec::new(),
            remove: vec![(digest, 0)],
        }
    }

    /// This change with its unset stamps set against `listing`: this
    /// machine's clock, but past every stamp the listing records.
    fn stamped(&self, listing: &Listing) -> Change {
        let at = now().max(listing.newest() + 1);
        let mut stamped = self.clone();
        for (_, stamp) in stamped.add.iter_mut() {
            if *stamp == 0 {
                *stamp = at;
            }
        }
        for (_, stamp) in stamped.remove.iter_mut() {
            if *stamp == 0 {
                *stamp = at;
            }
        }
        stamped
    }

    /// Folds a later change into this one: the later wins for a digest.
    fn then(&mut self, later: &Change) {
        for (digest, at) in &later.remove {
            self.add.retain(|(d, _)| &d.digest != digest);
            self.remove.retain(|(d, _)| d != digest);
            self.remove.push((digest.clone(), *at));
        }
        for (entry, at) in &later.add {
            self.remove.retain(|(d, _)| d != &entry.digest);
            self.add.retain(|(d, _)| d.digest != entry.digest);
            self.add.push((entry.clone(), *at));
        }
    }

    /// Whether a change to `digest` asked for `at` was overtaken by a
    /// later one the listing records.
    fn overtaken(listing: &Listing, digest: &Digest, at: u128) -> bool {
        listing
            .stamps
            .get(&digest.to_string())
            .is_some_and(|recorded| *recorded > at)
    }

    /// Whether `listing` already reflects the change (or, for an attach,
    /// a later removal).
    fn applied(&self, listing: &Listing) -> bool {
        self.add
            .iter()
            .all(|(a, at)| listing.entries.contains(a) || Self::overtaken(listing, &a.digest, *at))
            && self
                .remove
                .iter()
                .all(|(r, _)| listing.entries.iter().all(|e| &e.digest != r))
    }

    /// `listing` with the change made where no later change overtook it,
    /// keeping the order of the entries and stamping what changed.
    fn apply(&self, listing: &Listing) -> Listing {
        let add: Vec<&(Descriptor, u128)> = self
            .add
            .iter()
            .filter(|(a, at)| !Self::overtaken(listing, &a.digest, *at))
            .collect();
        let remove: Vec<&(Digest, u128)> = self.remove.iter().collect();
        let mut entries: Vec<Descriptor> = listing
            .entries
            .iter()
            .filter(|e| remove.iter().all(|(r, _)| r != &e.digest))
            .filter(|e| add.iter().all(|(a, _)| a.digest != e.digest))
            .cloned()
            .collect();
        entries.extend(add.iter().map(|(a, _)| a.clone()));
        let reference = now().max(listing.newest());
        let mut stamps = listing.stamps.clone();
        stamps.retain(|_, at| reference.saturating_sub(*at) < STAMP_LIFETIME);
        for (digest, at) in add
            .iter()
            .map(|(a, at)| (&a.digest, at))
            .chain(remove.iter().map(|(r, at)| (r, at)))
        {
            stamps.insert(digest.to_string(), *at);
        }
        Listing { entries, stamps }
    }
}

/// What reading the fallback tag found.
enum Found {
    /// No tag: no referrers.
    Absent,
    /// The index the tag points at, and what it lists.
    Present(Box<Descriptor>, Listing),
    /// The tag pointed at an index that was gone when read: it moved.
    Moved,
}

/// Reads and checks the index at the fallback tag for `subject`.
async fn read(backend: &dyn Backend, subject: &Digest, tag: &str, max: u64) -> Result<Found> {
    let descriptor = match backend.resolve(&Selector::Tag(tag.to_owned())).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(Found::Absent),
        Err(e) => return Err(e),
    };
    let what = || format!("referrers index at tag {tag} of {backend}");
    if descriptor.media_type.essence() != MediaType::OCI_INDEX.as_str() {
        return Err(Error::InvalidManifest {
            what: what(),
            reason: format!("it is {}, not an image index", descriptor.media_type),
            source: None,
        });
    }
    if descriptor.size > max {
        return Err(Error::LimitExceeded {
            what: what(),
            limit: max,
        });
    }
    let body = match backend.fetch(&descriptor).await {
        Ok(body) => body,
        Err(e) if e.is_not_found() => return Ok(Found::Moved),
        Err(e) => return Err(e),
    };
    let place = backend.to_string();
    let bytes = crate::verify::verified(body, &descriptor, &place)
        .bytes(max)
        .await?;
    let raw = RawManifest::new(descriptor.media_type.clone(), bytes);
    let index = match raw.parse() {
        Ok(Document::Index(index)) => index,
        Ok(Document::Manifest(_) | Document::Artifact(_)) => {
            return Err(Error::InvalidManifest {
                what: what(),
                reason: "it is a manifest, not an image index".into(),
                source: None,
            });
        }
        Err(e) => {
            return Err(Error::InvalidManifest {
                what: what(),
                reason: "it does not parse".into(),
                source: Some(Box::new(e)),
            });
        }
    };
    if index.manifests.iter().any(|d| &d.digest == subject) {
        return Err(Error::InvalidManifest {
            what: what(),
            reason: format!("it lists the subject {subject} as its own referrer"),
            source: None,
        });
    }
    let stamps = stamps(&index.annotations);
    Ok(Found::Present(
        Box::new(descriptor),
        Listing {
            entries: index.manifests,
            stamps,
        },
    ))
}

/// The index at the fallback tag (if any) and what it lists; `None` when
/// it moved while being read, so the caller should read again.
async fn current(
    backend: &dyn Backend,
    subject: &Digest,
    tag: &str,
    max: u64,
) -> Result<Option<(Option<Descriptor>, Listing)>> {
    Ok(match read(backend, subject, tag, max).await? {
        Found::Absent => Some((None, Listing::default())),
        Found::Present(d, e) => Some((Some(*d), e)),
        Found::Moved => None,
    })
}

/// The referrers of `subject` recorded at its fallback tag.
pub(crate) async fn list(
    backend: &dyn Backend,
    subject: &Digest,
    max: u64,
) -> Result<Vec<Descriptor>> {
    let tag = fallback_tag(subject);
    for attempt in 0..MAX_ATTEMPTS {
        if let Some((_, listing)) = current(backend, subject, &tag, max).await? {
            return Ok(listing.entries);
        }
        backoff(attempt).await;
    }
    Err(conflict(backend, &tag))
}

fn conflict(backend: &dyn Backend, tag: &str) -> Error {
    Error::Conflict {
        what: format!("referrers index at tag {tag}"),
        place: backend.to_string(),
    }
}

/// The shared jittered pause before attempt `attempt + 1`.
async fn backoff(attempt: u32) {
    tokio::time::sleep(crate::retry::backoff(attempt)).await;
}

/// Pushes an index of `listing` (by digest, untagged).
async fn push_index(backend: &dyn Backend, listing: Listing) -> Result<Descriptor> {
    let mut index = Index::new();
    index.manifests = listing.entries;
    index
        .annotations
        .insert(GENERATION.to_owned(), generation());
    for (digest, at) in listing.stamps {
        index
            .annotations
            .insert(format!("{CHANGED}{digest}"), at.to_string());
    }
    let raw = index.to_raw()?;
    let descriptor = raw.descriptor();
    backend
        .push(
            &descriptor,
            crate::body::Body::from_bytes(raw.bytes().clone()),
            &crate::backend::PushOptions::default(),
        )
        .await?;
    Ok(descriptor)
}

/// How an update treats superseded indexes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Delete superseded indexes (after checking the tag moved on).
    pub(crate) gc: bool,
    /// Largest index read.
    pub(crate) max: u64,
}

/// Deletes superseded indexes the tag no longer points at, as two reads
/// of the tag agree. A tag that cannot be read, or reads as absent (a
/// lagging replica answers 404 for a tag just written), or whose reads
/// disagree, keeps every index: garbage is harmless, deleting the live
/// index loses every referrer.
async fn collect(backend: &dyn Backend, tag: &str, superseded: Vec<Descriptor>) {
    if superseded.is_empty() || !backend.capabilities().delete {
        return;
    }
    let read = || async {
        match backend.resolve(&Selector::Tag(tag.to_owned())).await {
            Ok(descriptor) => Some(descriptor.digest),
            Err(_) => None,
        }
    };
    let Some(current) = read().await else {
        return;
    };
    if read().await.as_ref() != Some(&current) {
        return;
    }
    for old in superseded {
        if current != old.digest {
            // Best effort: a leftover index is garbage, not damage.
            let _ = backend.delete(&old).await;
        }
    }
}

/// Applies `change` as a compare-and-swap of the tag, retried on conflict.
async fn update_swapping(
    backend: &dyn Backend,
    subject: &Digest,
    tag: &str,
    change: &Change,
    settings: Settings,
) -> Result<()> {
    let mut stamped: Option<Change> = None;
    for attempt in 0..MAX_ATTEMPTS {
        let Some((old, listing)) = current(backend, subject, tag, settings.max).await? else {
            backoff(attempt).await;
            continue;
        };
        let change = stamped.get_or_insert_with(|| change.stamped(&listing));
        if change.applied(&listing) {
            return Ok(());
        }
        let listing = change.apply(&listing);
        let new = if listing.entries.is_empty() {
            None
        } else {
            Some(push_index(backend, listing).await?)
        };
        let expected = old.as_ref().map(|d| &d.digest);
        match backend.swap_tag(tag, expected, new.as_ref()).await {
            Ok(()) => {
                match (&new, old) {
                    // The swap took the tag away from `old`: no writer can
                    // swap it back (its compare names what it read).
                    (None, Some(old)) if settings.gc && backend.capabilities().delete => {
                        let _ = backend.delete(&old).await;
                    }
                    (_, old) if settings.gc => {
                        collect(backend, tag, old.into_iter().collect()).await;
                    }
                    _ => {}
                }
                return Ok(());
            }
            Err(Error::Conflict { .. }) => {
                if settings.gc {
                    collect(backend, tag, new.into_iter().collect()).await;
                }
                backoff(attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(conflict(backend, tag))
}

/// Applies `change` by writing, then verifying after settling delays, and
/// merging again when another writer replaced the index.
async fn update_verifying(
    backend: &dyn Backend,
    subject: &Digest,
    tag: &str,
    change: &Change,
    settings: Settings,
) -> Result<()> {
    let mut superseded = Vec::new();
    let mut wrote = false;
    let mut confirmed = 0;
    let mut settle = Duration::from_millis(30);
    let mut stamped: Option<Change> = None;
    for attempt in 0..MAX_ATTEMPTS {
        let started = std::time::Instant::now();
        let Some((old, listing)) = current(backend, subject, tag, settings.max).await? else {
            backoff(attempt).await;
            continue;
        };
        let change = stamped.get_or_insert_with(|| change.stamped(&listing));
        // A tag gone after this writer moved it was taken by a later
        // writer that emptied the index: that later change won.
        let emptied_later = wrote && old.is_none();
        if change.applied(&listing) || emptied_later {
            confirmed += 1;
            if !wrote || confirmed > CONFIRMATIONS {
                break;
            }
            tokio::time::sleep(settle * confirmed).await;
            continue;
        }
        confirmed = 0;
        let listing = change.apply(&listing);
        if listing.entries.is_empty() && settings.gc && backend.capabilities().delete {
            // Deleting the index takes the tag with it.
            if let Some(old) = &old {
                match backend.delete(old).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        } else {
            let new = push_index(backend, listing).await?;
            // Narrow the window: move the tag only if it has not moved.
            let now = match backend.resolve(&Selector::Tag(tag.to_owned())).await {
                Ok(d) => Some(d.digest),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            };
            if now.as_ref() != old.as_ref().map(|d| &d.digest) {
                superseded.push(new);
                backoff(attempt).await;
                continue;
            }
            backend.tag(&new, tag).await?;
            superseded.extend(old);
            // Ours too, should another writer replace it; `collect` keeps
            // whichever the tag names at the end.
            superseded.push(new);
        }
        wrote = true;
        // Another writer's read-to-write window is about as long as ours.
        settle = (started.elapsed() * 3).clamp(Duration::from_millis(30), Duration::from_secs(2));
        tokio::time::sleep(settle).await;
    }
    if confirmed == 0 || (wrote && confirmed <= CONFIRMATIONS) {
        return Err(conflict(backend, tag));
    }
    if settings.gc {
        collect(backend, tag, superseded).await;
    }
    Ok(())
}

/// Applies one change to the fallback index of `subject`.
async fn update(
    backend: &dyn Backend,
    subject: &Digest,
    change: &Change,
    settings: Settings,
) -> Result<()> {
    let tag = fallback_tag(subject);
    if backend.capabilities().tag_compare_and_swap {
        update_swapping(backend, subject, &tag, change, settings).await
    } else {
        update_verifying(backend, subject, &tag, change, settings).await
    }
}

mod batch;

pub(crate) use batch::Batcher;

#[cfg(test)]
mod tests;
