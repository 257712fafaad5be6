//! Operations over a registry seen through its wire: index creation pushes
//! members by digest and only the index by tag, and a copy mounts within
//! the registry and round-trips through a layout.

use orca_core::{Selector, Store};
use orca_testkit::{Faults, push_real_image};

use crate::common::{fresh_repository, plain, repository, through_proxy};

#[tokio::test]
async fn index_creation_pushes_members_by_digest_and_only_the_index_by_tag() {
    use orca_core::index::{Annotations, Source, create};
    // One member from another repository, one from a local layout.
    let other = Store::new(repository(&plain(), &fresh_repository("idx-src")).await);
    let from_registry = push_real_image(&other, &[("a", b"from the registry")], "v1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Store::new(orca_backend_fs::open(dir.path().join("layout")).expect("layout"));
    let from_layout = push_real_image(&layout, &[("b", b"from a layout")], "v1").await;

    let (proxy, registry) = through_proxy(Faults::default());
    let name = fresh_repository("idx");
    let target = Store::new(repository(&registry, &name).await);
    let sources = [
        Source::new(other.clone(), Selector::Tag("v1".into())),
        Source::new(layout.clone(), Selector::Tag("v1".into())),
    ];
    let created = create(&target, &sources, &Annotations::default(), Some("multi"))
        .await
        .expect("create");
    let recorded = proxy.recorded();
    let prefix = format!("PUT /v2/{name}/manifests/");
    let puts: Vec<&str> = recorded
        .match_indices(&prefix)
        .filter_map(|(at, _)| recorded[at..].split(" HTTP/1.1").next())
        .collect();
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert!(
        puts[..2].iter().all(|l| l.contains("/manifests/sha256:")),
        "members must be pushed by digest: {puts:?}"
    );
    assert!(puts[2].ends_with("/manifests/multi"), "{puts:?}");
    let index: orca_core::Index = serde_json::from_slice(created.raw.bytes()).expect("index json");
    let digests: Vec<_> = index.manifests.iter().map(|m| m.digest.clone()).collect();
    assert_eq!(digests, [from_registry.digest, from_layout.digest]);
}

#[tokio::test]
async fn copy_mounts_within_a_registry_and_round_trips_through_a_layout() {
    use orca_core::copy::{CopyOptions, copy};
    let from = fresh_repository("copy-from");
    let source = Store::new(repository(&plain(), &from).await);
    let image = push_real_image(&source, &[("f", b"copied around")], "v1").await;

    // Same registry: blobs are mounted, only the manifest moves.
    let to = fresh_repository("copy-to");
    let mounted = Store::new(repository(&plain(), &to).await);
    let options = CopyOptions {
        mount_from: Some(from.clone()),
        ..CopyOptions::default()
    };
    let report = copy(
        &source,
        &Selector::Tag("v1".into()),
        &mounted,
        Some("v1"),
        &options,
    )
    .await
    .expect("copy with mounts");
    assert_eq!(report.mounted, 2, "config and layer: {report:?}");
    assert_eq!(report.copied, 1, "only the manifest: {report:?}");

    // Registry -> layout -> another repository, byte for byte.
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Store::new(orca_backend_fs::open(dir.path().join("layout")).expect("layout"));
    let defaults = CopyOptions::default();
    copy(
        &mounted,
        &Selector::Tag("v1".into()),
        &layout,
        Some("v1"),
        &defaults,
    )
    .await
    .expect("to the layout");
    let back = Store::new(repository(&plain(), &fresh_repository("copy-back")).await);
    let report = copy(
        &layout,
        &Selector::Tag("v1".into()),
        &back,
        Some("v1"),
        &defaults,
    )
    .await
    .expect("back to the registry");
    assert_eq!(report.root.as_ref().map(|d| &d.digest), Some(&image.digest));
    let resolved = back
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect("resolve");
    assert_eq!(resolved.digest, image.digest);
}
