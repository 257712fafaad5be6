//! Pushes one generated blob of the given size into an OCI layout, for
//! measuring peak memory (`/usr/bin/time -v push-layout DIR BYTES`): the
//! content is generated as it streams, so the process holds no copy of it.

use std::process::ExitCode;

use orca_core::conformance::GeneratedBlob;
use orca_core::{MediaType, Store};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(size)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: push-layout DIR BYTES");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("push-layout: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let store = Store::new(orca_backend_fs::open(dir)?);
        let blob = GeneratedBlob::new(size, 1);
        let descriptor = blob.descriptor(MediaType::OCI_LAYER_TAR);
        let started = std::time::Instant::now();
        store.push(&descriptor, blob.body()).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "pushed {} ({size} bytes) in {seconds:.2}s: {:.0} MiB/s",
            descriptor.digest,
            size as f64 / seconds / (1024.0 * 1024.0)
        );
        Ok::<_, orca_core::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("push-layout: {}", orca_core::error::chain(&e));
            ExitCode::FAILURE
        }
    }
}
