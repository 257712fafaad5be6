//! A slow link is not a failure: one request that takes longer than
//! object_store's default whole-request limit (30 s) completes, because
//! the backend limits silence, not duration.

use std::time::{Duration, Instant};

use orca_core::conformance::GeneratedBlob;
use orca_core::{MediaType, Store};
use orca_testkit::{Faults, MotoServer, RecordingProxy};

use crate::common::{builder, fresh_prefix};

#[tokio::test]
async fn a_push_slower_than_thirty_seconds_completes() {
    // 6 MiB in one PUT (below the part size) through a 192 KiB/s uplink:
    // about 32 s for a single request.
    const SIZE: u64 = 6 * 1024 * 1024;
    const RATE: u64 = 192 * 1024;
    let proxy = RecordingProxy::with_faults(
        MotoServer::shared().port(),
        Faults {
            throttle_up: Some(RATE),
            ..Faults::default()
        },
    )
    .expect("proxy");
    let prefix = fresh_prefix("slow");
    let backend = builder(&prefix)
        .endpoint(format!("http://127.0.0.1:{}", proxy.port()))
        .build()
        .expect("backend");
    let store = Store::new(backend);
    let blob = GeneratedBlob::new(SIZE, 3);
    let descriptor = blob.descriptor(MediaType::OCI_LAYER_TAR);
    let started = Instant::now();
    store
        .push(&descriptor, blob.body())
        .await
        .expect("a slow push completes");
    let took = started.elapsed();
    eprintln!(
        "slow push: {SIZE} bytes in {:.1} s ({:.0} KiB/s)",
        took.as_secs_f64(),
        SIZE as f64 / took.as_secs_f64() / 1024.0
    );
    assert!(
        took > Duration::from_secs(30),
        "the link was not slow enough to prove anything: {took:?}"
    );
    assert!(store.exists(&descriptor).await.expect("exists"));
}
