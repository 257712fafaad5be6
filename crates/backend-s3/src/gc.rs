//! Garbage collection of a layout in an object store, by the same rules as
//! the directory backend (core's `gc::unreachable`).

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use orca_core::gc::{self, GcReport};
use orca_core::layout;
use orca_core::{Digest, Result, Store};

use crate::backend::S3Backend;
use crate::error::convert;

impl S3Backend {
    /// Finds the blobs no root reaches and, unless `dry_run`, deletes them.
    /// Collect when no writer is active: a push that has uploaded a new
    /// image's blobs but not yet tagged it would lose them.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let (index, _) = self.read_index().await?;
        let blobs_prefix = self.key(layout::BLOBS_DIR);
        let objects: Vec<_> = self
            .store()
            .list(Some(&blobs_prefix))
            .try_collect()
            .await
            .map_err(|e| {
                convert(
                    self.place(),
                    "gc",
                    format!("objects under {blobs_prefix}"),
                    e,
                )
            })?;
        let mut blobs = Vec::new();
        for object in objects {
            let mut parts = object
                .location
                .parts()
                .collect::<Vec<_>>()
                .into_iter()
                .rev();
            let (Some(hex), Some(algorithm)) = (parts.next(), parts.next()) else {
                continue;
            };
            // Objects under blobs/ not named by a digest are not orca's to judge.
            if let Ok(digest) = Digest::parse(&format!("{}:{}", algorithm.as_ref(), hex.as_ref())) {
                blobs.push((digest, object.size));
            }
        }
        blobs.sort();
        let store = Store::new(self.clone());
        let garbage = gc::unreachable(&store, index.entries(), &blobs).await?;
        if !dry_run {
            // Referrers indexes of collected images: their tags go first.
            self.update_index("gc", |index| {
                let mut changed = false;
                for (digest, _) in &garbage {
                    changed |= index.remove_digest(digest);
                }
                Ok((changed, ()))
            })
            .await?;
            for (digest, _) in &garbage {
                let key = self.blob_key(digest);
                self.store()
                    .delete(&key)
                    .await
                    .map_err(|e| convert(self.place(), "gc", format!("object {key}"), e))?;
            }
        }
        Ok(GcReport::new(garbage, !dry_run))
    }
}
