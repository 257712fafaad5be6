//! Pushing a 1 GiB blob into an OCI layout, next to what bounds it on the
//! same machine in the same run: raw SHA-256 of the bytes, and a plain file
//! copy of them (with and without fsync, as orca is durable by default).

use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orca_benches::{chunked, pseudo_random};
use orca_core::{Descriptor, MediaType, Store};
use sha2::Digest as _;

const SIZE: usize = 1024 * 1024 * 1024;

fn layout_push(c: &mut Criterion) {
    let data = pseudo_random(SIZE, 3);
    let desc = Descriptor::of(MediaType::OCI_LAYER_TAR, &data);
    let scratch =
        tempfile::tempdir_in(std::env::var("ORCA_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
            .expect("scratch directory");
    let source = scratch.path().join("source.bin");
    std::fs::write(&source, &data).expect("source file");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("runtime");

    let mut group = c.benchmark_group("layout_push_1GiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(30));

    group.bench_function("raw_sha256", |b| {
        b.iter(|| {
            let mut h = sha2::Sha256::new();
            for part in data.chunks(1024 * 1024) {
                h.update(part);
            }
            h.finalize()
        })
    });
    for fsync in [false, true] {
        let name = if fsync {
            "file_copy_fsync"
        } else {
            "file_copy"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let target = scratch.path().join("copy.bin");
                    let start = Instant::now();
                    std::fs::copy(&source, &target).expect("copy");
                    if fsync {
                        std::fs::File::open(&target)
                            .and_then(|f| f.sync_all())
                            .expect("sync");
                    }
                    total += start.elapsed();
                    std::fs::remove_file(&target).expect("remove");
                }
                total
            })
        });
    }
    for durable in [false, true] {
        let name = if durable {
            "orca_push_durable"
        } else {
            "orca_push"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let root = scratch.path().join("layout");
                    let store = Store::new(
                        orca_backend_fs::LayoutBuilder::new(&root)
                            .durable(durable)
                            .open()
                            .expect("open"),
                    );
                    let start = Instant::now();
                    rt.block_on(store.push(&desc, chunked(&data)))
                        .expect("push");
                    total += start.elapsed();
                    std::fs::remove_dir_all(&root).expect("clean");
                }
                total
            })
        });
    }
    group.finish();
    std::io::stdout().flush().ok();
}

criterion_group!(benches, layout_push);
criterion_main!(benches);
