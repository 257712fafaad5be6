//! The layout checks of a collection beside live writers (core review
//! finding A, backends M4, core 15) and of what a layout says when asked
//! by digest for what is no manifest (core 9).

use super::*;

/// Core finding A / backends M4: the layers and config a push has written,
/// before its manifest is tagged, are younger than the grace period and
/// stay; so does what a young manifest names.
pub async fn finding_a_gc_keeps_the_blobs_of_a_running_push<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let layout = Layout::new(subject.storage.clone());
    let store = Store::new(layout.clone());
    let pushing = stage_image(&store, "running").await;
    let untagged = push_image(&store, "untagged", None).await;
    let report = ok(layout.gc(&GcOptions::new()).await, "collect");
    assert!(report.blobs.is_empty(), "young blobs collected: {report:?}");
    assert_eq!(
        report.young.len(),
        2,
        "the running push's config and layer: {report:?}"
    );
    ok(
        store.push_manifest(&pushing, Some("late")).await,
        "tag the pushed image",
    );
    assert_intact(&store).await;
    // The untagged image's manifest is young: it keeps its layers too.
    for child in children(&store, &untagged.descriptor()).await {
        let probe = Descriptor::new(MediaType::OCTET_STREAM, child, 0);
        assert!(
            ok(store.exists(&probe).await, "exists"),
            "a young manifest's blob went"
        );
    }
    drop(subject.guard);
}

/// Core finding A: a second store pushes and tags an image whose layers a
/// collection is removing at that moment (they were unreachable and old
/// when it marked). The tag is refused; no tag names a removed blob.
pub async fn finding_a_gc_refuses_a_tag_naming_what_it_removes<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let seed = Store::new(Layout::new(subject.storage.clone()));
    let other = subject.other_writer();
    let raw = stage_image(&seed, "raced").await;
    let document = ok(raw.parse(), "parse");
    let layer = document.children()[1].clone();
    let outcome: Arc<Mutex<Option<Result<Descriptor>>>> = Arc::default();
    let seen = outcome.clone();
    let hooked = Hooked::new(
        subject.storage.clone(),
        Point::BeforeDelete(blob_path(&layer.digest)),
        Box::new(move || {
            Box::pin(async move {
                // The copy engine finds the layers present and skips them.
                let pushed = other.push_manifest(&raw, Some("late")).await;
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(pushed);
            })
        }),
    );
    let layout = Layout::new(hooked.clone());
    ok(layout.gc(&now()).await, "collect");
    assert!(hooked.fired(), "the collection never deleted the layer");
    let pushed = outcome.lock().unwrap_or_else(|e| e.into_inner()).take();
    let err = expect_err(
        pushed.expect("the push ran"),
        "tag an image being collected",
    );
    assert!(err.to_string().contains("garbage collection"), "{err}");
    assert_intact(&seed).await;
    let tags = ok(seed.tags_all().await, "tags");
    assert!(tags.is_empty(), "a tag was left: {tags:?}");
    // Pushed again from the start, the image is whole.
    push_image(&seed, "raced", Some("late")).await;
    assert_intact(&seed).await;
    drop(subject.guard);
}

/// Core finding A: a push sees its layers present and skips them; a whole
/// collection (with no grace) removes them before the push tags its
/// manifest. The tag fails instead of naming missing layers.
pub async fn finding_a_gc_fails_a_tag_whose_skipped_blob_it_removed<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let layout = Layout::new(subject.storage.clone());
    let seed = Store::new(layout.clone());
    let raw = stage_image(&seed, "skipped").await;
    let other = subject.other_writer();
    for child in ok(raw.parse(), "parse").children() {
        assert!(
            ok(other.exists(child).await, "exists"),
            "skipped as present"
        );
    }
    let report = ok(layout.gc(&now()).await, "collect");
    assert_eq!(report.blobs.len(), 2, "{report:?}");
    let err = expect_err(
        other.push_manifest(&raw, Some("late")).await,
        "tag an image whose layers were collected",
    );
    assert!(err.to_string().contains("garbage collection"), "{err}");
    let tags = ok(seed.tags_all().await, "tags");
    assert!(tags.is_empty(), "a broken image was tagged: {tags:?}");
    drop(subject.guard);
}

/// Core finding 15: a collection cancelled while its fence is up (the
/// process killed, the task dropped) leaves nothing that blocks a push.
pub async fn finding_15_a_cancelled_gc_leaves_no_fence<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let seed = Store::new(Layout::new(subject.storage.clone()));
    let doomed = push_image(&seed, "doomed", None).await;
    let descriptor = doomed.descriptor();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop = Mutex::new(Some(stop));
    let hooked = Hooked::new(
        subject.storage.clone(),
        Point::BeforeDelete(blob_path(&descriptor.digest)),
        Box::new(move || {
            Box::pin(async move {
                if let Some(stop) = stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = stop.send(());
                }
                futures::future::pending::<()>().await;
            })
        }),
    );
    let layout = Layout::new(hooked.clone());
    let collecting = tokio::spawn(async move { layout.gc(&now()).await });
    ok(
        stopped.await.map_err(|_| Error::Conflict {
            what: "the collection ended before its fence".into(),
            place: String::new(),
        }),
        "the collection reached its deletes",
    );
    collecting.abort();
    let _ = collecting.await;
    let (bytes, _) = ok(layout_index(&subject.storage).await, "read index").expect("index.json");
    assert!(
        String::from_utf8_lossy(&bytes).contains("dev.orca.gc.fence"),
        "the collection died with no fence up"
    );
    ok(
        seed.push_manifest(&doomed, Some("after")).await,
        "push after a killed collection",
    );
    assert_intact(&seed).await;
    // The next collection takes the dead fence down.
    ok(
        Layout::new(subject.storage.clone()).gc(&now()).await,
        "collect again",
    );
    let (bytes, _) = ok(layout_index(&subject.storage).await, "read index").expect("index.json");
    assert!(
        !String::from_utf8_lossy(&bytes).contains("dev.orca.gc.fence"),
        "a dead fence stayed"
    );
    drop(subject.guard);
}

/// Core finding 15: a fence left by a process of this machine that has
/// ended blocks nothing; one of another machine holds until its lease
/// runs out.
pub async fn finding_15_a_dead_process_fence_blocks_nothing<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let store = Store::new(Layout::new(subject.storage.clone()));
    let image = push_image(&store, "fenced", Some("before")).await;
    let descriptor = image.descriptor();
    for (foreign, blocks) in [
        (
            crate::layout::Foreign::OtherMachine { expired: false },
            true,
        ),
        // A collection of another copy of orca in this very process (a
        // plugin's, or its host's) is judged by its lease, not taken for
        // a cancelled one of this copy.
        (crate::layout::Foreign::OtherCopy, true),
        (crate::layout::Foreign::DeadProcess, false),
        (
            crate::layout::Foreign::OtherMachine { expired: true },
            false,
        ),
    ] {
        let (bytes, version) =
            ok(layout_index(&subject.storage).await, "read index").expect("index.json");
        let mut index = ok(LayoutIndex::parse(&bytes, INDEX_FILE), "parse index");
        index.fence_as("1.1.1", &[&descriptor.digest], foreign);
        ok(
            subject
                .storage
                .write(
                    INDEX_FILE,
                    ok(index.to_bytes(), "bytes"),
                    Condition::Matches(version),
                )
                .await,
            "forge a fence",
        );
        let tagged = store.tag(&descriptor, "after").await;
        if blocks {
            let err = expect_err(tagged, "tag under a live foreign fence");
            assert!(err.to_string().contains("garbage collection"), "{err}");
        } else {
            ok(tagged, &format!("tag under a dead fence ({foreign:?})"));
        }
    }
    drop(subject.guard);
}

/// Reads `index.json` straight from the storage.
async fn layout_index<S: ObjectStorage>(storage: &S) -> Result<Option<(Bytes, Version)>> {
    storage.read(INDEX_FILE, 64 << 20).await
}

/// Core finding 9: resolving by digest content that is there but is no
/// manifest orca reads says so (schema 1 refused, not JSON), instead of
/// "not found".
pub async fn finding_9_a_digest_that_is_no_manifest_says_what_it_is<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let store = Store::new(Layout::new(subject.storage.clone()));
    let schema1 = br#"{"schemaVersion":1,"name":"library/old","tag":"latest","architecture":"amd64","fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[{"v1Compatibility":"{}"}]}"#;
    let old = ok(
        store
            .push_bytes(MediaType::OCTET_STREAM, &schema1[..])
            .await,
        "push schema 1 bytes",
    );
    let err = expect_err(
        store.resolve(&Selector::Digest(old.digest.clone())).await,
        "resolve schema 1",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::Schema1Refused { .. }),
        "resolve schema 1",
    );
    let text = ok(
        store
            .push_bytes(MediaType::OCTET_STREAM, &b"not a manifest"[..])
            .await,
        "push text",
    );
    let err = expect_err(
        store.resolve(&Selector::Digest(text.digest.clone())).await,
        "resolve text",
    );
    assert!(!err.is_not_found(), "{err}");
    drop(subject.guard);
}
