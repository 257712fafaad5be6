//! Attach a signature to an image and list what refers to it, in a
//! temporary layout: `cargo run -p orca --example attach_discover`.

use orca::{Access, Files, MediaType, OpenOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> orca::Result<()> {
    let scratch = std::env::temp_dir().join(format!("orca-example-attach-{}", std::process::id()));
    let io = |e: std::io::Error| orca::Error::InvalidInput {
        what: scratch.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&scratch).map_err(io)?;
    let note = scratch.join("note.txt");
    let signature = scratch.join("signature.json");
    std::fs::write(&note, b"an artifact to sign\n").map_err(io)?;
    std::fs::write(&signature, b"{\"signed\":true}\n").map_err(io)?;

    let target = format!("oci:{}:v1", scratch.join("layout").display());
    let opened = orca::open(&target, Access::Write, &OpenOptions::new()).await?;
    let store = opened.store();
    let subject = orca::push_files(
        store,
        &Files::new(
            MediaType::new("application/vnd.example.note"),
            vec![(note, MediaType::new("text/plain"))],
        ),
        None,
        Some("v1"),
    )
    .await?;
    let attached = orca::attach(
        store,
        &orca::Selector::Tag("v1".into()),
        &Files::new(
            MediaType::new("application/vnd.example.signature"),
            vec![(signature, MediaType::new("application/json"))],
        ),
    )
    .await?;

    let found = orca::discover(store, &orca::Selector::Tag("v1".into()), None, 1).await?;
    println!("{} {}", target, subject.descriptor.digest);
    for referrer in &found.referrers {
        let kind = referrer
            .descriptor
            .artifact_type
            .as_ref()
            .map(|t| t.as_str())
            .unwrap_or("-");
        println!("└── {kind} {}", referrer.descriptor.digest);
    }
    assert_eq!(found.referrers.len(), 1);
    assert_eq!(
        found.referrers[0].descriptor.digest,
        attached.descriptor.digest
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
