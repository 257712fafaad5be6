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

#[tokio::test]
async fn an_upload_left_by_a_killed_push_is_aborted_by_the_clean_up() {
    let prefix = fresh_prefix("killed-upload");
    let backend = builder(&prefix).part_size(PART).build().expect("backend");
    let store = Store::new(backend.clone());
    // A body announced as three parts that sends one and a half, then
    // nothing: the push is dropped while waiting, as a killed process
    // would stop, so nothing gets the chance to abort its upload.
    let size = 3 * PART as u64;
    let descriptor = Descriptor::new(
        MediaType::OCI_LAYER_TAR,
        Digest::sha256(b"never completes"),
        size,
    );
    let sent = futures::stream::iter((0..6).map(|_| Ok(Bytes::from(vec![7u8; PART / 4]))))
        .chain(futures::stream::pending());
    let pushing = {
        let (store, descriptor) = (store.clone(), descriptor.clone());
        tokio::spawn(async move { store.push(&descriptor, Body::new(size, sent)).await })
    };
    // Once the upload's record is there, the upload is open: stop the push.
    let storage = backend.storage();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while storage.list("ingest/").await.expect("list").is_empty() {
        assert!(!pushing.is_finished(), "the stalled push ended");
        assert!(
            std::time::Instant::now() < deadline,
            "no upload was recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pushing.abort();
    let stopped = pushing.await;
    assert!(
        stopped.is_err_and(|e| e.is_cancelled()),
        "the push was not stopped"
    );
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
