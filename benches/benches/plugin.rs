//! The plugin boundary's cost: pushing and fetching a 256 MiB blob through
//! orca's layout backend linked, and the same backend loaded as a plugin
//! (`plugins/fs`), in the same run. Build the plugin in release first:
//! `cargo build --release -p orca-plugin-fs`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use orca_core::conformance::GeneratedBlob;
use orca_core::{MediaType, Store};

const SIZE: u64 = 256 * 1024 * 1024;

fn boundary(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let scratch =
        tempfile::tempdir_in(std::env::var("ORCA_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
            .expect("scratch directory");
    let plugin = orca_plugin_abi::Plugin::load(orca_testkit::plugin_library("orca_plugin_fs"))
        .expect("load the fs plugin");
    let blob = GeneratedBlob::new(SIZE, 11);
    let descriptor = blob.descriptor(MediaType::OCI_LAYER_TAR);

    let mut group = c.benchmark_group("fs_256MiB");
    group.throughput(Throughput::Bytes(SIZE));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    let mut n = 0u32;
    for loaded in [false, true] {
        let name = if loaded { "plugin" } else { "linked" };
        let open = |n: u32| {
            let root = scratch.path().join(format!("{name}-{n}"));
            rt.block_on(async {
                if loaded {
                    Store::new(
                        plugin
                            .open(root.to_str().expect("utf-8"), "durable=false")
                            .await
                            .expect("open through the plugin"),
                    )
                } else {
                    Store::new(
                        orca_backend_fs::LayoutBuilder::new(&root)
                            .durable(false)
                            .open()
                            .expect("open linked"),
                    )
                }
            })
        };
        group.bench_function(format!("push_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let store = open(n);
                    let start = Instant::now();
                    rt.block_on(store.push(&descriptor, blob.body()))
                        .expect("push");
                    total += start.elapsed();
                    // Each layout goes once measured: the disk is not endless.
                    drop(store);
                    let _ = std::fs::remove_dir_all(scratch.path().join(format!("{name}-{n}")));
                }
                total
            })
        });
        n += 1;
        let store = open(n);
        rt.block_on(store.push(&descriptor, blob.body()))
            .expect("push");
        group.bench_function(format!("fetch_{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut body = store.fetch(&descriptor).await.expect("fetch");
                    let mut seen = 0usize;
                    while let Some(chunk) = body.next().await {
                        seen += chunk.expect("verified").len();
                    }
                    seen
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, boundary);
criterion_main!(benches);
