//! Staging left by a push that never finished: the multipart upload a
//! killed process leaves open (invisible to listings, billed until
//! aborted) is found through its record and aborted by the clean-up that
//! garbage collection runs.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use orca_core::layout::ObjectStorage;
use orca_core::{Body, Descriptor, Digest, MediaType, Store};

use crate::common::{bucket, builder, fresh_prefix};
use crate::interop::aws;

const PART: usize = 5 * 1024 * 1024;

/// The multipart uploads open under `prefix`, as aws-cli lists them.
fn open_uploads(prefix: &str) -> usize {
    let listed = aws(&[
        "s3api",
        "list-multipart-uploads",
        "--bucket",
        bucket(),
        "--prefix",
        prefix,
        "--output",
        "json",
    ]);
    if listed.trim().is_empty() {
        return 0;
    }
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("aws-cli json");
    listed["Uploads"].as_array().map_or(0, Vec::len)
}

/// Starts pushing a body announced as three parts that sends one and a
/// half, then nothing, on `runtime`; returns once the upload's record is
/// there (the multipart upload is open), with the push still running.
async fn stalled_push(
    runtime: &tokio::runtime::Handle,
    store: &Store,
    storage: &orca_backend_s3::Bucket,
    descriptor: &Descriptor,
) -> tokio::task::JoinHandle<orca_core::Result<()>> {
    let size = descriptor.size;
    let sent = futures::stream::iter((0..6).map(|_| Ok(Bytes::from(vec![7u8; PART / 4]))))
        .chain(futures::stream::pending());
    let pushing = {
        let (store, descriptor) = (store.clone(), descriptor.clone());
        runtime.spawn(async move { store.push(&descriptor, Body::new(size, sent)).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // An upload's record (not the probe of conditional writes, which
    // passes through `ingest/` too).
    let recorded = || async {
        storage
            .list("ingest/")
            .await
            .expect("list")
            .iter()
            .any(|l| l.key.contains("/upload-"))
    };
    while !recorded().await {
        assert!(!pushing.is_finished(), "the stalled push ended");
        assert!(
            std::time::Instant::now() < deadline,
            "no upload was recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pushing
}

fn never_completes(label: &[u8]) -> Descriptor {
    Descriptor::new(
        MediaType::OCI_LAYER_TAR,
        Digest::sha256(label),
        3 * PART as u64,
    )
}

/// A push dropped part-way (a cancelled copy, an interrupted command)
/// aborts its multipart upload through `orca_core::cleanup`.
#[tokio::test]
async fn an_abandoned_push_aborts_its_upload() {
    let prefix = fresh_prefix("abandoned-upload");
    let backend = builder(&prefix).part_size(PART).build().expect("backend");
    let store = Store::new(backend.clone());
    let descriptor = never_completes(b"abandoned");
    let pushing = stalled_push(
        &tokio::runtime::Handle::current(),
        &store,
        backend.storage(),
        &descriptor,
    )
    .await;
    assert_eq!(open_uploads(&prefix), 1);
    pushing.abort();
    assert!(pushing.await.is_err_and(|e| e.is_cancelled()));
    let drained = orca_core::cleanup::drain(Duration::from_secs(30)).await;
    assert!(drained.unfinished.is_empty(), "{drained:?}");
    assert_eq!(open_uploads(&prefix), 0, "the abandoned upload is open");
    let staging = backend.storage().list("ingest/").await.expect("list");
    assert!(staging.is_empty(), "records left: {staging:?}");
}

#[tokio::test]
async fn an_upload_left_by_a_killed_push_is_aborted_by_the_clean_up() {
    let prefix = fresh_prefix("killed-upload");
    let backend = builder(&prefix).part_size(PART).build().expect("backend");
    let store = Store::new(backend.clone());
    let descriptor = never_completes(b"never completes");
    let storage = backend.storage();
    killed_push(&store, storage, &descriptor).await;
    assert_eq!(
        open_uploads(&prefix),
        1,
        "the killed push left no open upload"
    );

    // Staging younger than the age given is left alone (a live push).
    let young = storage
        .clean_staging(Duration::from_secs(3600))
        .await
        .expect("clean-up");
    assert_eq!(young, 0);
    assert_eq!(open_uploads(&prefix), 1);

    let aborted = storage
        .clean_staging(Duration::ZERO)
        .await
        .expect("clean-up");
    assert_eq!(aborted, 1);
    assert_eq!(open_uploads(&prefix), 0, "the upload is still open");
    assert!(!store.exists(&descriptor).await.expect("exists"));
    let staging = storage.list("ingest/").await.expect("list");
    assert!(staging.is_empty(), "records left: {staging:?}");
}

/// Runs a push of `descriptor` that stalls on a runtime of its own, then
/// shuts that runtime down under it, as a killed process stops: nothing
/// gets the chance to abort its upload.
async fn killed_push(store: &Store, storage: &orca_backend_s3::Bucket, descriptor: &Descriptor) {
    let killed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let pushing = stalled_push(killed.handle(), store, storage, descriptor).await;
    drop(pushing);
    killed.shutdown_background();
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// The clean-up takes only its own layout's records: a layout nested in
/// its staging (a repository `app/ingest` beside `app` in a bucket root)
/// keeps its records and its open upload, for its own clean-up.
#[tokio::test]
async fn the_clean_up_leaves_the_records_of_a_layout_below_its_staging() {
    let prefix = fresh_prefix("nested-staging");
    let nested = format!("{prefix}/ingest");
    let below = builder(&nested).part_size(PART).build().expect("backend");
    let descriptor = never_completes(b"nested never completes");
    killed_push(&Store::new(below.clone()), below.storage(), &descriptor).await;
    assert_eq!(open_uploads(&nested), 1, "the killed push left no upload");
    let outer = builder(&prefix).part_size(PART).build().expect("backend");
    let aborted = outer
        .storage()
        .clean_staging(Duration::ZERO)
        .await
        .expect("clean-up");
    assert_eq!(aborted, 0);
    assert_eq!(open_uploads(&nested), 1);
    let records = below.storage().list("ingest/").await.expect("list");
    assert_eq!(records.len(), 1, "{records:?}");
    let aborted = below
        .storage()
        .clean_staging(Duration::ZERO)
        .await
        .expect("clean-up");
    assert_eq!(aborted, 1);
    assert_eq!(open_uploads(&nested), 0);
}

/// Backends review m12: a failed push whose abort also fails keeps the
/// upload's record, so the clean-up aborts the upload later instead of it
/// staying open (and billed) with nothing pointing at it.
#[tokio::test]
async fn m12_a_failed_abort_keeps_the_record_for_the_clean_up() {
    let prefix = fresh_prefix("failed-abort");
    // Only the abort (a DELETE of the blob's key) fails; the record's
    // DELETE would go through.
    let proxy = orca_testkit::RecordingProxy::with_faults(
        orca_testkit::MotoServer::shared().port(),
        orca_testkit::Faults {
            fail_requests: Some((format!("DELETE /{}/{prefix}/blobs/", bucket()), 503, 100)),
            ..orca_testkit::Faults::default()
        },
    )
    .expect("proxy");
    let backend = builder(&prefix)
        .endpoint(format!("http://127.0.0.1:{}", proxy.port()))
        .part_size(PART)
        .build()
        .expect("backend");
    let store = Store::new(backend.clone());
    // Three parts announced, one and a half sent, then a failure.
    let size = 3 * PART as u64;
    let descriptor = Descriptor::new(
        MediaType::OCI_LAYER_TAR,
        Digest::sha256(b"fails midway"),
        size,
    );
    let sent = futures::stream::iter((0..6).map(|_| Ok(Bytes::from(vec![5u8; PART / 4])))).chain(
        futures::stream::once(async {
            Err(orca_core::Error::Backend {
                backend: "source".into(),
                operation: "fetch",
                source: "the source went away".into(),
            })
        }),
    );
    store
        .push(&descriptor, Body::new(size, sent))
        .await
        .expect_err("a failed body");
    assert_eq!(open_uploads(&prefix), 1, "the upload was aborted after all");
    let storage = backend.storage();
    let records = storage.list("ingest/").await.expect("list");
    assert_eq!(
        records.len(),
        1,
        "the record went with the upload open: {records:?}"
    );
    // Through a working link, the clean-up aborts it.
    let direct = builder(&prefix).part_size(PART).build().expect("backend");
    let aborted = direct
        .storage()
        .clean_staging(Duration::ZERO)
        .await
        .expect("clean-up");
    assert_eq!(aborted, 1);
    assert_eq!(open_uploads(&prefix), 0);
}
