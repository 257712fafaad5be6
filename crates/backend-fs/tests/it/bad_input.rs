//! Bad layouts: each problem is reported naming the file and what is wrong,
//! and orca never rewrites what it could not read.

use orca_core::{Error, Selector, error::chain};

use crate::common::{push_image, store};

#[test]
fn a_directory_that_is_not_a_layout_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("something"), b"else").expect("write");
    let err = orca_backend_fs::open(dir.path()).expect_err("not a layout");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains("no oci-layout file"),
        "{text}"
    );
}

#[test]
fn a_wrong_layout_version_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"9.9.9"}"#,
    )
    .expect("write");
    let err = orca_backend_fs::open(dir.path()).expect_err("wrong version");
    let text = err.to_string();
    assert!(
        text.contains("oci-layout") && text.contains("9.9.9"),
        "{text}"
    );
    std::fs::write(dir.path().join("oci-layout"), b"{}").expect("write");
    let err = orca_backend_fs::open(dir.path()).expect_err("no version");
    assert!(err.to_string().contains("imageLayoutVersion"), "{err}");
}

#[tokio::test]
async fn a_broken_index_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("layout");
    let store = store(&root);
    let manifest = push_image(&store, "broken", Some("v1")).await;
    for (text, expected) in [
        (&b"{ not json"[..], "it is not valid JSON"),
        (&br#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#[..], "not a application/vnd.oci.image.index.v1+json"),
        (&br#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"md5:00","size":1}]}"#[..], "not a valid index"),
    ] {
        std::fs::write(root.join("index.json"), text).expect("corrupt index.json");
        let err = store.resolve(&Selector::Tag("v1".into())).await.expect_err("broken index");
        let message = chain(&err);
        assert!(matches!(err, Error::InvalidManifest { .. }), "{message}");
        assert!(message.contains("index.json") && message.contains(expected), "{message}");
        let err = store.tag(&manifest, "v2").await.expect_err("tag onto a broken index");
        assert!(chain(&err).contains(expected), "{}", chain(&err));
        let after = std::fs::read(root.join("index.json")).expect("read");
        assert_eq!(after, text, "index.json was rewritten");
    }
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_name_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("layout");
    let store = store(&root);
    let desc = store
        .push_bytes(
            orca_core::MediaType::OCI_LAYER_TAR,
            &b"original content"[..],
        )
        .await
        .expect("push");
    let path = root.join("blobs/sha256").join(desc.digest.hex());
    std::fs::write(&path, b"tampered content").expect("tamper");
    let err = store.fetch_bytes(&desc).await.expect_err("tampered");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&desc.digest.to_string()) && text.contains(&root.display().to_string()),
        "{text}"
    );
    std::fs::write(&path, b"short").expect("truncate");
    let err = store.fetch_bytes(&desc).await.expect_err("truncated");
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"short",
        "orca changed the blob"
    );
}
