//! The sync engine over memory backends: what a run copies, that a re-run
//! only asks the source one question per image, prune and dry runs,
//! blobs shared by many images moved once, and bundles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orca_core::bundle::{Namespaced, repositories};
use orca_core::conformance::{Hooks, Intercept};
use orca_core::copy::{Ledger, SharedBlobs};
use orca_core::memory::MemoryBackend;
use orca_core::sync::{Action, ImageReport, Mirror, Pattern, SyncOptions, sync};
use orca_core::{Backend, Body, Descriptor, Manifest, MediaType, Result, Selector, Store};

/// Counts what the source is asked: resolutions and fetches, by digest.
#[derive(Debug, Default)]
struct Counter {
    resolves: AtomicUsize,
    fetches: Mutex<HashMap<String, usize>>,
}

#[derive(Debug, Clone, Default)]
struct Counting(Arc<Counter>);

#[async_trait]
impl Hooks for Counting {
    async fn fetch(&self, inner: &dyn Backend, descriptor: &Descriptor) -> Result<Body> {
        *self
            .0
            .fetches
            .lock()
            .expect("lock")
            .entry(descriptor.digest.to_string())
            .or_default() += 1;
        // A fetch takes a while, as over a network: copies overlap.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        inner.fetch(descriptor).await
    }

    async fn resolve(&self, inner: &dyn Backend, selector: &Selector) -> Result<Descriptor> {
        self.0.resolves.fetch_add(1, Ordering::SeqCst);
        inner.resolve(selector).await
    }
}

impl Counting {
    fn requests(&self) -> usize {
        self.0.resolves.load(Ordering::SeqCst)
            + self.0.fetches.lock().expect("lock").values().sum::<usize>()
    }

    fn fetched(&self, descriptor: &Descriptor) -> usize {
        self.0
            .fetches
            .lock()
            .expect("lock")
            .get(&descriptor.digest.to_string())
            .copied()
            .unwrap_or(0)
    }
}

/// Pushes an image of `base` and a layer of its own, tagged `tag`.
async fn image(store: &Store, base: &Descriptor, tag: &str) -> Descriptor {
    let own = store
        .push_bytes(
            MediaType::OCI_LAYER_TAR,
            format!("own layer of {tag}").into_bytes(),
        )
        .await
        .expect("layer");
    let config = store
        .push_bytes(
            MediaType::OCI_CONFIG,
            format!(r#"{{"os":"linux","architecture":"amd64","tag":"{tag}"}}"#).into_bytes(),
        )
        .await
        .expect("config");
    let raw = Manifest::new(config, vec![base.clone(), own])
        .to_raw()
        .expect("raw");
    store
        .push_manifest(&raw, Some(tag))
        .await
        .expect("manifest")
}

async fn base(store: &Store) -> Descriptor {
    store
        .push_bytes(MediaType::OCI_LAYER_TAR, vec![7u8; 64 * 1024])
        .await
        .expect("base")
}

fn actions(reports: &[ImageReport]) -> Vec<(String, Action)> {
    reports
        .iter()
        .map(|r| (r.tag.clone().unwrap_or_default(), r.action.clone()))
        .collect()
}

fn mirror(source: Store, target: Store) -> Mirror {
    Mirror {
        source,
        target,
        source_name: "source/app".into(),
        target_name: "target/app".into(),
        shared: None,
    }
}

#[tokio::test]
async fn a_rerun_asks_one_question_per_image_and_moves_nothing() {
    let memory = MemoryBackend::new();
    let counting = Counting::default();
    let source = Store::new(Intercept::new(memory.clone(), counting.clone()));
    let seed = Store::new(memory);
    let base = base(&seed).await;
    for tag in ["1.0", "1.1", "2.0", "latest"] {
        image(&seed, &base, tag).await;
    }
    let target = Store::new(MemoryBackend::new());
    let mut options = SyncOptions::default();
    options.filter.exclude = vec![Pattern::parse("latest").expect("glob")];

    let first = sync(&[mirror(source.clone(), target.clone())], &options).await;
    assert_eq!(
        actions(&first),
        [
            ("1.0".into(), Action::Copied),
            ("1.1".into(), Action::Copied),
            ("2.0".into(), Action::Copied)
        ]
    );
    assert!(
        first
            .iter()
            .all(|r| r.bytes > 0 && r.source_digest == r.target_digest)
    );
    assert!(
        target
            .resolve(&Selector::Tag("latest".into()))
            .await
            .is_err()
    );

    let before = counting.requests();
    let second = sync(&[mirror(source, target)], &options).await;
    assert!(
        second
            .iter()
            .all(|r| r.action == Action::UpToDate && r.bytes == 0)
    );
    assert_eq!(
        counting.requests() - before,
        3,
        "one resolution per image, no fetch"
    );
}

#[tokio::test]
async fn an_immutable_tag_the_target_has_is_not_asked_about() {
    let memory = MemoryBackend::new();
    let counting = Counting::default();
    let source = Store::new(Intercept::new(memory.clone(), counting.clone()));
    let seed = Store::new(memory);
    let base = base(&seed).await;
    let mut first = HashMap::new();
    for tag in ["v1", "v2", "latest"] {
        first.insert(tag, image(&seed, &base, tag).await);
    }
    let target = Store::new(MemoryBackend::new());
    let mut options = SyncOptions {
        immutable: vec![Pattern::parse("v*").expect("glob")],
        ..SyncOptions::default()
    };
    options.filter.exclude = vec![Pattern::parse("rebuilt").expect("glob")];
    let copied = sync(&[mirror(source.clone(), target.clone())], &options).await;
    assert!(
        copied.iter().all(|r| r.action == Action::Copied),
        "{copied:?}"
    );

    // The source moves `v1` (against the promise) and `latest`, and adds
    // `v3`: only what the target lacks, and what may move, is asked about.
    let rebuilt = image(&seed, &base, "rebuilt").await;
    seed.tag(&rebuilt, "v1").await.expect("tag");
    seed.tag(&rebuilt, "latest").await.expect("tag");
    image(&seed, &base, "v3").await;
    let before = counting.0.resolves.load(Ordering::SeqCst);
    let second = sync(&[mirror(source, target.clone())], &options).await;
    assert_eq!(
        actions(&second),
        [
            ("latest".into(), Action::Copied),
            ("v1".into(), Action::UpToDate),
            ("v2".into(), Action::UpToDate),
            ("v3".into(), Action::Copied),
        ]
    );
    assert!(
        second
            .iter()
            .filter(|r| r.action == Action::UpToDate)
            .all(|r| r.source_digest.is_none() && r.target_digest.is_none()),
        "nothing was asked, so no digest is reported: {second:?}"
    );
    assert_eq!(
        counting.0.resolves.load(Ordering::SeqCst) - before,
        2,
        "`latest` and `v3` only"
    );
    let kept = target
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect("v1");
    assert_eq!(kept.digest, first["v1"].digest);
}

/// Attaches a signature to `subject`; its manifest.
async fn sign(store: &Store, subject: &Descriptor, label: &str) -> orca_core::RawManifest {
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("empty");
    let mut signature = Manifest::new(empty.clone(), vec![empty]);
    signature.artifact_type = Some(MediaType::new("application/vnd.example.signature"));
    signature.subject = Some(subject.clone());
    signature.annotations.insert("label".into(), label.into());
    let raw = signature.to_raw().expect("raw");
    store.push_manifest(&raw, None).await.expect("sign");
    raw
}

/// A memory store that keeps referrers in tag-schema indexes, as a
/// registry without the Referrers API does.
fn tag_schema() -> MemoryBackend {
    let mut capabilities = orca_core::Capabilities::ALL;
    capabilities.referrers_api = false;
    MemoryBackend::new().with_capabilities(capabilities)
}

#[tokio::test]
async fn catching_up_on_referrers_skips_stale_listings_and_relists_unlisted_ones() {
    let source_backend = tag_schema();
    let source = Store::new(source_backend.clone());
    let base = base(&source).await;
    let subject = image(&source, &base, "1.0").await;
    let target_backend = tag_schema();
    let target = Store::new(target_backend.clone());
    let mut options = SyncOptions::default();
    options.copy.referrers = true;
    sync(&[mirror(source.clone(), target.clone())], &options).await;

    // Listed at the source, but its manifest is gone: the image stays up
    // to date rather than failing on it.
    let stale = sign(&source, &subject, "stale").await;
    source_backend
        .delete(&stale.descriptor())
        .await
        .expect("delete behind the listing");
    let listed = source.referrers(&subject, None).await.expect("referrers");
    assert_eq!(listed.manifests.len(), 1, "still listed: {listed:?}");
    let skipped = sync(&[mirror(source.clone(), target.clone())], &options).await;
    assert_eq!(
        actions(&skipped),
        [("1.0".into(), Action::UpToDate)],
        "{skipped:?}"
    );

    // Held by the target but not listed there (an earlier push stopped
    // before the index was written): pushed again once, then listed.
    let unlisted = sign(&source, &subject, "unlisted").await;
    target_backend
        .push(
            &unlisted.descriptor(),
            Body::from_bytes(unlisted.bytes().clone()),
            &orca_core::PushOptions::default(),
        )
        .await
        .expect("push behind the index");
    let relisted = sync(&[mirror(source.clone(), target.clone())], &options).await;
    assert_eq!(
        actions(&relisted),
        [("1.0".into(), Action::Copied)],
        "{relisted:?}"
    );
    let listed = target.referrers(&subject, None).await.expect("referrers");
    assert!(
        listed
            .manifests
            .iter()
            .any(|d| d.digest == unlisted.descriptor().digest),
        "{listed:?}"
    );
    let empty = Descriptor::of(MediaType::OCI_EMPTY, b"{}");
    assert!(
        target.exists(&empty).await.expect("exists"),
        "its blob came too"
    );
    let settled = sync(&[mirror(source, target)], &options).await;
    assert_eq!(
        actions(&settled),
        [("1.0".into(), Action::UpToDate)],
        "{settled:?}"
    );
}

#[tokio::test]
async fn referrers_attached_to_an_unchanged_image_come_on_the_next_run() {
    let source = Store::new(MemoryBackend::new());
    let base = base(&source).await;
    let subject = image(&source, &base, "1.0").await;
    let target = Store::new(MemoryBackend::new());
    let mut options = SyncOptions::default();
    options.copy.referrers = true;
    let first = sync(&[mirror(source.clone(), target.clone())], &options).await;
    assert_eq!(actions(&first), [("1.0".into(), Action::Copied)]);

    // Signed after it was mirrored: the tag did not move.
    sign(&source, &subject, "later").await;

    options.dry_run = true;
    let dry = sync(&[mirror(source.clone(), target.clone())], &options).await;
    assert_eq!(actions(&dry), [("1.0".into(), Action::WouldCopy)]);
    let listed = target.referrers(&subject, None).await.expect("referrers");
    assert!(listed.manifests.is_empty(), "a dry run copies nothing");

    options.dry_run = false;
    let second = sync(&[mirror(source.clone(), target.clone())], &options).await;
    assert_eq!(actions(&second), [("1.0".into(), Action::Copied)]);
    assert_eq!(second[0].target_digest.as_ref(), Some(&subject.digest));
    assert!(second[0].bytes > 0);
    let listed = target.referrers(&subject, None).await.expect("referrers");
    assert_eq!(listed.manifests.len(), 1, "{listed:?}");

    let third = sync(&[mirror(source, target)], &options).await;
    assert_eq!(actions(&third), [("1.0".into(), Action::UpToDate)]);
    assert_eq!(third[0].bytes, 0);
}

#[tokio::test]
async fn prune_removes_what_the_source_dropped_and_a_dry_run_changes_nothing() {
    let source = Store::new(MemoryBackend::new());
    let base = base(&source).await;
    for tag in ["a", "b", "c"] {
        image(&source, &base, tag).await;
    }
    let target = Store::new(MemoryBackend::new());
    let mut options = SyncOptions::default();
    sync(&[mirror(source.clone(), target.clone())], &options).await;
    source.untag("b").await.expect("untag");
    // A tag outside the filter is no business of this mirror.
    let other = target.resolve(&Selector::Tag("a".into())).await.expect("a");
    target.tag(&other, "keep-me").await.expect("tag");
    options.prune = true;
    options.filter.exclude = vec![Pattern::parse("keep-*").expect("glob")];

    options.dry_run = true;
    let dry = sync(&[mirror(source.clone(), target.clone())], &options).await;
    assert!(actions(&dry).contains(&("b".into(), Action::WouldPrune)));
    assert_eq!(
        target.tags_all().await.expect("tags"),
        ["a", "b", "c", "keep-me"]
    );

    options.dry_run = false;
    let done = sync(&[mirror(source, target.clone())], &options).await;
    assert!(actions(&done).contains(&("b".into(), Action::Pruned)));
    assert_eq!(
        target.tags_all().await.expect("tags"),
        ["a", "c", "keep-me"]
    );
}

#[tokio::test]
async fn a_base_layer_shared_by_ten_images_moves_once() {
    let memory = MemoryBackend::new();
    let counting = Counting::default();
    let seed = Store::new(memory.clone());
    let base = base(&seed).await;
    let mut mirrors = Vec::new();
    let ledger = Ledger::new(4);
    let target = MemoryBackend::new();
    for n in 0..10 {
        // Ten repositories of one registry, each with its own image.
        let tag = format!("img{n}");
        image(&seed, &base, &tag).await;
        mirrors.push(Mirror {
            source: Store::new(Intercept::new(memory.clone(), counting.clone())),
            target: Store::new(target.clone()),
            source_name: format!("source/{tag}"),
            target_name: format!("target/{tag}"),
            shared: Some(SharedBlobs {
                ledger: ledger.clone(),
                repository: tag,
            }),
        });
    }
    let options = SyncOptions {
        images: 10,
        ..SyncOptions::default()
    };
    let reports = sync(&mirrors, &options).await;
    assert!(
        reports.iter().all(|r| r.action == Action::Copied),
        "{reports:?}"
    );
    assert_eq!(counting.fetched(&base), 1, "the base layer moved once");
}

#[tokio::test]
async fn a_bundle_holds_repositories_as_name_prefixes() {
    let bundle: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let alpine = Store::new(Namespaced::new(bundle.clone(), "library/alpine").expect("view"));
    let busybox = Store::new(Namespaced::new(bundle.clone(), "library/busybox").expect("view"));
    let base = base(&alpine).await;
    image(&alpine, &base, "3.19").await;
    image(&alpine, &base, "3.20").await;
    image(&busybox, &base, "1.36").await;
    assert_eq!(alpine.tags_all().await.expect("tags"), ["3.19", "3.20"]);
    assert_eq!(busybox.tags_all().await.expect("tags"), ["1.36"]);
    assert_eq!(
        bundle
            .tags(&orca_core::ListQuery::all())
            .await
            .expect("all")
            .entries,
        [
            "library/alpine:3.19",
            "library/alpine:3.20",
            "library/busybox:1.36"
        ]
    );
    assert_eq!(
        repositories(bundle.as_ref()).await.expect("repositories"),
        ["library/alpine", "library/busybox"]
    );
    alpine.untag("3.19").await.expect("untag");
    assert_eq!(alpine.tags_all().await.expect("tags"), ["3.20"]);
    let err = Namespaced::new(bundle, "Not/Valid").expect_err("uppercase");
    assert!(err.to_string().contains("Not/Valid"), "{err}");
}

#[tokio::test]
async fn newest_by_creation_reads_each_image_configuration() {
    let source = Store::new(MemoryBackend::new());
    let layer = base(&source).await;
    for (tag, created) in [
        ("old", "2024-01-01T00:00:00Z"),
        ("new", "2025-06-01T12:00:00.5+02:00"),
        ("mid", "2024-12-31T23:59:59Z"),
    ] {
        let config = source
            .push_bytes(
                MediaType::OCI_CONFIG,
                format!(r#"{{"os":"linux","architecture":"amd64","created":"{created}"}}"#)
                    .into_bytes(),
            )
            .await
            .expect("config");
        let raw = Manifest::new(config, vec![layer.clone()])
            .to_raw()
            .expect("raw");
        source
            .push_manifest(&raw, Some(tag))
            .await
            .expect("manifest");
    }
    let target = Store::new(MemoryBackend::new());
    let mut options = SyncOptions::default();
    options.filter.newest = Some(2);
    options.filter.newest_by = orca_core::sync::NewestBy::Created;
    let reports = sync(&[mirror(source, target)], &options).await;
    assert_eq!(
        actions(&reports),
        [
            ("mid".into(), Action::Copied),
            ("new".into(), Action::Copied)
        ]
    );
}

/// Core review finding C: a sha512-addressed image's referrers live at the
/// target under `sha512-<64 hex>`, which the spec cuts to 64 digits. With
/// prune, a re-run must neither prune that index as a stale image tag nor
/// lose the referrer from the listing.
#[tokio::test]
async fn finding_c_a_sha512_subjects_referrers_index_is_never_pruned() {
    let source = Store::new(MemoryBackend::new());
    let base = base(&source).await;
    let config = source
        .push_bytes(
            MediaType::OCI_CONFIG,
            &br#"{"os":"linux","architecture":"amd64"}"#[..],
        )
        .await
        .expect("config");
    let raw = Manifest::new(config, vec![base]).to_raw().expect("raw");
    let subject = Descriptor::new(
        MediaType::OCI_MANIFEST,
        orca_core::Digest::compute(orca_core::Algorithm::Sha512, raw.bytes()),
        raw.bytes().len() as u64,
    );
    source
        .push_opts(
            &subject,
            Body::from_bytes(raw.bytes().clone()),
            orca_core::PushOptions::tagged("1.0"),
        )
        .await
        .expect("push a sha512 manifest");
    let signature = sign(&source, &subject, "sha512").await;
    let target = Store::new(tag_schema());
    let mut options = SyncOptions::default();
    options.copy.referrers = true;
    options.prune = true;
    for run in 0..2 {
        let reports = sync(&[mirror(source.clone(), target.clone())], &options).await;
        assert!(
            reports.iter().all(|r| r.action != Action::Pruned),
            "run {run}: {reports:?}"
        );
        let listed = target.referrers(&subject, None).await.expect("referrers");
        assert!(
            listed
                .manifests
                .iter()
                .any(|d| d.digest == signature.descriptor().digest),
            "run {run}: the signature is not listed: {listed:?}"
        );
    }
}

/// Counts resolutions of tags in flight at once, each taking a while.
#[derive(Debug, Default, Clone)]
struct InFlight(Arc<(AtomicUsize, AtomicUsize)>);

#[async_trait]
impl Hooks for InFlight {
    async fn resolve(&self, inner: &dyn Backend, selector: &Selector) -> Result<Descriptor> {
        let now = self.0.0.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.1.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.0.0.fetch_sub(1, Ordering::SeqCst);
        inner.resolve(selector).await
    }
}

/// Core review finding 14: stale tags are pruned several at once, in the
/// report in the order of the list.
#[tokio::test]
async fn finding_14_prune_works_on_several_tags_at_once() {
    let source = Store::new(MemoryBackend::new());
    let base = base(&source).await;
    let kept = image(&source, &base, "kept").await;
    let inner = MemoryBackend::new();
    let plain = Store::new(inner.clone());
    let mut options = SyncOptions::default();
    sync(&[mirror(source.clone(), plain.clone())], &options).await;
    let stale: Vec<String> = (0..8).map(|n| format!("old-{n}")).collect();
    for tag in &stale {
        plain.tag(&kept, tag).await.expect("tag");
    }
    let counter = InFlight::default();
    let target = Store::new(Intercept::new(inner, counter.clone()));
    options.prune = true;
    let reports = sync(&[mirror(source, target.clone())], &options).await;
    let pruned: Vec<String> = reports
        .iter()
        .filter(|r| r.action == Action::Pruned)
        .filter_map(|r| r.tag.clone())
        .collect();
    assert_eq!(pruned, stale);
    assert!(counter.0.1.load(Ordering::SeqCst) > 1, "one tag at a time");
    assert_eq!(target.tags_all().await.expect("tags"), ["kept"]);
}
