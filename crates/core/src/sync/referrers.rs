//! Referrers an image gained after it was mirrored: found by listing
//! them at both ends, and copied as the image's copy would have. A
//! referrer the target holds without listing it has what is under it
//! completed and is pushed again, which lists it; one the source lists
//! but no longer holds is left out.

use std::collections::HashSet;

use crate::copy::{CopyOptions, Job, copy_root, relist};
use crate::error::Result;
use crate::model::{Descriptor, Digest};

use super::Mirror;

/// The referrers the source lists for `subjects` and the target does
/// not, each with its subject: one listing per subject at the source, and
/// one at the target for a subject that has any.
pub(super) async fn new_referrers(
    mirror: &Mirror,
    subjects: &[Descriptor],
) -> Result<Vec<(Descriptor, Descriptor)>> {
    let mut missing = Vec::new();
    for subject in subjects {
        let at_source = mirror.source.referrers(subject, None).await?;
        if at_source.manifests.is_empty() {
            continue;
        }
        let at_target = mirror.target.referrers(subject, None).await?;
        let held: HashSet<&Digest> = at_target.manifests.iter().map(|d| &d.digest).collect();
        missing.extend(
            at_source
                .manifests
                .iter()
                .filter(|d| !held.contains(&d.digest))
                .map(|d| (d.plain(), subject.clone())),
        );
    }
    Ok(missing)
}

/// Copies `referrers` (with their own referrers and graphs); the bytes
/// moved, or `None` when nothing needed moving after all.
pub(super) async fn catch_up(
    mirror: &Mirror,
    referrers: &[(Descriptor, Descriptor)],
    options: &CopyOptions,
    source_tags: &[String],
) -> Result<Option<u64>> {
    let (source, target) = (&mirror.source, &mirror.target);
    let mut moved = None;
    for (referrer, subject) in referrers {
        // Held but not listed (an earlier push stopped before its
        // subject's index was written): what is under it is checked and
        // completed, then it is pushed again, which lists it.
        let held = target.exists(referrer).await?;
        let mut repairing = options.clone();
        repairing.force = held;
        let job = Job {
            source,
            target,
            root: referrer.clone(),
            new_root: None,
            tag: None,
            source_tags: Some(source_tags),
            // Listed by their subject's referrers, not as roots.
            list: false,
        };
        let copied = copy_root(job, &repairing).await;
        let mut bytes = match copied {
            Ok(copied) => copied.bytes,
            // Listed at the source, but gone from it: nothing to copy.
            Err(e) if e.is_not_found() && !source.exists(referrer).await? => continue,
            Err(e) => return Err(e),
        };
        if held {
            let pair = [(referrer.clone(), subject.clone())];
            for relisted in relist(target, &pair, options).await? {
                bytes = bytes.saturating_add(relisted.size);
            }
        }
        *moved.get_or_insert(0) += bytes;
    }
    Ok(moved)
}

/// Whether a dry run would copy any of `missing`: those the source still
/// holds.
pub(super) async fn any_held(
    mirror: &Mirror,
    missing: &[(Descriptor, Descriptor)],
) -> Result<bool> {
    for (referrer, _) in missing {
        if mirror.source.exists(referrer).await? {
            return Ok(true);
        }
    }
    Ok(false)
}
