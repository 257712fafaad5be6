//! An oci-archive target of `orca sync`, staged in a layout beside it:
//! unpacked first, synced into, and written anew when something changed.

use std::path::Path;
use std::sync::Arc;

use orca_core::{Backend, Error, Result, Store};

/// An oci-archive target, staged: what the archive holds is unpacked into
/// a layout beside it, the sync runs into that layout (so a re-run asks
/// the source no more than it would of a layout), and the archive is
/// written anew from it, replacing the old one whole, once the entry is
/// done. The layout is removed however the run ends.
pub(super) struct Staged {
    archive: std::path::PathBuf,
    /// Held to be removed when the staging ends.
    _dir: tempfile::TempDir,
    pub(super) layout: Arc<dyn Backend>,
}

impl Staged {
    pub(super) fn new(archive: &Path) -> Result<Self> {
        let beside = archive
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = tempfile::Builder::new()
            .prefix(".orca-sync-")
            .tempdir_in(beside)
            .map_err(|e| Error::InvalidInput {
                what: format!("a staging directory beside {}", archive.display()),
                reason: e.to_string(),
            })?;
        // Scratch: the archive written at the end is what must survive.
        let layout = orca_backend_fs::LayoutBuilder::new(dir.path().join("layout"))
            .durable(false)
            .open()?;
        Ok(Staged {
            archive: archive.to_owned(),
            _dir: dir,
            layout: Arc::new(layout),
        })
    }

    /// Copies every named image of the existing archive, if any, into the
    /// staging layout under its name.
    pub(super) async fn unpack(&self) -> Result<()> {
        if !self.archive.exists() {
            return Ok(());
        }
        let archive = crate::open::open_archive(self.archive.clone()).await?;
        // The archive is written anew from what has a name: an image
        // without one would be lost, so such an archive is no target.
        if archive.images().iter().any(|image| image.tag.is_none()) {
            return Err(Error::InvalidInput {
                what: format!("sync target {}", self.archive.display()),
                reason: "it holds images without a name, which rewriting it would lose".into(),
            });
        }
        copy_names(Arc::new(archive), self.layout.clone()).await
    }

    /// Writes the archive from the staging layout.
    pub(super) async fn pack(&self) -> Result<()> {
        let writer = orca_backend_fs::ArchiveWriter::create(
            &self.archive,
            orca_backend_fs::ArchiveFormat::Oci,
        )?;
        copy_names(self.layout.clone(), Arc::new(writer.clone())).await?;
        writer.finish().await
    }
}

/// Copies every named image of `from` to `to`, under the same names
/// (`REPO:TAG`, set on the backend itself: they are no plain tags).
async fn copy_names(from: Arc<dyn Backend>, to: Arc<dyn Backend>) -> Result<()> {
    let source = Store::from_arc(from.clone());
    // The names' referrers indexes come along as names of their own; the
    // store's upkeep would add plain `sha256-…` ones beside them (core 2).
    let target = Store::from_arc(to.clone()).with_referrers_upkeep(false);
    for name in from.tags(&orca_core::ListQuery::all()).await?.entries {
        let root = from
            .resolve(&orca_core::Selector::Tag(name.clone()))
            .await?;
        orca_core::copy::copy_graph(&source, &target, &root).await?;
        to.tag(&root, &name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orca_core::{Manifest, MediaType};

    /// Core review finding 2: copying a bundle's names (staging an archive
    /// target, or packing it) carries the referrers index under its own
    /// `REPO:sha256-…` name and adds no plain `sha256-…` name beside it.
    #[tokio::test]
    async fn finding_2_copying_names_adds_no_stray_referrers_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from: Arc<dyn Backend> =
            Arc::new(orca_backend_fs::open(dir.path().join("from")).expect("layout"));
        let repo =
            Store::new(orca_core::bundle::Namespaced::new(from.clone(), "repo").expect("view"));
        let empty = repo
            .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
            .await
            .expect("empty");
        let image = repo
            .push_manifest(
                &Manifest::new(empty.clone(), vec![]).to_raw().expect("raw"),
                Some("v1"),
            )
            .await
            .expect("image");
        let mut signature = Manifest::new(empty.clone(), vec![empty]);
        signature.subject = Some(image.clone());
        signature.artifact_type = Some(MediaType::new("application/vnd.example.signature"));
        repo.push_manifest(&signature.to_raw().expect("raw"), None)
            .await
            .expect("sign");
        let to: Arc<dyn Backend> =
            Arc::new(orca_backend_fs::open(dir.path().join("to")).expect("layout"));
        copy_names(from, to.clone()).await.expect("copy names");
        let names = to
            .tags(&orca_core::ListQuery::all())
            .await
            .expect("names")
            .entries;
        assert!(
            names.iter().all(|n| n.starts_with("repo:")),
            "a name outside the repository: {names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("repo:sha256-")),
            "{names:?}"
        );
    }
}
