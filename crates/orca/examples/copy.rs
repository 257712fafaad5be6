//! Copy between two targets given as strings, as `orca cp` does:
//! `cargo run -p orca --example copy -- SOURCE DESTINATION`. Without
//! arguments it makes a small image in a temporary layout and copies it
//! into an oci-archive next to it.

use orca::{CopyOptions, MediaType, OpenOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> orca::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scratch = std::env::temp_dir().join(format!("orca-example-copy-{}", std::process::id()));
    let (source, destination) = match args.as_slice() {
        [source, destination] => (source.clone(), destination.clone()),
        _ => {
            // A one-file artifact in a fresh layout, to have something to copy.
            let layout = scratch.join("layout");
            let store = orca::Store::new(orca::fs::open(&layout)?);
            let file = scratch.join("hello.txt");
            std::fs::create_dir_all(&scratch).map_err(|e| orca::Error::InvalidInput {
                what: scratch.display().to_string(),
                reason: e.to_string(),
            })?;
            std::fs::write(&file, b"hello from orca\n").map_err(|e| orca::Error::InvalidInput {
                what: file.display().to_string(),
                reason: e.to_string(),
            })?;
            let files = orca::Files::new(
                MediaType::new("application/vnd.example.greeting"),
                vec![(file, MediaType::new("text/plain"))],
            );
            orca::push_files(&store, &files, None, Some("v1")).await?;
            (
                format!("oci:{}:v1", layout.display()),
                format!("oci-archive:{}:v1", scratch.join("hello.tar").display()),
            )
        }
    };

    let report = orca::copy_between(
        &source,
        &destination,
        &OpenOptions::new(),
        &CopyOptions::default(),
    )
    .await?;
    println!(
        "copied {source} to {destination}: {} items, {} bytes, root {}",
        report.copied,
        report.bytes,
        report
            .root
            .map(|d| d.digest.to_string())
            .unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
