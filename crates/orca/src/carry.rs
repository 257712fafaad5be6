//! Writing an archive where one already is: what it holds is carried into
//! the new one (as `sync` rewrites its archive targets), so a `cp` that
//! adds `v2` keeps `v1` and its referrers; a file there that is no image
//! archive is never overwritten.

use std::path::Path;

use orca_backend_fs::{Archive, ArchiveWriter};
use orca_core::{Error, Result, Store};

/// Prepares writing an archive at `path` with `writer`: the parent
/// directory is created, and the images of an archive already there are
/// copied into the writer under their names (untagged ones too), unless
/// `overwrite` says to start afresh. A file that is not an image archive
/// (or anything that is not a file) is refused whatever `overwrite` says.
pub(crate) async fn prepare(path: &Path, writer: &ArchiveWriter, overwrite: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::InvalidInput {
                what: format!("archive {}", path.display()),
                reason: e.to_string(),
            });
        }
        Ok(meta) if !meta.is_file() => {
            return Err(Error::InvalidInput {
                what: format!("archive {}", path.display()),
                reason: "something that is not a file is there; refusing to replace it".into(),
            });
        }
        Ok(_) => {}
    }
    let archive = crate::open::open_archive(path.to_owned())
        .await
        .map_err(|e| Error::InvalidInput {
            what: format!("archive {}", path.display()),
            reason: format!(
                "the file there is not an image archive ({}); refusing to overwrite it: remove it or name another file",
                orca_core::error::chain(&e)
            ),
        })?;
    if overwrite {
        return Ok(());
    }
    carry(&archive, writer).await
}

/// Copies every image `archive` lists into `writer`: under its
/// `REPOSITORY:TAG` name when it has one, its tag otherwise, and as an
/// untagged root when it has neither (the writer lists what no tag names).
async fn carry(archive: &Archive, writer: &ArchiveWriter) -> Result<()> {
    let source = Store::new(archive.clone());
    // The archive's referrers indexes come along under their own names;
    // upkeep would add more beside them.
    let target = Store::new(writer.clone()).with_referrers_upkeep(false);
    for image in archive.images() {
        orca_core::copy::copy_graph(&source, &target, &image.descriptor).await?;
        match (image.name_parts(), image.tag.as_deref()) {
            (Some((repository, tag)), _) => {
                Store::new(writer.repository(repository))
                    .with_referrers_upkeep(false)
                    .tag(&image.descriptor, tag)
                    .await?;
            }
            (None, Some(tag)) => target.tag(&image.descriptor, tag).await?,
            (None, None) => {}
        }
    }
    Ok(())
}
