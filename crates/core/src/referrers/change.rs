//! Changes to a referrers index and the stamps that order them (see the
//! module above): what to add and remove, stamped against the index a
//! writer first reads, and the listing an index holds.

use crate::model::{Descriptor, Digest};

/// Annotation that makes every referrers index orca writes unique, so a
/// superseded index is never the same content as a later one (which a
/// collector could otherwise delete from under the tag).
pub(super) const GENERATION: &str = "dev.orca.referrers.generation";

/// Annotation prefix of the per-referrer change stamps of an index.
pub(super) const CHANGED: &str = "dev.orca.referrers.changed.";
/// How long an index keeps a change stamp: far longer than any update
/// runs (every attempt of one is bounded), and short enough that stamps do
/// not grow the index towards its size cap.
pub(super) const STAMP_LIFETIME: u128 = 10 * 60 * 1_000_000_000;

/// Nanoseconds since the epoch.
pub(super) fn now() -> u128 {
    crate::retry::unix_nanos()
}

/// The change stamps of an index, by referrer digest.
pub(crate) type Stamps = std::collections::BTreeMap<String, u128>;

/// Reads the change stamps from an index's annotations.
pub(super) fn stamps(annotations: &std::collections::BTreeMap<String, String>) -> Stamps {
    annotations
        .iter()
        .filter_map(|(key, value)| {
            Some((key.strip_prefix(CHANGED)?.to_owned(), value.parse().ok()?))
        })
        .collect()
}

pub(super) fn generation() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = now();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos}-{n}", std::process::id())
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
    pub(super) fn newest(&self) -> u128 {
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
    pub(super) fn stamped(&self, listing: &Listing) -> Change {
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
    pub(super) fn then(&mut self, later: &Change) {
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
    pub(super) fn overtaken(listing: &Listing, digest: &Digest, at: u128) -> bool {
        listing
            .stamps
            .get(&digest.to_string())
            .is_some_and(|recorded| *recorded > at)
    }

    /// Whether `listing` already reflects the change (or, for an attach,
    /// a later removal).
    pub(super) fn applied(&self, listing: &Listing) -> bool {
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
    pub(super) fn apply(&self, listing: &Listing) -> Listing {
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
