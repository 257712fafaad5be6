//! The layout check of the group commit (issue 25): tags that arrive
//! together share one write of `index.json`, each still gets its own
//! answer, and a second writer beside them loses nothing.

use super::*;

/// 64 tags at once through one engine, while a second engine tags 16
/// more and one of the 64 is a compare-and-swap that must fail: every
/// other tag lands, the failing one alone is refused, and the engine's
/// 64 took far fewer than 64 writes of `index.json` (one write per tag
/// without the group commit; 3 here when the machine is idle, up to 20
/// when every test runs at once on two cores).
pub async fn tags_that_arrive_together_are_written_together<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let counted = Hooked::counting(subject.storage.clone());
    let layout = Layout::new(counted.clone());
    let store = Store::new(layout.clone());
    let other = subject.other_writer();
    let mut images = Vec::new();
    for n in 0..80 {
        let raw = stage_image(&store, &format!("batched {n}")).await;
        ok(store.push_manifest(&raw, None).await, "push untagged");
        images.push(raw.descriptor());
    }
    let before = counted.index_writes();
    let ours = images[..64].iter().enumerate().map(|(n, image)| {
        let (store, layout) = (store.clone(), layout.clone());
        async move {
            if n == 7 {
                // Expects the tag to name something it does not.
                let wrong = images_wrong_digest();
                crate::Backend::swap_tag(&layout, "t7", Some(&wrong), Some(image)).await
            } else {
                store.tag(image, &format!("t{n}")).await
            }
        }
    });
    let theirs = images[64..].iter().enumerate().map(|(n, image)| {
        let other = other.clone();
        async move { other.tag(image, &format!("o{n}")).await }
    });
    let (ours, theirs) = futures::future::join(
        futures::future::join_all(ours),
        futures::future::join_all(theirs),
    )
    .await;
    for (n, outcome) in ours.iter().enumerate() {
        match (n, outcome) {
            (7, Err(Error::Conflict { .. })) => {}
            (7, other) => panic!("a swap from the wrong digest answered {other:?}"),
            (_, Err(e)) => panic!("tag t{n}: {e}"),
            _ => {}
        }
    }
    for (n, outcome) in theirs.iter().enumerate() {
        assert!(outcome.is_ok(), "the other writer's tag o{n}: {outcome:?}");
    }
    let writes = counted.index_writes() - before;
    assert!(
        writes <= 32,
        "64 tags at once took {writes} writes of index.json"
    );
    let tags = ok(store.tags_all().await, "tags");
    for (n, image) in images[..64].iter().enumerate() {
        let tag = format!("t{n}");
        assert_eq!(tags.contains(&tag), n != 7, "tag {tag} in {tags:?}");
        if n != 7 {
            let found = ok(store.resolve(&Selector::Tag(tag)).await, "resolve");
            assert_eq!(found.digest, image.digest);
        }
    }
    for n in 0..16 {
        assert!(tags.contains(&format!("o{n}")), "o{n} lost: {tags:?}");
    }
    assert_intact(&store).await;
    drop(subject.guard);
}

/// A digest no image here has.
fn images_wrong_digest() -> Digest {
    Digest::sha256(b"no image has this digest")
}
