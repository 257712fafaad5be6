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

//!
//! Split by job: naming the tag and the listing types here; the change
//! stamps in `change`; reading and writing the index in `index`; the two
//! update algorithms and the clean-up of superseded indexes in `update`;
//! batching in `batch`.

use crate::model::{Descriptor, Digest, Document};

mod batch;
mod change;
mod index;
mod update;

pub(crate) use batch::Batcher;
pub(crate) use change::Change;
#[cfg(test)]
use change::{CHANGED, Listing, Stamps, now, stamps};
pub(crate) use index::list;
#[cfg(test)]
use index::push_index;
pub(crate) use update::Settings;
#[cfg(test)]
use update::collect;
use update::update;

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

#[cfg(test)]
mod tests;
