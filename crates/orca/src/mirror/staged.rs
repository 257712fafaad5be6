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
    let target = Store::from_arc(to.clone());
    for name in from.tags(&orca_core::ListQuery::all()).await?.entries {
        let root = from
            .resolve(&orca_core::Selector::Tag(name.clone()))
            .await?;
        orca_core::copy::copy_graph(&source, &target, &root).await?;
        to.tag(&root, &name).await?;
    }
    Ok(())
}
