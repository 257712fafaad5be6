//! Pushes one generated blob of the given size through the S3 backend to
//! an S3 server, for measuring peak memory of a multipart upload
//! (`/usr/bin/time -v push-object-store s3://BUCKET/PREFIX BYTES`, with
//! the server and credentials in the usual `AWS_*` variables; plain HTTP
//! is allowed, for a local server).

use orca_backend_s3::S3Builder;
use orca_core::conformance::GeneratedBlob;
use orca_core::{MediaType, Store};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(size)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: push-object-store s3://BUCKET/PREFIX BYTES");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("push-object-store: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let store = Store::new(S3Builder::new(url.as_str()).allow_http(true).build()?);
        let blob = GeneratedBlob::new(size, 1);
        let descriptor = blob.descriptor(MediaType::OCI_LAYER_TAR);
        let started = std::time::Instant::now();
        store.push(&descriptor, blob.body()).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "pushed {} ({size} bytes, multipart) in {seconds:.2}s: {:.0} MiB/s",
            descriptor.digest,
            size as f64 / seconds / (1024.0 * 1024.0)
        );
        Ok::<_, orca_core::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("push-object-store: {}", orca_core::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}
