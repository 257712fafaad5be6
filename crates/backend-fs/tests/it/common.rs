//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};

use orca_core::{Descriptor, MediaType, RawManifest, Store};

/// A store on the layout at `root`.
pub(crate) fn store(root: &Path) -> Store {
    Store::new(orca_backend_fs::open(root).expect("open layout"))
}

/// Pushes a small image (config, layer, manifest) and returns the
/// manifest's descriptor; the same `seed` gives the same bytes.
pub(crate) async fn push_image(store: &Store, seed: &str, tag: Option<&str>) -> Descriptor {
    let config = store
        .push_bytes(
            MediaType::OCI_CONFIG,
            format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#),
        )
        .await
        .expect("push config");
    let layer = store
        .push_bytes(MediaType::OCI_LAYER_TAR, format!("layer {seed}"))
        .await
        .expect("push layer");
    let manifest = orca_core::Manifest::new(config, vec![layer]);
    let raw: RawManifest = manifest.to_raw().expect("serialise");
    store.push_manifest(&raw, tag).await.expect("push manifest")
}

/// Files left in the layout's `ingest/` directory, other than the lock.
pub(crate) fn leftovers(root: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(root.join("ingest")) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.ends_with("index.json.lock"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) use orca_testkit::{push_real_image, run};
