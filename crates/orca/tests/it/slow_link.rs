//! A slow link is not a failure (backends review M2, issue 21 §3): a
//! 256 MiB layer pushed over a 1 MiB/s uplink, with every setting at its
//! default, lands in a registry and in a bucket. The push takes more than
//! four minutes, far beyond the default idle timeout (60 s), which now
//! limits only silence, and beyond the 60 s total that cut every request
//! on b1531b8. Both pushes run at once in one test, so the suite waits
//! for them once.

use std::time::{Duration, Instant};

use orca::conformance::GeneratedBlob;
use orca::http::RegistryBuilder;
use orca::s3::S3Builder;
use orca::{MediaType, Store};
use orca_testkit::{Faults, MotoServer, RecordingProxy, RegistryServer};

const MIB: u64 = 1024 * 1024;
/// The uplink all connections of one push share.
const LINK: u64 = MIB;
/// The layer.
const SIZE: u64 = 256 * MIB;

/// A proxy in front of `port` whose uplink carries `LINK` bytes a second.
fn slow_link(port: u16) -> RecordingProxy {
    RecordingProxy::with_faults(
        port,
        Faults {
            link_up: Some(LINK),
            ..Faults::default()
        },
    )
    .expect("proxy")
}

/// Pushes the layer and checks it landed, and that the link was as slow
/// as it claims (so the push outlasted every default timeout).
async fn push_slowly(store: Store, seed: u64, place: &str) {
    let blob = GeneratedBlob::new(SIZE, seed);
    let descriptor = blob.descriptor(MediaType::OCI_LAYER_TAR);
    let started = Instant::now();
    store
        .push(&descriptor, blob.body())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "256 MiB at 1 MiB/s into {place}: {}",
                orca::error::chain(&e)
            )
        });
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(200),
        "{place}: the link was faster than 1 MiB/s ({took:?}), which proves nothing"
    );
    assert!(store.exists(&descriptor).await.expect("exists"), "{place}");
    eprintln!("256 MiB at 1 MiB/s into {place}: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_m2_256_mib_at_1_mib_per_s_lands_in_a_registry_and_a_bucket() {
    let registry_link = slow_link(RegistryServer::shared().port());
    let registry = RegistryBuilder::new(format!("127.0.0.1:{}", registry_link.port()))
        .build()
        .expect("registry");
    let repository = registry
        .repository(&crate::common::fresh("orca/slow-link"))
        .await
        .expect("repository");

    let bucket_link = slow_link(MotoServer::shared().port());
    let bucket = format!("orca-slow-link-{}", std::process::id());
    MotoServer::shared()
        .create_bucket(&bucket)
        .expect("create bucket");
    let s3 = S3Builder::new(format!("s3://{bucket}/{}", crate::common::fresh("layer")))
        .endpoint(format!("http://127.0.0.1:{}", bucket_link.port()))
        .region("us-east-1")
        .credentials("orca-test-key", "orca-test-secret")
        .allow_http(true)
        .build()
        .expect("s3 backend");

    tokio::join!(
        push_slowly(Store::new(repository), 1, "a registry"),
        push_slowly(Store::new(s3), 2, "a bucket"),
    );
}
