//! A plugin that panics — when an operation starts, or in the middle of a
//! body — gives an error, and the host (and the plugin) keep working; a
//! plugin's tokio timers run on its own runtime; memory stays flat over
//! many fetch and push cycles through the boundary.

use bytes::Bytes;
use futures::StreamExt;
use orca_core::{Body, Descriptor, MediaType, Store};

use crate::common::load;

async fn drain(mut body: Body) -> orca_core::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_become_errors_and_the_host_goes_on() {
    let plugin = load("orca_plugin_testing");
    let data = Bytes::from(vec![5u8; 3 * 1024 * 1024]);
    let descriptor = Descriptor::of(MediaType::OCI_LAYER_TAR, &data);

    let exists = Store::new(plugin.open("a", "panic=exists").await.expect("open"));
    let err = exists.exists(&descriptor).await.expect_err("panicked");
    assert!(
        err.to_string().contains("panicked")
            || orca_core::error::chain(&err).contains("told to panic in exists"),
        "{err}"
    );

    let fetch = Store::new(plugin.open("b", "panic=fetch").await.expect("open"));
    fetch
        .push(&descriptor, Body::from_bytes(data.clone()))
        .await
        .expect("push");
    let err = fetch.fetch(&descriptor).await.expect_err("panicked");
    assert!(
        orca_core::error::chain(&err).contains("told to panic in fetch"),
        "{}",
        orca_core::error::chain(&err)
    );

    let stream = Store::new(plugin.open("c", "panic=stream").await.expect("open"));
    stream
        .push(&descriptor, Body::from_bytes(data.clone()))
        .await
        .expect("push");
    let body = stream.fetch(&descriptor).await.expect("the fetch starts");
    let err = drain(body).await.expect_err("panicked mid-body");
    assert!(
        orca_core::error::chain(&err).contains("middle of a body"),
        "{}",
        orca_core::error::chain(&err)
    );

    // The same plugin, and the host, still work.
    let fine = Store::new(plugin.open("d", "sleep").await.expect("open"));
    fine.push(&descriptor, Body::from_bytes(data.clone()))
        .await
        .expect("push");
    let back = drain(fine.fetch(&descriptor).await.expect("fetch"))
        .await
        .expect("read");
    assert_eq!(back, data);
}

use orca_testkit::rss_kib;

/// Set in the child process that measures memory alone.
const ALONE: &str = "ORCA_PLUGIN_MEMORY_ALONE";

/// Other tests of this binary move large blobs at the same time, so the
/// measurement runs in a process of its own: this test again, alone.
#[test]
fn memory_stays_flat_over_a_thousand_cycles() {
    if std::env::var_os(ALONE).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(measure());
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("test executable"))
        .args([
            "--exact",
            "misbehaving::memory_stays_flat_over_a_thousand_cycles",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ALONE, "1")
        .output()
        .expect("run the measurement");
    let said = String::from_utf8_lossy(&output.stderr);
    eprintln!("{said}");
    assert!(
        output.status.success(),
        "the measurement failed:\n{said}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        said.contains("RSS after"),
        "the measurement did not run: {said}"
    );
}

async fn measure() {
    let plugin = load("orca_plugin_testing");
    let store = Store::new(plugin.open("memory", "").await.expect("open"));
    let cycle = |i: u32| {
        let store = store.clone();
        async move {
            let data = Bytes::from(vec![(i % 251) as u8; 64 * 1024 + i as usize]);
            let descriptor = Descriptor::of(MediaType::OCI_LAYER_TAR, &data);
            store
                .push(&descriptor, Body::from_bytes(data.clone()))
                .await
                .expect("push");
            let back = drain(store.fetch(&descriptor).await.expect("fetch"))
                .await
                .expect("read");
            assert_eq!(back.len(), data.len());
            store.delete(&descriptor).await.expect("delete");
        }
    };
    for i in 0..100 {
        cycle(i).await;
    }
    let before = rss_kib();
    for i in 100..1100 {
        cycle(i).await;
    }
    let after = rss_kib();
    eprintln!("RSS after 100 cycles: {before} KiB; after 1,100: {after} KiB");
    assert!(before > 0, "no /proc/self/status");
    assert!(
        after < before + 16 * 1024,
        "memory grew by {} KiB over 1,000 cycles",
        after.saturating_sub(before)
    );
}

/// Backends review m25: a body the host pushes is polled by the plugin on
/// its own threads (as an HTTP client's connection task does); the host's
/// own code in it — here a blocking read handed to the host's pool, as a
/// file source does — still runs in the host's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m25_a_host_body_drained_on_the_plugins_threads_works() {
    let plugin = load("orca_plugin_testing");
    let store = Store::new(plugin.open("m25", "drain=spawn").await.expect("open"));
    let data = Bytes::from(vec![7u8; 2 * 1024 * 1024 + 3]);
    let descriptor = Descriptor::of(MediaType::OCI_LAYER_TAR, &data);
    let len = data.len() as u64;
    let source = data.clone();
    let body = Body::new(
        len,
        futures::stream::once(async move {
            tokio::task::spawn_blocking(move || source)
                .await
                .map_err(|e| orca_core::Error::Backend {
                    backend: "host".into(),
                    operation: "read",
                    source: Box::new(e),
                })
        }),
    );
    store
        .push(&descriptor, body)
        .await
        .unwrap_or_else(|e| panic!("{}", orca_core::error::chain(&e)));
    let back = drain(store.fetch(&descriptor).await.expect("fetch"))
        .await
        .expect("read back");
    assert_eq!(back, data);
}

/// Backends review m26: a push the host gives up on is dropped; the
/// plugin's future panics as it is dropped. The host goes on (before, the
/// panic crossed the boundary under async-ffi's drop bomb and aborted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m26_a_guest_panicking_when_dropped_does_not_abort_the_host() {
    let plugin = load("orca_plugin_testing");
    let store = Store::new(plugin.open("m26", "panic=drop").await.expect("open"));
    let descriptor = Descriptor::of(MediaType::OCI_LAYER_TAR, b"never sent whole");
    let body = Body::new(
        descriptor.size,
        futures::stream::once(async { Ok(Bytes::from_static(b"never")) })
            .chain(futures::stream::pending()),
    );
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        store.push(&descriptor, body),
    )
    .await;
    assert!(abandoned.is_err(), "the push ended: {abandoned:?}");
    // Still here: the host, and the plugin, go on.
    let fine = Store::new(plugin.open("m26-after", "").await.expect("open"));
    let data = Bytes::from_static(b"after");
    let after = Descriptor::of(MediaType::OCI_LAYER_TAR, &data);
    fine.push(&after, Body::from_bytes(data))
        .await
        .expect("push");
    assert!(fine.exists(&after).await.expect("exists"));
}
