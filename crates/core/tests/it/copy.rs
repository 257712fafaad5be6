//! The copy engine's edges: external layers are left out unless asked, a
//! source missing content fails the copy without tagging anything, the walk
//! reads concurrently, mounts fall back to transfers, withdrawn artifact
//! manifests and gone referrers are handled, and index creation checks its
//! inputs before copying.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use orca_core::conformance::{Hooks, Intercept};
use orca_core::copy::{CopyOptions, Event, Progress, copy};
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Index, Manifest, MediaType, MemoryBackend, Platform,
    RawManifest, Result, Selector, Store, index,
};

pub(crate) async fn image_with(source: &Store, layer: Descriptor) -> Descriptor {
    let config = source
        .push_bytes(
            MediaType::OCI_CONFIG,
            &br#"{"os":"windows","architecture":"amd64"}"#[..],
        )
        .await
        .expect("config");
    let raw = Manifest::new(config, vec![layer]).to_raw().expect("raw");
    source
        .push_manifest(&raw, Some("v1"))
        .await
        .expect("manifest")
}

#[tokio::test]
async fn external_layers_stay_where_they_are_unless_asked() {
    let source = Store::new(MemoryBackend::new());
    let target = Store::new(MemoryBackend::new());
    let mut foreign = Descriptor::of(MediaType::DOCKER_FOREIGN_LAYER, b"not here");
    foreign.urls = vec!["https://example.invalid/layer.tar.gz".into()];
    let image = image_with(&source, foreign.clone()).await;
    let report = copy(
        &source,
        &Selector::Tag("v1".into()),
        &target,
        Some("v1"),
        &CopyOptions::default(),
    )
    .await
    .expect("copy without the external layer");
    assert_eq!(report.external, 1, "{report:?}");
    assert!(!target.exists(&foreign).await.expect("exists"));
    assert_eq!(
        target
            .resolve(&Selector::Tag("v1".into()))
            .await
            .expect("tag")
            .digest,
        image.digest
    );
    let asked = CopyOptions {
        external: true,
        ..CopyOptions::default()
    };
    let fresh = Store::new(MemoryBackend::new());
    let err = copy(&source, &Selector::Tag("v1".into()), &fresh, None, &asked)
        .await
        .expect_err("the external layer is not in the source");
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn a_source_missing_content_tags_nothing() {
    let registry = orca_core::MemoryRegistry::new();
    let source = Store::new(registry.repository("source"));
    let target = Store::new(MemoryBackend::new());
    let layer = source
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"soon gone"[..])
        .await
        .expect("layer");
    image_with(&source, layer.clone()).await;
    source.delete(&layer).await.expect("delete the layer");
    let err = copy(
        &source,
        &Selector::Tag("v1".into()),
        &target,
        Some("v1"),
        &CopyOptions::default(),
    )
    .await
    .expect_err("a layer is missing");
    assert!(err.is_not_found(), "{err}");
    let err = target
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect_err("nothing tagged");
    assert!(err.is_not_found(), "{err}");
}

/// Counts manifest reads in flight, each held up a moment.
#[derive(Debug)]
struct Slow {
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

#[orca_core::async_trait]
impl Hooks for Slow {
    async fn fetch(&self, inner: &dyn Backend, d: &Descriptor) -> Result<Body> {
        if d.media_type.is_manifest() {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        inner.fetch(d).await
    }
}

async fn platform_index(source: &Store, count: usize) -> Vec<Descriptor> {
    let mut members = Vec::new();
    for i in 0..count {
        let config = source
            .push_bytes(
                MediaType::OCI_CONFIG,
                format!(r#"{{"os":"linux","architecture":"arch{i}"}}"#),
            )
            .await
            .expect("config");
        let layer = source
            .push_bytes(MediaType::OCI_LAYER_TAR, format!("layer {i}"))
            .await
            .expect("layer");
        let raw = Manifest::new(config, vec![layer]).to_raw().expect("raw");
        let mut member = source.push_manifest(&raw, None).await.expect("member");
        member.platform = Some(Platform::new("linux", &format!("arch{i}")));
        members.push(member);
    }
    let index = Index {
        manifests: members.clone(),
        ..Index::new()
    };
    source
        .push_manifest(&index.to_raw().expect("raw"), Some("multi"))
        .await
        .expect("index");
    members
}

#[tokio::test]
async fn the_walk_reads_manifests_concurrently() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let source = Store::new(Intercept::new(
        MemoryBackend::new(),
        Slow {
            in_flight: in_flight.clone(),
            most: most.clone(),
        },
    ));
    platform_index(&source, 20).await;
    let target = Store::new(MemoryBackend::new());
    let options = CopyOptions {
        concurrency: 8,
        ..CopyOptions::default()
    };
    let report = copy(
        &source,
        &Selector::Tag("multi".into()),
        &target,
        Some("multi"),
        &options,
    )
    .await
    .expect("copy");
    assert_eq!(report.copied, 20 * 3 + 1, "{report:?}");
    let most = most.load(Ordering::SeqCst);
    assert!(
        most > 1 && most <= 8,
        "{most} manifest reads were in flight at most; expected between 2 and the bound of 8"
    );
}

#[tokio::test]
async fn a_mount_the_target_cannot_do_falls_back_to_a_transfer() {
    let source = Store::new(MemoryBackend::new());
    let layer = source
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"mount me"[..])
        .await
        .expect("layer");
    image_with(&source, layer.clone()).await;
    let options = CopyOptions {
        mount_from: Some("elsewhere".into()),
        ..CopyOptions::default()
    };
    // A target without the mount capability, and one whose mount fails
    // (no repository of that name).
    let mut capabilities = Capabilities::ALL;
    capabilities.mount = false;
    let no_mount = Store::new(MemoryBackend::new().with_capabilities(capabilities));
    let registry = orca_core::MemoryRegistry::new();
    let failing = Store::new(registry.repository("target"));
    for target in [no_mount, failing] {
        let report = copy(
            &source,
            &Selector::Tag("v1".into()),
            &target,
            Some("v1"),
            &options,
        )
        .await
        .expect("copy with a mount that cannot happen");
        assert_eq!(report.mounted, 0, "{report:?}");
        assert!(target.exists(&layer).await.expect("exists"), "{target}");
    }
}

#[tokio::test]
async fn withdrawn_artifact_manifests_are_carried_as_they_are() {
    let source = Store::new(MemoryBackend::new());
    let layer = source
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"image layer"[..])
        .await
        .expect("layer");
    let image = image_with(&source, layer).await;
    let blob = source
        .push_bytes(
            MediaType::new("application/vnd.example.sig"),
            &b"signature"[..],
        )
        .await
        .expect("blob");
    let text = serde_json::json!({
        "mediaType": MediaType::OCI_ARTIFACT_MANIFEST.as_str(),
        "artifactType": "application/vnd.example.sig",
        "blobs": [blob],
        "subject": image.plain(),
        "annotations": {"org.example": "old"},
    })
    .to_string();
    let raw = RawManifest::new(MediaType::OCI_ARTIFACT_MANIFEST, text.into_bytes());
    let pushed = source
        .push_manifest(&raw, None)
        .await
        .expect("push artifact manifest");
    let listed = source.referrers(&image, None).await.expect("referrers");
    assert_eq!(listed.manifests.len(), 1, "{listed:?}");
    assert_eq!(
        listed.manifests[0]
            .artifact_type
            .as_ref()
            .map(MediaType::as_str),
        Some("application/vnd.example.sig")
    );

    let target = Store::new(MemoryBackend::new());
    let options = CopyOptions {
        referrers: true,
        ..CopyOptions::default()
    };
    let report = copy(
        &source,
        &Selector::Tag("v1".into()),
        &target,
        Some("v1"),
        &options,
    )
    .await
    .expect("copy with an artifact-manifest referrer");
    assert_eq!(report.referrers, 1, "{report:?}");
    let (_, copied) = target
        .fetch_manifest(&Selector::Digest(pushed.digest.clone()))
        .await
        .expect("the artifact manifest arrived");
    assert_eq!(copied.bytes(), raw.bytes());
    assert!(
        target.exists(&blob).await.expect("exists"),
        "its blob did not"
    );
}

#[tokio::test]
async fn a_referrer_gone_from_the_source_is_left_out() {
    let mut capabilities = Capabilities::ALL;
    capabilities.referrers_api = false;
    let raw_backend = MemoryBackend::new().with_capabilities(capabilities);
    let source = Store::new(raw_backend.clone());
    let layer = source
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"base"[..])
        .await
        .expect("layer");
    let image = image_with(&source, layer).await;
    let empty = source
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty");
    let referrer = Manifest {
        artifact_type: Some(MediaType::new("application/vnd.example")),
        subject: Some(image.plain()),
        ..Manifest::new(empty.clone(), vec![empty.clone()])
    }
    .to_raw()
    .expect("raw");
    let referrer = source.push_manifest(&referrer, None).await.expect("push");
    // Delete the manifest behind the referrers index's back, as another
    // tool or a failed clean-up might.
    raw_backend
        .delete(&referrer)
        .await
        .expect("delete behind the index");
    assert_eq!(
        source
            .referrers(&image, None)
            .await
            .expect("list")
            .manifests
            .len(),
        1
    );

    let target = Store::new(MemoryBackend::new());
    let recorder = Arc::new(Events::default());
    let options = CopyOptions {
        referrers: true,
        progress: Some(recorder.clone()),
        ..CopyOptions::default()
    };
    let report = copy(
        &source,
        &Selector::Tag("v1".into()),
        &target,
        Some("v1"),
        &options,
    )
    .await
    .expect("copy despite the gone referrer");
    assert_eq!(report.gone, 1, "{report:?}");
    assert!(
        recorder
            .0
            .lock()
            .expect("lock")
            .iter()
            .any(|e| matches!(e, Event::Gone(d) if d.digest == referrer.digest))
    );
    target
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect("tagged");
}

#[derive(Default)]
struct Events(std::sync::Mutex<Vec<Event>>);

impl Progress for Events {
    fn event(&self, event: &Event) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event.clone());
        }
    }
}

#[tokio::test]
async fn index_creation_checks_every_input_before_copying() {
    let source = Store::new(MemoryBackend::new());
    // An index member that is itself an index without a platform.
    let members = platform_index(&source, 1).await;
    let inner = Index {
        manifests: members,
        ..Index::new()
    };
    let inner = source
        .push_manifest(&inner.to_raw().expect("raw"), Some("inner"))
        .await
        .expect("inner");
    let outer = Index {
        manifests: vec![inner],
        ..Index::new()
    };
    source
        .push_manifest(&outer.to_raw().expect("raw"), Some("outer"))
        .await
        .expect("outer");
    let empty = Index::new();
    source
        .push_manifest(&empty.to_raw().expect("raw"), Some("empty"))
        .await
        .expect("empty");

    let good = index::Source::new(source.clone(), Selector::Tag("multi".into()));
    for (bad, expected) in [("outer", "no platform"), ("empty", "names no manifests")] {
        let target = Store::new(MemoryBackend::new());
        let sources = [
            good.clone(),
            index::Source::new(source.clone(), Selector::Tag(bad.into())),
        ];
        let err = index::create(
            &target,
            &sources,
            &index::Annotations::default(),
            Some("new"),
        )
        .await
        .expect_err(bad);
        assert!(
            err.to_string().contains(expected) || orca_core::error::chain(&err).contains(expected),
            "{bad}: {err}"
        );
        if bad == "empty" {
            // An empty source alone leaves no members at all.
            let err = index::create(
                &target,
                &[index::Source::new(
                    source.clone(),
                    Selector::Tag("empty".into()),
                )],
                &index::Annotations::default(),
                None,
            )
            .await
            .expect_err("zero members");
            assert!(err.to_string().contains("names no manifests"), "{err}");
        }
        assert!(
            target.tags_all().await.expect("tags").is_empty(),
            "{bad}: something was tagged"
        );
        assert!(
            !target
                .exists(&good_member(&source).await)
                .await
                .expect("exists"),
            "{bad}: a member was copied before the inputs were checked"
        );
    }
}

async fn good_member(source: &Store) -> Descriptor {
    let (_, raw) = source
        .fetch_manifest(&Selector::Tag("multi".into()))
        .await
        .expect("multi");
    match raw.parse().expect("parse") {
        orca_core::Document::Index(index) => index.manifests[0].plain(),
        _ => panic!("multi is not an index"),
    }
}

/// Core review finding 6: an index made from one sha512 index keeps that
/// index's digest instead of pushing it again as sha256.
#[tokio::test]
async fn finding_6_an_index_of_one_sha512_index_keeps_its_digest() {
    let source = Store::new(MemoryBackend::new());
    let layer = source
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"layer"[..])
        .await
        .expect("layer");
    let image = image_with(&source, layer).await;
    let mut member = image.plain();
    member.platform = Some(Platform::parse("windows/amd64").expect("platform"));
    let index = Index {
        manifests: vec![member],
        ..Index::new()
    };
    let raw = index.to_raw().expect("raw");
    let descriptor = Descriptor::new(
        raw.media_type().clone(),
        orca_core::Digest::compute(orca_core::Algorithm::Sha512, raw.bytes()),
        raw.bytes().len() as u64,
    );
    source
        .push_opts(
            &descriptor,
            Body::from_bytes(raw.bytes().clone()),
            orca_core::PushOptions::tagged("multi512"),
        )
        .await
        .expect("push a sha512 index");
    let target = Store::new(MemoryBackend::new());
    let created = index::create(
        &target,
        &[index::Source::new(source, Selector::Tag("multi512".into()))],
        &index::Annotations::default(),
        Some("made"),
    )
    .await
    .expect("create");
    assert_eq!(created.descriptor.digest, descriptor.digest);
    let tagged = target
        .resolve(&Selector::Tag("made".into()))
        .await
        .expect("tagged");
    assert_eq!(tagged.digest, descriptor.digest);
}

/// Core review finding 12: sizes taken from a manifest (untrusted) are
/// summed without overflow: two layers of `u64::MAX / 2 + 1` bytes fail
/// the copy with an error, never a panic.
#[tokio::test]
async fn finding_12_sizes_that_overflow_when_summed_are_an_error() {
    let source = Store::new(MemoryBackend::new());
    let config = source
        .push_bytes(MediaType::OCI_CONFIG, &br#"{"os":"linux"}"#[..])
        .await
        .expect("config");
    let huge = |n: u8| {
        Descriptor::new(
            MediaType::OCI_LAYER_TAR,
            orca_core::Digest::sha256(&[n]),
            u64::MAX / 2 + 1,
        )
    };
    let raw = Manifest::new(config, vec![huge(1), huge(2)])
        .to_raw()
        .expect("raw");
    source
        .push_manifest(&raw, Some("huge"))
        .await
        .expect("push");
    let target = Store::new(MemoryBackend::new());
    let copied = copy(
        &source,
        &Selector::Tag("huge".into()),
        &target,
        Some("huge"),
        &CopyOptions::default(),
    )
    .await;
    assert!(copied.is_err(), "{copied:?}");
}
