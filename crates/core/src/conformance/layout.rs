//! Checks of the layout engine itself, run by every storage it runs over
//! (a directory, a bucket) through
//! [`layout_conformance_tests!`](crate::layout_conformance_tests):
//! garbage collection and the races between tags, deletes and collections.
//! Races are made deterministic by [`Hooked`] storage, which runs another
//! writer's step at an exact point of the operation under test.

use std::any::Any;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;

use super::support::*;

mod batched;
mod levels;
mod staged;
mod writers;

use crate::layout::{
    Condition, GcOptions, INDEX_FILE, Layout, LayoutIndex, ObjectStorage, Version, blob_path,
};
pub use batched::*;
pub use levels::*;
pub use staged::*;
pub use writers::*;

/// What a layout check runs against: a fresh, empty layout, and whatever
/// keeps its storage alive.
pub struct LayoutSubject<S> {
    /// The storage of the layout under test.
    pub storage: S,
    /// Keeps servers and temporary directories alive for the check.
    pub guard: Box<dyn Any + Send + Sync>,
    /// The other writer of the checks beside live writers: by default a
    /// second engine over `storage`; [`LayoutSubject::with_writer`] gives
    /// one that other code runs (a plugin's backend, with its own copy of
    /// orca, over the same layout).
    writer: Option<Store>,
}

impl<S: ObjectStorage + Clone> LayoutSubject<S> {
    /// A layout over `storage`; `guard` keeps what it needs alive.
    pub fn new(storage: S, guard: impl Any + Send + Sync) -> Self {
        LayoutSubject {
            storage,
            guard: Box::new(guard),
            writer: None,
        }
    }

    /// Races `writer` (a store over the same layout) against this
    /// engine's collections.
    pub fn with_writer(mut self, writer: Store) -> Self {
        self.writer = Some(writer);
        self
    }

    /// The other writer: the one given, or a second engine.
    fn other_writer(&self) -> Store {
        self.writer
            .clone()
            .unwrap_or_else(|| Store::new(Layout::new(self.storage.clone())))
    }
}

/// Where a [`Hooked`] storage runs its hook.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Point {
    /// Before deleting this key.
    BeforeDelete(String),
    /// Before a conditional write of this key.
    BeforeWrite(String),
    /// After a successful conditional write of this key.
    AfterWrite(String),
}

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// Storage that runs one hook, once, at one point, then behaves like the
/// storage it wraps.
#[derive(Clone)]
pub struct Hooked<S> {
    inner: S,
    hook: Arc<Mutex<Option<(Point, Hook)>>>,
    /// Successful writes of `index.json`.
    index_writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl<S: ObjectStorage> Hooked<S> {
    fn new(inner: S, point: Point, hook: Hook) -> Self {
        Hooked {
            inner,
            hook: Arc::new(Mutex::new(Some((point, hook)))),
            index_writes: Arc::default(),
        }
    }

    /// The storage with no hook, counting the writes of `index.json`.
    fn counting(inner: S) -> Self {
        Hooked {
            inner,
            hook: Arc::default(),
            index_writes: Arc::default(),
        }
    }

    /// How many times `index.json` was written.
    fn index_writes(&self) -> usize {
        self.index_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn fire(&self, at: Point) {
        let hook = {
            let mut slot = self.hook.lock().unwrap_or_else(|e| e.into_inner());
            match slot.take() {
                Some((point, hook)) if point == at => Some(hook),
                other => {
                    *slot = other;
                    None
                }
            }
        };
        if let Some(hook) = hook {
            hook().await;
        }
    }

    fn fired(&self) -> bool {
        self.hook
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

impl<S: ObjectStorage> std::fmt::Debug for Hooked<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S: ObjectStorage> std::fmt::Display for Hooked<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl<S: ObjectStorage> ObjectStorage for Hooked<S> {
    fn resumable(&self) -> bool {
        self.inner.resumable()
    }
    async fn read(&self, key: &str, limit: u64) -> Result<Option<(Bytes, Version)>> {
        self.inner.read(key, limit).await
    }
    async fn read_changed(
        &self,
        key: &str,
        limit: u64,
        known: &Version,
    ) -> Result<crate::layout::Changed> {
        self.inner.read_changed(key, limit, known).await
    }
    async fn write(&self, key: &str, bytes: Bytes, condition: Condition) -> Result<()> {
        self.fire(Point::BeforeWrite(key.to_owned())).await;
        self.inner.write(key, bytes, condition).await?;
        if key == INDEX_FILE {
            self.index_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.fire(Point::AfterWrite(key.to_owned())).await;
        Ok(())
    }
    async fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<crate::layout::Listed>> {
        self.inner.list(prefix).await
    }
    async fn list_level(&self, prefix: &str) -> Result<Option<crate::layout::Level>> {
        self.inner.list_level(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.fire(Point::BeforeDelete(key.to_owned())).await;
        self.inner.delete(key).await
    }
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Body>> {
        self.inner.get(key, range).await
    }
    async fn put_blob(&self, descriptor: &Descriptor, body: Body, offset: u64) -> Result<()> {
        self.inner.put_blob(descriptor, body, offset).await
    }
    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        self.inner.partial(descriptor).await
    }
    async fn clean_staging(&self, age: Duration) -> Result<usize> {
        self.inner.clean_staging(age).await
    }
    fn adopts(&self) -> bool {
        self.inner.adopts()
    }
    async fn adopt(&self, from: &str, key: &str, size: u64) -> Result<bool> {
        self.inner.adopt(from, key, size).await
    }
}

/// Expands to one `#[tokio::test]` per layout check, each on a fresh
/// [`LayoutSubject`] made by `$make` (an `async fn() -> LayoutSubject<S>`).
#[macro_export]
macro_rules! layout_conformance_tests {
    ($make:path) => {
        $crate::layout_conformance_tests!(@each $make;
            gc_collects_exactly_the_unreachable,
            gc_fences_what_it_removes,
            gc_marks_again_after_a_tag,
            delete_sweeps_a_racing_tag,
            tag_checks_its_manifest_after_writing,
            finding_a_gc_keeps_the_blobs_of_a_running_push,
            finding_a_gc_refuses_a_tag_naming_what_it_removes,
            finding_a_gc_fails_a_tag_whose_skipped_blob_it_removed,
            finding_15_a_cancelled_gc_leaves_no_fence,
            finding_15_a_dead_process_fence_blocks_nothing,
            finding_9_a_digest_that_is_no_manifest_says_what_it_is,
            staged_objects_append_in_place_and_publish_verified,
            sparse_manifests_are_tagged_whatever_a_collection_removed,
            tags_that_arrive_together_are_written_together,
            a_level_holds_what_is_directly_under_it,
        );
    };
    (@each $make:path; $($check:ident),* $(,)?) => {
        mod layout_conformance {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let subject = $make().await;
                    $crate::conformance::layout::$check(subject).await;
                }
            )*
        }
    };
}

/// A collection with no grace period: everything unreachable is old.
fn now() -> GcOptions {
    GcOptions::new().grace(Duration::ZERO)
}

/// Asserts every tag names a manifest whose whole graph is stored.
async fn assert_intact(store: &Store) {
    for tag in ok(store.tags_all().await, "tags") {
        let root = ok(store.resolve(&Selector::Tag(tag.clone())).await, "resolve");
        for child in children(store, &root).await {
            let probe = Descriptor::new(MediaType::OCTET_STREAM, child.clone(), 0);
            assert!(
                ok(store.exists(&probe).await, "exists"),
                "tag {tag} names {} whose blob {child} is gone",
                root.digest
            );
        }
    }
}

/// Pushes an artifact with `subject` and returns its descriptor.
async fn push_referrer(store: &Store, subject: &Descriptor, note: &str) -> Descriptor {
    let config = ok(
        store.push_bytes(MediaType::OCI_EMPTY, &b"{}"[..]).await,
        "push empty config",
    );
    let raw = artifact(subject, "application/vnd.example.note", note, &config);
    ok(store.push_manifest(&raw, None).await, "push referrer")
}

/// The digests an image manifest names.
async fn children(store: &Store, manifest: &Descriptor) -> Vec<Digest> {
    let bytes = ok(store.fetch_bytes(manifest).await, "fetch manifest");
    let document = ok(
        RawManifest::new(manifest.media_type.clone(), bytes).parse(),
        "parse manifest",
    );
    document
        .children()
        .into_iter()
        .map(|d| d.digest.clone())
        .collect()
}

/// Unreachable blobs go; roots, what they reach and referrers of reachable
/// manifests stay; a referrers index goes with the image it indexes.
pub async fn gc_collects_exactly_the_unreachable<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let layout = Layout::new(subject.storage.clone());
    let store = Store::new(layout.clone());
    let kept = push_image(&store, "kept", Some("kept")).await.descriptor();
    let member = push_image(&store, "member", None).await.descriptor();
    let index = Index {
        manifests: vec![member.clone()],
        ..Index::new()
    };
    let index = ok(index.to_raw(), "serialise index");
    ok(
        store.push_manifest(&index, Some("multi")).await,
        "push index",
    );
    let referrer = push_referrer(&store, &kept, "kept").await;
    let orphan = push_image(&store, "orphan", None).await.descriptor();
    let orphan_referrer = push_referrer(&store, &orphan, "orphan").await;
    let loose = push_blob(&store, b"loose").await;

    let orphan_tag = Selector::Tag(fallback_tag(&orphan.digest));
    let orphan_index = ok(store.resolve(&orphan_tag).await, "orphan's referrers index");
    let mut expected = children(&store, &orphan).await;
    expected.extend([
        orphan.digest.clone(),
        orphan_referrer.digest.clone(),
        orphan_index.digest.clone(),
        loose.digest.clone(),
    ]);
    expected.sort();
    expected.dedup();
    // The orphan's referrer shares the empty config with the kept one.
    let shared = push_blob(&store, b"{}").await;
    expected.retain(|d| d != &shared.digest);

    let report = ok(layout.gc(&now().dry_run(true)).await, "dry run");
    let found: Vec<Digest> = report.blobs.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(found, expected, "unreachable blobs of a dry run");
    assert!(!report.removed, "a dry run says it removed");
    assert!(
        ok(store.exists(&orphan).await, "exists"),
        "a dry run removed content"
    );

    let report = ok(layout.gc(&now()).await, "collect");
    assert!(report.removed);
    assert_eq!(report.blobs.len(), expected.len());
    assert!(
        !ok(store.exists(&orphan).await, "exists"),
        "the orphan survived"
    );
    assert!(
        !ok(store.exists(&loose).await, "exists"),
        "a loose blob survived"
    );
    for survivor in [&kept, &member, &referrer] {
        ok(store.fetch_bytes(survivor).await, "reachable content kept");
        for child in children(&store, survivor).await {
            let probe = Descriptor::new(MediaType::OCTET_STREAM, child, 0);
            assert!(
                ok(store.exists(&probe).await, "exists"),
                "a reachable blob was removed"
            );
        }
    }
    let err = expect_err(store.resolve(&orphan_tag).await, "tag of a collected index");
    assert_kind(&err, Error::is_not_found, "tag of a collected index");
    let listed = ok(
        store.referrers(&kept, None).await,
        "referrers of the kept image",
    );
    assert_eq!(listed.manifests.len(), 1, "the kept image's referrers");
    assert!(
        ok(layout.gc(&now().dry_run(true)).await, "again")
            .blobs
            .is_empty(),
        "a second collection found more"
    );
    let (bytes, _) = ok(
        layout.storage().read(INDEX_FILE, 1 << 20).await,
        "read index",
    )
    .expect("index.json");
    assert!(
        !String::from_utf8_lossy(&bytes).contains("dev.orca.gc.fence"),
        "the collection left its fence in index.json"
    );
    drop(subject.guard);
}

/// While a collection removes a manifest, tagging it or pushing it again
/// is refused, so no tag made meanwhile points at removed content.
pub async fn gc_fences_what_it_removes<S: ObjectStorage + Clone>(subject: LayoutSubject<S>) {
    let other = Store::new(Layout::new(subject.storage.clone()));
    let seed = Store::new(Layout::new(subject.storage.clone()));
    let doomed = push_image(&seed, "doomed", None).await;
    let descriptor = doomed.descriptor();
    let outcome: Arc<Mutex<Vec<Result<()>>>> = Arc::default();
    let seen = outcome.clone();
    let (raw, target) = (doomed.clone(), descriptor.clone());
    let hooked = Hooked::new(
        subject.storage.clone(),
        Point::BeforeDelete(blob_path(&descriptor.digest)),
        Box::new(move || {
            Box::pin(async move {
                let tagged = other.tag(&target, "late").await;
                let pushed = other.push_manifest(&raw, Some("late")).await.map(drop);
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend([tagged, pushed]);
            })
        }),
    );
    let layout = Layout::new(hooked.clone());
    let report = ok(layout.gc(&now()).await, "collect");
    assert!(hooked.fired(), "the collection never deleted the manifest");
    assert!(report.blobs.iter().any(|(d, _)| d == &descriptor.digest));
    for result in outcome.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let err = expect_err(result, "tag a manifest a collection is removing");
        assert_kind(
            &err,
            |e| matches!(e, Error::Conflict { .. }),
            "tag a fenced manifest",
        );
        assert!(err.to_string().contains("garbage collection"), "{err}");
    }
    let err = expect_err(seed.resolve(&Selector::Tag("late".into())).await, "resolve");
    assert_kind(
        &err,
        Error::is_not_found,
        "a tag made during the collection",
    );
    // The fence is down: the image can be pushed and tagged again.
    let again = push_image(&seed, "doomed", Some("late")).await;
    assert_eq!(again.descriptor().digest, descriptor.digest);
    drop(subject.guard);
}

/// A tag made after the collection marked but before it removed anything
/// makes it mark again: the newly tagged image survives.
pub async fn gc_marks_again_after_a_tag<S: ObjectStorage + Clone>(subject: LayoutSubject<S>) {
    let other = Store::new(Layout::new(subject.storage.clone()));
    let saved = push_image(&other, "saved", None).await.descriptor();
    let gone = push_blob(&other, b"gone").await;
    let target = saved.clone();
    let hooked = Hooked::new(
        subject.storage.clone(),
        Point::BeforeWrite(INDEX_FILE.to_owned()),
        Box::new(move || {
            Box::pin(async move {
                ok(other.tag(&target, "saved").await, "tag during the mark");
            })
        }),
    );
    let layout = Layout::new(hooked.clone());
    let store = Store::new(layout.clone());
    let report = ok(layout.gc(&now()).await, "collect");
    assert!(hooked.fired(), "the collection never wrote index.json");
    assert_eq!(
        report.blobs,
        vec![(gone.digest.clone(), gone.size)],
        "only the loose blob goes"
    );
    ok(
        store.fetch_bytes(&saved).await,
        "the image tagged during the mark",
    );
    for child in children(&store, &saved).await {
        let probe = Descriptor::new(MediaType::OCTET_STREAM, child, 0);
        assert!(
            ok(store.exists(&probe).await, "exists"),
            "its content was removed"
        );
    }
    let resolved = ok(
        store.resolve(&Selector::Tag("saved".into())).await,
        "resolve",
    );
    assert_eq!(resolved.digest, saved.digest);
    drop(subject.guard);
}

/// A manifest pushed `sparse` (a pull-through cache's, whose blobs come
/// on demand) is tagged and listed though a collection removed what it
/// names; the same push unmarked is refused; the collection keeps it.
pub async fn sparse_manifests_are_tagged_whatever_a_collection_removed<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let layout = Layout::new(subject.storage.clone());
    let store = Store::new(layout.clone());
    let raw = stage_image(&store, "sparse").await;
    // The config and layer are loose: collected.
    let report = ok(layout.gc(&now()).await, "collect");
    assert_eq!(report.blobs.len(), 2, "the staged blobs go");
    let descriptor = raw.descriptor();
    let body = || crate::Body::from_bytes(raw.bytes().clone());
    let refused = store
        .push_opts(&descriptor, body(), PushOptions::tagged("checked"))
        .await;
    assert!(
        refused.as_ref().is_err_and(Error::is_not_found),
        "a manifest naming collected blobs was tagged: {refused:?}"
    );
    ok(
        store
            .push_opts(&descriptor, body(), PushOptions::tagged("cached").sparse())
            .await,
        "push sparse, tagged",
    );
    ok(
        store
            .push_opts(&descriptor, body(), PushOptions::listed().sparse())
            .await,
        "push sparse, listed",
    );
    let resolved = ok(
        store.resolve(&Selector::Tag("cached".into())).await,
        "resolve",
    );
    assert_eq!(resolved.digest, descriptor.digest);
    ok(layout.gc(&now()).await, "collect again");
    ok(
        store.fetch_bytes(&descriptor).await,
        "the sparse manifest is kept",
    );
    drop(subject.guard);
}

/// A tag written after a delete untagged the manifest but before it
/// removed the blob is swept by the delete: no tag outlives its manifest.
pub async fn delete_sweeps_a_racing_tag<S: ObjectStorage + Clone>(subject: LayoutSubject<S>) {
    let other = Store::new(Layout::new(subject.storage.clone()));
    let manifest = push_image(&other, "raced", Some("first"))
        .await
        .descriptor();
    let target = manifest.clone();
    let outcome: Arc<Mutex<Option<Result<()>>>> = Arc::default();
    let seen = outcome.clone();
    let hooked = Hooked::new(
        subject.storage.clone(),
        Point::BeforeDelete(blob_path(&manifest.digest)),
        Box::new(move || {
            Box::pin(async move {
                let tagged = other.tag(&target, "racer").await;
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(tagged);
            })
        }),
    );
    let store = Store::new(Layout::new(hooked.clone()));
    ok(store.delete(&manifest).await, "delete");
    assert!(hooked.fired(), "the delete never removed the blob");
    let tagged = outcome.lock().unwrap_or_else(|e| e.into_inner()).take();
    ok(
        tagged.expect("the racing tag ran"),
        "the racing tag, while the blob was there",
    );
    let tags = ok(store.tags_all().await, "tags");
    assert!(tags.is_empty(), "tags outlived their manifest: {tags:?}");
    drop(subject.guard);
}

/// A tag whose manifest is removed between its check and its write is
/// taken back, and the tag call reports the manifest missing.
pub async fn tag_checks_its_manifest_after_writing<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let seed = Store::new(Layout::new(subject.storage.clone()));
    let manifest = push_image(&seed, "vanishing", None).await.descriptor();
    let (storage, key) = (subject.storage.clone(), blob_path(&manifest.digest));
    let hooked = Hooked::new(
        subject.storage.clone(),
        Point::BeforeWrite(INDEX_FILE.to_owned()),
        Box::new(move || {
            Box::pin(async move {
                ok(storage.delete(&key).await, "remove the manifest underneath");
            })
        }),
    );
    let store = Store::new(Layout::new(hooked.clone()));
    let err = expect_err(
        store.tag(&manifest, "dangling").await,
        "tag a vanishing manifest",
    );
    assert!(hooked.fired(), "the tag never wrote index.json");
    assert_kind(&err, Error::is_not_found, "tag a vanishing manifest");
    let tags = ok(seed.tags_all().await, "tags");
    assert!(
        tags.is_empty(),
        "a tag points at a removed manifest: {tags:?}"
    );
    drop(subject.guard);
}
