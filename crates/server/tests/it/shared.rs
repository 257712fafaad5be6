//! On a directory root a blob pushed to several repositories, by any
//! upload form, is one file on disk; deleting it from each and collecting
//! frees it, and the catalog never lists the shared pool. A mount between
//! repositories of a plugin's directory storage is a link too.

use std::os::unix::fs::MetadataExt;

use orca::{MediaType, Root, Store};

use crate::common::{get, request};

#[tokio::test]
async fn a_blob_pushed_to_three_repositories_is_stored_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let target = format!("oci:{}", dir.path().display());
    let open = || Root::open(&target, &orca::OpenOptions::new()).expect("root");
    let running = orca_server::Server::new(open())
        .spawn("127.0.0.1:0")
        .await
        .expect("serve");
    let host = running.host();
    let registry = orca::http::RegistryBuilder::new(&host)
        .build()
        .expect("registry client");
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    // orca's client: a session, a streamed PATCH and a PUT.
    let mut descriptor = None;
    for name in ["team/a", "team/b"] {
        let store = Store::new(registry.repository(name).await.expect("repository"));
        descriptor = Some(
            store
                .push_bytes(MediaType::OCTET_STREAM, content.clone())
                .await
                .expect("push"),
        );
    }
    let descriptor = descriptor.expect("pushed");
    // A monolithic upload, as oras-go sends small blobs.
    let answer = request(
        &host,
        "POST",
        &format!("/v2/other/c/blobs/uploads/?digest={}", descriptor.digest),
        &content,
    )
    .await;
    assert_eq!(answer.status, 201);

    let file = |repo: &str| {
        dir.path()
            .join(repo)
            .join("blobs/sha256")
            .join(descriptor.digest.hex())
    };
    let inode = std::fs::metadata(file("team/a")).expect("a's blob").ino();
    for repo in ["team/b", "other/c"] {
        let meta = std::fs::metadata(file(repo)).expect("the blob");
        assert_eq!(meta.ino(), inode, "{repo} holds its own copy");
        assert_eq!(std::fs::read(file(repo)).expect("read"), content);
    }
    assert_eq!(
        std::fs::metadata(file("team/a")).expect("a").nlink(),
        4,
        "three repositories and the pool"
    );
    let (_, catalog) = get(&host, "/v2/_catalog").await;
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["other/c", "team/a", "team/b"])
    );

    // Deleted from one, collected (the blob is young: the grace keeps it
    // where it is not deleted): the others keep it.
    let path = format!("/v2/team/a/blobs/{}", descriptor.digest);
    assert_eq!(request(&host, "DELETE", &path, b"").await.status, 202);
    orca_server::collect_all(&open(), std::time::Duration::from_secs(3600)).await;
    assert_eq!(std::fs::read(file("team/b")).expect("b keeps it"), content);
    let pooled = dir
        .path()
        .join("_shared/blobs/sha256")
        .join(descriptor.digest.hex());
    assert!(
        pooled.exists(),
        "the pool forgot a blob two repositories hold"
    );
    // Deleted from all: the pool lets it go.
    for repo in ["team/b", "other/c"] {
        let path = format!("/v2/{repo}/blobs/{}", descriptor.digest);
        assert_eq!(request(&host, "DELETE", &path, b"").await.status, 202);
    }
    orca_server::collect_all(&open(), std::time::Duration::from_secs(3600)).await;
    assert!(
        !pooled.exists(),
        "nothing holds the blob, the pool still does"
    );
}

#[tokio::test]
async fn a_mount_on_a_plugin_directory_is_a_link() {
    let served = crate::common::served(crate::common::Kind::Plugin).await;
    let host = served.running.host();
    let registry = orca::http::RegistryBuilder::new(&host)
        .build()
        .expect("registry client");
    let store = Store::new(registry.repository("team/a").await.expect("repository"));
    let descriptor = store
        .push_bytes(MediaType::OCTET_STREAM, vec![7u8; 100_000])
        .await
        .expect("push");
    let path = format!(
        "/v2/team/b/blobs/uploads/?mount={}&from=team/a",
        descriptor.digest
    );
    assert_eq!(request(&host, "POST", &path, b"").await.status, 201);
    let file = |repo: &str| {
        served
            ._dir
            .path()
            .join(repo)
            .join("blobs/sha256")
            .join(descriptor.digest.hex())
    };
    assert_eq!(
        std::fs::metadata(file("team/a")).expect("a").ino(),
        std::fs::metadata(file("team/b")).expect("b").ino(),
        "the mount copied the bytes"
    );
}
