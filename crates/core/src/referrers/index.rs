//! Reading and writing a referrers index: the index at a fallback tag,
//! checked (an image index, within the size cap, not listing its own
//! subject), and new indexes pushed by digest.

use super::change::{CHANGED, GENERATION, Listing, generation, stamps};
use super::fallback_tag;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, Document, Index, MediaType, RawManifest, Selector};
use crate::retry::CAS_ATTEMPTS as MAX_ATTEMPTS;

/// What reading the fallback tag found.
pub(super) enum Found {
    /// No tag: no referrers.
    Absent,
    /// The index the tag points at, and what it lists.
    Present(Box<Descriptor>, Listing),
    /// The tag pointed at an index that was gone when read: it moved.
    Moved,
}

/// Reads and checks the index at the fallback tag for `subject`.
pub(super) async fn read(
    backend: &dyn Backend,
    subject: &Digest,
    tag: &str,
    max: u64,
) -> Result<Found> {
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
        Ok(Document::Manifest(_) | Document::Artifact(_) | Document::Schema1(_)) => {
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
pub(super) async fn current(
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

pub(super) fn conflict(backend: &dyn Backend, tag: &str) -> Error {
    Error::Conflict {
        what: format!("referrers index at tag {tag}"),
        place: backend.to_string(),
    }
}

/// The shared jittered pause before attempt `attempt + 1`.
pub(super) async fn backoff(attempt: u32) {
    tokio::time::sleep(crate::retry::backoff(attempt)).await;
}

/// Pushes an index of `listing` (by digest, untagged).
pub(super) async fn push_index(backend: &dyn Backend, listing: Listing) -> Result<Descriptor> {
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
