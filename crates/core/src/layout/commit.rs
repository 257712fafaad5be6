//! How a layout commits a tag: the compare-and-swap of `index.json` that
//! points it, refused while a collection's fence names what it tags, and
//! the check afterwards that what it tagged is still stored (taken back if
//! not). Once a collection has run, the graph under the tagged manifest is
//! walked and checked too (see `gc`).

use std::sync::Arc;

use super::engine::{Layout, MAX_ATTEMPTS, backoff};
use super::fence;
use super::storage::ObjectStorage;
use super::{INDEX_FILE, LayoutIndex};
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, MediaType, RawManifest};

impl<S: ObjectStorage> Layout<S> {
    /// Points `tag` at `new` by `change` (a compare-and-swap of
    /// `index.json`), then checks what it tagged is still there.
    ///
    /// Refused while a collection's fence names `new`. Once a collection
    /// has run since this process first looked at the layout, the graph
    /// under `new` (what `old`, the manifest the tag named, did not
    /// already name) is walked first: refused if a fence names any of it,
    /// and checked again after writing, so a blob a collection removed
    /// while this push ran fails the tag instead of leaving it broken.
    /// Without `checked` (a sparse manifest: a pull-through cache fetches
    /// its blobs on demand) only `new` itself is.
    pub(super) async fn commit(
        &self,
        operation: &'static str,
        tag: Option<&str>,
        new: &Descriptor,
        old: Option<&Digest>,
        checked: bool,
        mut change: impl FnMut(&mut LayoutIndex) -> Result<bool>,
    ) -> Result<()> {
        if !self.has(&new.digest).await? {
            return Err(self.not_found(format!("manifest {}", new.digest)));
        }
        self.ready().await?;
        let mut walked: Option<Vec<Digest>> = None;
        let mut previous = None;
        let mut committed = false;
        for attempt in 0..MAX_ATTEMPTS {
            let (index, version) = self.read_index_kept(false).await?;
            if checked && walked.is_none() && fence::collected_since_first_look(&self.place, &index)
            {
                walked = Some(self.graph(new, old).await?);
            }
            let mut apply = |index: &mut LayoutIndex| {
                // Read once: no fence up is an empty set.
                let fenced = index.fenced();
                let named = std::iter::once(&new.digest).chain(walked.iter().flatten());
                if let Some(doomed) = named.into_iter().find(|d| fenced.contains(*d)) {
                    return Err(self.collected(doomed, new, "is removing"));
                }
                previous = tag.and_then(|tag| index.resolve_tag(tag).cloned());
                let dropped = index.drop_dead_fences();
                Ok((change(index)? || dropped, ()))
            };
            match self
                .try_swap(Arc::unwrap_or_clone(index), version, &mut apply)
                .await?
            {
                Some(()) => {
                    committed = true;
                    break;
                }
                None => tokio::time::sleep(backoff(attempt)).await,
            }
        }
        if !committed {
            return Err(Error::Conflict {
                what: format!("{INDEX_FILE} ({operation}) after {MAX_ATTEMPTS} attempts"),
                place: self.place(),
            });
        }
        let missing = match &walked {
            Some(walked) => self.first_missing(walked).await?,
            None => None,
        };
        let err = match missing {
            Some(gone) => self.collected(&gone, new, "removed"),
            None if self.has(&new.digest).await? => return Ok(()),
            None => self.not_found(format!("manifest {}", new.digest)),
        };
        // Take the tag back to what it named, if it is still ours (an
        // untagged entry is taken away).
        self.update_index(operation, |index| {
            let Some(tag) = tag else {
                let removed = index.remove_untagged(&new.digest);
                return Ok((removed, ()));
            };
            if index.resolve_tag(tag).map(|d| &d.digest) != Some(&new.digest) {
                return Ok((false, ()));
            }
            match &previous {
                Some(entry) => index.put(entry.clone()),
                None => {
                    index.remove_tag(tag);
                }
            }
            Ok((true, ()))
        })
        .await?;
        Err(err)
    }

    /// The error for a tag of `manifest` whose graph holds `blob`, which a
    /// garbage collection `did` ("is removing", "removed").
    fn collected(&self, blob: &Digest, manifest: &Descriptor, did: &str) -> Error {
        let what = if blob == &manifest.digest {
            format!("manifest {blob}")
        } else {
            format!("blob {blob} under manifest {}", manifest.digest)
        };
        Error::Conflict {
            what: format!(
                "{what}: a garbage collection {did} it while this push ran; push the image again"
            ),
            place: self.place(),
        }
    }

    /// Every stored blob in the graph under `root` (itself included) that
    /// `old`'s graph does not already hold at its top: configs, layers and
    /// the manifests an index names. A manifest an index names that is
    /// absent is left out (a copy of some platforms only); a missing config
    /// or layer of an image, unless an external one (with URLs), is an
    /// error.
    async fn graph(&self, root: &Descriptor, old: Option<&Digest>) -> Result<Vec<Digest>> {
        let limit = Capabilities::NONE.max_manifest_size;
        let children = |bytes, media_type: &MediaType| -> Result<Vec<Descriptor>> {
            let document = RawManifest::new(media_type.clone(), bytes)
                .parse_with(crate::model::Schema1::Allow)?;
            Ok(document.children().into_iter().cloned().collect())
        };
        let mut known = std::collections::HashSet::new();
        if let Some(old) = old
            && old != &root.digest
            && let Some(bytes) = self.read_blob(old, limit).await?
            && let Some((descriptor, _)) = super::as_manifest(old, bytes.clone())
        {
            known.extend(
                children(bytes, &descriptor.media_type)?
                    .into_iter()
                    .map(|d| d.digest),
            );
        }
        let mut found = vec![root.digest.clone()];
        let mut seen: std::collections::HashSet<Digest> = found.iter().cloned().collect();
        let mut queue = vec![root.clone()];
        while let Some(manifest) = queue.pop() {
            let Some(bytes) = self.read_blob(&manifest.digest, limit).await? else {
                continue;
            };
            for child in children(bytes, &manifest.media_type)? {
                if known.contains(&child.digest) || !seen.insert(child.digest.clone()) {
                    continue;
                }
                let present = self.has(&child.digest).await?;
                if child.media_type.is_manifest() {
                    if present {
                        found.push(child.digest.clone());
                        queue.push(child);
                    }
                } else if present {
                    found.push(child.digest.clone());
                } else if child.urls.is_empty() {
                    return Err(self.not_found(format!(
                        "blob {} under manifest {} (a garbage collection has run here since this push began: push the image again)",
                        child.digest, manifest.digest
                    )));
                }
            }
        }
        Ok(found)
    }

    /// The first of `digests` no longer stored.
    async fn first_missing(&self, digests: &[Digest]) -> Result<Option<Digest>> {
        for digest in digests {
            if !self.has(digest).await? {
                return Ok(Some(digest.clone()));
            }
        }
        Ok(None)
    }
}
