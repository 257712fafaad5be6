//! Real multi-layer images built by umoci, for tests that want content made
//! by a tool orca did not write.

use std::path::Path;

use crate::image::run;

const UMOCI: &str = "apt-get install -y umoci";

/// Builds, with umoci, an image tagged `tag` in the OCI layout at `layout`
/// (created if missing) for `linux/<arch>`: one layer per entry of
/// `layers`, each adding a file with those bytes, so there are as many
/// layers as entries (umoci compresses each with gzip).
pub fn umoci_image(layout: &Path, tag: &str, arch: &str, layers: &[&[u8]]) {
    let l = layout.to_str().expect("utf-8 layout path");
    if !layout.join("oci-layout").exists() {
        run("umoci", UMOCI, &["init", "--layout", l]);
    }
    let image = format!("{l}:{tag}");
    run("umoci", UMOCI, &["new", "--image", &image]);
    let scratch = tempfile::tempdir().expect("temporary directory");
    for (i, content) in layers.iter().enumerate() {
        let file = scratch.path().join(format!("file{i}"));
        std::fs::write(&file, content).expect("write layer file");
        let target = format!("/data/{arch}-file{i}");
        run(
            "umoci",
            UMOCI,
            &[
                "insert",
                "--image",
                &image,
                file.to_str().expect("utf-8 path"),
                &target,
            ],
        );
    }
    run(
        "umoci",
        UMOCI,
        &[
            "config",
            "--image",
            &image,
            "--architecture",
            arch,
            "--os",
            "linux",
            "--config.cmd",
            "/bin/sh",
        ],
    );
}
