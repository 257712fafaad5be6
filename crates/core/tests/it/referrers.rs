//! The referrers tag schema through `Store` under hostile conditions: a
//! lagging replica's stale 404 (core review D), a media-type parameter on
//! the index (8), and a stamp from a machine whose clock runs fast (1).

use orca_core::conformance::{Hooks, Intercept};
use orca_core::{
    Backend, Capabilities, Descriptor, Error, MediaType, MemoryBackend, Result, Selector, Store,
};

/// A registry behind a lagging replica: once a second referrers index has
/// been tagged, and until the test says, every read of the fallback tag
/// answers 404.
#[derive(Debug, Default)]
struct Lag {
    tagged: std::sync::atomic::AtomicUsize,
    lag: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default, Clone)]
struct Lagging(std::sync::Arc<Lag>);

#[async_trait::async_trait]
impl Hooks for Lagging {
    async fn resolve(&self, inner: &dyn Backend, selector: &Selector) -> Result<Descriptor> {
        if self.0.lag.load(std::sync::atomic::Ordering::SeqCst)
            && matches!(selector, Selector::Tag(t) if orca_core::referrers::is_fallback_tag(t))
        {
            return Err(Error::NotFound {
                what: format!("{selector:?} (a lagging replica)"),
                place: inner.to_string(),
            });
        }
        inner.resolve(selector).await
    }

    async fn tag(&self, inner: &dyn Backend, descriptor: &Descriptor, tag: &str) -> Result<()> {
        inner.tag(descriptor, tag).await?;
        if orca_core::referrers::is_fallback_tag(tag)
            && self
                .0
                .tagged
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                == 1
        {
            self.0.lag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Core review finding D: a verify-after-write update whose last read of
/// the fallback tag answers 404 (a stale read) keeps the index it tagged
/// instead of deleting it with every referrer it lists.
#[tokio::test]
async fn finding_d_a_stale_404_after_tagging_deletes_no_referrers_index() {
    let mut capabilities = Capabilities::ALL;
    capabilities.referrers_api = false;
    capabilities.tag_compare_and_swap = false;
    let inner = MemoryBackend::new().with_capabilities(capabilities);
    let lagging = Lagging::default();
    let store = Store::new(Intercept::new(inner.clone(), lagging.clone()));
    let config = store
        .push_bytes(MediaType::OCI_CONFIG, &br#"{"os":"linux"}"#[..])
        .await
        .expect("config");
    let raw = orca_core::Manifest::new(config, vec![])
        .to_raw()
        .expect("raw");
    let subject = store
        .push_manifest(&raw, Some("v1"))
        .await
        .expect("subject");
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty");
    let mut attached = Vec::new();
    for label in ["one", "two"] {
        let mut referrer = orca_core::Manifest::new(empty.clone(), vec![empty.clone()]);
        referrer.artifact_type = Some(MediaType::new("application/vnd.example.note"));
        referrer.subject = Some(subject.clone());
        referrer.annotations.insert("label".into(), label.into());
        let raw = referrer.to_raw().expect("raw");
        attached.push(store.push_manifest(&raw, None).await.expect("attach"));
    }
    lagging
        .0
        .lag
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let tag = orca_core::referrers::fallback_tag(&subject.digest);
    Store::new(inner.clone())
        .resolve(&Selector::Tag(tag.clone()))
        .await
        .expect("the referrers index is still tagged");
    let listed = store.referrers(&subject, None).await.expect("referrers");
    for referrer in &attached {
        assert!(
            listed.manifests.iter().any(|d| d.digest == referrer.digest),
            "{} is no longer listed: {listed:?}",
            referrer.digest
        );
    }
}

/// Pushes an empty image tagged `v1` and a note referring to it; returns
/// both descriptors.
async fn noted(store: &Store) -> (Descriptor, Descriptor) {
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty");
    let subject = store
        .push_manifest(
            &orca_core::Manifest::new(empty.clone(), vec![])
                .to_raw()
                .expect("raw"),
            Some("v1"),
        )
        .await
        .expect("subject");
    let mut referrer = orca_core::Manifest::new(empty.clone(), vec![empty]);
    referrer.subject = Some(subject.clone());
    referrer.artifact_type = Some(MediaType::new("application/vnd.example.note"));
    let referrer = store
        .push_manifest(&referrer.to_raw().expect("raw"), None)
        .await
        .expect("attach");
    (subject, referrer)
}

/// Serves the fallback tag's index with a media-type parameter.
#[derive(Debug)]
struct Charset;

#[async_trait::async_trait]
impl Hooks for Charset {
    async fn resolve(&self, inner: &dyn Backend, selector: &Selector) -> Result<Descriptor> {
        let mut found = inner.resolve(selector).await?;
        if matches!(selector, Selector::Tag(t) if orca_core::referrers::is_fallback_tag(t)) {
            found.media_type = MediaType::new(format!("{}; charset=utf-8", found.media_type));
        }
        Ok(found)
    }
}

/// Core review finding 8: a referrers index whose media type carries a
/// parameter is read as the image index it is.
#[tokio::test]
async fn finding_8_a_media_type_parameter_on_the_referrers_index_is_read() {
    let mut capabilities = Capabilities::ALL;
    capabilities.referrers_api = false;
    let inner = MemoryBackend::new().with_capabilities(capabilities);
    let plain = Store::new(inner.clone());
    let (subject, _) = noted(&plain).await;
    let store = Store::new(Intercept::new(inner, Charset));
    let listed = store.referrers(&subject, None).await.expect("referrers");
    assert_eq!(listed.manifests.len(), 1, "{listed:?}");
}

/// Core review finding 1, through `Store`: a referrer attached by a
/// machine whose clock runs an hour fast is deleted here; the listing
/// drops it (before, the removal counted as overtaken and the deleted
/// manifest stayed listed).
#[tokio::test]
async fn finding_1_a_delete_here_unlists_what_a_fast_clock_attached() {
    let mut capabilities = Capabilities::ALL;
    capabilities.referrers_api = false;
    let backend = MemoryBackend::new().with_capabilities(capabilities);
    let store = Store::new(backend.clone());
    let (subject, referrer) = noted(&store).await;
    // The index as the fast machine wrote it: its stamp an hour ahead.
    let tag = orca_core::referrers::fallback_tag(&subject.digest);
    let current = store
        .resolve(&Selector::Tag(tag.clone()))
        .await
        .expect("index");
    let bytes = store.fetch_bytes(&current).await.expect("fetch");
    let mut index: orca_core::Index = serde_json::from_slice(&bytes).expect("parse");
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
        + 3_600_000_000_000;
    index.annotations.insert(
        format!("dev.orca.referrers.changed.{}", referrer.digest),
        ahead.to_string(),
    );
    let forged = store
        .push_manifest(&index.to_raw().expect("raw"), None)
        .await
        .expect("push forged index");
    backend.tag(&forged, &tag).await.expect("tag forged index");

    store.delete(&referrer).await.expect("delete");
    let listed = store.referrers(&subject, None).await.expect("referrers");
    assert!(
        listed.manifests.iter().all(|d| d.digest != referrer.digest),
        "a deleted referrer is still listed: {listed:?}"
    );
}
