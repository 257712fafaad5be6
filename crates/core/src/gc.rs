//! Garbage collection of a layout's blobs, the same for every backend
//! that stores one (a directory, a bucket prefix): which blobs nothing
//! reachable names. It reads manifests through a [`Store`], so it stands
//! above the pure layout rules of [`crate::layout`]; each backend then
//! removes what it finds, its own way.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::layout::{as_manifest, ref_name};
use crate::model::{Descriptor, Digest, MediaType, RawManifest};
use crate::store::Store;

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
}

impl GcReport {
    /// A report on `blobs`.
    pub fn new(blobs: Vec<(Digest, u64)>, removed: bool) -> Self {
        let bytes = blobs.iter().map(|(_, size)| size).sum();
        GcReport {
            blobs,
            bytes,
            removed,
        }
    }
}

/// The blobs of a layout that garbage collection removes: everything not
/// reachable from the `roots` (the `index.json` entries) through indexes,
/// manifests, configs, layers and subjects — except referrers of reachable
/// manifests (manifests whose `subject` is reachable) and what they name.
/// A referrers index at a fallback tag (`sha256-<hex>`) is not a root of
/// its own: it lives while the manifest it names referrers for is
/// reachable, so deleting an image lets its referrers go too. Its
/// `index.json` entry must then go with it (see [`LayoutIndex::remove_digest`](crate::layout::LayoutIndex::remove_digest)).
///
/// `blobs` lists every blob in the layout with its size; manifests are read
/// through `store`, so they are verified.
pub async fn unreachable(
    store: &Store,
    roots: &[Descriptor],
    blobs: &[(Digest, u64)],
) -> Result<Vec<(Digest, u64)>> {
    let sizes: HashMap<&Digest, u64> = blobs.iter().map(|(d, s)| (d, *s)).collect();
    let mut reachable = HashSet::new();
    let (fallback, regular): (Vec<&Descriptor>, Vec<&Descriptor>) = roots.iter().partition(|d| {
        d.media_type.is_index() && ref_name(d).is_some_and(crate::referrers::is_fallback_tag)
    });
    mark(
        store,
        regular.into_iter().cloned().collect(),
        &sizes,
        &mut reachable,
    )
    .await?;

    // Referrers are found by reading every small blob that is not yet
    // reachable and keeping the manifests among them that have a subject.
    let limit = store.capabilities().max_manifest_size;
    let mut referrers: Vec<(Descriptor, Digest)> = Vec::new();
    for (digest, size) in blobs {
        if reachable.contains(digest) || *size > limit {
            continue;
        }
        let probe = Descriptor::new(MediaType::OCTET_STREAM, digest.clone(), *size);
        // A blob that vanished meanwhile is no referrer; any other failure
        // stops the collection rather than risk deleting a referrer.
        let bytes = match store.fetch_bytes(&probe).await {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if let Some((descriptor, document)) = as_manifest(digest, bytes)
            && let Some(subject) = document.subject()
        {
            referrers.push((descriptor, subject.digest.clone()));
        }
    }
    loop {
        let tags: HashSet<String> = reachable
            .iter()
            .map(crate::referrers::fallback_tag)
            .collect();
        let found: Vec<Descriptor> = referrers
            .iter()
            .filter(|(d, subject)| reachable.contains(subject) && !reachable.contains(&d.digest))
            .map(|(d, _)| d.clone())
            .chain(
                fallback
                    .iter()
                    .filter(|d| !reachable.contains(&d.digest))
                    .filter(|d| ref_name(d).is_some_and(|t| tags.contains(t)))
                    .map(|d| (*d).clone()),
            )
            .collect();
        if found.is_empty() {
            break;
        }
        mark(store, found, &sizes, &mut reachable).await?;
    }
    Ok(blobs
        .iter()
        .filter(|(d, _)| !reachable.contains(d))
        .cloned()
        .collect())
}

/// Marks everything reachable from `queue`. Content that is named but not
/// present is skipped: it cannot be collected anyway.
async fn mark(
    store: &Store,
    mut queue: Vec<Descriptor>,
    present: &HashMap<&Digest, u64>,
    reachable: &mut HashSet<Digest>,
) -> Result<()> {
    while let Some(descriptor) = queue.pop() {
        if !reachable.insert(descriptor.digest.clone()) {
            continue;
        }
        if !descriptor.media_type.is_manifest() || !present.contains_key(&descriptor.digest) {
            continue;
        }
        let bytes = store.fetch_bytes(&descriptor).await?;
        let document = RawManifest::new(descriptor.media_type.clone(), bytes).parse()?;
        queue.extend(document.children().into_iter().cloned());
        queue.extend(document.subject().cloned());
    }
    Ok(())
}
