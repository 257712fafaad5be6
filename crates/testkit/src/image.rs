//! Real image content for interoperability tests, and running peer tools.

use orca_core::{Descriptor, Manifest, MediaType, Store};

/// Pushes a real single-layer image: an uncompressed tar layer holding
/// `files`, and an OCI config whose `diff_ids` name it, so peer tools
/// accept it. Returns the manifest's descriptor.
pub async fn push_real_image(store: &Store, files: &[(&str, &[u8])], tag: &str) -> Descriptor {
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
    let manifest = Manifest::new(config, vec![layer]);
    store
        .push_manifest(&manifest.to_raw().expect("serialise"), Some(tag))
        .await
        .expect("push manifest")
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
