//! Every ordered pair of places copies a two-platform index whose images
//! share a layer, with an SBOM referring to one of them: once, moving
//! everything, and again, moving nothing.

use std::sync::Arc;

use orca::copy::{CopyOptions, Tally};
use orca::{Descriptor, Index, Manifest, MediaType, MemoryBackend, Platform, Selector, Store};

use crate::common::{KINDS, Kind, empty, filled};

struct Fixture {
    store: Store,
    index: Descriptor,
    member: Descriptor,
    sbom: Descriptor,
}

async fn fixture() -> Fixture {
    let store = Store::new(MemoryBackend::new());
    let shared = store
        .push_bytes(
            MediaType::OCI_LAYER_TAR,
            &b"a base layer both images share"[..],
        )
        .await
        .expect("shared layer");
    let mut members = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let config = store
            .push_bytes(
                MediaType::OCI_CONFIG,
                serde_json::to_vec(&config).expect("json"),
            )
            .await
            .expect("config");
        let own = store
            .push_bytes(MediaType::OCI_LAYER_TAR, format!("the {arch} layer"))
            .await
            .expect("layer");
        let raw = Manifest::new(config, vec![shared.clone(), own])
            .to_raw()
            .expect("raw");
        let mut member = store.push_manifest(&raw, None).await.expect("manifest");
        member.platform = Some(Platform::new("linux", arch));
        members.push(member);
    }
    let index = Index {
        manifests: members.clone(),
        ..Index::new()
    };
    let index = store
        .push_manifest(&index.to_raw().expect("raw"), Some("multi"))
        .await
        .expect("index");
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty");
    let sbom_blob = store
        .push_bytes(
            MediaType::new("application/spdx+json"),
            &br#"{"spdxVersion":"SPDX-2.3"}"#[..],
        )
        .await
        .expect("sbom blob");
    let sbom = Manifest {
        artifact_type: Some(MediaType::new("application/spdx+json")),
        subject: Some(members[0].plain()),
        ..Manifest::new(empty, vec![sbom_blob])
    };
    let sbom = store
        .push_manifest(&sbom.to_raw().expect("raw"), None)
        .await
        .expect("sbom");
    Fixture {
        store,
        index,
        member: members[0].plain(),
        sbom,
    }
}

/// Copies from a place of kind `from` to a place of every kind.
async fn from(kind: Kind) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let f = fixture().await;
    let source = filled(kind, dir.path(), &f.store, "multi").await;
    for to in KINDS {
        let place = empty(to, dir.path()).await;
        let pair = format!("{kind:?} -> {to:?}");
        let options = |tally: &Arc<Tally>| CopyOptions {
            referrers: true,
            concurrency: 3,
            progress: Some(tally.clone()),
            ..CopyOptions::default()
        };
        let first = Arc::new(Tally::default());
        let report = orca::copy(
            &source,
            &Selector::Tag("multi".into()),
            &place.store,
            Some("multi"),
            &options(&first),
        )
        .await
        .unwrap_or_else(|e| panic!("{pair}: {}", orca::error::chain(&e)));
        assert!(first.copied(&f.index.digest) == 1, "{pair}: {report:?}");
        assert_eq!(report.referrers, 1, "{pair}: {report:?}");

        let again = Arc::new(Tally::default());
        let report = orca::copy(
            &source,
            &Selector::Tag("multi".into()),
            &place.store,
            Some("multi"),
            &options(&again),
        )
        .await
        .unwrap_or_else(|e| panic!("{pair}, again: {}", orca::error::chain(&e)));
        assert_eq!(
            again.total(),
            0,
            "{pair}: a second copy moved content: {report:?}"
        );
        assert!(
            report.present > 0 && report.copied == 0,
            "{pair}: {report:?}"
        );

        let target = place.reopen().await;
        let resolved = target
            .resolve(&Selector::Tag("multi".into()))
            .await
            .unwrap_or_else(|e| panic!("{pair}: resolve: {}", orca::error::chain(&e)));
        assert_eq!(resolved.digest, f.index.digest, "{pair}");
        let listed = target
            .referrers(&f.member, None)
            .await
            .unwrap_or_else(|e| panic!("{pair}: referrers: {}", orca::error::chain(&e)));
        assert!(
            listed.manifests.iter().any(|d| d.digest == f.sbom.digest),
            "{pair}: the SBOM is not listed: {listed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_memory() {
    from(Kind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_layout() {
    from(Kind::Layout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_s3() {
    from(Kind::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_registry() {
    from(Kind::Registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_oci_archive() {
    from(Kind::OciArchive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_docker_archive() {
    from(Kind::DockerArchive).await;
}
