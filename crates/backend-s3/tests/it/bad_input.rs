//! Bad buckets and bad content: clear errors naming bucket, key and
//! problem, and nothing written on failure.

use std::sync::Arc;

use object_store::ObjectStoreExt;
use object_store::path::Path;
use orca_backend_s3::Bucket;
use orca_core::error::chain;
use orca_core::{Error, MediaType, Selector, Store};
use orca_testkit::push_real_image;

use crate::common::{backend, fresh_prefix};

#[tokio::test]
async fn wrong_credentials_are_unauthorized_and_write_nothing() {
    let server = orca_testkit::MotoServer::start_checking_credentials().expect("moto with auth");
    let backend = orca_backend_s3::S3Builder::new("s3://orca-auth/p")
        .endpoint(server.endpoint())
        .region(crate::common::REGION)
        .credentials("AKIAWRONGWRONGWRONG0", "wrong-secret")
        .allow_http(true)
        .build()
        .expect("builder");
    let store = Store::new(backend);
    let err = store
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"x"[..])
        .await
        .expect_err("wrong credentials");
    let text = chain(&err);
    assert!(
        matches!(err, Error::Denied { .. } | Error::Unauthorized { .. }),
        "{text}"
    );
    assert!(
        text.contains("s3://orca-auth/p") && text.contains("InvalidAccessKeyId"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-secret"),
        "the secret leaked into an error: {text}"
    );
}

#[tokio::test]
async fn a_missing_bucket_is_named() {
    let missing = orca_backend_s3::S3Builder::new("s3://orca-no-such-bucket/p")
        .endpoint(orca_testkit::MotoServer::shared().endpoint())
        .region(crate::common::REGION)
        .credentials(crate::common::KEY, crate::common::SECRET)
        .allow_http(true)
        .build()
        .expect("builder");
    let store = Store::new(missing);
    let err = store
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"x"[..])
        .await
        .expect_err("no bucket");
    let text = chain(&err);
    assert!(text.contains("orca-no-such-bucket"), "{text}");
}

#[test]
fn malformed_locations_are_refused() {
    for (url, expected) in [
        ("https://bucket/p", "expected s3://bucket"),
        ("s3://AB/p", "bucket name \"AB\""),
    ] {
        let err = orca_backend_s3::S3Builder::new(url).build().expect_err(url);
        assert!(err.to_string().contains(expected), "{url}: {err}");
    }
    let err = Bucket::new(
        Arc::new(object_store::memory::InMemory::new()),
        "",
        "memory://",
    )
    .with_part_size(1024)
    .expect_err("tiny parts");
    assert!(err.to_string().contains("at least"), "{err}");
}

#[tokio::test]
async fn a_corrupt_index_is_reported_and_left_alone() {
    let prefix = fresh_prefix("corrupt-index");
    let backend = backend(&prefix);
    let store = Store::new(backend.clone());
    let manifest = push_real_image(&store, &[("f", b"x")], "v1").await;
    let objects = direct(&prefix);
    let key = Path::from(format!("{prefix}/index.json"));
    objects
        .put(&key, b"{ definitely not an index".to_vec().into())
        .await
        .expect("corrupt");
    let err = store
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect_err("corrupt index");
    let text = chain(&err);
    assert!(matches!(err, Error::InvalidManifest { .. }), "{text}");
    assert!(
        text.contains(&format!("{prefix}/index.json")) && text.contains("not valid JSON"),
        "{text}"
    );
    let err = store
        .tag(&manifest, "v2")
        .await
        .expect_err("tag onto a corrupt index");
    assert!(chain(&err).contains("not valid JSON"), "{}", chain(&err));
    let after = objects
        .get(&key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(
        after.as_ref(),
        b"{ definitely not an index",
        "index.json was rewritten"
    );
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_key_is_refused() {
    let prefix = fresh_prefix("tampered");
    let store = Store::new(backend(&prefix));
    let desc = store
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"original"[..])
        .await
        .expect("push");
    let key = Path::from(format!("{prefix}/blobs/sha256/{}", desc.digest.hex()));
    direct(&prefix)
        .put(&key, b"tampered".to_vec().into())
        .await
        .expect("tamper");
    let err = store.fetch_bytes(&desc).await.expect_err("tampered");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&desc.digest.to_string()) && text.contains(&prefix),
        "{text}"
    );
}

/// The bucket through object_store directly, to plant bad content.
fn direct(_prefix: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(crate::common::bucket())
        .with_endpoint(orca_testkit::MotoServer::shared().endpoint())
        .with_region(crate::common::REGION)
        .with_access_key_id(crate::common::KEY)
        .with_secret_access_key(crate::common::SECRET)
        .with_allow_http(true)
        .build()
        .expect("direct client")
}
