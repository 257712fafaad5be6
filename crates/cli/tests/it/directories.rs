//! Issue 22 §9: `push` of a directory packs it as one gzip-compressed tar
//! layer, as oras does (titled with the directory's name, annotated to be
//! unpacked, with the tar's own digest), and `pull` unpacks it whole; the
//! oras Python client reads what orca pushed. `--export-manifest` writes
//! the manifest pushed.

use std::path::Path;

use orca_testkit::RegistryServer;

use crate::common::{digest, json, ok, run, unique};

/// A small tree: a file, an executable, a nested file and a link.
fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).expect("mkdir");
    std::fs::write(root.join("a.txt"), b"top\n").expect("write");
    std::fs::write(root.join("sub/b.txt"), b"nested\n").expect("write");
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\n").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::symlink("a.txt", root.join("link")).expect("link");
    }
}

/// Whether two trees hold the same files with the same bytes.
fn same_tree(left: &Path, right: &Path) {
    for name in ["a.txt", "sub/b.txt", "run.sh"] {
        assert_eq!(
            std::fs::read(left.join(name)).expect("left"),
            std::fs::read(right.join(name)).expect("right"),
            "{name}"
        );
    }
    #[cfg(unix)]
    {
        assert_eq!(
            std::fs::read_link(right.join("link")).expect("link"),
            Path::new("a.txt")
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(right.join("run.sh"))
            .expect("mode")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "run.sh lost its execute bits");
    }
}

const ORAS_PULL: &str = r#"
import sys
import oras.client
host, name, out = sys.argv[1:4]
client = oras.client.OrasClient(hostname=host, insecure=True)
print("\n".join(client.pull(target=f"{host}/{name}:v1", outdir=out)))
"#;

#[test]
fn a_directory_is_pushed_as_one_tar_and_pulled_back_whole() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    tree(&path.join("site"));
    let name = unique("dir");
    let target = format!("{}/{name}:v1", RegistryServer::shared().host());

    let pushed = json(
        path,
        &[
            "push",
            &target,
            "site",
            "--export-manifest",
            "manifest.json",
        ],
    );
    // The exported manifest is the one pushed, byte for byte.
    let exported = std::fs::read(path.join("manifest.json")).expect("exported");
    let fetched = ok(path, &["manifest", "get", &target]);
    assert_eq!(exported, fetched.as_bytes());
    let hashed = ok(path, &["digest", "manifest.json"]);
    assert_eq!(
        hashed.split_whitespace().next(),
        Some(digest(&pushed).as_str())
    );
    let manifest: serde_json::Value = serde_json::from_slice(&exported).expect("JSON");
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        layer["annotations"]["org.opencontainers.image.title"],
        "site"
    );
    assert_eq!(layer["annotations"]["io.deis.oras.content.unpack"], "true");
    assert!(
        layer["annotations"]["io.deis.oras.content.digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{layer}"
    );

    // orca pulls it back as the directory.
    std::fs::create_dir(path.join("out")).expect("mkdir");
    ok(path, &["pull", &target, "-o", "out"]);
    same_tree(&path.join("site"), &path.join("out/site"));
    // A second pull keeps what is there, unless told.
    let again = run(path, &["pull", &target, "-o", "out"]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    std::fs::write(path.join("out/site/a.txt"), b"changed\n").expect("write");
    ok(path, &["pull", &target, "-o", "out", "--overwrite"]);
    same_tree(&path.join("site"), &path.join("out/site"));
    let leftovers: Vec<_> = std::fs::read_dir(path.join("out"))
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["site"], "temporaries left behind");

    // The oras Python client reads it as a directory too.
    let host = RegistryServer::shared().host();
    crate::common::oras_python(path, ORAS_PULL, &[&host, &name, "by-oras"]);
    same_tree(&path.join("site"), &path.join("by-oras/site"));

    // The same tree packs to the same layer: pushed again, nothing new.
    let twice = json(path, &["push", &format!("{target}-again"), "site"]);
    let again: serde_json::Value =
        serde_json::from_str(&ok(path, &["manifest", "get", &format!("{target}-again")]))
            .expect("JSON");
    assert_eq!(again["layers"][0]["digest"], layer["digest"], "{twice}");
}
