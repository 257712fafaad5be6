//! Compare-and-swap tagging: concurrent writers, in one process and in
//! several, never lose a tag or a referrer; and requests are signed.

use std::process::Command;

use orca_core::{Descriptor, MediaType, Store};
use orca_testkit::{MotoServer, RecordingProxy};

use crate::common::{aws_env, backend, bucket, builder, fresh_prefix};

const URL_ENV: &str = "ORCA_TEST_S3_URL";
const PREFIX_ENV: &str = "ORCA_TEST_TAG_PREFIX";

async fn manifest(store: &Store) -> Descriptor {
    let config = store
        .push_bytes(MediaType::OCI_CONFIG, &b"{}"[..])
        .await
        .expect("config");
    let manifest = orca_core::Manifest::new(config, vec![]);
    store
        .push_manifest(&manifest.to_raw().expect("raw"), None)
        .await
        .expect("manifest")
}

async fn tag_fifty(store: &Store, prefix: &str) {
    let manifest = manifest(store).await;
    for i in 0..50 {
        store
            .tag(&manifest, &format!("{prefix}-{i:02}"))
            .await
            .expect("tag");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_never_lose_a_tag() {
    let prefix = fresh_prefix("tasks");
    let tasks: Vec<_> = ["a", "b"]
        .iter()
        .map(|t| {
            let store = Store::new(backend(&prefix));
            tokio::spawn(async move { tag_fifty(&store, t).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("tagging task");
    }
    let tags = Store::new(backend(&prefix)).tags_all().await.expect("tags");
    assert_eq!(tags.len(), 100, "{tags:?}");
}

/// Tags 50 times. Run alone it uses a prefix of its own on the shared
/// server; `two_processes_never_lose_a_tag` runs it as a child, configured
/// only through the standard AWS environment.
#[tokio::test]
async fn tagger() {
    match std::env::var(URL_ENV) {
        Ok(url) => {
            let prefix = std::env::var(PREFIX_ENV).expect("tag prefix");
            let backend = orca_backend_s3::S3Builder::new(url)
                .allow_http(true)
                .build()
                .expect("from the environment");
            tag_fifty(&Store::new(backend), &prefix).await;
        }
        Err(_) => {
            let store = Store::new(backend(&fresh_prefix("solo")));
            tag_fifty(&store, "solo").await;
            assert_eq!(store.tags_all().await.expect("tags").len(), 50);
        }
    }
}

#[tokio::test]
async fn two_processes_never_lose_a_tag() {
    let prefix = fresh_prefix("processes");
    let url = format!("s3://{}/{prefix}", bucket());
    let mut children: Vec<_> = ["a", "b"]
        .iter()
        .map(|t| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "concurrency::tagger",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .envs(aws_env())
                .env(URL_ENV, &url)
                .env(PREFIX_ENV, t)
                .spawn()
                .expect("spawn tagger")
        })
        .collect();
    for child in &mut children {
        let status = child.wait().expect("wait");
        assert!(status.success(), "a tagger process failed: {status}");
    }
    let tags = Store::new(backend(&prefix)).tags_all().await.expect("tags");
    assert_eq!(tags.len(), 100, "{tags:?}");
}

#[tokio::test]
async fn requests_are_signed_with_sigv4() {
    // moto accepts unsigned requests, so look at what is actually sent.
    let proxy = RecordingProxy::start(MotoServer::shared().port()).expect("proxy");
    let backend = builder(&fresh_prefix("signed"))
        .endpoint(format!("http://127.0.0.1:{}", proxy.port()))
        .build()
        .expect("backend");
    let store = Store::new(backend);
    let manifest = manifest(&store).await;
    store.tag(&manifest, "signed").await.expect("tag");
    let sent = proxy.recorded().to_ascii_lowercase();
    let requests = sent.matches(" http/1.1\r\n").count();
    let signed = sent
        .matches("authorization: aws4-hmac-sha256 credential=orca-test-key/")
        .count();
    assert!(requests >= 4, "expected several requests, saw {requests}");
    assert_eq!(
        signed, requests,
        "every request must carry a SigV4 signature:\n{sent}"
    );
    assert!(sent.contains("x-amz-date:") && sent.contains("x-amz-content-sha256:"));
}

/// Attaches 25 referrers to one subject. Run alone it uses a prefix of its
/// own; `four_processes_never_lose_a_referrer` runs it as a child.
#[tokio::test]
async fn attacher() {
    match std::env::var(URL_ENV) {
        Ok(url) => {
            let prefix = std::env::var(orca_testkit::ATTACH_PREFIX_ENV).expect("attach prefix");
            let backend = orca_backend_s3::S3Builder::new(url)
                .allow_http(true)
                .build()
                .expect("from the environment");
            orca_testkit::attach_many(&Store::new(backend), &prefix).await;
        }
        Err(_) => {
            let store = Store::new(backend(&fresh_prefix("attach-solo")));
            orca_testkit::attach_many(&store, "solo").await;
            let subject = orca_testkit::attach_subject(&store).await;
            let listed = store.referrers(&subject, None).await.expect("referrers");
            assert_eq!(listed.manifests.len(), orca_testkit::ATTACHES_PER_PROCESS);
        }
    }
}

#[tokio::test]
async fn four_processes_never_lose_a_referrer() {
    let prefix = fresh_prefix("attach");
    let mut env: Vec<(String, String)> = aws_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push((URL_ENV.to_owned(), format!("s3://{}/{prefix}", bucket())));
    let store = Store::new(backend(&prefix));
    orca_testkit::attach_from_processes(&store, "concurrency::attacher", &env).await;
}

#[tokio::test]
async fn index_json_moves_again_only_when_it_changed_and_other_writers_are_seen() {
    let proxy = RecordingProxy::start(MotoServer::shared().port()).expect("proxy");
    let prefix = fresh_prefix("known-index");
    let through = builder(&prefix)
        .endpoint(format!("http://127.0.0.1:{}", proxy.port()))
        .build()
        .expect("backend");
    let store = Store::new(through);
    let first = manifest(&store).await;
    store.tag(&first, "v1").await.expect("tag");
    let tag = orca_core::Selector::Tag("v1".into());
    let before = proxy.recorded().len();
    for _ in 0..3 {
        assert_eq!(store.resolve(&tag).await.expect("v1").digest, first.digest);
    }
    // Each of the three asks whether index.json changed.
    let sent = proxy.recorded()[before..].to_ascii_lowercase();
    let conditional = sent
        .split("\r\n\r\n")
        .filter(|request| request.starts_with("get ") && request.contains("index.json"))
        .filter(|request| request.contains("if-none-match:"))
        .count();
    assert_eq!(conditional, 3, "{sent}");

    // Another handle moves the tag: the first sees it at once.
    let other = Store::new(backend(&prefix));
    let config = other
        .push_bytes(MediaType::OCI_CONFIG, &b"{\"other\":true}"[..])
        .await
        .expect("config");
    let second = other
        .push_manifest(
            &orca_core::Manifest::new(config, vec![])
                .to_raw()
                .expect("raw"),
            Some("v1"),
        )
        .await
        .expect("moved");
    assert_ne!(second.digest, first.digest);
    assert_eq!(store.resolve(&tag).await.expect("v1").digest, second.digest);
}
