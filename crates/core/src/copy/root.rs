//! What a copy starts from: the manifest a selector names, or what a
//! platform filter keeps of an index (the member itself for one platform,
//! a new index of the matches for several), and where its walk begins.

use crate::error::{Error, Result};
use crate::model::{Descriptor, Document, Index, Platform, RawManifest, Selector};
use crate::store::Store;

/// Picks the root: the resolved manifest, or what the platform filter
/// keeps of an index.
pub(crate) async fn choose_root(
    source: &Store,
    selector: &Selector,
    platforms: &[Platform],
) -> Result<(Descriptor, Option<RawManifest>)> {
    if platforms.is_empty() {
        // The walk reads the manifest itself; resolving is enough here.
        return Ok((source.resolve(selector).await?, None));
    }
    let (descriptor, raw) = source.fetch_manifest(selector).await?;
    let Document::Index(index) = raw.parse().map_err(|e| e.naming(&descriptor.digest))? else {
        // A single manifest is copied as it is, as skopeo and crane do.
        return Ok((descriptor, None));
    };
    let matching: Vec<Descriptor> = index
        .manifests
        .iter()
        .filter(|m| {
            m.platform
                .as_ref()
                .is_some_and(|have| platforms.iter().any(|want| want.matches(have)))
        })
        .cloned()
        .collect();
    match matching.as_slice() {
        [] => Err(Error::NotFound {
            what: format!(
                "a manifest for {} in index {} (it has {})",
                platforms
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                descriptor.digest,
                index.platform_list()
            ),
            place: source.to_string(),
        }),
        [one] if platforms.len() == 1 => Ok((one.clone(), None)),
        _ => {
            let filtered = Index {
                manifests: matching,
                ..(*index).clone()
            };
            let raw = filtered.to_raw()?;
            Ok((raw.descriptor(), Some(raw)))
        }
    }
}

/// Where a walk starts: the root, or the members of the index a platform
/// filter made.
pub(crate) fn walk_roots(
    root: &Descriptor,
    new_root: Option<&RawManifest>,
) -> Result<Vec<Descriptor>> {
    match new_root {
        Some(raw) => match raw.parse()? {
            // A filtered index: its members, then the new index.
            Document::Index(index) => Ok(index.manifests),
            _ => Err(Error::InvalidInput {
                what: "platform filter".into(),
                reason: "the filtered root is not an index".into(),
            }),
        },
        None => Ok(vec![root.clone()]),
    }
}
