//! Interoperability with tools orca did not write: layouts made by umoci
//! and skopeo are read and verified by orca, and layouts orca writes are
//! read by umoci and copied by skopeo.

use futures::StreamExt;
use orca_core::{Descriptor, Document, Selector, Store};

use crate::common::{push_real_image, run, store};

const UMOCI: &str = "apt-get install -y umoci";
const SKOPEO: &str = "apt-get install -y skopeo";

/// Fetches a manifest and everything it names, verifying every byte.
async fn verify_image(store: &Store, tag: &str) -> (Descriptor, usize) {
    let (descriptor, raw) = store
        .fetch_manifest(&Selector::Tag(tag.into()))
        .await
        .expect("fetch manifest");
    let Document::Manifest(manifest) = raw.parse().expect("parse manifest") else {
        panic!("{tag} is not an image manifest");
    };
    let mut blobs = vec![manifest.config.clone()];
    blobs.extend(manifest.layers.iter().cloned());
    for blob in &blobs {
        let mut body = store.fetch(blob).await.expect("fetch blob");
        while let Some(chunk) = body.next().await {
            chunk.expect("verified chunk");
        }
    }
    (descriptor, manifest.layers.len())
}

#[tokio::test]
async fn orca_reads_a_multi_layer_image_built_by_umoci() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = dir.path().join("umoci-layout");
    orca_testkit::umoci_image(&layout, "base", "amd64", &[b"first layer", b"second layer"]);

    let store = store(&layout);
    let (_, layers) = verify_image(&store, "base").await;
    assert_eq!(layers, 2, "umoci's two inserts make two layers");
    assert!(
        store
            .tags_all()
            .await
            .expect("tags")
            .contains(&"base".to_owned())
    );
}

#[tokio::test]
async fn umoci_and_skopeo_read_what_orca_writes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = dir.path().join("orca-layout");
    let l = layout.to_str().expect("utf-8 path");
    let store = store(&layout);
    let pushed = push_real_image(&store, &[("hello.txt", b"hello from orca\n")], "v1").await;

    let stat = run(
        "umoci",
        UMOCI,
        &["stat", "--image", &format!("{l}:v1"), "--json"],
    );
    assert!(
        stat.contains("orca test"),
        "umoci stat shows the history: {stat}"
    );

    let inspect = run("skopeo", SKOPEO, &["inspect", &format!("oci:{l}:v1")]);
    let inspected: serde_json::Value = serde_json::from_str(&inspect).expect("skopeo inspect json");
    assert_eq!(inspected["Digest"], pushed.digest.to_string(), "{inspect}");
    assert_eq!(inspected["Architecture"], "amd64");

    let copy = dir.path().join("skopeo-copy");
    let c = copy.to_str().expect("utf-8 path");
    run(
        "skopeo",
        SKOPEO,
        &["copy", &format!("oci:{l}:v1"), &format!("oci:{c}:copied")],
    );
    let copied = crate::common::store(&copy);
    let (descriptor, layers) = verify_image(&copied, "copied").await;
    assert_eq!(layers, 1);
    let (_, original) = store
        .fetch_manifest(&Selector::Digest(pushed.digest.clone()))
        .await
        .expect("original");
    let (_, copy) = copied
        .fetch_manifest(&Selector::Digest(descriptor.digest.clone()))
        .await
        .expect("copy");
    // skopeo compresses the uncompressed layer on the way, so the manifest
    // changes; the config (and so the image's identity) must not.
    let (Document::Manifest(original), Document::Manifest(copy)) = (
        original.parse().expect("parse"),
        copy.parse().expect("parse"),
    ) else {
        panic!("not image manifests");
    };
    assert_eq!(
        copy.config.digest, original.config.digest,
        "skopeo kept the config"
    );
}
