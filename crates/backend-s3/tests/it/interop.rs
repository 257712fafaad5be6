//! A layout is a layout wherever it lives: what orca writes to the bucket
//! and `aws s3 sync` copies down is read by skopeo, and a umoci layout
//! synced up is read and verified by orca.

use futures::StreamExt;
use orca_core::{Document, Selector, Store};
use orca_testkit::{MotoServer, push_real_image, run, run_with_env};

use crate::common::{aws_env, backend, bucket, fresh_prefix};

const AWS: &str = "apt-get install -y awscli";

pub(crate) fn aws(args: &[&str]) -> String {
    let endpoint = MotoServer::shared().endpoint();
    let mut all = vec!["--endpoint-url", endpoint.as_str()];
    all.extend_from_slice(args);
    let env = aws_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_with_env("aws", AWS, &all, &env)
}

#[tokio::test]
async fn skopeo_reads_a_layout_orca_wrote_to_the_bucket() {
    let prefix = fresh_prefix("to-skopeo");
    let store = Store::new(backend(&prefix));
    let pushed = push_real_image(&store, &[("hello", b"from a bucket\n")], "v1").await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let local = dir.path().join("layout");
    let local = local.to_str().expect("utf-8");
    aws(&[
        "s3",
        "sync",
        "--only-show-errors",
        &format!("s3://{}/{prefix}", bucket()),
        local,
    ]);
    let inspect = run(
        "skopeo",
        "apt-get install -y skopeo",
        &["inspect", &format!("oci:{local}:v1")],
    );
    let inspected: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(inspected["Digest"], pushed.digest.to_string(), "{inspect}");
}

#[tokio::test]
async fn orca_reads_a_umoci_layout_synced_to_the_bucket() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = dir.path().join("umoci");
    let l = layout.to_str().expect("utf-8");
    let umoci = |args: &[&str]| run("umoci", "apt-get install -y umoci", args);
    umoci(&["init", "--layout", l]);
    umoci(&["new", "--image", &format!("{l}:base")]);
    let file = dir.path().join("payload");
    std::fs::write(&file, b"synced by aws-cli").expect("write");
    umoci(&[
        "insert",
        "--image",
        &format!("{l}:base"),
        file.to_str().expect("utf-8"),
        "/payload",
    ]);

    let prefix = fresh_prefix("from-umoci");
    aws(&[
        "s3",
        "sync",
        "--only-show-errors",
        l,
        &format!("s3://{}/{prefix}", bucket()),
    ]);
    let store = Store::new(backend(&prefix));
    let (_, raw) = store
        .fetch_manifest(&Selector::Tag("base".into()))
        .await
        .expect("manifest");
    let Document::Manifest(manifest) = raw.parse().expect("parse") else {
        panic!("not an image manifest")
    };
    assert_eq!(manifest.layers.len(), 1);
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let mut body = store.fetch(blob).await.expect("fetch");
        while let Some(chunk) = body.next().await {
            chunk.expect("verified");
        }
    }
}
