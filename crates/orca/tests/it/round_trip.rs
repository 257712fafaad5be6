//! Images built by umoci (multi-layer, two platforms under one index) go
//! layout → registry → S3 → oci-archive → docker-archive → layout and come
//! back byte for byte.

use futures::StreamExt;
use orca::index::{Annotations, Source, create};
use orca::{Descriptor, Selector, Store};
use orca_testkit::umoci_image;

use crate::common::{Kind, empty};

/// Every manifest under `root` in `store`, with its bytes, and every blob.
async fn graph(
    store: &Store,
    root: &Descriptor,
) -> (Vec<(Descriptor, bytes::Bytes)>, Vec<Descriptor>) {
    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    let mut queue = vec![root.clone()];
    while let Some(node) = queue.pop() {
        if node.media_type.is_manifest() {
            let bytes = store.fetch_bytes(&node).await.expect("manifest");
            let document = orca::RawManifest::new(node.media_type.clone(), bytes.clone())
                .parse()
                .expect("parse");
            queue.extend(document.children().into_iter().cloned());
            manifests.push((node, bytes));
        } else {
            blobs.push(node);
        }
    }
    (manifests, blobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umoci_images_survive_every_backend() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = dir.path().join("umoci");
    umoci_image(&first, "amd64", "amd64", &[b"one", b"two", b"three"]);
    umoci_image(&first, "arm64", "arm64", &[b"uno", b"dos"]);
    let start = Store::new(orca::fs::open(&first).expect("layout"));
    let sources = [
        Source::new(start.clone(), Selector::Tag("amd64".into())),
        Source::new(start.clone(), Selector::Tag("arm64".into())),
    ];
    let created = create(&start, &sources, &Annotations::default(), Some("multi"))
        .await
        .expect("index of the two umoci images");
    let (manifests, blobs) = graph(&start, &created.descriptor).await;
    assert_eq!(manifests.len(), 3, "an index and two images");
    assert!(
        blobs.len() >= 2 + 5,
        "configs and five layers: {}",
        blobs.len()
    );

    let mut current = start.clone();
    let mut path = vec!["layout".to_owned()];
    for kind in [
        Kind::Registry,
        Kind::S3,
        Kind::OciArchive,
        Kind::DockerArchive,
        Kind::Layout,
    ] {
        let place = empty(kind, dir.path()).await;
        orca::copy(
            &current,
            &Selector::Tag("multi".into()),
            &place.store,
            Some("multi"),
            &orca::CopyOptions::default(),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} -> {kind:?}: {}",
                path.join(" -> "),
                orca::error::chain(&e)
            )
        });
        path.push(format!("{kind:?}"));
        current = place.reopen().await;
    }

    let root = current
        .resolve(&Selector::Tag("multi".into()))
        .await
        .expect("resolve at the end");
    assert_eq!(root.digest, created.descriptor.digest);
    let (back, back_blobs) = graph(&current, &root).await;
    assert_eq!(back.len(), manifests.len());
    for ((d, bytes), (d2, bytes2)) in manifests.iter().zip(&back) {
        assert_eq!(d.digest, d2.digest);
        assert_eq!(bytes, bytes2, "manifest {} changed", d.digest);
    }
    assert_eq!(back_blobs.len(), blobs.len());
    for blob in &back_blobs {
        let mut body = current.fetch(blob).await.expect("fetch");
        let mut read = 0u64;
        while let Some(chunk) = body.next().await {
            read += chunk.expect("verified chunk").len() as u64;
        }
        assert_eq!(read, blob.size, "blob {}", blob.digest);
    }
}
