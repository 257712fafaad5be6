//! Referrers checks: listing natively or through the tag schema, refusing
//! a bad fallback index, and concurrent attaches that lose nothing.

use super::support::*;

/// Referrers are listed with their artifact type (or config media type)
/// and annotations, filtered by artifact type, and forgotten when deleted:
/// through the backend's own index with `referrers_api`, else through the
/// tag schema, whose superseded indexes are deleted.
pub async fn referrers(subject: Subject) {
    let store = subject.store;
    let image = push_image(&store, "subject", Some("subject")).await;
    let empty = ok(
        store.push_bytes(MediaType::OCI_EMPTY, &b"{}"[..]).await,
        "push empty config",
    );
    let sbom = artifact(
        &image.descriptor(),
        "application/vnd.example.sbom",
        "sbom",
        &empty,
    );
    let sig = artifact(
        &image.descriptor(),
        "application/vnd.example.sig",
        "sig",
        &empty,
    );
    // The OCI 1.0 form: no artifactType, the config media type names it.
    let old_config = ok(
        store
            .push_bytes(
                MediaType::new("application/vnd.example.old.config"),
                &b"{}"[..],
            )
            .await,
        "push 1.0 config",
    );
    let mut old_style = Manifest::new(old_config.clone(), vec![empty.clone()]);
    old_style.subject = Some(image.descriptor());
    let old_style = ok(old_style.to_raw(), "serialise 1.0 artifact");
    ok(store.push_manifest(&sbom, None).await, "push sbom");
    ok(store.push_manifest(&sig, None).await, "push signature");
    ok(
        store.push_manifest(&old_style, None).await,
        "push 1.0 artifact",
    );

    let native = store.capabilities().referrers_api;
    let expected_via = if native { Via::Api } else { Via::TagSchema };
    let listing = ok(
        store.referrers(&image.descriptor(), None).await,
        "referrers",
    );
    assert_eq!(
        listing.via, expected_via,
        "referrers listed through the wrong path"
    );
    let mut all = listing.manifests;
    all.sort_by_key(|d| d.annotations.get("org.example.note").cloned());
    assert_eq!(all.len(), 3, "referrers listed: {all:?}");
    assert_eq!(all[0].digest, old_style.digest());
    assert_eq!(all[0].artifact_type.as_ref(), Some(&old_config.media_type));
    assert_eq!(all[1].digest, sbom.digest());
    assert_eq!(all[1].size, sbom.bytes().len() as u64);
    assert_eq!(all[1].media_type, MediaType::OCI_MANIFEST);
    assert_eq!(
        all[1].artifact_type.as_ref().map(MediaType::as_str),
        Some("application/vnd.example.sbom")
    );
    assert_eq!(
        all[2]
            .annotations
            .get("org.example.note")
            .map(String::as_str),
        Some("sig")
    );
    let wanted = MediaType::new("application/vnd.example.sig");
    let only = ok(
        store.referrers(&image.descriptor(), Some(&wanted)).await,
        "filtered referrers",
    );
    assert_eq!(only.manifests.len(), 1, "filtered referrers: {only:?}");
    assert_eq!(only.manifests[0].digest, sig.digest());
    let none = ok(
        store.referrers(&sbom.descriptor(), None).await,
        "referrers of a referrer",
    );
    assert!(none.manifests.is_empty(), "unexpected referrers: {none:?}");

    let tag = Selector::Tag(fallback_tag(&image.digest()));
    let before = if native {
        None
    } else {
        let index = ok(store.resolve(&tag).await, "resolve the fallback tag");
        assert_eq!(index.media_type, MediaType::OCI_INDEX, "fallback tag type");
        Some(index)
    };
    if !store.capabilities().delete {
        let err = expect_err(
            store.delete(&sig.descriptor()).await,
            "delete without capability",
        );
        assert_kind(
            &err,
            |e| matches!(e, Error::Unsupported { .. }),
            "delete without capability",
        );
        return;
    }
    ok(store.delete(&sig.descriptor()).await, "delete a referrer");
    let left = ok(
        store.referrers(&image.descriptor(), None).await,
        "referrers after delete",
    );
    assert_eq!(left.manifests.len(), 2, "after deleting one: {left:?}");
    assert!(left.manifests.iter().all(|d| d.digest != sig.digest()));
    if let Some(before) = before {
        assert!(
            !ok(store.exists(&before).await, "exists"),
            "the superseded referrers index was not deleted"
        );
        // Keeping superseded indexes when asked.
        let keeping = store.clone().with_referrers_gc(false);
        let current = ok(keeping.resolve(&tag).await, "resolve the fallback tag");
        ok(
            keeping.delete(&sbom.descriptor()).await,
            "delete another referrer",
        );
        assert!(
            ok(keeping.exists(&current).await, "exists"),
            "the superseded index was deleted though asked to keep it"
        );
        ok(
            keeping.delete(&old_style.descriptor()).await,
            "delete the last referrer",
        );
        // The tag is removed, or (where a tag cannot be removed without
        // deleting what it names) left on an empty index.
        match keeping.resolve(&tag).await {
            Ok(last) => {
                let bytes = ok(keeping.fetch_bytes(&last).await, "fetch the last index");
                let index: Index = ok(serde_json::from_slice(&bytes).map_err(invalid), "parse");
                assert!(index.manifests.is_empty(), "{index:?}");
            }
            Err(e) => assert!(
                e.is_not_found(),
                "resolving the fallback tag after the last delete: {}",
                chain(&e)
            ),
        }
        let gone = ok(
            keeping.referrers(&image.descriptor(), None).await,
            "no referrers",
        );
        assert!(gone.manifests.is_empty(), "{gone:?}");
    }
}

/// Without `referrers_api`, what the fallback tag points at is checked:
/// an image manifest there, or an index listing the subject itself, is
/// refused with `InvalidManifest`. With it, the tag is not consulted.
pub async fn referrers_fallback_is_checked(subject: Subject) {
    let store = subject.store;
    let image = push_image(&store, "checked", None).await;
    let tag = fallback_tag(&image.digest());
    let impostor = push_image(&store, "impostor", Some(&tag)).await;
    let listing = store.referrers(&image.descriptor(), None).await;
    if store.capabilities().referrers_api {
        let listing = ok(listing, "referrers with a stray fallback tag");
        assert_eq!(listing.via, Via::Api);
        assert!(listing.manifests.is_empty(), "{listing:?}");
        return;
    }
    let err = expect_err(listing, "a manifest at the fallback tag");
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidManifest { .. }),
        "manifest at fallback tag",
    );
    assert!(
        chain(&err).contains(&tag),
        "the error names the tag: {}",
        chain(&err)
    );
    let mut index = Index::new();
    index.manifests = vec![impostor.descriptor(), image.descriptor()];
    let looped = ok(index.to_raw(), "serialise index");
    ok(
        store.push_manifest(&looped, Some(&tag)).await,
        "push looping index",
    );
    let err = expect_err(
        store.referrers(&image.descriptor(), None).await,
        "an index listing its own subject",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidManifest { .. }),
        "self-listing index",
    );
}

/// Concurrent attaches to one subject, through clones of one store and
/// through a second store on the same backend, all end up listed.
pub async fn referrers_concurrent_attaches(subject: Subject) {
    let store = subject.store;
    let image = push_image(&store, "busy", None).await;
    let empty = ok(
        store.push_bytes(MediaType::OCI_EMPTY, &b"{}"[..]).await,
        "push empty config",
    );
    let other = store.clone_unshared();
    let mut tasks = Vec::new();
    for n in 0..12 {
        let store = if n % 3 == 0 {
            other.clone()
        } else {
            store.clone()
        };
        let raw = artifact(
            &image.descriptor(),
            "application/vnd.example.note",
            &format!("n{n}"),
            &empty,
        );
        tasks.push(tokio::spawn(async move {
            store.push_manifest(&raw, None).await.map(|_| raw.digest())
        }));
    }
    let mut pushed = Vec::new();
    for task in tasks {
        match task.await {
            Ok(result) => pushed.push(ok(result, "concurrent attach")),
            Err(e) => panic!("attach task failed: {e}"),
        }
    }
    let listing = ok(
        store.referrers(&image.descriptor(), None).await,
        "referrers",
    );
    let mut listed: Vec<Digest> = listing.manifests.iter().map(|d| d.digest.clone()).collect();
    listed.sort();
    pushed.sort();
    assert_eq!(
        listed, pushed,
        "referrers lost or duplicated under concurrency"
    );
}
