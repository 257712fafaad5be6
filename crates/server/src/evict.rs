//! Keeps a pull-through namespace within its size budget. Each cached
//! repository records when each of its manifests was last served
//! (`cache/access/ALG-HEX`, written at most every few seconds per
//! manifest and replica). Before each collection the namespace's images
//! (the manifests its layouts list, with what they name) are sized, and
//! while the content they hold together is over the budget the image
//! served least recently is deleted from its layout, unless it was served
//! within `keep_for`. The collection that follows removes the blobs no
//! image names any more, with the layout engine's fence and grace, so a
//! pull in flight is never cut: its image is recent, and a blob a client
//! asks for after its image went is fetched from upstream again. An
//! image a referrer pushed here names (`cache/pinned/`) is never evicted:
//! upstream does not hold that referrer. Referrers indexes at digest tags
//! live by their subjects and are not counted.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use orca::model::{Document, Index, RawManifest};
use orca::{Descriptor, Digest, Store};

use crate::Shared;
use crate::cache::{Cache, Upstream, now, write_over};

/// Where a cached repository records when manifest `digest` was last
/// served.
fn access_key(digest: &Digest) -> String {
    format!("{ACCESS_DIR}{}-{}", digest.algorithm(), digest.hex())
}

/// The records of last service.
const ACCESS_DIR: &str = "cache/access/";

/// The records of manifests a referrer pushed here names: never evicted.
const PINNED_DIR: &str = "cache/pinned/";

/// Where a cached repository records that manifest `digest` is the
/// subject of a referrer pushed here.
pub(crate) fn pin_key(digest: &Digest) -> String {
    format!("{PINNED_DIR}{}-{}", digest.algorithm(), digest.hex())
}

/// How often one replica rewrites a manifest's record at most: often
/// enough that `keep_for` holds, rarely enough to cost nothing.
fn rewrite_after(keep_for: Duration) -> Duration {
    (keep_for / 4).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// How many manifests a replica remembers writing records of before it
/// forgets those written long enough ago.
const REMEMBERED: usize = 4096;

/// When each manifest's record was last written by this replica.
#[derive(Debug, Default)]
pub(crate) struct Accesses {
    written: std::sync::Mutex<HashMap<(String, Digest), Instant>>,
}

impl Accesses {
    /// Records that manifest `digest` of repository `name` was served
    /// now, unless this replica did so lately; a failure costs only
    /// eviction order.
    pub(crate) async fn served(
        &self,
        repository: &orca::Repository,
        name: &str,
        digest: &Digest,
        keep_for: Duration,
    ) {
        let key = (name.to_owned(), digest.clone());
        {
            let mut written = self
                .written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if written.len() >= REMEMBERED {
                // What was written long enough ago is written again anyway.
                let every = rewrite_after(keep_for);
                written.retain(|_, at| at.elapsed() < every);
            }
            match written.get(&key) {
                Some(at) if at.elapsed() < rewrite_after(keep_for) => return,
                _ => {
                    written.insert(key, Instant::now());
                }
            }
        }
        let stamp = Bytes::from(now().to_string());
        let storage = repository.storage.as_ref();
        if let Err(e) = write_over(storage, &access_key(digest), stamp).await {
            tracing::debug!(repository = %name, %digest, error = %e, "recording a cached manifest's use failed");
        }
    }
}

/// One cached image: a manifest a layout lists, when it was last served,
/// and what it holds (its own bytes and what it names, by digest).
struct Image {
    repository: String,
    descriptor: Descriptor,
    served: u64,
    holds: BTreeMap<Digest, u64>,
}

/// What an eviction pass did in one namespace.
#[derive(Debug, Default)]
pub(crate) struct Evicted {
    /// The bytes the namespace's images hold after it.
    pub(crate) bytes: u64,
    /// Images deleted.
    pub(crate) images: u64,
    /// Bytes no image holds any more because of it.
    pub(crate) freed: u64,
}

/// Brings every namespace with a budget under it; what fails is logged.
pub(crate) async fn evict_all(state: &Shared, cache: &Cache) {
    for upstream in cache.upstreams() {
        let Some(budget) = upstream.budget else {
            continue;
        };
        match evict(state, upstream, budget).await {
            Ok(evicted) => {
                if evicted.images > 0 {
                    tracing::info!(namespace = %upstream.namespace, images = evicted.images, bytes = evicted.freed, "evicted from the cache");
                }
                cache.evicted(&upstream.namespace, &evicted);
            }
            Err(e) => {
                tracing::warn!(namespace = %upstream.namespace, error = %e, "cache eviction failed");
            }
        }
    }
}

/// Deletes the images of `upstream`'s namespace served least recently
/// (and not within `keep_for`) until what the rest hold fits `budget`.
async fn evict(state: &Shared, upstream: &Upstream, budget: u64) -> orca::Result<Evicted> {
    let prefix = format!("{}/", upstream.namespace);
    let mut images = Vec::new();
    for name in state.root.repositories_under(&prefix).await? {
        images.extend(cached_images(state, &name).await?);
    }
    // How many images hold each digest, and its size.
    let mut held: HashMap<Digest, (u64, usize)> = HashMap::new();
    for image in &images {
        for (digest, size) in &image.holds {
            held.entry(digest.clone()).or_insert((*size, 0)).1 += 1;
        }
    }
    let mut bytes: u64 = held.values().map(|(size, _)| size).sum();
    let mut evicted = Evicted::default();
    images.sort_by_key(|image| image.served);
    let now = now();
    for image in images {
        if bytes <= budget {
            break;
        }
        if now.saturating_sub(image.served) < upstream.keep_for.as_secs() {
            // Everything left was served more recently still.
            break;
        }
        let repository = state.root.repository(&image.repository).await?;
        match repository.store.delete(&image.descriptor).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let _ = repository
            .storage
            .delete(&access_key(&image.descriptor.digest))
            .await;
        evicted.images += 1;
        for digest in image.holds.keys() {
            if let Some((size, count)) = held.get_mut(digest) {
                *count -= 1;
                if *count == 0 {
                    bytes = bytes.saturating_sub(*size);
                    evicted.freed += *size;
                }
            }
        }
    }
    evicted.bytes = bytes;
    Ok(evicted)
}

/// The images repository `name` lists, each with when it was last served
/// (0 when never recorded) and what it holds.
async fn cached_images(state: &Shared, name: &str) -> orca::Result<Vec<Image>> {
    let repository = state.root.repository(name).await?;
    let storage = repository.storage.as_ref();
    let Some((bytes, _)) = storage.read(orca::layout::INDEX_FILE, 64 << 20).await? else {
        return Ok(Vec::new());
    };
    let index: Index =
        serde_json::from_slice(&bytes).map_err(|e| orca::Error::InvalidManifest {
            what: format!("the index.json of {name}"),
            reason: e.to_string(),
            source: None,
        })?;
    let mut served: HashMap<String, u64> = HashMap::new();
    for listed in storage.list(ACCESS_DIR).await? {
        let stamp = match storage.read(&listed.key, 64).await? {
            Some((bytes, _)) => String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0),
            None => continue,
        };
        served.insert(listed.key, stamp);
    }
    let pinned: std::collections::HashSet<String> = storage
        .list(PINNED_DIR)
        .await?
        .into_iter()
        .map(|listed| listed.key)
        .collect();
    let mut images: Vec<Image> = Vec::new();
    for entry in index.manifests {
        if images.iter().any(|i| i.descriptor.digest == entry.digest) || digest_tag(&entry) {
            continue;
        }
        let mut holds = BTreeMap::new();
        walk(&repository.store, &entry, &mut holds, 0).await?;
        // A pinned image counts as served now: never evicted.
        let served = if pinned.contains(&pin_key(&entry.digest)) {
            u64::MAX
        } else {
            served.get(&access_key(&entry.digest)).copied().unwrap_or(0)
        };
        images.push(Image {
            repository: name.to_owned(),
            served,
            descriptor: entry.clone(),
            holds,
        });
    }
    Ok(images)
}

/// Whether an index entry is a referrers index at its subject's digest
/// tag (`sha256-<hex>`): it lives by its subject, and is no image to
/// evict.
fn digest_tag(entry: &Descriptor) -> bool {
    entry
        .annotations
        .get(orca::model::ANNOTATION_REF_NAME)
        .and_then(|tag| tag.split_once('-'))
        .is_some_and(|(algorithm, hex)| {
            matches!(algorithm, "sha256" | "sha512")
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Adds what `descriptor` holds in `store` to `holds`: the manifest, and
/// the blobs and manifests it names that are there.
async fn walk(
    store: &Store,
    descriptor: &Descriptor,
    holds: &mut BTreeMap<Digest, u64>,
    depth: usize,
) -> orca::Result<()> {
    if depth > 4 || holds.contains_key(&descriptor.digest) || !store.exists(descriptor).await? {
        return Ok(());
    }
    holds.insert(descriptor.digest.clone(), descriptor.size);
    let bytes = match store.fetch_bytes(descriptor).await {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    let Ok(document) = RawManifest::new(descriptor.media_type.clone(), bytes).parse() else {
        return Ok(());
    };
    for child in document.children() {
        if matches!(document, Document::Index(_)) {
            Box::pin(walk(store, child, holds, depth + 1)).await?;
        } else if store.stat(child).await?.is_some() {
            holds.insert(child.digest.clone(), child.size);
        }
    }
    Ok(())
}
