//! A 256 MiB blob up to and down from a real S3 server (moto) through the
//! S3 backend, next to `aws s3 cp` moving the same bytes in the same run.
//! moto itself is the bottleneck here; the point is the ratio.

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use orca_backend_s3::S3Builder;
use orca_benches::{chunked, pseudo_random};
use orca_core::{Descriptor, MediaType, Store};
use orca_testkit::MotoServer;

const SIZE: usize = 256 * 1024 * 1024;
const BUCKET: &str = "orca-bench";

fn aws(server: &MotoServer, args: &[&str]) {
    let status = Command::new(orca_testkit::require_program(
        "aws",
        "apt-get install -y awscli",
    ))
    .arg("--endpoint-url")
    .arg(server.endpoint())
    .args(args)
    .env("AWS_ACCESS_KEY_ID", "bench")
    .env("AWS_SECRET_ACCESS_KEY", "bench")
    .env("AWS_DEFAULT_REGION", "us-east-1")
    .status()
    .expect("run aws");
    assert!(status.success(), "aws {args:?} failed");
}

fn s3(c: &mut Criterion) {
    let server = MotoServer::start().expect("moto");
    server.create_bucket(BUCKET).expect("bucket");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let data = pseudo_random(SIZE, 4);
    let desc = Descriptor::of(MediaType::OCI_LAYER_TAR, &data);
    let scratch = tempfile::tempdir().expect("scratch");
    let file = scratch.path().join("blob.bin");
    std::fs::write(&file, &data).expect("write source");
    let file = file.to_str().expect("utf-8").to_owned();
    let store = |prefix: &str| {
        Store::new(
            S3Builder::new(format!("s3://{BUCKET}/{prefix}"))
                .endpoint(server.endpoint())
                .region("us-east-1")
                .credentials("bench", "bench")
                .allow_http(true)
                .build()
                .expect("backend"),
        )
    };

    let mut group = c.benchmark_group("s3_256MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(20));

    let mut round = 0;
    group.bench_function("orca_upload", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let s = store(&format!("up-{round}"));
                let start = Instant::now();
                rt.block_on(s.push(&desc, chunked(&data))).expect("push");
                total += start.elapsed();
                rt.block_on(s.delete(&desc)).expect("clean up");
            }
            total
        })
    });
    group.bench_function("aws_cli_upload", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                aws(
                    &server,
                    &[
                        "s3",
                        "cp",
                        "--only-show-errors",
                        &file,
                        &format!("s3://{BUCKET}/aws/blob"),
                    ],
                );
                total += start.elapsed();
                aws(
                    &server,
                    &[
                        "s3",
                        "rm",
                        "--only-show-errors",
                        &format!("s3://{BUCKET}/aws/blob"),
                    ],
                );
            }
            total
        })
    });

    let reader = store("download");
    rt.block_on(reader.push(&desc, chunked(&data)))
        .expect("seed download");
    aws(
        &server,
        &[
            "s3",
            "cp",
            "--only-show-errors",
            &file,
            &format!("s3://{BUCKET}/aws/source"),
        ],
    );
    group.bench_function("orca_download", |b| {
        b.to_async(&rt).iter(|| async {
            let mut body = reader.fetch(&desc).await.expect("fetch");
            let mut n = 0;
            while let Some(chunk) = body.next().await {
                n += chunk.expect("verified").len();
            }
            assert_eq!(n, SIZE);
        })
    });
    let target = scratch.path().join("downloaded.bin");
    let target = target.to_str().expect("utf-8").to_owned();
    group.bench_function("aws_cli_download", |b| {
        b.iter(|| {
            aws(
                &server,
                &[
                    "s3",
                    "cp",
                    "--only-show-errors",
                    &format!("s3://{BUCKET}/aws/source"),
                    &target,
                ],
            )
        })
    });
    group.finish();
}

criterion_group!(benches, s3);
criterion_main!(benches);
