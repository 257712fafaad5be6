//! Real image content for interoperability tests, and running peer tools.

use orca_core::{Descriptor, Manifest, MediaType, Store};

/// An uncompressed tar layer holding `files`.
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
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
    builder.into_inner().expect("tar")
}

/// Pushes a real single-layer image: an uncompressed tar layer holding
/// `files`, and an OCI config whose `diff_ids` name it, so peer tools
/// accept it. Returns the manifest's descriptor.
pub async fn push_real_image(store: &Store, files: &[(&str, &[u8])], tag: &str) -> Descriptor {
    let layer = layer_tar(files);
    push_layered_image(store, &[&layer], "amd64", Some(tag)).await
}

/// Pushes a real image of `layers` (tar bytes, bottom first; the same
/// bytes make the same layer, so images can share a base) for
/// `linux/<architecture>`, tagged `tag` when given.
pub async fn push_layered_image(
    store: &Store,
    layers: &[&[u8]],
    architecture: &str,
    tag: Option<&str>,
) -> Descriptor {
    let mut pushed = Vec::new();
    for bytes in layers {
        pushed.push(
            store
                .push_bytes(MediaType::OCI_LAYER_TAR, bytes.to_vec())
                .await
                .expect("push layer"),
        );
    }
    let diff_ids: Vec<String> = pushed.iter().map(|l| l.digest.to_string()).collect();
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "orca test"}],
    });
    let config = store
        .push_bytes(
            MediaType::OCI_CONFIG,
            serde_json::to_vec(&config).expect("json"),
        )
        .await
        .expect("push config");
    let manifest = Manifest::new(config, pushed);
    store
        .push_manifest(&manifest.to_raw().expect("serialise"), tag)
        .await
        .expect("push manifest")
}

/// A layer (an uncompressed tar) holding one file.
pub fn layer_of(name: &str, content: &[u8]) -> Vec<u8> {
    layer_tar(&[(name, content)])
}

/// Runs a peer tool with extra environment, failing the test with its
/// output when it fails; returns its standard output.
pub fn run_with_env(program: &str, install: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = crate::require_program(program, install);
    let output = std::process::Command::new(path)
        .args(args)
        .envs(env.iter().copied())
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

/// Runs a peer tool; see [`run_with_env`].
pub fn run(program: &str, install: &str, args: &[&str]) -> String {
    run_with_env(program, install, args, &[])
}
