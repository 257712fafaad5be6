//! What `finish` writes besides the blobs: `index.json` (every tag, and
//! every manifest nothing else names) and, for a docker-archive,
//! `manifest.json`.

use std::collections::HashSet;

use bytes::Bytes;
use orca_core::layout;
use orca_core::model::ANNOTATION_REF_NAME;
use orca_core::{Descriptor, Digest, Error, Index, MediaType, Result};

use super::{ArchiveFormat, ArchiveWriter, State, Written};
use crate::docker_archive::{CONTAINERD_IMAGE_NAME, SavedImage};

impl ArchiveWriter {
    pub(super) fn index(&self, state: &State) -> Result<Bytes> {
        let mut index = Index::new();
        // A tag several repositories share would be several entries with
        // one `ref.name`, which readers resolve arbitrarily: those are
        // named `REPO:TAG` (as a bundle names them, and skopeo reads
        // `oci-archive:FILE:REPO:TAG`); a tag one repository has keeps its
        // plain name.
        let mut holders: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (_, tag) in state.tags.keys() {
            *holders.entry(tag.as_str()).or_default() += 1;
        }
        for ((repository, tag), descriptor) in &state.tags {
            let mut entry = descriptor.plain();
            let name = match repository {
                Some(repository) if holders.get(tag.as_str()).is_some_and(|n| *n > 1) => {
                    format!("{repository}:{tag}")
                }
                _ => tag.clone(),
            };
            entry
                .annotations
                .insert(ANNOTATION_REF_NAME.to_owned(), name);
            if let Some(repository) = repository {
                entry.annotations.insert(
                    CONTAINERD_IMAGE_NAME.to_owned(),
                    format!("{repository}:{tag}"),
                );
            }
            index.manifests.push(entry);
        }
        let tagged: HashSet<&Digest> = state.tags.values().map(|d| &d.digest).collect();
        let named: HashSet<&Digest> = state
            .content
            .values()
            .flat_map(|w| w.names.iter().map(|d| &d.digest))
            .collect();
        let mut roots: Vec<(&Digest, &Written)> = state
            .content
            .iter()
            .filter(|(d, w)| {
                w.media_type.is_manifest() && !tagged.contains(d) && !named.contains(d)
            })
            .collect();
        roots.sort_by_key(|(digest, _)| digest.to_string());
        for (digest, written) in roots {
            index.manifests.push(Descriptor::new(
                written.media_type.clone(),
                digest.clone(),
                written.span.size,
            ));
        }
        Ok(index.to_raw()?.bytes().clone())
    }

    /// `manifest.json` for a docker-archive: one entry per image (an
    /// index contributes its member for this machine's platform, or its
    /// first image).
    pub(super) fn listing(&self, state: &State) -> Result<Option<Bytes>> {
        if self.inner.format != ArchiveFormat::Docker {
            return Ok(None);
        }
        let image_of = |descriptor: &Descriptor| -> Option<Digest> {
            let written = state.content.get(&descriptor.digest)?;
            if written.media_type.is_image_manifest() {
                return is_image(written).then(|| descriptor.digest.clone());
            }
            if !written.media_type.is_index() {
                return None;
            }
            let members = written.names.iter().filter(|m| {
                m.media_type.is_image_manifest()
                    && state.content.get(&m.digest).is_some_and(is_image)
            });
            let mut first = None;
            for member in members {
                if member
                    .platform
                    .as_ref()
                    .is_some_and(|p| self.inner.platform.matches(p))
                {
                    return Some(member.digest.clone());
                }
                first = first.or(Some(member.digest.clone()));
            }
            first
        };
        let mut images: Vec<(Digest, Vec<String>)> = Vec::new();
        for ((repository, tag), descriptor) in &state.tags {
            let Some(image) = image_of(descriptor) else {
                continue;
            };
            let name = repository.as_ref().map(|r| format!("{r}:{tag}"));
            match images.iter_mut().find(|(d, _)| *d == image) {
                Some((_, names)) => names.extend(name),
                None => images.push((image, name.into_iter().collect())),
            }
        }
        let mut saved = Vec::new();
        for (digest, names) in images {
            let Some(written) = state.content.get(&digest) else {
                continue;
            };
            let mut config = None;
            let mut layers = Vec::new();
            for (i, child) in written.names.iter().enumerate() {
                if i == 0 {
                    config = Some(layout::blob_path(&child.digest));
                } else if !child.media_type.is_manifest() {
                    layers.push(layout::blob_path(&child.digest));
                }
            }
            let Some(config) = config else { continue };
            saved.push(SavedImage {
                config,
                repo_tags: if names.is_empty() { None } else { Some(names) },
                layers,
            });
        }
        let bytes = serde_json::to_vec(&saved).map_err(|e| Error::InvalidInput {
            what: "manifest.json".into(),
            reason: e.to_string(),
        })?;
        Ok(Some(bytes.into()))
    }
}

/// Whether a written image manifest is an image `docker load` can read:
/// artifacts (signatures, SBOMs) have other configs.
fn is_image(written: &Written) -> bool {
    written.names.first().is_some_and(|config| {
        let essence = config.media_type.essence();
        essence == MediaType::DOCKER_CONFIG.as_str() || essence == MediaType::OCI_CONFIG.as_str()
    })
}
