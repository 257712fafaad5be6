//! Digest throughput: raw `sha2` by algorithm and chunk size, next to a
//! 256 MiB fetch through `Store` from the memory backend, which verifies
//! every byte — the overhead of verification is the gap between the two.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use orca_benches::pseudo_random;
use orca_core::{Algorithm, Body, Descriptor, Digester, MediaType, MemoryBackend, Store};
use sha2::Digest as _;

const SIZE: usize = 256 * 1024 * 1024;

fn raw_sha2(c: &mut Criterion) {
    let data = pseudo_random(SIZE, 1);
    let mut group = c.benchmark_group("raw_sha2_256MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    for chunk in [64 * 1024, 1024 * 1024] {
        group.bench_function(format!("sha256/chunk_{}KiB", chunk / 1024), |b| {
            b.iter(|| {
                let mut h = sha2::Sha256::new();
                for part in data.chunks(chunk) {
                    h.update(part);
                }
                h.finalize()
            })
        });
        group.bench_function(format!("sha512/chunk_{}KiB", chunk / 1024), |b| {
            b.iter(|| {
                let mut h = sha2::Sha512::new();
                for part in data.chunks(chunk) {
                    h.update(part);
                }
                h.finalize()
            })
        });
    }
    group.bench_function("orca_digester/sha256", |b| {
        b.iter(|| {
            let mut h = Digester::new(Algorithm::Sha256);
            for part in data.chunks(1024 * 1024) {
                h.update(part);
            }
            h.finish()
        })
    });
    group.finish();
}

fn store_fetch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    let data = pseudo_random(SIZE, 2);
    let desc = Descriptor::of(MediaType::OCI_LAYER_TAR, &data);
    let store = Store::new(MemoryBackend::new());
    rt.block_on(store.push(&desc, Body::from_bytes(data.clone())))
        .expect("push");

    let mut group = c.benchmark_group("store_fetch_256MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.bench_function("memory/verified", |b| {
        b.to_async(&rt).iter(|| async {
            let mut body = store.fetch(&desc).await.expect("fetch");
            let mut n = 0usize;
            while let Some(chunk) = body.next().await {
                n += chunk.expect("verified chunk").len();
            }
            assert_eq!(n, SIZE);
        })
    });
    group.finish();
}

criterion_group!(benches, raw_sha2, store_fetch);
criterion_main!(benches);
