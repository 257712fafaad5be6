//! What a copy is asked to do and what it tells: [`CopyOptions`], the
//! progress [`Event`]s a [`Progress`] receives, the [`CopyReport`], and
//! [`Tally`], a `Progress` that counts.

use std::collections::HashMap;
use std::sync::Arc;

use super::ledger::Ledger;
use crate::model::{Descriptor, Digest, Platform};

/// What the plan holds, known before the first transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Blobs to move (some may turn out present, mounted or external).
    pub blobs: u64,
    /// Manifests to push.
    pub manifests: u64,
    /// Bytes of those blobs and manifests: the most a copy will move.
    pub bytes: u64,
}

/// Something that happened during a copy, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The walk is done: what the copy will move at most.
    Planned(Totals),
    /// A blob transfer started.
    Started(Descriptor),
    /// The transfer continues an interrupted one: the target already held
    /// the first `offset` bytes, which are not moved again.
    Resumed {
        /// The blob.
        digest: Digest,
        /// Bytes the target held.
        offset: u64,
    },
    /// Bytes of a blob read so far (throttled, and always sent at its end).
    Advanced {
        /// The blob.
        digest: Digest,
        /// Bytes done.
        done: u64,
        /// Its size.
        size: u64,
    },
    /// A blob was transferred.
    Copied(Descriptor),
    /// A blob was mounted from another repository.
    Mounted(Descriptor),
    /// The target already had this blob or manifest.
    Present(Descriptor),
    /// A layer at external URLs, left where it is.
    External(Descriptor),
    /// A referrer the source listed but no longer holds, left out.
    Gone(Descriptor),
    /// A manifest was pushed.
    Pushed(Descriptor),
    /// A tag was set in the target.
    Tagged {
        /// The tag.
        tag: String,
        /// What it points at.
        descriptor: Descriptor,
    },
}

/// Receives progress events (from several tasks at once).
pub trait Progress: Send + Sync {
    /// Something happened.
    fn event(&self, event: &Event);
}

/// How to copy.
#[derive(Clone)]
pub struct CopyOptions {
    /// Transfers (and, during the walk, reads) in flight at once (at least 1).
    pub concurrency: usize,
    /// Keep only these platforms of an index: one platform makes its
    /// manifest the root; several make a new index of the matches.
    pub platforms: Vec<Platform>,
    /// Copy the referrers of every copied manifest, recursively.
    pub referrers: bool,
    /// Copy `<alg>-<hex>.*` tags (cosign-style signatures and
    /// attestations) of every copied manifest, with their graphs.
    pub digest_tags: bool,
    /// Copy layers that live at external URLs too.
    pub external: bool,
    /// Walk manifests the target already has too, so what is missing under
    /// them (an interrupted copy, a partial cache) is repaired and
    /// referrers added since to their children come along.
    pub force: bool,
    /// A repository of the target's registry that holds the blobs already:
    /// mount from it instead of transferring, where the target can mount.
    pub mount_from: Option<String>,
    /// Where events go.
    pub progress: Option<Arc<dyn Progress>>,
    /// Blobs shared with the other copies of a run (see [`Ledger`]).
    pub shared: Option<SharedBlobs>,
}

/// A copy's share of a run's [`Ledger`].
#[derive(Clone, Debug)]
pub struct SharedBlobs {
    /// The run's ledger.
    pub ledger: Ledger,
    /// The target repository's name on its registry (where a blob that
    /// lands can later be mounted from); any name that tells the run's
    /// targets apart elsewhere.
    pub repository: String,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            concurrency: 4,
            platforms: Vec::new(),
            referrers: false,
            digest_tags: false,
            external: false,
            force: false,
            mount_from: None,
            progress: None,
            shared: None,
        }
    }
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("concurrency", &self.concurrency)
            .field("platforms", &self.platforms)
            .field("referrers", &self.referrers)
            .field("digest_tags", &self.digest_tags)
            .field("external", &self.external)
            .field("force", &self.force)
            .field("mount_from", &self.mount_from)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// The root that was copied (after any platform filter).
    pub root: Option<Descriptor>,
    /// Blobs and manifests transferred.
    pub copied: u64,
    /// Bytes transferred (a resumed blob counts only what moved).
    pub bytes: u64,
    /// Blobs whose interrupted transfer was continued.
    pub resumed: u64,
    /// Blobs mounted.
    pub mounted: u64,
    /// Content the target already had.
    pub present: u64,
    /// External layers left out.
    pub external: u64,
    /// Referrers copied (by the graph of each, counted once).
    pub referrers: u64,
    /// Listed referrers the source no longer holds, left out.
    pub gone: u64,
    /// Digest tags set on the target.
    pub digest_tags: u64,
}

/// Counts transfers by digest: how often each blob was copied or manifest
/// pushed. For tests and for callers that want totals without drawing
/// anything.
#[derive(Debug, Default)]
pub struct Tally {
    copied: std::sync::Mutex<HashMap<Digest, u32>>,
}

impl Tally {
    /// How many times `digest` was transferred.
    pub fn copied(&self, digest: &Digest) -> u32 {
        self.copied
            .lock()
            .map(|m| m.get(digest).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// How many transfers there were in all.
    pub fn total(&self) -> u32 {
        self.copied.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

impl Progress for Tally {
    fn event(&self, event: &Event) {
        if let (Event::Copied(d) | Event::Pushed(d), Ok(mut copied)) = (event, self.copied.lock()) {
            *copied.entry(d.digest.clone()).or_default() += 1;
        }
    }
}
