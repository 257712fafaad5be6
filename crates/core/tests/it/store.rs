//! `Store`'s own guarantees, shown with a backend that lies: corrupted
//! bytes, wrong lengths and wrong resolutions never get past `Store`.

use bytes::Bytes;
use futures::StreamExt;
use orca_core::conformance::{Hooks, Intercept};
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, MediaType, MemoryBackend, PushOptions,
    Result, Selector, Store,
};

/// How the lying backend lies.
#[derive(Debug, Clone, Copy)]
enum Lie {
    FlipByte,
    ShortBody,
    WrongLength,
    WrongResolve,
    /// Holds every pushed chunk until the body ends, then stores.
    Hoard,
    /// Refuses to set or move tags, as a registry in trouble might.
    RefuseTagWrites,
    /// Sends the first chunk of a body, then loses the connection.
    BreakMidway,
}

#[orca_core::async_trait]
impl Hooks for Lie {
    async fn fetch(&self, inner: &dyn Backend, d: &Descriptor) -> Result<Body> {
        let body = inner.fetch(d).await?;
        let len = body.len();
        Ok(match self {
            Lie::FlipByte => Body::new(
                len,
                body.map(|chunk| {
                    chunk.map(|c| {
                        let mut v = c.to_vec();
                        if let Some(b) = v.last_mut() {
                            *b ^= 1;
                        }
                        Bytes::from(v)
                    })
                }),
            ),
            Lie::ShortBody => Body::new(len, body.map(|c| c.map(|c| c.slice(..c.len() / 2)))),
            Lie::WrongLength => Body::new(len + 1, body),
            Lie::BreakMidway => Body::new(
                len,
                body.take(1).chain(futures::stream::once(async {
                    Err(Error::Backend {
                        backend: "liar".into(),
                        operation: "fetch",
                        source: "connection reset by peer".into(),
                    })
                })),
            ),
            Lie::WrongResolve | Lie::Hoard | Lie::RefuseTagWrites => body,
        })
    }
    async fn push(
        &self,
        inner: &dyn Backend,
        d: &Descriptor,
        body: Body,
        o: &PushOptions,
    ) -> Result<()> {
        if let Lie::Hoard = self {
            let len = body.len();
            let hoard: Vec<Result<Bytes>> = body.collect().await;
            return inner
                .push(d, Body::new(len, futures::stream::iter(hoard)), o)
                .await;
        }
        inner.push(d, body, o).await
    }
    async fn resolve(&self, inner: &dyn Backend, s: &Selector) -> Result<Descriptor> {
        let mut d = inner.resolve(s).await?;
        if let Lie::WrongResolve = self {
            d.digest = Digest::sha256(b"another manifest");
        }
        Ok(d)
    }
    async fn tag(&self, inner: &dyn Backend, d: &Descriptor, t: &str) -> Result<()> {
        self.refuse_tag_writes()?;
        inner.tag(d, t).await
    }
    async fn swap_tag(
        &self,
        inner: &dyn Backend,
        t: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        self.refuse_tag_writes()?;
        inner.swap_tag(t, expected, new).await
    }
}

impl Lie {
    fn refuse_tag_writes(&self) -> Result<()> {
        match self {
            Lie::RefuseTagWrites => Err(Error::Backend {
                backend: "liar".into(),
                operation: "tag",
                source: "503 service unavailable".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// A memory backend lying as `lie` says.
fn liar(inner: MemoryBackend, lie: Lie) -> Intercept<Lie> {
    Intercept::new(inner, lie)
}

/// A backend that learns, after it was wrapped, that it indexes referrers.
#[derive(Debug)]
struct Learner(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Hooks for Learner {
    fn capabilities(&self, inner: &dyn Backend) -> Capabilities {
        let mut capabilities = inner.capabilities();
        capabilities.referrers_api = self.0.load(std::sync::atomic::Ordering::SeqCst);
        capabilities
    }
}

async fn drain(mut body: Body) -> Result<()> {
    while let Some(chunk) = body.next().await {
        chunk?;
    }
    Ok(())
}

async fn liar_with_blob(lie: Lie) -> (Store, Descriptor) {
    let inner = MemoryBackend::new();
    let desc = Store::new(inner.clone())
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"honest bytes"[..])
        .await
        .expect("push");
    (Store::new(liar(inner, lie)), desc)
}

#[tokio::test]
async fn corrupted_fetch_is_a_digest_mismatch() {
    let (store, desc) = liar_with_blob(Lie::FlipByte).await;
    let err = drain(store.fetch(&desc).await.expect("fetch"))
        .await
        .expect_err("corrupt");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("FlipByte"),
        "error names the backend: {err}"
    );
    let err = store.fetch_bytes(&desc).await.expect_err("corrupt bytes");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn a_fetched_body_is_checked_once_and_still_guards_the_push() {
    // A body fetched through a Store is pushed without a second hash; its
    // own check must still keep corrupt bytes out of the target.
    let (source, desc) = liar_with_blob(Lie::FlipByte).await;
    let target = Store::new(MemoryBackend::new());
    let body = source.fetch(&desc).await.expect("fetch");
    let err = target.push(&desc, body).await.expect_err("corrupt");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(
        !target.exists(&desc).await.expect("exists"),
        "nothing published"
    );

    // Pushed as other content, the same honest body is checked again.
    let source = Store::new(MemoryBackend::new());
    let desc = source
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"honest bytes"[..])
        .await
        .expect("push");
    let other = Descriptor::new(
        desc.media_type.clone(),
        Digest::sha256(b"other bytes!"),
        desc.size,
    );
    let body = source.fetch(&desc).await.expect("fetch");
    let err = target.push(&other, body).await.expect_err("other digest");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!target.exists(&other).await.expect("exists"));

    // A body someone began to read is checked again, so the bytes it no
    // longer carries are missed, not published short.
    let mut body = source.fetch(&desc).await.expect("fetch");
    let first = body.next().await.expect("a chunk").expect("bytes");
    assert!(!first.is_empty());
    let err = target.push(&desc, body).await.expect_err("short");
    assert!(
        matches!(
            err,
            Error::SizeMismatch { .. } | Error::DigestMismatch { .. }
        ),
        "{err}"
    );
    assert!(
        !target.exists(&desc).await.expect("exists"),
        "nothing published"
    );

    // And as itself it arrives whole.
    let body = source.fetch(&desc).await.expect("fetch");
    target.push(&desc, body).await.expect("push");
    let bytes = target.fetch_bytes(&desc).await.expect("fetch back");
    assert_eq!(&bytes[..], b"honest bytes");
}

#[tokio::test]
async fn short_or_misannounced_fetches_are_size_mismatches() {
    let (store, desc) = liar_with_blob(Lie::ShortBody).await;
    let err = drain(store.fetch(&desc).await.expect("fetch"))
        .await
        .expect_err("short");
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    let (store, desc) = liar_with_blob(Lie::WrongLength).await;
    let err = store.fetch(&desc).await.expect_err("wrong length");
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
}

#[tokio::test]
async fn wrong_resolution_by_digest_is_refused() {
    let inner = MemoryBackend::new();
    let honest = Store::new(inner.clone());
    let config = honest
        .push_bytes(MediaType::OCI_CONFIG, &b"{}"[..])
        .await
        .expect("config");
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{},"layers":[]}}"#,
        serde_json::to_string(&config).expect("json")
    );
    let raw = orca_core::RawManifest::new(MediaType::OCI_MANIFEST, manifest.into_bytes());
    honest.push_manifest(&raw, None).await.expect("manifest");
    let store = Store::new(liar(inner, Lie::WrongResolve));
    let err = store
        .resolve(&Selector::Digest(raw.digest()))
        .await
        .expect_err("lie");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn oversized_manifests_are_refused_before_reading() {
    let store = Store::new(MemoryBackend::new());
    let huge = Descriptor::new(
        MediaType::OCI_MANIFEST,
        Digest::sha256(b"x"),
        5 * 1024 * 1024,
    );
    let err = store.fetch(&huge).await.expect_err("too big");
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
}

/// The streaming check is not toothless: a backend that holds the whole
/// pushed body before storing it fails it.
#[tokio::test]
#[should_panic(expected = "it must stream, not buffer")]
async fn the_streaming_check_catches_a_buffering_backend() {
    let store = Store::new(liar(MemoryBackend::new(), Lie::Hoard));
    orca_core::conformance::push_fetch_large_streamed(orca_core::conformance::Subject::new(store))
        .await;
}

/// Deleting a referrer takes it out of its subject's index first: when
/// that update fails, the referrer is still there and still listed (and a
/// retry finishes the job), never listed while gone.
#[tokio::test]
async fn a_failed_index_update_leaves_the_referrer_listed_and_present() {
    let mut capabilities = Capabilities::ALL;
    capabilities.referrers_api = false;
    let inner = MemoryBackend::new().with_capabilities(capabilities);
    let store = Store::new(inner.clone());
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty");
    let image = orca_core::Manifest::new(empty.clone(), vec![])
        .to_raw()
        .expect("raw");
    let image = store.push_manifest(&image, None).await.expect("image");
    let referrer = orca_core::Manifest {
        artifact_type: Some(MediaType::new("application/vnd.example")),
        subject: Some(image.clone()),
        ..orca_core::Manifest::new(empty.clone(), vec![empty])
    }
    .to_raw()
    .expect("raw");
    let referrer = store
        .push_manifest(&referrer, None)
        .await
        .expect("referrer");

    let refusing = Store::new(liar(inner.clone(), Lie::RefuseTagWrites));
    refusing
        .delete(&referrer)
        .await
        .expect_err("the index update fails");
    assert!(
        store.exists(&referrer).await.expect("exists"),
        "deleted anyway"
    );
    let listed = store.referrers(&image, None).await.expect("list");
    assert_eq!(listed.manifests.len(), 1, "{listed:?}");

    store.delete(&referrer).await.expect("retry");
    assert!(!store.exists(&referrer).await.expect("exists"));
    let listed = store.referrers(&image, None).await.expect("list");
    assert!(listed.manifests.is_empty(), "{listed:?}");
}

/// `Store::capabilities` agrees with the backend on the one flag a backend
/// may learn while it runs.
#[tokio::test]
async fn a_referrers_api_learned_later_shows_in_the_capabilities() {
    let learned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = Store::new(Intercept::new(
        MemoryBackend::new(),
        Learner(learned.clone()),
    ));
    assert!(!store.capabilities().referrers_api);
    learned.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(store.capabilities().referrers_api);
    assert!(
        store.capabilities().delete,
        "the other flags stay as they were"
    );
}

/// A backend failure that is none of the typed kinds comes out of `Store`
/// naming the operation, the content and the store, with the backend's
/// cause as its source, said once.
#[tokio::test]
async fn backend_failures_name_the_operation_and_the_content() {
    let inner = MemoryBackend::new();
    let honest = Store::new(inner.clone());
    let blob = honest
        .push_bytes(MediaType::OCI_LAYER_TAR, vec![5u8; 3 * 1024 * 1024])
        .await
        .expect("push");
    let config = honest
        .push_bytes(MediaType::OCI_CONFIG, &b"{}"[..])
        .await
        .expect("config");
    let manifest = orca_core::Manifest::new(config, vec![blob.clone()]);
    let manifest = honest
        .push_manifest(&manifest.to_raw().expect("raw"), None)
        .await
        .expect("manifest");

    let refusing = Store::new(liar(inner.clone(), Lie::RefuseTagWrites));
    let err = refusing.tag(&manifest, "v1").await.expect_err("refused");
    let text = orca_core::error::chain(&err);
    assert!(
        text.starts_with(&format!(
            "tagging {} as v1 in {refusing}: ",
            manifest.digest
        )),
        "{text}"
    );
    assert_eq!(text.matches("503 service unavailable").count(), 1, "{text}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is not a source"
    );

    let breaking = Store::new(liar(inner, Lie::BreakMidway));
    let body = breaking.fetch(&blob).await.expect("the fetch starts");
    let err = drain(body).await.expect_err("broken midway");
    let text = orca_core::error::chain(&err);
    assert!(
        text.starts_with(&format!("reading blob {} from {breaking}: ", blob.digest)),
        "{text}"
    );
    assert!(text.ends_with("connection reset by peer"), "{text}");

    // The typed kinds are left as they are, to be matched on.
    let missing = Descriptor::new(MediaType::OCI_LAYER_TAR, Digest::sha256(b"nothing"), 7);
    let err = breaking.fetch(&missing).await.expect_err("missing");
    assert!(err.is_not_found(), "{err:?}");
}

/// An invalid document names its digest, so a bad member among many can
/// be found.
#[tokio::test]
async fn an_invalid_manifest_names_its_digest() {
    let store = Store::new(MemoryBackend::new());
    let bytes = Bytes::from_static(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
    );
    let descriptor = Descriptor::of(MediaType::OCI_MANIFEST, &bytes);
    let err = store
        .push(&descriptor, Body::from_bytes(bytes))
        .await
        .expect_err("invalid manifest");
    assert!(matches!(err, Error::InvalidManifest { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&descriptor.digest.to_string()),
        "{err}"
    );
}

/// Deletes a referrer through another store right after this store moved
/// the fallback tag, once: a second process whose opposite change lands
/// while the first is still verifying its own.
#[derive(Debug)]
struct DeleteAfterTag {
    other: std::sync::Mutex<Option<(Store, Descriptor)>>,
}

#[orca_core::async_trait]
impl Hooks for DeleteAfterTag {
    async fn tag(&self, inner: &dyn Backend, d: &Descriptor, t: &str) -> Result<()> {
        inner.tag(d, t).await?;
        let other = self.other.lock().expect("lock").take();
        if let Some((store, referrer)) = other {
            store
                .delete(&referrer)
                .await
                .expect("the other store deletes");
        }
        Ok(())
    }
}

/// On a registry without compare-and-swap, an attach and a delete of the
/// same referrer by two stores at once end as the later one asked: the
/// attach, verifying after the delete removed its entry, does not put a
/// listed-but-deleted referrer back.
#[tokio::test]
async fn a_later_delete_is_not_undone_by_an_earlier_attach() {
    // The delete empties the index (and removes it), or leaves another
    // referrer listed (and the index records when the entry went).
    later_delete_wins(false).await;
    later_delete_wins(true).await;
}

async fn later_delete_wins(another_referrer: bool) {
    let mut capabilities = Capabilities::ALL;
    capabilities.referrers_api = false;
    capabilities.tag_compare_and_swap = false;
    let inner = MemoryBackend::new().with_capabilities(capabilities);
    let other = Store::new(inner.clone());
    let subject = other
        .push_bytes(MediaType::OCI_CONFIG, &b"{}"[..])
        .await
        .expect("config");
    let subject = other
        .push_manifest(
            &orca_core::Manifest::new(subject.clone(), vec![subject])
                .to_raw()
                .expect("raw"),
            Some("v1"),
        )
        .await
        .expect("subject");
    let empty = other
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty");
    let referrer = orca_core::Manifest {
        artifact_type: Some(MediaType::new("application/vnd.example.sig")),
        subject: Some(subject.plain()),
        ..orca_core::Manifest::new(empty.clone(), vec![empty])
    };
    let referrer = referrer.to_raw().expect("raw");
    let mut expected = Vec::new();
    if another_referrer {
        let config = other
            .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
            .await
            .expect("empty");
        let kept = orca_core::Manifest {
            artifact_type: Some(MediaType::new("application/vnd.example.sbom")),
            subject: Some(subject.plain()),
            ..orca_core::Manifest::new(config.clone(), vec![config])
        };
        let kept = other
            .push_manifest(&kept.to_raw().expect("raw"), None)
            .await
            .expect("another referrer");
        expected.push(kept.digest);
    }
    let hooks = DeleteAfterTag {
        other: std::sync::Mutex::new(Some((other.clone(), referrer.descriptor()))),
    };
    let attaching = Store::new(Intercept::new(inner, hooks));
    attaching
        .push_manifest(&referrer, None)
        .await
        .expect("attach");
    let listed = other.referrers(&subject, None).await.expect("list");
    let listed: Vec<Digest> = listed.manifests.into_iter().map(|d| d.digest).collect();
    assert_eq!(
        listed, expected,
        "the earlier attach undid the later delete"
    );
    assert!(!other.exists(&referrer.descriptor()).await.expect("exists"));
}

/// Pages tags as a broken or hostile backend might: in a cycle of
/// markers, or without end.
#[derive(Debug)]
enum Paging {
    /// `a`, `b`, then back to `a`.
    Cycle,
    /// A new marker every page, forever.
    Endless,
}

#[async_trait::async_trait]
impl Hooks for Paging {
    async fn tags(
        &self,
        _: &dyn Backend,
        query: &orca_core::ListQuery,
    ) -> Result<orca_core::ListPage> {
        let last = query.last.clone().unwrap_or_default();
        let next = match self {
            Paging::Cycle => match last.as_str() {
                "" => "a",
                "a" => "b",
                _ => "a",
            }
            .to_owned(),
            Paging::Endless => format!("{last}x"),
        };
        Ok(orca_core::ListPage::new(vec![next.clone()], Some(next)))
    }
}

/// Core review finding 10: `tags_all` ends with an error on pages that
/// cycle (a, b, a) or never end, instead of looping and growing forever.
#[tokio::test]
async fn finding_10_tags_all_refuses_pages_that_loop_or_never_end() {
    for paging in [Paging::Cycle, Paging::Endless] {
        let store = Store::new(Intercept::new(MemoryBackend::new(), paging));
        let listed = tokio::time::timeout(std::time::Duration::from_secs(60), store.tags_all())
            .await
            .expect("the listing ended");
        let err = listed.expect_err("a listing that never ends");
        let text = orca_core::error::chain(&err);
        assert!(
            text.contains("already read") || matches!(err, Error::LimitExceeded { .. }),
            "{text}"
        );
    }
}
