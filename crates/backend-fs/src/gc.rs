//! Garbage collection of a layout: removes blobs unreachable from
//! `index.json` (by core's shared rules, which keep referrers of reachable
//! manifests) and temporary files left by processes that died.

use std::fs;
use std::time::Duration;

use orca_core::Store;
use orca_core::gc::{self, GcReport};
use orca_core::{Error, Result};

use crate::backend::LayoutBackend;

/// Temporary files older than this belong to processes that are gone.
const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

impl LayoutBackend {
    /// Finds the blobs no root reaches and, unless `dry_run`, removes them.
    ///
    /// The layout lock is held throughout, so tag changes wait; a push that
    /// is writing a new image's blobs before tagging it can still lose them,
    /// as on any registry, so collect when no writer is active.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let lock = self.blocking("gc", |layout| layout.lock("gc")).await?;
        let (roots, blobs) = self
            .blocking("gc", |layout| {
                Ok((
                    layout.read_index()?.entries().to_vec(),
                    layout.list_blobs()?,
                ))
            })
            .await?;
        let store = Store::new(self.clone());
        let garbage = gc::unreachable(&store, &roots, &blobs).await?;
        if !dry_run {
            let doomed = garbage.clone();
            self.blocking("gc", move |layout| {
                // Referrers indexes of collected images: their tags go first.
                layout.update_index_locked("gc", |index| {
                    let mut changed = false;
                    for (digest, _) in &doomed {
                        changed |= index.remove_digest(digest);
                    }
                    Ok((changed, ()))
                })?;
                for (digest, _) in &doomed {
                    let path = layout.blob_path(digest);
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(Error::Backend {
                                backend: layout.place.clone(),
                                operation: "gc",
                                source: Box::new(crate::error::FileError::new("remove", &path, e)),
                            });
                        }
                    }
                }
                for temp in layout.stale_temp_files(STALE_AFTER) {
                    let _ = fs::remove_file(temp);
                }
                Ok(())
            })
            .await?;
        }
        drop(lock);
        Ok(GcReport::new(garbage, !dry_run))
    }
}
