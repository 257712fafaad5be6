//! A progress reporter of one's own: print a line per blob as a copy
//! moves it, and the totals first. `cargo run -p orca --example progress`
//! copies a generated 8 MiB image between two temporary layouts.

use std::sync::Arc;

use orca::{CopyOptions, Event, MediaType, Progress, Store};

/// Prints what the copy engine says, a line per event that matters.
struct Lines;

impl Progress for Lines {
    fn event(&self, event: &Event) {
        match event {
            Event::Planned(totals) => println!(
                "plan: {} blobs, {} manifests, {} bytes",
                totals.blobs, totals.manifests, totals.bytes
            ),
            Event::Copied(d) => println!("copied  {} ({} bytes)", d.digest, d.size),
            Event::Present(d) => println!("present {}", d.digest),
            Event::Pushed(d) => println!("pushed  {} {}", d.media_type, d.digest),
            Event::Tagged { tag, descriptor } => println!("tagged  {tag} -> {}", descriptor.digest),
            _ => {}
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> orca::Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("orca-example-progress-{}", std::process::id()));
    let source = Store::new(orca::fs::open(scratch.join("source"))?);
    let target = Store::new(orca::fs::open(scratch.join("target"))?);
    let layer = source
        .push_bytes(MediaType::OCI_LAYER_TAR, vec![7u8; 8 * 1024 * 1024])
        .await?;
    let config = source
        .push_bytes(
            MediaType::OCI_CONFIG,
            &br#"{"os":"linux","architecture":"amd64"}"#[..],
        )
        .await?;
    let manifest = orca::Manifest::new(config, vec![layer]).to_raw()?;
    source.push_manifest(&manifest, Some("v1")).await?;

    let options = CopyOptions {
        progress: Some(Arc::new(Lines)),
        ..CopyOptions::default()
    };
    let report = orca::copy(
        &source,
        &orca::Selector::Tag("v1".into()),
        &target,
        Some("v1"),
        &options,
    )
    .await?;
    println!("done: {} copied, {} bytes", report.copied, report.bytes);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
