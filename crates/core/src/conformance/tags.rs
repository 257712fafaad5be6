//! Tag checks: resolving, moving, untagging, listing with pagination,
//! refusing invalid tags, and deleting content with its tags.

use super::support::*;

/// Resolving by tag and by digest agree, and so does reading by tag.
pub async fn resolve_tag_and_digest(subject: Subject) {
    let store = subject.store;
    let raw = push_image(&store, "resolve", Some("latest")).await;
    let by_tag = ok(
        store.resolve(&Selector::Tag("latest".into())).await,
        "resolve tag",
    );
    let by_digest = ok(
        store.resolve(&Selector::Digest(raw.digest())).await,
        "resolve digest",
    );
    assert_eq!(by_tag.plain(), by_digest.plain());
    assert_eq!(by_tag.plain(), raw.descriptor());
    // Resolving and reading in one step (one request on a registry)
    // gives the same manifest, byte for byte.
    let (descriptor, fetched) = ok(
        store.fetch_manifest(&Selector::Tag("latest".into())).await,
        "fetch by tag",
    );
    assert_eq!(descriptor.plain(), raw.descriptor());
    assert_eq!(fetched.bytes(), raw.bytes());
    let err = expect_err(
        store.fetch_manifest(&Selector::Tag("absent".into())).await,
        "fetch an absent tag",
    );
    assert_kind(&err, Error::is_not_found, "fetch an absent tag");
}

/// Tagging again moves the tag; the old manifest stays.
pub async fn tag_moves(subject: Subject) {
    let store = subject.store;
    let first = push_image(&store, "first", Some("moving")).await;
    let second = push_image(&store, "second", None).await;
    ok(store.tag(&second.descriptor(), "moving").await, "move tag");
    let resolved = ok(
        store.resolve(&Selector::Tag("moving".into())).await,
        "resolve moved tag",
    );
    assert_eq!(resolved.digest, second.digest(), "the tag did not move");
    let old = ok(
        store.resolve(&Selector::Digest(first.digest())).await,
        "resolve old manifest",
    );
    assert_eq!(old.digest, first.digest());
    ok(
        store.tag(&first.descriptor(), "second-name").await,
        "add a second tag",
    );
    assert_eq!(
        ok(store.tags_all().await, "tags"),
        ["moving", "second-name"]
    );
}

/// Tagging a manifest that is not present is `NotFound`.
pub async fn tag_needs_the_manifest(subject: Subject) {
    let store = subject.store;
    let absent = Descriptor::of(MediaType::OCI_MANIFEST, br#"{"schemaVersion":2}"#);
    let err = expect_err(store.tag(&absent, "dangling").await, "tag absent manifest");
    assert_kind(&err, Error::is_not_found, "tag absent manifest");
    assert!(
        ok(store.tags_all().await, "tags").is_empty(),
        "a dangling tag was created"
    );
}

/// Tags outside the grammar are refused with `InvalidReference`.
pub async fn invalid_tags_are_refused(subject: Subject) {
    let store = subject.store;
    let raw = push_image(&store, "tags", None).await;
    for tag in [
        "",
        "has space",
        ".dot-first",
        "-dash-first",
        "slash/no",
        &"t".repeat(129),
    ] {
        let err = expect_err(store.tag(&raw.descriptor(), tag).await, "invalid tag");
        assert_kind(
            &err,
            |e| matches!(e, Error::InvalidReference { .. }),
            "invalid tag",
        );
        let err = expect_err(
            store.resolve(&Selector::Tag(tag.to_owned())).await,
            "resolve invalid tag",
        );
        assert_kind(
            &err,
            |e| matches!(e, Error::InvalidReference { .. }),
            "resolve invalid tag",
        );
    }
    let err = expect_err(
        store
            .push_opts(
                &raw.descriptor(),
                Body::from_bytes(raw.bytes().clone()),
                PushOptions::tagged("no way"),
            )
            .await,
        "push with invalid tag",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidReference { .. }),
        "push with invalid tag",
    );
    let blob = push_blob(&store, b"not a manifest").await;
    let err = expect_err(store.tag(&blob, "blob").await, "tag a blob");
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidInput { .. }),
        "tag a blob",
    );
}

/// `untag` removes one tag and keeps the manifest, or is `Unsupported`.
pub async fn untag(subject: Subject) {
    let store = subject.store;
    let raw = push_image(&store, "untag", Some("one")).await;
    ok(store.tag(&raw.descriptor(), "two").await, "second tag");
    if !store.capabilities().untag {
        let err = expect_err(store.untag("one").await, "untag without capability");
        assert_kind(
            &err,
            |e| matches!(e, Error::Unsupported { .. }),
            "untag without capability",
        );
        return;
    }
    ok(store.untag("one").await, "untag");
    let err = expect_err(
        store.resolve(&Selector::Tag("one".into())).await,
        "resolve removed tag",
    );
    assert_kind(&err, Error::is_not_found, "resolve removed tag");
    assert_eq!(
        ok(
            store.resolve(&Selector::Tag("two".into())).await,
            "other tag"
        )
        .digest,
        raw.digest()
    );
    assert!(
        ok(store.exists(&raw.descriptor()).await, "exists"),
        "untag deleted the manifest"
    );
    let err = expect_err(store.untag("one").await, "untag twice");
    assert_kind(&err, Error::is_not_found, "untag twice");
}

/// Tags list in lexical order and page with `last`/`limit`, natively or
/// paged by `Store`.
pub async fn tags_pagination(subject: Subject) {
    let store = subject.store;
    let raw = push_image(&store, "pages", None).await;
    let mut names: Vec<String> = (0..23).map(|i| format!("t{:02}", (i * 7) % 23)).collect();
    names.push("A-upper".into());
    names.push("z_last".into());
    for name in &names {
        ok(store.tag(&raw.descriptor(), name).await, "tag");
    }
    names.sort();
    assert_eq!(ok(store.tags_all().await, "all tags"), names, "tags_all");
    let mut paged = Vec::new();
    let mut query = ListQuery::page(None, 7);
    let mut pages = 0;
    loop {
        let page = ok(store.tags(&query).await, "tag page");
        assert!(
            page.entries.len() <= 7,
            "a page of limit 7 had {} tags",
            page.entries.len()
        );
        pages += 1;
        assert!(pages <= 10, "pagination does not end");
        paged.extend(page.entries);
        match page.next {
            Some(next) => query = ListQuery::page(Some(next), 7),
            None => break,
        }
    }
    assert_eq!(paged, names, "pages joined");
    assert_eq!(pages, 4, "25 tags in pages of 7");
    let after = ok(
        store.tags(&ListQuery::page(Some("t20".into()), 100)).await,
        "after t20",
    );
    assert_eq!(after.entries, ["t21", "t22", "z_last"]);
}

/// `delete` removes blobs and manifests (and tags on them), or is
/// `Unsupported`.
pub async fn delete(subject: Subject) {
    let store = subject.store;
    let blob = push_blob(&store, b"to be deleted").await;
    if !store.capabilities().delete {
        let err = expect_err(store.delete(&blob).await, "delete without capability");
        assert_kind(
            &err,
            |e| matches!(e, Error::Unsupported { .. }),
            "delete without capability",
        );
        return;
    }
    ok(store.delete(&blob).await, "delete blob");
    assert!(
        !ok(store.exists(&blob).await, "exists"),
        "deleted blob is present"
    );
    let err = expect_err(store.delete(&blob).await, "delete twice");
    assert_kind(&err, Error::is_not_found, "delete twice");
    let raw = push_image(&store, "delete", Some("doomed")).await;
    ok(store.delete(&raw.descriptor()).await, "delete manifest");
    let err = expect_err(
        store.resolve(&Selector::Digest(raw.digest())).await,
        "resolve deleted",
    );
    assert_kind(&err, Error::is_not_found, "resolve deleted manifest");
    let err = expect_err(
        store.resolve(&Selector::Tag("doomed".into())).await,
        "resolve tag of deleted",
    );
    assert_kind(&err, Error::is_not_found, "resolve tag of deleted manifest");
}
