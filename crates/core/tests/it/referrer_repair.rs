//! Referrers a target holds without listing them are listed by the next
//! copy (core review B), in a bundle's repositories too (18), and a
//! bundle that pages its names shows them all (5).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use orca_core::conformance::{Hooks, Intercept};
use orca_core::copy::{CopyOptions, copy};
use orca_core::{
    Backend, Capabilities, Descriptor, Manifest, MediaType, MemoryBackend, Result, Selector, Store,
};

use crate::copy::image_with;

/// Pushes an image tagged `v1` and a signature referring to it; returns
/// both descriptors.
async fn signed_image(source: &Store) -> (Descriptor, Descriptor) {
    let layer = source
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"base"[..])
        .await
        .expect("layer");
    let image = image_with(source, layer).await;
    let empty = source
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty");
    let referrer = Manifest {
        artifact_type: Some(MediaType::new("application/vnd.example.signature")),
        subject: Some(image.plain()),
        ..Manifest::new(empty.clone(), vec![empty.clone()])
    }
    .to_raw()
    .expect("raw");
    let referrer = source.push_manifest(&referrer, None).await.expect("sign");
    (image, referrer)
}

/// Breaks every change of a referrers index (a 503 on its write) until
/// told to mend.
#[derive(Debug, Clone)]
struct BrokenIndex(Arc<std::sync::atomic::AtomicBool>);

#[async_trait::async_trait]
impl Hooks for BrokenIndex {
    async fn swap_tag(
        &self,
        inner: &dyn Backend,
        tag: &str,
        expected: Option<&orca_core::Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        if orca_core::referrers::is_fallback_tag(tag) && self.0.load(Ordering::SeqCst) {
            return Err(orca_core::Error::Backend {
                backend: "target".into(),
                operation: "tag",
                source: "503 service unavailable".into(),
            });
        }
        inner.swap_tag(tag, expected, new).await
    }
}

/// Core review finding B: a referrer stored at the target whose index
/// update failed is listed by the next `copy --referrers`, with or without
/// `force`, instead of the re-run reporting success with it unlisted.
#[tokio::test]
async fn finding_b_a_rerun_lists_a_referrer_stored_but_not_listed() {
    for force in [false, true] {
        let source = Store::new(MemoryBackend::new());
        let (image, referrer) = signed_image(&source).await;

        let mut capabilities = Capabilities::ALL;
        capabilities.referrers_api = false;
        let broken = BrokenIndex(Arc::new(std::sync::atomic::AtomicBool::new(true)));
        let target = Store::new(Intercept::new(
            MemoryBackend::new().with_capabilities(capabilities),
            broken.clone(),
        ));
        let options = CopyOptions {
            referrers: true,
            ..CopyOptions::default()
        };
        let v1 = Selector::Tag("v1".into());
        copy(&source, &v1, &target, Some("v1"), &options)
            .await
            .expect_err("the index update failed");
        assert!(target.exists(&referrer).await.expect("exists"), "stored");
        broken.0.store(false, Ordering::SeqCst);
        let again = CopyOptions {
            force,
            ..options.clone()
        };
        copy(&source, &v1, &target, Some("v1"), &again)
            .await
            .expect("the re-run");
        let listed = target.referrers(&image, None).await.expect("referrers");
        assert!(
            listed.manifests.iter().any(|d| d.digest == referrer.digest),
            "force {force}: the stored referrer is still not listed: {listed:?}"
        );
    }
}

/// Core review finding 18: a bundle's repositories answer truthfully that
/// they hold what another repository pushed, and a referrer copied
/// through one repository is still listed by the next one's copy (by the
/// repair of held but unlisted referrers, not by a false `exists`).
#[tokio::test]
async fn finding_18_a_bundle_repository_lists_a_referrer_another_pushed() {
    let source = Store::new(MemoryBackend::new());
    let (image, referrer) = signed_image(&source).await;

    let mut capabilities = Capabilities::ALL;
    capabilities.referrers_api = false;
    let bundle: Arc<dyn Backend> = Arc::new(MemoryBackend::new().with_capabilities(capabilities));
    let options = CopyOptions {
        referrers: true,
        ..CopyOptions::default()
    };
    let v1 = Selector::Tag("v1".into());
    for repository in ["a", "b"] {
        let target = Store::new(
            orca_core::bundle::Namespaced::new(bundle.clone(), repository).expect("view"),
        );
        copy(&source, &v1, &target, Some("v1"), &options)
            .await
            .expect("copy");
        let listed = target.referrers(&image, None).await.expect("referrers");
        assert!(
            listed.manifests.iter().any(|d| d.digest == referrer.digest),
            "{repository}: {listed:?}"
        );
    }
    let b = Store::new(orca_core::bundle::Namespaced::new(bundle.clone(), "b").expect("view"));
    assert!(
        b.exists(&image).await.expect("exists"),
        "b holds the image a pushed"
    );
}

/// Pages the names of the backend it wraps two at a time.
#[derive(Debug)]
struct TwoAPage;

#[async_trait::async_trait]
impl Hooks for TwoAPage {
    async fn tags(
        &self,
        inner: &dyn Backend,
        query: &orca_core::ListQuery,
    ) -> Result<orca_core::ListPage> {
        let all = inner.tags(&orca_core::ListQuery::all()).await?;
        Ok(orca_core::ListPage::slice(
            &all.entries,
            &orca_core::ListQuery::page(query.last.clone(), 2),
        ))
    }
}

/// Core review finding 5: a bundle whose backend pages its names even when
/// asked for all (a plugin may) still shows every tag of a repository.
#[tokio::test]
async fn finding_5_a_paging_bundle_shows_every_tag() {
    let inner = MemoryBackend::new();
    let plain = Store::new(inner.clone());
    let layer = plain
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"x"[..])
        .await
        .expect("layer");
    let image = image_with(&plain, layer).await;
    for name in ["app:1", "app:2", "app:3", "other:1", "app:4", "zed:9"] {
        inner.tag(&image, name).await.expect("tag");
    }
    let bundle: Arc<dyn Backend> = Arc::new(Intercept::new(inner, TwoAPage));
    let app = Store::new(orca_core::bundle::Namespaced::new(bundle.clone(), "app").expect("view"));
    assert_eq!(app.tags_all().await.expect("tags"), ["1", "2", "3", "4"]);
    assert_eq!(
        orca_core::bundle::repositories(bundle.as_ref())
            .await
            .expect("repositories"),
        ["app", "other", "zed"]
    );
}
