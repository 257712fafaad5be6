//! `Store`'s own guarantees, shown with a backend that lies: corrupted
//! bytes, wrong lengths and wrong resolutions never get past `Store`.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, ListPage, ListQuery, MediaType,
    MemoryBackend, PushOptions, Referrers, Result, Selector, Store, async_trait,
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
}

#[derive(Debug)]
struct Liar {
    inner: MemoryBackend,
    lie: Lie,
}

/// A backend that learns, after it was wrapped, that it indexes referrers.
#[derive(Debug)]
struct Learner {
    inner: MemoryBackend,
    learned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl fmt::Display for Learner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "learner")
    }
}

#[async_trait]
impl Backend for Learner {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.inner.capabilities();
        capabilities.referrers_api = self.learned.load(std::sync::atomic::Ordering::SeqCst);
        capabilities
    }
    async fn exists(&self, d: &Descriptor) -> Result<bool> {
        self.inner.exists(d).await
    }
    async fn fetch(&self, d: &Descriptor) -> Result<Body> {
        self.inner.fetch(d).await
    }
    async fn push(&self, d: &Descriptor, body: Body, o: &PushOptions) -> Result<()> {
        self.inner.push(d, body, o).await
    }
    async fn partial(&self, d: &Descriptor) -> Result<u64> {
        self.inner.partial(d).await
    }
    async fn delete(&self, d: &Descriptor) -> Result<()> {
        self.inner.delete(d).await
    }
    async fn resolve(&self, s: &Selector) -> Result<Descriptor> {
        self.inner.resolve(s).await
    }
    async fn tag(&self, d: &Descriptor, t: &str) -> Result<()> {
        self.inner.tag(d, t).await
    }
    async fn untag(&self, t: &str) -> Result<()> {
        self.inner.untag(t).await
    }
    async fn swap_tag(&self, t: &str, e: Option<&Digest>, n: Option<&Descriptor>) -> Result<()> {
        self.inner.swap_tag(t, e, n).await
    }
    async fn tags(&self, q: &ListQuery) -> Result<ListPage> {
        self.inner.tags(q).await
    }
    async fn referrers(&self, s: &Descriptor, a: Option<&MediaType>) -> Result<Referrers> {
        self.inner.referrers(s, a).await
    }
    async fn mount(&self, d: &Descriptor, from: &str) -> Result<bool> {
        self.inner.mount(d, from).await
    }
    async fn fetch_range(&self, d: &Descriptor, r: Range<u64>) -> Result<Body> {
        self.inner.fetch_range(d, r).await
    }
    async fn catalog(&self, q: &ListQuery) -> Result<ListPage> {
        self.inner.catalog(q).await
    }
}

impl fmt::Display for Liar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "liar:{:?}", self.lie)
    }
}

#[async_trait]
impl Backend for Liar {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn exists(&self, d: &Descriptor) -> Result<bool> {
        self.inner.exists(d).await
    }
    async fn fetch(&self, d: &Descriptor) -> Result<Body> {
        let body = self.inner.fetch(d).await?;
        let len = body.len();
        Ok(match self.lie {
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
            Lie::WrongResolve | Lie::Hoard | Lie::RefuseTagWrites => body,
        })
    }
    async fn push(&self, d: &Descriptor, body: Body, o: &PushOptions) -> Result<()> {
        if let Lie::Hoard = self.lie {
            let len = body.len();
            let hoard: Vec<Result<Bytes>> = body.collect().await;
            return self
                .inner
                .push(d, Body::new(len, futures::stream::iter(hoard)), o)
                .await;
        }
        self.inner.push(d, body, o).await
    }
    async fn partial(&self, d: &Descriptor) -> Result<u64> {
        self.inner.partial(d).await
    }
    async fn delete(&self, d: &Descriptor) -> Result<()> {
        self.inner.delete(d).await
    }
    async fn resolve(&self, s: &Selector) -> Result<Descriptor> {
        let mut d = self.inner.resolve(s).await?;
        if let Lie::WrongResolve = self.lie {
            d.digest = Digest::sha256(b"another manifest");
        }
        Ok(d)
    }
    async fn tag(&self, d: &Descriptor, t: &str) -> Result<()> {
        self.refuse_tag_writes()?;
        self.inner.tag(d, t).await
    }
    async fn untag(&self, t: &str) -> Result<()> {
        self.inner.untag(t).await
    }
    async fn swap_tag(
        &self,
        t: &str,
        expected: Option<&orca_core::Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        self.refuse_tag_writes()?;
        self.inner.swap_tag(t, expected, new).await
    }
    async fn tags(&self, q: &ListQuery) -> Result<ListPage> {
        self.inner.tags(q).await
    }
    async fn referrers(&self, s: &Descriptor, a: Option<&MediaType>) -> Result<Referrers> {
        self.inner.referrers(s, a).await
    }
    async fn mount(&self, d: &Descriptor, from: &str) -> Result<bool> {
        self.inner.mount(d, from).await
    }
    async fn fetch_range(&self, d: &Descriptor, r: Range<u64>) -> Result<Body> {
        self.inner.fetch_range(d, r).await
    }
    async fn catalog(&self, q: &ListQuery) -> Result<ListPage> {
        self.inner.catalog(q).await
    }
}

impl Liar {
    fn refuse_tag_writes(&self) -> Result<()> {
        match self.lie {
            Lie::RefuseTagWrites => Err(Error::Backend {
                backend: "liar".into(),
                operation: "tag",
                source: "503 service unavailable".into(),
            }),
            _ => Ok(()),
        }
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
    (Store::new(Liar { inner, lie }), desc)
}

#[tokio::test]
async fn corrupted_fetch_is_a_digest_mismatch() {
    let (store, desc) = liar_with_blob(Lie::FlipByte).await;
    let err = drain(store.fetch(&desc).await.expect("fetch"))
        .await
        .expect_err("corrupt");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("liar:FlipByte"),
        "error names the backend: {err}"
    );
    let err = store.fetch_bytes(&desc).await.expect_err("corrupt bytes");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
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
    let store = Store::new(Liar {
        inner,
        lie: Lie::WrongResolve,
    });
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
    let store = Store::new(Liar {
        inner: MemoryBackend::new(),
        lie: Lie::Hoard,
    });
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

    let refusing = Store::new(Liar {
        inner: inner.clone(),
        lie: Lie::RefuseTagWrites,
    });
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
    let store = Store::new(Learner {
        inner: MemoryBackend::new(),
        learned: learned.clone(),
    });
    assert!(!store.capabilities().referrers_api);
    learned.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(store.capabilities().referrers_api);
    assert!(
        store.capabilities().delete,
        "the other flags stay as they were"
    );
}
