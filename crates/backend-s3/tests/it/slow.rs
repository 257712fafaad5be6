//! A slow link is not a failure (backends review M2): a write that takes
//! far longer than the idle timeout completes, because the idle timeout
//! limits silence on reads, and a write is given its size's time. Before,
//! the idle timeout (60 s, not settable) cut every write that took longer.

use std::time::{Duration, Instant};

use orca_core::conformance::GeneratedBlob;
use orca_core::{MediaType, Store};
use orca_testkit::{Faults, MotoServer, RecordingProxy};

use crate::common::{builder, fresh_prefix};

#[tokio::test]
async fn backends_m2_a_push_longer_than_the_idle_timeout_completes() {
    // 1.5 MiB in one PUT (below the part size), and 12 MiB in 5 MiB parts,
    // through a 512 KiB/s uplink, with a 2 s idle timeout.
    const RATE: u64 = 512 * 1024;
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
        .idle_timeout(Duration::from_secs(2))
        .part_size(5 * 1024 * 1024)
        .concurrency(2)
        .build()
        .expect("backend");
    let store = Store::new(backend);
    for (size, seed) in [(3 * 512 * 1024, 3), (12 * 1024 * 1024, 4)] {
        let blob = GeneratedBlob::new(size, seed);
        let descriptor = blob.descriptor(MediaType::OCI_LAYER_TAR);
        let started = Instant::now();
        store
            .push(&descriptor, blob.body())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "a slow push of {size} bytes: {}",
                    orca_core::error::chain(&e)
                )
            });
        let took = started.elapsed();
        assert!(
            took > Duration::from_secs(2),
            "the link was not slow enough to prove anything: {took:?}"
        );
        assert!(store.exists(&descriptor).await.expect("exists"));
    }
}
