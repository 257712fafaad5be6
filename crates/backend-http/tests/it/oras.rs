//! Interoperability with the `oras` Python client (it has no command-line
//! program, so a small script drives it): the referrers index orca keeps at
//! the fallback tag is read by oras as a valid image index, and an artifact
//! oras pushes is pulled by orca, file by file.

use std::path::Path;
use std::process::Command;

use orca_core::artifact::{Artifact, Form, pack, pull_files};
use orca_core::{MediaType, Selector, Store};
use orca_testkit::{RegistryServer, push_real_image, require_program};

use crate::common::{fresh_repository, plain, repository};

/// Runs `script` with the oras package in `dir`; returns its standard output.
fn python(dir: &Path, script: &str, args: &[&str]) -> String {
    let python = require_program("python3", "apt-get install -y python3");
    let output = Command::new(python)
        .current_dir(dir)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'oras'"),
        "the oras Python package is missing: run scripts/setup, or: pip install oras"
    );
    assert!(output.status.success(), "oras script failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const READ_INDEX: &str = r#"
import json, sys
import oras.client, oras.schemas
host, name, tag = sys.argv[1:4]
client = oras.client.OrasClient(hostname=host, insecure=True)
index = client.get_manifest(
    f"{host}/{name}:{tag}",
    allowed_media_type=["application/vnd.oci.image.index.v1+json"],
    validation_schema=oras.schemas.index,
)
tags = client.get_tags(f"{host}/{name}")
print(json.dumps({"index": index, "tagged": tag in tags}))
"#;

#[tokio::test]
async fn oras_reads_the_referrers_index_orca_keeps_at_the_fallback_tag() {
    let name = fresh_repository("oras-referrers");
    let store = Store::new(repository(&plain(), &name).await);
    let image = push_real_image(&store, &[("f", b"signed image")], "v1").await;
    let file = store
        .push_bytes(
            MediaType::new("application/vnd.example.sig"),
            &b"signature"[..],
        )
        .await
        .expect("file");
    let mut attached = Vec::new();
    for kind in [
        "application/vnd.example.sig",
        "application/vnd.example.sbom",
    ] {
        let mut artifact = Artifact::new(MediaType::new(kind), vec![file.clone()]);
        artifact.subject = Some(image.clone());
        let packed = pack(&store, &artifact, Form::V1_1, None)
            .await
            .expect("attach");
        attached.push((packed.descriptor.digest.to_string(), kind));
    }
    let tag = orca_core::referrers::fallback_tag(&image.digest);
    let dir = tempfile::tempdir().expect("tempdir");
    let host = RegistryServer::shared().host();
    let out = python(dir.path(), READ_INDEX, &[&host, &name, &tag]);
    let read: serde_json::Value = serde_json::from_str(&out).expect("json from the script");
    assert_eq!(read["tagged"], true, "oras does not list the tag {tag}");
    let manifests = read["index"]["manifests"].as_array().expect("manifests");
    let listed: Vec<(String, String)> = manifests
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().unwrap_or_default().to_owned(),
                m["artifactType"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = attached
        .into_iter()
        .map(|(d, k)| (d, k.to_owned()))
        .collect();
    assert_eq!(listed, expected);
}

const PUSH: &str = r#"
import sys
import oras.client
host, name = sys.argv[1:3]
client = oras.client.OrasClient(hostname=host, insecure=True)
client.push(
    target=f"{host}/{name}:pushed-by-oras",
    files=["hello.txt:text/plain", "data.bin:application/octet-stream"],
    manifest_annotations={"org.example.by": "oras"},
)
"#;

#[tokio::test]
async fn orca_pulls_an_artifact_the_oras_client_pushed() {
    let name = fresh_repository("oras-push");
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("hello.txt"), b"hello from oras").expect("write");
    std::fs::write(dir.path().join("data.bin"), &data).expect("write");
    let host = RegistryServer::shared().host();
    python(dir.path(), PUSH, &[&host, &name]);

    let store = Store::new(repository(&plain(), &name).await);
    let out = tempfile::tempdir().expect("tempdir");
    let selector = Selector::Tag("pushed-by-oras".into());
    let written = pull_files(&store, &selector, out.path())
        .await
        .expect("pull what oras pushed");
    assert_eq!(written.len(), 2, "{written:?}");
    assert_eq!(
        std::fs::read(out.path().join("hello.txt")).expect("read"),
        b"hello from oras"
    );
    assert_eq!(
        std::fs::read(out.path().join("data.bin")).expect("read"),
        data
    );
    let (_, raw) = store.fetch_manifest(&selector).await.expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(raw.bytes()).expect("json");
    assert_eq!(manifest["annotations"]["org.example.by"], "oras");
}
