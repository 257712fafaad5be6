//! The copy engine's edges: external layers are left out unless asked, and
//! a source missing content fails the copy without tagging anything.

use orca_core::copy::{CopyOptions, copy};
use orca_core::{Descriptor, Manifest, MediaType, MemoryBackend, Selector, Store};

async fn image_with(source: &Store, layer: Descriptor) -> Descriptor {
    let config = source
        .push_bytes(
            MediaType::OCI_CONFIG,
            &br#"{"os":"windows","architecture":"amd64"}"#[..],
        )
        .await
        .expect("config");
    let raw = Manifest::new(config, vec![layer]).to_raw().expect("raw");
    source
        .push_manifest(&raw, Some("v1"))
        .await
        .expect("manifest")
}

#[tokio::test]
async fn external_layers_stay_where_they_are_unless_asked() {
    let source = Store::new(MemoryBackend::new());
    let target = Store::new(MemoryBackend::new());
    let mut foreign = Descriptor::of(MediaType::DOCKER_FOREIGN_LAYER, b"not here");
    foreign.urls = vec!["https://example.invalid/layer.tar.gz".into()];
    let image = image_with(&source, foreign.clone()).await;
    let report = copy(
        &source,
        &Selector::Tag("v1".into()),
        &target,
        Some("v1"),
        &CopyOptions::default(),
    )
    .await
    .expect("copy without the external layer");
    assert_eq!(report.external, 1, "{report:?}");
    assert!(!target.exists(&foreign).await.expect("exists"));
    assert_eq!(
        target
            .resolve(&Selector::Tag("v1".into()))
            .await
            .expect("tag")
            .digest,
        image.digest
    );
    let asked = CopyOptions {
        external: true,
        ..CopyOptions::default()
    };
    let fresh = Store::new(MemoryBackend::new());
    let err = copy(&source, &Selector::Tag("v1".into()), &fresh, None, &asked)
        .await
        .expect_err("the external layer is not in the source");
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn a_source_missing_content_tags_nothing() {
    let registry = orca_core::MemoryRegistry::new();
    let source = Store::new(registry.repository("source"));
    let target = Store::new(MemoryBackend::new());
    let layer = source
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"soon gone"[..])
        .await
        .expect("layer");
    image_with(&source, layer.clone()).await;
    source.delete(&layer).await.expect("delete the layer");
    let err = copy(
        &source,
        &Selector::Tag("v1".into()),
        &target,
        Some("v1"),
        &CopyOptions::default(),
    )
    .await
    .expect_err("a layer is missing");
    assert!(err.is_not_found(), "{err}");
    let err = target
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect_err("nothing tagged");
    assert!(err.is_not_found(), "{err}");
}
