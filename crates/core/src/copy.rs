//! Copying the graph under a manifest from one [`Store`] to another:
//! children before parents, so a manifest is pushed only when everything it
//! names is present; content the target already has is skipped; every byte
//! is verified on the way (both stores verify). Layers that live at
//! external URLs (Docker foreign layers) are not copied.
//!
//! This is the plain, sequential core of the copy engine; index creation
//! uses it to bring members from other repositories or backends.

use futures::future::BoxFuture;

use crate::error::Result;
use crate::model::{Descriptor, RawManifest};
use crate::store::Store;

/// Copies `root` and everything under it from `source` to `target`, by
/// digest (no tag is set).
pub async fn copy_graph(source: &Store, target: &Store, root: &Descriptor) -> Result<()> {
    copy_node(source, target, root.clone()).await
}

fn copy_node<'a>(
    source: &'a Store,
    target: &'a Store,
    node: Descriptor,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        if !node.urls.is_empty() && !node.media_type.is_manifest() {
            return Ok(());
        }
        if target.exists(&node).await? {
            return Ok(());
        }
        if node.media_type.is_manifest() {
            let bytes = source.fetch_bytes(&node).await?;
            let raw = RawManifest::new(node.media_type.clone(), bytes);
            let document = raw.parse()?;
            for child in document.children() {
                copy_node(source, target, child.clone()).await?;
            }
            target.push_manifest(&raw, None).await?;
            return Ok(());
        }
        let body = source.fetch(&node).await?;
        target.push(&node, body).await
    })
}
