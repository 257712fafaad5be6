//! Faults between orca and the real registry, injected by a proxy: broken
//! downloads resume, refused upload starts are retried, and corrupted bytes
//! are rejected as a digest mismatch and never stored.

use futures::StreamExt;
use orca_backend_http::RegistryBuilder;
use orca_core::conformance::GeneratedBlob;
use orca_core::{Error, MediaType, Store};
use orca_testkit::{Faults, RecordingProxy, RegistryServer};

use crate::common::{fresh_repository, plain, repository};

const MIB: u64 = 1024 * 1024;

/// A repository holding an 8 MiB blob, and a store on it through `faults`.
async fn through_proxy(
    faults: Faults,
) -> (RecordingProxy, Store, orca_core::Descriptor, GeneratedBlob) {
    let name = fresh_repository("faults");
    let direct = Store::new(repository(&plain(), &name).await);
    let blob = GeneratedBlob::new(8 * MIB + 77, 31);
    let desc = blob.descriptor(MediaType::OCI_LAYER_TAR);
    direct.push(&desc, blob.body()).await.expect("seed blob");
    let proxy =
        RecordingProxy::with_faults(RegistryServer::shared().port(), faults).expect("proxy");
    let registry = RegistryBuilder::new(format!("127.0.0.1:{}", proxy.port()))
        .build()
        .expect("registry");
    let store = Store::new(registry.repository(&name).await.expect("repository"));
    (proxy, store, desc, blob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_downloads_resume_with_range() {
    let faults = Faults {
        cut_after: Some((3 * MIB, 2)),
        ..Faults::default()
    };
    let (proxy, store, desc, blob) = through_proxy(faults).await;
    let mut body = store.fetch(&desc).await.expect("fetch");
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        total += chunk.expect("verified after resuming").len() as u64;
    }
    assert_eq!(total, blob.size());
    let sent = proxy.recorded().to_ascii_lowercase();
    assert_eq!(
        sent.matches("range: bytes=").count(),
        2,
        "two resumptions:\n{sent:.2000}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upload_starts_are_retried() {
    let faults = Faults {
        fail_requests: Some(("POST /v2/".into(), 503, 2)),
        ..Faults::default()
    };
    let (proxy, store, _, _) = through_proxy(faults).await;
    let blob = GeneratedBlob::new(2 * MIB, 32);
    let desc = blob.descriptor(MediaType::OCI_LAYER_TAR);
    store
        .push(&desc, blob.body())
        .await
        .expect("push after 503s");
    assert!(store.exists(&desc).await.expect("exists"));
    let posts = proxy.recorded().matches("POST /v2/").count();
    assert_eq!(posts, 3, "two refused starts and one that worked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_bytes_are_a_digest_mismatch_and_never_stored() {
    let faults = Faults {
        corrupt_at: Some((5 * MIB, 1)),
        ..Faults::default()
    };
    let (_proxy, store, desc, _) = through_proxy(faults).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = Store::new(orca_backend_fs::open(dir.path().join("layout")).expect("layout"));
    let body = store.fetch(&desc).await.expect("fetch");
    let err = layout.push(&desc, body).await.expect_err("corrupted copy");
    assert!(
        matches!(err, Error::DigestMismatch { .. }),
        "{}",
        orca_core::error::chain(&err)
    );
    assert!(
        !layout.exists(&desc).await.expect("exists"),
        "corrupted bytes were stored"
    );
}
