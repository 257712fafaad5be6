//! Pushes one generated blob of the given size through the S3 backend into
//! object_store's local-file store, for measuring peak memory of a
//! multipart upload (`/usr/bin/time -v push-object-store DIR BYTES`).

use std::process::ExitCode;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use orca_backend_s3::S3Backend;
use orca_core::conformance::GeneratedBlob;
use orca_core::{MediaType, Store};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(size)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: push-object-store DIR BYTES");
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
        std::fs::create_dir_all(dir).map_err(|e| orca_core::Error::InvalidInput {
            what: format!("directory {dir}"),
            reason: e.to_string(),
        })?;
        let local =
            LocalFileSystem::new_with_prefix(dir).map_err(|e| orca_core::Error::InvalidInput {
                what: format!("directory {dir}"),
                reason: e.to_string(),
            })?;
        let store = Store::new(S3Backend::new(
            Arc::new(local),
            "layout",
            format!("file://{dir}/layout"),
        ));
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
