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
