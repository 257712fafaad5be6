//! Garbage collection: unreachable blobs go, roots and everything they
//! reach stay, and so do referrers of reachable manifests; referrers
//! indexes go with the images they index.

use std::collections::BTreeMap;

use orca_backend_fs::LayoutBackend;
use orca_core::{
    Descriptor, Digest, Document, Index, Manifest, MediaType, RawManifest, Selector, Store,
};

use crate::common::push_image;

async fn push_referrer(store: &Store, subject: &Descriptor, note: &str) -> Descriptor {
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty config");
    let mut annotations = BTreeMap::new();
    annotations.insert("note".to_owned(), note.to_owned());
    let manifest = Manifest {
        artifact_type: Some(MediaType::new("application/vnd.example.note")),
        subject: Some(subject.plain()),
        annotations,
        ..Manifest::new(empty.clone(), vec![empty])
    };
    store
        .push_manifest(&manifest.to_raw().expect("raw"), None)
        .await
        .expect("push referrer")
}

async fn children(store: &Store, manifest: &Descriptor) -> Vec<Digest> {
    let bytes = store.fetch_bytes(manifest).await.expect("fetch manifest");
    let raw = RawManifest::new(manifest.media_type.clone(), bytes);
    let Document::Manifest(parsed) = raw.parse().expect("parse") else {
        panic!("not an image manifest")
    };
    vec![parsed.config.digest, parsed.layers[0].digest.clone()]
}

#[tokio::test]
async fn collects_exactly_the_unreachable() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let backend = LayoutBackend::open(dir.path().join("layout")).expect("open");
    let store = Store::new(backend.clone());

    let kept = push_image(&store, "kept", Some("kept")).await;
    let member = push_image(&store, "member", None).await;
    let index = Index {
        manifests: vec![member.clone()],
        ..Index::new()
    };
    store
        .push_manifest(&index.to_raw().expect("raw"), Some("multi"))
        .await
        .expect("index");
    let referrer = push_referrer(&store, &kept, "kept").await;
    let orphan = push_image(&store, "orphan", None).await;
    let orphan_referrer = push_referrer(&store, &orphan, "orphan").await;

    // The orphan's referrers index (tag schema) goes with it; the kept
    // image's stays, tag and all.
    let orphan_tag = Selector::Tag(orca_core::referrers::fallback_tag(&orphan.digest));
    let kept_tag = Selector::Tag(orca_core::referrers::fallback_tag(&kept.digest));
    let orphan_index = store
        .resolve(&orphan_tag)
        .await
        .expect("orphan's referrers index");
    let mut expected = children(&store, &orphan).await;
    expected.push(orphan.digest.clone());
    expected.push(orphan_referrer.digest.clone());
    expected.push(orphan_index.digest.clone());
    expected.sort();

    let report = backend.gc(true).await.expect("dry run");
    let mut found: Vec<Digest> = report.blobs.iter().map(|(d, _)| d.clone()).collect();
    found.sort();
    assert_eq!(found, expected, "unreachable blobs");
    assert!(!report.removed);
    assert!(
        store.exists(&orphan).await.expect("exists"),
        "a dry run removed content"
    );

    let report = backend.gc(false).await.expect("collect");
    assert!(report.removed);
    assert_eq!(report.blobs.len(), expected.len());
    assert!(
        !store.exists(&orphan).await.expect("exists"),
        "the orphan survived"
    );
    for survivor in [&kept, &member, &referrer] {
        store
            .fetch_bytes(survivor)
            .await
            .expect("reachable content was removed");
    }
    for digest in children(&store, &kept)
        .await
        .into_iter()
        .chain(children(&store, &member).await)
    {
        let probe = Descriptor::new(MediaType::OCTET_STREAM, digest, 0);
        assert!(
            store.exists(&probe).await.expect("exists"),
            "a reachable blob was removed"
        );
    }
    let err = store
        .resolve(&orphan_tag)
        .await
        .expect_err("tag of a collected index");
    assert!(err.is_not_found(), "{err}");
    let listed = store
        .referrers(&kept, None)
        .await
        .expect("referrers of the kept image");
    assert_eq!(listed.manifests.len(), 1);
    store
        .resolve(&kept_tag)
        .await
        .expect("the kept image's referrers index");
    assert!(
        backend.gc(true).await.expect("again").blobs.is_empty(),
        "a second collection found more"
    );
}
