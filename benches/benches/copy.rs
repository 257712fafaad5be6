//! The copy engine on a real image: a ~500 MiB, 8-layer image built by
//! umoci, copied layout → registry and registry → layout (Debian's
//! docker-registry, started fresh), next to `skopeo copy` of the same
//! image in the same run; and layout → S3 (moto, started fresh) and
//! layout → oci-archive. Every iteration copies into a new repository or
//! a new layout, and skopeo runs with an empty blob-info cache (a fresh
//! `HOME`, and for root the system-wide cache in /var/lib/containers/cache
//! removed first), so neither side can skip or mount what it copied
//! before: with its cache, skopeo mounts every layer from the previous
//! iteration's repository and moves nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use orca_backend_http::RegistryBuilder;
use orca_benches::pseudo_random;
use orca_core::copy::{CopyOptions, copy};
use orca_core::{Selector, Store};
use orca_testkit::{RegistryServer, umoci_image};

const LAYERS: usize = 8;
const LAYER: usize = 500 * 1024 * 1024 / LAYERS;

/// Where skopeo keeps its blob-info cache when run as root.
const ROOT_CACHE: &str = "/var/lib/containers/cache";

fn skopeo(args: &[&str], home: &Path) {
    if let Ok(entries) = std::fs::read_dir(ROOT_CACHE) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("blob-info-cache")
            {
                std::fs::remove_file(entry.path()).expect("empty skopeo's cache");
            }
        }
    }
    let output = Command::new(orca_testkit::require_program(
        "skopeo",
        "apt-get install -y skopeo",
    ))
    .args(args)
    .env("HOME", home)
    .output()
    .expect("run skopeo");
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Total bytes of the blobs under `tag` in the layout at `root`.
fn image_bytes(rt: &tokio::runtime::Runtime, root: &Path, tag: &str) -> u64 {
    let store = Store::new(orca_backend_fs::open(root).expect("layout"));
    rt.block_on(async {
        let (descriptor, raw) = store
            .fetch_manifest(&Selector::Tag(tag.into()))
            .await
            .expect("manifest");
        let document = raw.parse().expect("parse");
        descriptor.size + document.children().iter().map(|c| c.size).sum::<u64>()
    })
}

fn copies(c: &mut Criterion) {
    let scratch = tempfile::tempdir().expect("scratch");
    let source = scratch.path().join("umoci");
    let contents: Vec<_> = (0..LAYERS)
        .map(|i| pseudo_random(LAYER, 100 + i as u64))
        .collect();
    let layers: Vec<&[u8]> = contents.iter().map(|b| &b[..]).collect();
    umoci_image(&source, "bench", "amd64", &layers);
    drop(contents);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let total = image_bytes(&rt, &source, "bench");
    let server = RegistryServer::start().expect("registry");
    let host = server.host();
    println!(
        "copy bench: {LAYERS}-layer umoci image, {} MiB, against docker-registry at {host} and skopeo",
        total / (1024 * 1024)
    );
    let registry = RegistryBuilder::new(&host).build().expect("registry");
    let layout = Store::new(orca_backend_fs::open(&source).expect("layout"));
    let tag = Selector::Tag("bench".into());
    let options = CopyOptions::default();
    let src = source.to_str().expect("utf-8").to_owned();

    let mut group = group(c, total);

    let mut round = 0;
    group.bench_function("orca_layout_to_registry", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let start = Instant::now();
                rt.block_on(async {
                    let target = Store::new(
                        registry
                            .repository(&format!("bench/orca{round}"))
                            .await
                            .expect("repository"),
                    );
                    copy(&layout, &tag, &target, Some("bench"), &options)
                        .await
                        .expect("copy");
                });
                elapsed += start.elapsed();
            }
            elapsed
        })
    });
    group.bench_function("skopeo_layout_to_registry", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let home = tempfile::tempdir().expect("home");
                let start = Instant::now();
                skopeo(
                    &[
                        "copy",
                        "--dest-tls-verify=false",
                        &format!("oci:{src}:bench"),
                        &format!("docker://{host}/bench/skopeo{round}:bench"),
                    ],
                    home.path(),
                );
                elapsed += start.elapsed();
            }
            elapsed
        })
    });

    let seeded = rt.block_on(async {
        let target = Store::new(registry.repository("bench/pull").await.expect("repository"));
        copy(&layout, &tag, &target, Some("bench"), &options)
            .await
            .expect("seed");
        target
    });
    group.bench_function("orca_registry_to_layout", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let root = scratch.path().join("orca-pulled");
                let start = Instant::now();
                rt.block_on(async {
                    let target = Store::new(orca_backend_fs::open(&root).expect("layout"));
                    copy(&seeded, &tag, &target, Some("bench"), &options)
                        .await
                        .expect("copy");
                });
                elapsed += start.elapsed();
                std::fs::remove_dir_all(&root).expect("clean");
            }
            elapsed
        })
    });
    group.bench_function("skopeo_registry_to_layout", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let root = scratch.path().join("skopeo-pulled");
                let home = tempfile::tempdir().expect("home");
                let start = Instant::now();
                skopeo(
                    &[
                        "copy",
                        "--src-tls-verify=false",
                        &format!("docker://{host}/bench/pull:bench"),
                        &format!("oci:{}:bench", root.display()),
                    ],
                    home.path(),
                );
                elapsed += start.elapsed();
                std::fs::remove_dir_all(&root).expect("clean");
            }
            elapsed
        })
    });
    group.finish();
    other_targets(c, &rt, &source, total);
}

/// The group every copy is measured in: bytes per second of the image.
fn group(c: &mut Criterion, total: u64) -> BenchmarkGroup<'_, WallTime> {
    let mut group = c.benchmark_group("copy_500MiB_8_layers");
    group.throughput(Throughput::Bytes(total));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(30));
    group
}

/// layout → S3 (moto) and layout → oci-archive, each into a fresh place.
fn other_targets(c: &mut Criterion, rt: &tokio::runtime::Runtime, source: &Path, total: u64) {
    let moto = orca_testkit::MotoServer::start().expect("moto_server");
    moto.create_bucket("bench").expect("bucket");
    println!(
        "copy bench: the same image into S3 (moto at {}) and into an oci-archive",
        moto.endpoint()
    );
    let layout = Store::new(orca_backend_fs::open(source).expect("layout"));
    let tag = Selector::Tag("bench".into());
    let options = CopyOptions::default();
    let mut group = group(c, total);
    let mut round = 0;
    group.bench_function("orca_layout_to_s3", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let bucket = orca_backend_s3::S3Builder::new(format!("s3://bench/copy-{round}"))
                    .endpoint(moto.endpoint())
                    .region("us-east-1")
                    .credentials("bench", "bench")
                    .allow_http(true)
                    .build()
                    .expect("bucket");
                let target = Store::new(bucket);
                let start = Instant::now();
                rt.block_on(copy(&layout, &tag, &target, Some("bench"), &options))
                    .expect("copy to S3");
                elapsed += start.elapsed();
            }
            elapsed
        })
    });
    let scratch = tempfile::tempdir().expect("scratch");
    group.bench_function("orca_layout_to_oci_archive", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let path = scratch.path().join("bench.tar");
                let start = Instant::now();
                let writer = orca_backend_fs::ArchiveWriter::create(
                    &path,
                    orca_backend_fs::ArchiveFormat::Oci,
                )
                .expect("archive");
                let target = Store::new(writer.clone());
                rt.block_on(async {
                    copy(&layout, &tag, &target, Some("bench"), &options)
                        .await
                        .expect("copy to an archive");
                    writer.finish().await.expect("finish")
                });
                elapsed += start.elapsed();
                std::fs::remove_file(&path).expect("clean");
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, copies);
criterion_main!(benches);
