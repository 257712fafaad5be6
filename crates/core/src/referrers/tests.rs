//! Unit tests of the tag schema: fallback tags, merging changes, clean-up
//! that never loses the live index, and batching.

use super::*;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{MediaType, Selector};

#[test]
fn fallback_tags_follow_the_spec() {
    let digest = Digest::sha256(b"subject");
    assert_eq!(fallback_tag(&digest), format!("sha256-{}", digest.hex()));
    let long = Digest::compute(crate::model::digest::Algorithm::Sha512, b"subject");
    let tag = fallback_tag(&long);
    assert_eq!(tag, format!("sha512-{}", &long.hex()[..64]));
    assert!(tag.len() <= 128);
    assert!(is_fallback_tag(&fallback_tag(&digest)));
    assert!(is_fallback_tag(&tag));
    // A git-sha tag on a multi-arch image is not a referrers index.
    assert!(!is_fallback_tag(
        "sha-0123456789abcdef0123456789abcdef01234567"
    ));
    assert!(!is_fallback_tag(&format!("sha256-{}.sig", digest.hex())));
}

/// Tag lookups fail, as during an outage.
#[derive(Debug)]
struct Blind;

#[async_trait::async_trait]
impl crate::conformance::Hooks for Blind {
    async fn resolve(&self, _: &dyn Backend, _: &Selector) -> Result<Descriptor> {
        Err(Error::Backend {
            backend: "blind".into(),
            operation: "resolve",
            source: "503 service unavailable".into(),
        })
    }
}

#[tokio::test]
async fn clean_up_keeps_every_index_when_the_tag_cannot_be_read() {
    let memory = crate::memory::MemoryBackend::new();
    let subject = Digest::sha256(b"subject");
    let tag = fallback_tag(&subject);
    let old = push_index(&memory, listing(&[entry(1)]))
        .await
        .expect("old");
    let live = push_index(&memory, listing(&[entry(1), entry(2)]))
        .await
        .expect("live");
    memory.tag(&live, &tag).await.expect("tag");
    // A failed lookup deletes nothing, not even the old index.
    let blind = crate::conformance::Intercept::new(memory.clone(), Blind);
    collect(&blind, &tag, vec![old.clone(), live.clone()]).await;
    assert!(
        memory.exists(&live).await.expect("exists"),
        "the live index was deleted"
    );
    assert!(memory.exists(&old).await.expect("exists"));
    // A lookup that works deletes only what the tag no longer names.
    collect(&memory, &tag, vec![old.clone(), live.clone()]).await;
    assert!(memory.exists(&live).await.expect("exists"));
    assert!(!memory.exists(&old).await.expect("exists"));
}

fn settings(gc: bool) -> Settings {
    Settings {
        gc,
        max: crate::capabilities::DEFAULT_MAX_MANIFEST_SIZE,
    }
}

fn tag_schema_memory() -> crate::memory::MemoryBackend {
    let mut capabilities = crate::Capabilities::ALL;
    capabilities.referrers_api = false;
    crate::memory::MemoryBackend::new().with_capabilities(capabilities)
}

#[tokio::test]
async fn a_batch_keeps_superseded_indexes_when_any_caller_asks() {
    let memory = tag_schema_memory();
    let batcher = Batcher::default();
    let subject = Digest::sha256(b"subject");
    let tag = Selector::Tag(fallback_tag(&subject));
    batcher
        .submit(&memory, &subject, Change::add(entry(1)), settings(true))
        .await
        .expect("first");
    let first = memory.resolve(&tag).await.expect("first index");
    // Two callers queue behind the turn; one of them runs both.
    let slot = batcher.slot(&subject);
    let turn = slot.turn.lock().await;
    let collecting = batcher.submit(&memory, &subject, Change::add(entry(2)), settings(true));
    let keeping = batcher.submit(&memory, &subject, Change::add(entry(3)), settings(false));
    let release = async {
        tokio::task::yield_now().await;
        drop(turn);
    };
    let (a, b, ()) = futures::join!(collecting, keeping, release);
    a.expect("collecting");
    b.expect("keeping");
    drop(slot);
    let listed = list(&memory, &subject, settings(true).max)
        .await
        .expect("list");
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        memory.exists(&first).await.expect("exists"),
        "a caller asked to keep superseded indexes, and one was deleted"
    );
}

#[tokio::test]
async fn a_cancelled_caller_leaves_nothing_behind() {
    let memory = tag_schema_memory();
    let batcher = Batcher::default();
    let subject = Digest::sha256(b"subject");
    let slot = batcher.slot(&subject);
    let turn = slot.turn.lock().await;
    {
        let cancelled = batcher.submit(&memory, &subject, Change::add(entry(9)), settings(true));
        futures::pin_mut!(cancelled);
        assert!(futures::poll!(cancelled.as_mut()).is_pending(), "queued");
    }
    drop(turn);
    assert!(
        slot.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty(),
        "the cancelled change stayed queued"
    );
    drop(slot);
    batcher
        .submit(&memory, &subject, Change::add(entry(4)), settings(true))
        .await
        .expect("another change");
    let listed = list(&memory, &subject, settings(true).max)
        .await
        .expect("list");
    assert_eq!(listed, vec![entry(4)], "the cancelled change was applied");
    assert!(
        batcher
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty(),
        "a slot stayed behind"
    );
}

fn entry(n: u8) -> Descriptor {
    Descriptor::of(MediaType::OCI_MANIFEST, &[n])
}

fn listing(entries: &[Descriptor]) -> Listing {
    Listing {
        entries: entries.to_vec(),
        stamps: Stamps::new(),
    }
}

#[test]
fn changes_merge_with_the_later_winning() {
    let mut change = Change::add(entry(1));
    change.then(&Change::add(entry(2)));
    change.then(&Change::remove(entry(1).digest));
    let out = change.apply(&listing(&[entry(3), entry(1)]));
    assert_eq!(out.entries, vec![entry(3), entry(2)]);
    assert!(change.applied(&out));
    assert!(!change.applied(&listing(&[entry(1), entry(2)])));
    change.then(&Change::add(entry(1)));
    assert_eq!(
        change.apply(&listing(&[entry(1)])).entries,
        vec![entry(2), entry(1)]
    );
}

#[test]
fn an_attach_overtaken_by_a_later_removal_is_done_and_a_removal_always_lands() {
    // A asks to attach, then B asks to remove; B's removal lands first.
    let attach = Change::add(entry(1)).stamped(&listing(&[]));
    let remove = Change::remove(entry(1).digest).stamped(&listing(&[entry(1)]));
    let after_b = remove.apply(&listing(&[entry(1)]));
    assert!(after_b.entries.is_empty());
    // A, verifying, finds its entry gone by a later change: done, and
    // applying it changes nothing.
    assert!(attach.applied(&after_b));
    assert!(attach.apply(&after_b).entries.is_empty());
    // A removal is never overtaken: its caller deletes the manifest next,
    // so an attach that landed after it asked still goes.
    let early_remove = Change::remove(entry(2).digest).stamped(&listing(&[]));
    let late_attach = Change::add(entry(2)).stamped(&listing(&[]));
    let attached = late_attach.apply(&listing(&[]));
    assert!(!early_remove.applied(&attached));
    assert!(early_remove.apply(&attached).entries.is_empty());
    // Stamps travel through the index's annotations.
    let stamps = stamps(
        &attached
            .stamps
            .iter()
            .map(|(d, at)| (format!("{CHANGED}{d}"), at.to_string()))
            .collect(),
    );
    assert_eq!(stamps, attached.stamps);
}

/// Core review finding 1: a stamp from a machine whose clock runs an hour
/// fast neither keeps a deleted referrer listed nor hides a later attach:
/// a change stamped after reading it is later, whatever the clocks say.
#[test]
fn finding_1_a_fast_clock_elsewhere_overtakes_nothing() {
    let ahead = now() + 60 * 60 * 1_000_000_000;
    let mut fast = listing(&[entry(1)]);
    fast.stamps.insert(entry(1).digest.to_string(), ahead);
    // Deleting: the removal lands though the attach's stamp is ahead.
    let remove = Change::remove(entry(1).digest).stamped(&fast);
    let removed = remove.apply(&fast);
    assert!(removed.entries.is_empty());
    assert!(remove.applied(&removed));
    // Attaching again after that removal (stamped ahead too): listed.
    let attach = Change::add(entry(1)).stamped(&removed);
    assert!(!attach.applied(&removed));
    let attached = attach.apply(&removed);
    assert_eq!(attached.entries, vec![entry(1)]);
    assert!(attach.applied(&attached));
}

/// Core review finding 3: stamps older than ten minutes (by the newest
/// stamp or this clock, whichever is later) leave the index.
#[test]
fn finding_3_old_stamps_leave_the_index() {
    let mut old = listing(&[entry(1)]);
    old.stamps
        .insert(entry(1).digest.to_string(), now() - 11 * 60 * 1_000_000_000);
    let attach = Change::add(entry(2)).stamped(&old);
    let out = attach.apply(&old);
    assert_eq!(out.stamps.len(), 1, "{:?}", out.stamps);
    assert!(out.stamps.contains_key(&entry(2).digest.to_string()));
}

/// Counts the moves of fallback tags, each taking a moment as a write
/// does.
#[derive(Debug, Default)]
struct CountingSwaps(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl crate::conformance::Hooks for std::sync::Arc<CountingSwaps> {
    async fn swap_tag(
        &self,
        inner: &dyn Backend,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        inner.swap_tag(tag, expected, new).await
    }
}

/// Sixteen writers, each attaching again as soon as its last attach
/// returned: every update takes what waits. (A caller whose change
/// another's batch had applied used to wait for the turn anyway, and the
/// turn then applied one newcomer at a time: one update per attach.)
#[tokio::test]
async fn changes_that_arrive_while_one_runs_go_in_the_next_update() {
    let counting = std::sync::Arc::new(CountingSwaps::default());
    let backend = crate::conformance::Intercept::new(tag_schema_memory(), counting.clone());
    let batcher = Batcher::default();
    let subject = Digest::sha256(b"subject");
    let (writers, each) = (16u8, 20u8);
    let write = |w: u8| {
        let (backend, batcher, subject) = (&backend, &batcher, &subject);
        async move {
            for n in 0..each {
                let mut referrer = entry(w);
                referrer.digest = Digest::sha256(&[w, n]);
                batcher
                    .submit(backend, subject, Change::add(referrer), settings(true))
                    .await
                    .expect("attach");
            }
        }
    };
    futures::future::join_all((0..writers).map(write)).await;
    let listed = list(&backend, &subject, settings(true).max)
        .await
        .expect("list");
    let attaches = usize::from(writers) * usize::from(each);
    assert_eq!(listed.len(), attaches);
    let swaps = counting.0.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        swaps * 4 <= attaches,
        "{swaps} updates for {attaches} attaches from {writers} writers at once"
    );
}
