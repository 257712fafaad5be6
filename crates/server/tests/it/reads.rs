//! A blob is verified when it is written and served as stored: a byte
//! that rotted on disk reaches the client, whose own check refuses it.

use orca::{MediaType, Root, Store};

#[tokio::test]
async fn a_blob_rotted_on_disk_is_refused_by_the_client() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = Root::open(
        &format!("oci:{}", dir.path().display()),
        &orca::OpenOptions::new(),
    )
    .expect("root");
    let running = orca_server::Server::new(root)
        .spawn("127.0.0.1:0")
        .await
        .expect("serve");
    let registry = orca::http::RegistryBuilder::new(running.host())
        .build()
        .expect("registry client");
    let store = Store::new(registry.repository("team/app").await.expect("repository"));
    let content = vec![42u8; 100_000];
    let descriptor = store
        .push_bytes(MediaType::OCTET_STREAM, content.clone())
        .await
        .expect("push");
    let path = dir
        .path()
        .join("team/app/blobs/sha256")
        .join(descriptor.digest.hex());
    let mut stored = std::fs::read(&path).expect("the stored blob");
    assert_eq!(stored, content);
    stored[50_000] ^= 1;
    std::fs::write(&path, &stored).expect("rot a byte");
    let fetched = store.fetch_bytes(&descriptor).await;
    assert!(
        matches!(fetched, Err(orca::Error::DigestMismatch { .. })),
        "{fetched:?}"
    );
}
