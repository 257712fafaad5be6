//! Updating a referrers index: a compare-and-swap of the tag where the
//! backend offers one, verify-after-write and merging again where it does
//! not, and the clean-up of superseded indexes.

use std::time::Duration;

use super::change::Change;
use super::fallback_tag;
use super::index::{backoff, conflict, current, push_index};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, Selector};
use crate::retry::CAS_ATTEMPTS as MAX_ATTEMPTS;

/// Confirmations a verify-after-write update waits for.
const CONFIRMATIONS: u32 = 2;

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
pub(super) async fn collect(backend: &dyn Backend, tag: &str, superseded: Vec<Descriptor>) {
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
pub(super) async fn update_swapping(
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
pub(super) async fn update_verifying(
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
pub(super) async fn update(
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
