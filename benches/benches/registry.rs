//! A 256 MiB blob pushed to and pulled from Debian's docker-registry
//! through the HTTP backend, next to `curl` doing the same monolithic PUT
//! and GET in the same run. The registry is CPU-bound on uploads.

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use orca_backend_http::RegistryBuilder;
use orca_benches::{chunked, pseudo_random};
use orca_core::{Descriptor, MediaType, Store};
use orca_testkit::RegistryServer;

const SIZE: usize = 256 * 1024 * 1024;

fn curl(args: &[&str]) -> String {
    let output = Command::new(orca_testkit::require_program(
        "curl",
        "apt-get install -y curl",
    ))
    .args(["-sS", "--fail"])
    .args(args)
    .output()
    .expect("run curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn registry(c: &mut Criterion) {
    let server = RegistryServer::start().expect("registry");
    let host = server.host();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let data = pseudo_random(SIZE, 5);
    let desc = Descriptor::of(MediaType::OCI_LAYER_TAR, &data);
    let scratch = tempfile::tempdir().expect("scratch");
    let file = scratch.path().join("blob.bin");
    std::fs::write(&file, &data).expect("source file");
    let file = file.to_str().expect("utf-8").to_owned();
    let registry = RegistryBuilder::new(&host).build().expect("registry");

    let mut group = c.benchmark_group("registry_256MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(20));

    let mut round = 0;
    group.bench_function("orca_push", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let store = Store::new(
                    rt.block_on(registry.repository(&format!("bench/orca{round}")))
                        .expect("repo"),
                );
                let start = Instant::now();
                rt.block_on(store.push(&desc, chunked(&data)))
                    .expect("push");
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("curl_push", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let start = Instant::now();
                let headers = curl(&[
                    "-D",
                    "-",
                    "-o",
                    "/dev/null",
                    "-X",
                    "POST",
                    &format!("http://{host}/v2/bench/curl{round}/blobs/uploads/"),
                ]);
                let location = headers
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Location: ")
                            .or_else(|| l.strip_prefix("location: "))
                    })
                    .expect("Location")
                    .trim()
                    .to_owned();
                let url = format!("{location}&digest={}", desc.digest);
                curl(&[
                    "-o",
                    "/dev/null",
                    "-X",
                    "PUT",
                    "-H",
                    "Content-Type: application/octet-stream",
                    "--data-binary",
                    &format!("@{file}"),
                    &url,
                ]);
                total += start.elapsed();
            }
            total
        })
    });

    let store = Store::new(
        rt.block_on(registry.repository("bench/pull"))
            .expect("repo"),
    );
    rt.block_on(store.push(&desc, chunked(&data)))
        .expect("seed pull");
    group.bench_function("orca_pull", |b| {
        b.to_async(&rt).iter(|| async {
            let mut body = store.fetch(&desc).await.expect("fetch");
            let mut n = 0;
            while let Some(chunk) = body.next().await {
                n += chunk.expect("verified").len();
            }
            assert_eq!(n, SIZE);
        })
    });
    group.bench_function("orca_pull_to_layout", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let root = scratch.path().join("layout");
                let layout = Store::new(
                    orca_backend_fs::LayoutBuilder::new(&root)
                        .durable(false)
                        .open()
                        .expect("layout"),
                );
                let start = Instant::now();
                rt.block_on(async {
                    let body = store.fetch(&desc).await.expect("fetch");
                    layout.push(&desc, body).await.expect("write to the layout");
                });
                total += start.elapsed();
                std::fs::remove_dir_all(&root).expect("clean");
            }
            total
        })
    });
    let target = scratch.path().join("pulled.bin");
    let target = target.to_str().expect("utf-8").to_owned();
    let url = format!("http://{host}/v2/bench/pull/blobs/{}", desc.digest);
    group.bench_function("curl_pull_to_file", |b| {
        b.iter(|| curl(&["-o", &target, &url]))
    });
    group.finish();
}

criterion_group!(benches, registry);
criterion_main!(benches);
