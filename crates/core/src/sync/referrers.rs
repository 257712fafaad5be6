//! Referrers an image gained after it was mirrored: found by listing
//! them at both ends, and copied as the image's copy would have. A
//! referrer the target holds without listing it is pushed again, which
//! lists it; one the source lists but no longer holds is left out.

use std::collections::HashSet;

use crate::copy::{CopyOptions, copy_root};
use crate::error::Result;
use crate::model::{Descriptor, Digest, Selector};

use super::Mirror;

/// The referrers the source lists for `subjects` and the target does
/// not: one listing per subject at the source, and one at the target for
/// a subject that has any.
pub(super) async fn new_referrers(
    mirror: &Mirror,
    subjects: &[Descriptor],
) -> Result<Vec<Descriptor>> {
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
                .map(|d| Descriptor::new(d.media_type.clone(), d.digest.clone(), d.size)),
        );
    }
    Ok(missing)
}

/// Copies `referrers` (with their own referrers and graphs); the bytes
/// moved, or `None` when nothing needed moving after all.
pub(super) async fn catch_up(
    mirror: &Mirror,
    referrers: &[Descriptor],
    options: &CopyOptions,
    source_tags: &[String],
) -> Result<Option<u64>> {
    let (source, target) = (&mirror.source, &mirror.target);
    let mut moved = None;
    for referrer in referrers {
        let copied = copy_root(
            source,
            referrer.clone(),
            None,
            target,
            None,
            options,
            Some(source_tags),
        )
        .await;
        let bytes = match copied {
            Ok(copied) if copied.copied > 0 => copied.bytes,
            // The target holds it but does not list it (an earlier push
            // stopped before its subject's index was written): pushed
            // again, it is listed.
            Ok(_) => {
                let (_, raw) = source
                    .fetch_manifest(&Selector::Digest(referrer.digest.clone()))
                    .await?;
                target.push_manifest(&raw, None).await?;
                referrer.size
            }
            // Listed at the source, but gone from it: nothing to copy.
            Err(e) if e.is_not_found() && !source.exists(referrer).await? => continue,
            Err(e) => return Err(e),
        };
        *moved.get_or_insert(0) += bytes;
    }
    Ok(moved)
}
