//! A failed push leaves nothing at the registry: no upload session stays
//! open after a monolithic or chunked push that fails, nor after a copy
//! that fails while sibling uploads are in flight (they are dropped, and
//! their sessions cancelled).

use std::time::{Duration, Instant};

use bytes::Bytes;
use orca_backend_http::RegistryBuilder;
use orca_core::conformance::GeneratedBlob;
use orca_core::copy::{CopyOptions, copy};
use orca_core::{Digest, Manifest, MediaType, Selector, Store};
use orca_testkit::RegistryServer;

use crate::common::fresh_repository;

const MIB: u64 = 1024 * 1024;

async fn store(name: &str, chunked: bool) -> Store {
    let mut builder = RegistryBuilder::new(RegistryServer::shared().host());
    if chunked {
        builder = builder.chunk_threshold(MIB).chunk_size(MIB);
    }
    let registry = builder.build().expect("registry");
    Store::new(registry.repository(name).await.expect("repository"))
}

/// Waits until the registry holds no upload session for `name`.
async fn no_sessions_left(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = RegistryServer::shared().upload_sessions(name);
        if open == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} upload sessions stayed open under {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_pushes_leave_no_upload_session() {
    for chunked in [true, false] {
        let name = fresh_repository("failed");
        let store = store(&name, chunked).await;
        let blob = GeneratedBlob::new(3 * MIB + 5, 61);
        let mut wrong = blob.descriptor(MediaType::OCI_LAYER_TAR);
        wrong.digest = Digest::sha256(b"something else");
        let err = store
            .push(&wrong, blob.body())
            .await
            .expect_err("a wrong digest");
        assert!(
            matches!(err, orca_core::Error::DigestMismatch { .. }),
            "{err}"
        );
        no_sessions_left(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_failing_mid_way_leaves_no_upload_session() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("source");
    let source = Store::new(orca_backend_fs::open(&root).expect("layout"));
    // A small layer whose file is damaged, and two big ones still
    // uploading (in 1 MiB chunks) when the small one fails.
    let small = source
        .push_bytes(
            MediaType::OCI_LAYER_TAR,
            Bytes::from(vec![1u8; 2 * MIB as usize]),
        )
        .await
        .expect("small");
    let mut layers = vec![small.clone()];
    for seed in [71, 72] {
        let big = GeneratedBlob::new(24 * MIB, seed);
        let d = big.descriptor(MediaType::OCI_LAYER_TAR);
        source.push(&d, big.body()).await.expect("big");
        layers.push(d);
    }
    let config = source
        .push_bytes(MediaType::OCI_CONFIG, &b"{}"[..])
        .await
        .expect("config");
    let manifest = Manifest::new(config, layers).to_raw().expect("raw");
    source
        .push_manifest(&manifest, Some("v1"))
        .await
        .expect("manifest");
    std::fs::write(
        root.join("blobs/sha256").join(small.digest.hex()),
        vec![2u8; 2 * MIB as usize],
    )
    .expect("damage the small layer");

    let name = fresh_repository("sibling");
    let target = store(&name, true).await;
    let options = CopyOptions {
        concurrency: 3,
        ..CopyOptions::default()
    };
    let err = copy(
        &source,
        &Selector::Tag("v1".into()),
        &target,
        Some("v1"),
        &options,
    )
    .await
    .expect_err("a damaged layer");
    assert!(
        matches!(err, orca_core::Error::DigestMismatch { .. }),
        "{err}"
    );
    no_sessions_left(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_one_blob_do_not_cancel_each_other() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = Store::new(orca_backend_fs::open(dir.path().join("source")).expect("layout"));
    let big = GeneratedBlob::new(12 * MIB, 93);
    let layer = big.descriptor(MediaType::OCI_LAYER_TAR);
    source.push(&layer, big.body()).await.expect("layer");
    let config = source
        .push_bytes(MediaType::OCI_CONFIG, &b"{}"[..])
        .await
        .expect("config");
    let manifest = Manifest::new(config, vec![layer]).to_raw().expect("raw");
    source
        .push_manifest(&manifest, Some("v1"))
        .await
        .expect("manifest");

    // Two copies into one repository, both remembering upload sessions in
    // the same place, as two processes on one machine would.
    let name = fresh_repository("twice");
    let sessions = dir.path().join("sessions");
    let target = || async {
        let registry = RegistryBuilder::new(RegistryServer::shared().host())
            .chunk_threshold(MIB)
            .chunk_size(MIB)
            .resume_uploads(&sessions)
            .build()
            .expect("registry");
        Store::new(registry.repository(&name).await.expect("repository"))
    };
    let (a, b) = (target().await, target().await);
    let selector = Selector::Tag("v1".into());
    let options = CopyOptions::default();
    // The second starts once the first has a session going.
    let second = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let started = std::fs::read_dir(&sessions).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "json"))
            });
            if started {
                break;
            }
            assert!(Instant::now() < deadline, "the first copy never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        copy(&source, &selector, &b, Some("v1"), &options).await
    };
    let (first, second) =
        futures::join!(copy(&source, &selector, &a, Some("v1"), &options), second,);
    first.expect("the first copy");
    second.expect("the second copy");
    let (_, raw) = a.fetch_manifest(&selector).await.expect("copied");
    assert_eq!(raw.bytes(), manifest.bytes());
}
