//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};

use orca_backend_fs::LayoutBackend;
use orca_core::{Descriptor, MediaType, RawManifest, Store};

/// A store on the layout at `root`.
pub(crate) fn store(root: &Path) -> Store {
    Store::new(LayoutBackend::open(root).expect("open layout"))
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
    let manifest = orca_core::Manifest {
        schema_version: 2,
        media_type: Some(MediaType::OCI_MANIFEST),
        artifact_type: None,
        config,
        layers: vec![layer],
        subject: None,
        annotations: Default::default(),
        extra: Default::default(),
    };
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

/// A real single-layer image: an uncompressed tar layer holding `files`,
/// and an OCI config whose `diff_ids` name it, so peer tools accept it.
pub(crate) async fn push_real_image(
    store: &Store,
    files: &[(&str, &[u8])],
    tag: &str,
) -> Descriptor {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder
            .append_data(&mut header, name, *content)
            .expect("tar entry");
    }
    let layer_bytes = builder.into_inner().expect("tar");
    let layer = store
        .push_bytes(MediaType::OCI_LAYER_TAR, layer_bytes)
        .await
        .expect("push layer");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "orca test"}],
    });
    let config = store
        .push_bytes(
            MediaType::OCI_CONFIG,
            serde_json::to_vec(&config).expect("json"),
        )
        .await
        .expect("push config");
    let manifest = orca_core::Manifest {
        schema_version: 2,
        media_type: Some(MediaType::OCI_MANIFEST),
        artifact_type: None,
        config,
        layers: vec![layer],
        subject: None,
        annotations: Default::default(),
        extra: Default::default(),
    };
    store
        .push_manifest(&manifest.to_raw().expect("serialise"), Some(tag))
        .await
        .expect("push manifest")
}

/// Runs a peer tool, failing the test with its output when it fails.
pub(crate) fn run(program: &str, install: &str, args: &[&str]) -> String {
    let path = orca_testkit::require_program(program, install);
    let output = std::process::Command::new(path)
        .args(args)
        .output()
        .expect("run peer tool");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
