//! The checks. Each is `pub async fn name(subject: Subject)` and panics with
//! a message naming the behaviour that does not hold.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{StreamExt, stream};

use super::Subject;
use super::content::{CHUNK, GeneratedBlob, LiveChunks};
use crate::backend::{ListQuery, PushOptions};
use crate::body::Body;
use crate::error::{Error, Result, chain};
use crate::model::{Descriptor, Digest, Index, Manifest, MediaType, RawManifest, Selector};
use crate::referrers::{Via, fallback_tag};
use crate::store::Store;

pub(super) const LAYER: MediaType = MediaType::OCI_LAYER_TAR;

#[track_caller]
pub(super) fn ok<T>(result: Result<T>, doing: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{doing}: unexpected error: {}", chain(&e)),
    }
}

#[track_caller]
pub(super) fn expect_err<T: std::fmt::Debug>(result: Result<T>, doing: &str) -> Error {
    match result {
        Ok(value) => panic!("{doing}: expected an error, got {value:?}"),
        Err(e) => e,
    }
}

async fn read_all(mut body: Body) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn push_blob(store: &Store, data: &[u8]) -> Descriptor {
    ok(
        store.push_bytes(LAYER, Bytes::copy_from_slice(data)).await,
        "push blob",
    )
}

/// Pushes a config and a layer and an image manifest naming them (written
/// with deliberate odd spacing and an unknown field, so a backend that
/// re-serialises would change its digest). Returns the manifest's raw form.
pub(super) async fn push_image(store: &Store, seed: &str, tag: Option<&str>) -> RawManifest {
    let config = ok(
        store
            .push_bytes(
                MediaType::OCI_CONFIG,
                format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#),
            )
            .await,
        "push config",
    );
    let layer = push_blob(store, format!("layer of {seed}").as_bytes()).await;
    let text = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{}\",\n  \"config\": {},\n  \"layers\": [ {} ],\n  \"x-orca-test\": {{ \"seed\": \"{seed}\" }}\n}}\n",
        MediaType::OCI_MANIFEST,
        ok(
            serde_json::to_string(&config).map_err(invalid),
            "config json"
        ),
        ok(serde_json::to_string(&layer).map_err(invalid), "layer json"),
    );
    let raw = RawManifest::new(MediaType::OCI_MANIFEST, text.into_bytes());
    ok(store.push_manifest(&raw, tag).await, "push manifest");
    raw
}

fn invalid(e: serde_json::Error) -> Error {
    Error::InvalidInput {
        what: "test document".into(),
        reason: e.to_string(),
    }
}

pub(super) fn artifact(
    subject: &Descriptor,
    artifact_type: &str,
    note: &str,
    config: &Descriptor,
) -> RawManifest {
    let mut annotations = BTreeMap::new();
    annotations.insert("org.example.note".to_owned(), note.to_owned());
    let manifest = Manifest {
        artifact_type: Some(MediaType::new(artifact_type)),
        subject: Some(subject.plain()),
        annotations,
        ..Manifest::new(config.clone(), vec![config.clone()])
    };
    ok(manifest.to_raw(), "serialise artifact")
}

pub(super) fn assert_kind(err: &Error, expected: fn(&Error) -> bool, doing: &str) {
    assert!(
        expected(err),
        "{doing}: wrong error kind: {} ({err:?})",
        chain(err)
    );
}

/// A small blob round-trips byte for byte.
pub async fn push_fetch_small(subject: Subject) {
    let store = subject.store;
    let data = b"hello from orca's conformance suite";
    let desc = push_blob(&store, data).await;
    assert!(
        ok(store.exists(&desc).await, "exists"),
        "pushed blob is not present"
    );
    let fetched = ok(
        read_all(ok(store.fetch(&desc).await, "fetch")).await,
        "read",
    );
    assert_eq!(fetched, data, "fetched bytes differ from pushed bytes");
    assert_eq!(
        ok(store.fetch_bytes(&desc).await, "fetch_bytes").as_ref(),
        data
    );
}

/// A 256 MiB blob streams in and out: the backend never holds on to more
/// than 64 MiB of the caller's chunks at once (room for multipart parts in
/// flight, far from the whole blob), and fetch delivers it in chunks of at
/// most 16 MiB.
pub async fn push_fetch_large_streamed(subject: Subject) {
    let store = subject.store;
    let blob = GeneratedBlob::new(256 * 1024 * 1024, 7);
    let desc = blob.descriptor(LAYER);
    let live = LiveChunks::default();
    ok(
        store.push(&desc, blob.tracked_body(&live)).await,
        "push 256 MiB",
    );
    let held = 64;
    assert!(
        live.peak() <= held,
        "the backend held {} MiB of the pushed body at once (limit {held} MiB): it must stream, not buffer",
        live.peak() * CHUNK / (1024 * 1024)
    );
    let limit = 16;
    assert!(
        ok(store.exists(&desc).await, "exists"),
        "large blob is not present"
    );
    let mut body = ok(store.fetch(&desc).await, "fetch 256 MiB");
    let (mut total, mut chunks) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = ok(chunk, "read 256 MiB");
        assert!(
            chunk.len() <= limit * CHUNK,
            "fetch delivered a chunk of {} bytes: it must stream",
            chunk.len()
        );
        total += chunk.len() as u64;
        chunks += 1;
    }
    assert_eq!(total, blob.size(), "fetched size");
    assert!(
        chunks >= 16,
        "fetch delivered 256 MiB in {chunks} chunks: it must stream"
    );
}

/// The empty blob (size 0) can be pushed and fetched.
pub async fn empty_blob(subject: Subject) {
    let store = subject.store;
    let desc = push_blob(&store, b"").await;
    assert!(
        ok(store.exists(&desc).await, "exists"),
        "empty blob is not present"
    );
    assert!(ok(store.fetch_bytes(&desc).await, "fetch empty").is_empty());
}

/// Absent content is `exists == false`, and fetching or resolving it is
/// `NotFound` with a message naming it.
pub async fn exists_and_not_found(subject: Subject) {
    let store = subject.store;
    let desc = Descriptor::of(LAYER, b"never pushed");
    assert!(
        !ok(store.exists(&desc).await, "exists"),
        "absent blob reported present"
    );
    let err = expect_err(store.fetch(&desc).await, "fetch absent blob");
    assert_kind(&err, Error::is_not_found, "fetch absent blob");
    assert!(
        err.to_string().contains(&desc.digest.to_string()),
        "error does not name the digest: {err}"
    );
    let err = expect_err(
        store.resolve(&Selector::Tag("absent".into())).await,
        "resolve absent tag",
    );
    assert_kind(&err, Error::is_not_found, "resolve absent tag");
    let digest = Digest::sha256(b"no such manifest");
    let err = expect_err(
        store.resolve(&Selector::Digest(digest)).await,
        "resolve absent digest",
    );
    assert_kind(&err, Error::is_not_found, "resolve absent digest");
}

/// Bytes that do not hash to the descriptor's digest are refused and
/// nothing is published, for blobs and manifests.
pub async fn wrong_digest_publishes_nothing(subject: Subject) {
    let store = subject.store;
    let blob = GeneratedBlob::new(3 * CHUNK as u64 + 17, 11);
    let other = GeneratedBlob::new(blob.size(), 12);
    let desc = blob.descriptor(LAYER);
    let err = expect_err(
        store.push(&desc, other.body()).await,
        "push with wrong digest",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::DigestMismatch { .. }),
        "push with wrong digest",
    );
    assert!(
        !ok(store.exists(&desc).await, "exists"),
        "a blob with the wrong bytes was published"
    );
    assert!(
        !ok(store.exists(&other.descriptor(LAYER)).await, "exists"),
        "the wrong bytes were published"
    );

    let raw = push_image(&store, "digest", None).await;
    let mut forged = raw.descriptor();
    forged.digest = Digest::sha256(b"something else");
    let err = expect_err(
        store
            .push(&forged, Body::from_bytes(raw.bytes().clone()))
            .await,
        "push manifest with wrong digest",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::DigestMismatch { .. }),
        "push manifest with wrong digest",
    );
    assert!(
        !ok(store.exists(&forged).await, "exists"),
        "a manifest with the wrong bytes was published"
    );
}

/// Bodies longer or shorter than the descriptor's size are refused and
/// nothing is published.
pub async fn wrong_size_publishes_nothing(subject: Subject) {
    let store = subject.store;
    let data = Bytes::from_static(b"0123456789");
    let desc = Descriptor::of(LAYER, &data);
    let cases = [
        (
            "a body that yields more than it promised",
            Body::new(
                10,
                stream::iter([Ok(data.clone()), Ok(Bytes::from_static(b"ab"))]),
            ),
        ),
        (
            "a body that yields less than it promised",
            Body::new(10, stream::iter([Ok(data.slice(..8))])),
        ),
        (
            "a body that promises less than the descriptor",
            Body::new(8, stream::iter([Ok(data.slice(..8))])),
        ),
        (
            "a body that promises more than the descriptor",
            Body::new(
                12,
                stream::iter([Ok(data.clone()), Ok(Bytes::from_static(b"ab"))]),
            ),
        ),
    ];
    for (case, body) in cases {
        let err = expect_err(store.push(&desc, body).await, case);
        assert_kind(&err, |e| matches!(e, Error::SizeMismatch { .. }), case);
        assert!(
            !ok(store.exists(&desc).await, "exists"),
            "{case}: content was published"
        );
    }
}

/// A body whose stream fails midway publishes nothing.
pub async fn failing_body_publishes_nothing(subject: Subject) {
    let store = subject.store;
    let blob = GeneratedBlob::new(3 * CHUNK as u64, 13);
    let desc = blob.descriptor(LAYER);
    let chunks = blob.body().take(2).chain(stream::iter([Err(Error::Backend {
        backend: "test source".into(),
        operation: "read",
        source: "connection reset".into(),
    })]));
    let err = expect_err(
        store.push(&desc, Body::new(blob.size(), chunks)).await,
        "push failing body",
    );
    assert!(
        chain(&err).contains("connection reset"),
        "the body's error was lost: {}",
        chain(&err)
    );
    assert!(
        !ok(store.exists(&desc).await, "exists"),
        "a failed push published content"
    );
}

/// Pushing content that is already present succeeds and changes nothing.
pub async fn push_is_idempotent(subject: Subject) {
    let store = subject.store;
    let first = push_blob(&store, b"twice").await;
    let second = push_blob(&store, b"twice").await;
    assert_eq!(first, second);
    assert_eq!(
        ok(store.fetch_bytes(&first).await, "fetch").as_ref(),
        b"twice"
    );
    let raw = push_image(&store, "idempotent", Some("again")).await;
    ok(
        store.push_manifest(&raw, Some("again")).await,
        "push manifest again",
    );
    let resolved = ok(
        store.resolve(&Selector::Tag("again".into())).await,
        "resolve",
    );
    assert_eq!(resolved.digest, raw.digest());
}

/// Concurrent pushes of the same blob all succeed and leave it intact.
pub async fn concurrent_pushes_of_one_blob(subject: Subject) {
    let store = subject.store;
    let blob = GeneratedBlob::new(4 * CHUNK as u64 + 3, 17);
    let desc = blob.descriptor(LAYER);
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (store, desc, body) = (store.clone(), desc.clone(), blob.body());
            tokio::spawn(async move { store.push(&desc, body).await })
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok(result) => ok(result, "concurrent push"),
            Err(e) => panic!("concurrent push task failed: {e}"),
        }
    }
    let fetched = ok(
        read_all(ok(store.fetch(&desc).await, "fetch")).await,
        "read",
    );
    assert_eq!(fetched.len() as u64, blob.size());
}

/// A manifest pushed by digest resolves by digest with its media type and
/// size, and fetches back byte for byte.
pub async fn manifest_push_by_digest(subject: Subject) {
    let store = subject.store;
    let raw = push_image(&store, "by-digest", None).await;
    let resolved = ok(
        store.resolve(&Selector::Digest(raw.digest())).await,
        "resolve by digest",
    );
    assert_eq!(resolved.digest, raw.digest(), "resolved digest");
    assert_eq!(resolved.size, raw.bytes().len() as u64, "resolved size");
    assert_eq!(
        resolved.media_type,
        MediaType::OCI_MANIFEST,
        "resolved media type"
    );
    let (_, fetched) = ok(
        store.fetch_manifest(&Selector::Digest(raw.digest())).await,
        "fetch manifest",
    );
    assert_eq!(
        fetched.bytes(),
        raw.bytes(),
        "the manifest's bytes changed in storage"
    );
}

/// Manifests and indexes pushed with a tag resolve by that tag.
pub async fn manifest_push_by_tag(subject: Subject) {
    let store = subject.store;
    let raw = push_image(&store, "by-tag", Some("v1")).await;
    let resolved = ok(
        store.resolve(&Selector::Tag("v1".into())).await,
        "resolve v1",
    );
    assert_eq!(resolved.digest, raw.digest());
    let mut member = raw.descriptor();
    member.platform = Some(crate::model::Platform::new("linux", "amd64"));
    let index = Index {
        manifests: vec![member],
        ..Index::new()
    };
    let index_raw = ok(index.to_raw(), "serialise index");
    ok(
        store.push_manifest(&index_raw, Some("multi")).await,
        "push index by tag",
    );
    let (desc, fetched) = ok(
        store.fetch_manifest(&Selector::Tag("multi".into())).await,
        "fetch index",
    );
    assert_eq!(desc.media_type, MediaType::OCI_INDEX);
    assert_eq!(fetched.bytes(), index_raw.bytes());
    let tags = ok(store.tags_all().await, "tags");
    assert_eq!(tags, ["multi", "v1"], "tag list");
}

/// Bytes that are not the manifest their media type says are refused
/// before they reach the backend.
pub async fn invalid_manifest_is_refused(subject: Subject) {
    let store = subject.store;
    for (case, media_type, text) in [
        ("not JSON", MediaType::OCI_MANIFEST, "this is not json"),
        (
            "an index sent as a manifest",
            MediaType::OCI_MANIFEST,
            r#"{"schemaVersion":2,"manifests":[]}"#,
        ),
        (
            "a manifest without config",
            MediaType::OCI_MANIFEST,
            r#"{"schemaVersion":2,"layers":[]}"#,
        ),
    ] {
        let raw = RawManifest::new(media_type, text.as_bytes().to_vec());
        let err = expect_err(store.push_manifest(&raw, Some("bad")).await, case);
        assert_kind(&err, |e| matches!(e, Error::InvalidManifest { .. }), case);
        assert!(
            !ok(store.exists(&raw.descriptor()).await, "exists"),
            "{case}: it was stored"
        );
    }
    let err = expect_err(
        store.resolve(&Selector::Tag("bad".into())).await,
        "resolve bad",
    );
    assert_kind(&err, Error::is_not_found, "a refused manifest's tag exists");
}

/// Resolving by tag and by digest agree.
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
        if let Ok(last) = keeping.resolve(&tag).await {
            let bytes = ok(keeping.fetch_bytes(&last).await, "fetch the last index");
            let index: Index = ok(serde_json::from_slice(&bytes).map_err(invalid), "parse");
            assert!(index.manifests.is_empty(), "{index:?}");
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

/// With `mount`, a blob of the sibling repository is mounted; an absent one
/// is declined with `false`. Else `Unsupported`.
pub async fn mount(subject: Subject) {
    let store = subject.store;
    let desc = Descriptor::of(LAYER, b"mounted blob");
    if !store.capabilities().mount {
        let err = expect_err(
            store.mount(&desc, "elsewhere").await,
            "mount without capability",
        );
        assert_kind(
            &err,
            |e| matches!(e, Error::Unsupported { .. }),
            "mount without capability",
        );
        return;
    }
    let Some(sibling) = subject.sibling else {
        panic!("a backend that claims `mount` must give the check a sibling repository");
    };
    let pushed = push_blob(&sibling.store, b"mounted blob").await;
    assert_eq!(pushed, desc);
    assert!(
        ok(store.mount(&desc, &sibling.repository).await, "mount"),
        "mount of a present blob was declined"
    );
    assert_eq!(
        ok(store.fetch_bytes(&desc).await, "fetch mounted").as_ref(),
        b"mounted blob"
    );
    let absent = Descriptor::of(LAYER, b"nowhere");
    assert!(
        !ok(
            store.mount(&absent, &sibling.repository).await,
            "mount absent"
        ),
        "mount of an absent blob succeeded"
    );
    assert!(
        !ok(store.exists(&absent).await, "exists"),
        "declined mount left content"
    );
}

/// With `fetch_range`, byte ranges come back exactly; out-of-bounds ranges
/// are refused. Else `Unsupported`.
pub async fn fetch_range(subject: Subject) {
    let store = subject.store;
    let blob = GeneratedBlob::new(2 * CHUNK as u64 + 100, 19);
    let desc = blob.descriptor(LAYER);
    ok(store.push(&desc, blob.body()).await, "push");
    if !store.capabilities().fetch_range {
        let err = expect_err(
            store.fetch_range(&desc, 0..10).await,
            "range without capability",
        );
        assert_kind(
            &err,
            |e| matches!(e, Error::Unsupported { .. }),
            "range without capability",
        );
        return;
    }
    let all = blob.to_bytes();
    for range in [
        0..10,
        100..(CHUNK as u64 + 5),
        (desc.size - 7)..desc.size,
        5..5,
    ] {
        let got = ok(
            read_all(ok(
                store.fetch_range(&desc, range.clone()).await,
                "fetch range",
            ))
            .await,
            "read range",
        );
        let (start, end) = (range.start as usize, range.end as usize);
        assert_eq!(got, all[start..end], "bytes {range:?}");
    }
    let err = expect_err(
        store.fetch_range(&desc, 0..desc.size + 1).await,
        "range past the end",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidInput { .. }),
        "range past the end",
    );
}

/// With `catalog`, repositories holding content are listed and paged.
/// Else `Unsupported`.
pub async fn catalog(subject: Subject) {
    let store = subject.store;
    if !store.capabilities().catalog {
        let err = expect_err(
            store.catalog(&ListQuery::all()).await,
            "catalog without capability",
        );
        assert_kind(
            &err,
            |e| matches!(e, Error::Unsupported { .. }),
            "catalog without capability",
        );
        return;
    }
    let Some(sibling) = subject.sibling else {
        panic!("a backend that claims `catalog` must give the check a sibling repository");
    };
    push_image(&sibling.store, "catalog", Some("listed")).await;
    let mut all = Vec::new();
    let mut query = ListQuery::page(None, 1);
    for _ in 0..10_000 {
        let page = ok(store.catalog(&query).await, "catalog page");
        assert!(
            page.entries.len() <= 1,
            "a page of limit 1 had {} entries",
            page.entries.len()
        );
        all.extend(page.entries);
        match page.next {
            Some(next) => query = ListQuery::page(Some(next), 1),
            None => break,
        }
    }
    assert!(
        all.contains(&sibling.repository),
        "{} missing from the catalog {all:?}",
        sibling.repository
    );
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "catalog is not in lexical order");
}

/// A scratch directory for a check, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("orca-check-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("scratch directory {}: {e}", path.display());
        }
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Artifacts: files packed in the OCI 1.1 form (with a subject, listed as
/// a referrer) and in the explicit 1.0 form, pulled back by title; a
/// hostile title writes nothing.
pub async fn artifacts(subject: Subject) {
    use crate::artifact::{Artifact, Form, pack, pull_files, push_file};
    let store = subject.store;
    let scratch = Scratch::new("artifact");
    let input = scratch.0.join("in");
    ok(
        std::fs::create_dir_all(input.join("docs")).map_err(io),
        "mkdir",
    );
    ok(
        std::fs::write(input.join("report.json"), br#"{"ok":true}"#).map_err(io),
        "write",
    );
    ok(
        std::fs::write(input.join("docs/readme.txt"), b"read me").map_err(io),
        "write",
    );
    let report = ok(
        push_file(
            &store,
            &input.join("report.json"),
            MediaType::new("application/json"),
            None,
        )
        .await,
        "push file",
    );
    let readme = ok(
        push_file(
            &store,
            &input.join("docs/readme.txt"),
            MediaType::new("text/plain"),
            Some("docs/readme.txt"),
        )
        .await,
        "push titled file",
    );
    let image = push_image(&store, "artifact-subject", None).await;
    let mut artifact = Artifact::new(
        MediaType::new("application/vnd.example.report"),
        vec![report.clone(), readme.clone()],
    );
    artifact.subject = Some(image.descriptor());
    let packed = ok(
        pack(&store, &artifact, Form::Auto, Some("report")).await,
        "pack 1.1",
    );
    assert_eq!(packed.form, Form::V1_1);
    let (_, raw) = ok(
        store.fetch_manifest(&Selector::Tag("report".into())).await,
        "fetch",
    );
    let manifest: Manifest = ok(
        serde_json::from_slice(raw.bytes()).map_err(invalid),
        "parse",
    );
    assert_eq!(
        manifest.artifact_type.as_ref().map(MediaType::as_str),
        Some("application/vnd.example.report")
    );
    assert_eq!(manifest.config.media_type, MediaType::OCI_EMPTY);
    assert_eq!(manifest.config.size, 2);
    assert!(
        manifest
            .annotations
            .contains_key(crate::model::ANNOTATION_CREATED)
    );
    let listed = ok(
        store.referrers(&image.descriptor(), None).await,
        "referrers",
    );
    assert_eq!(listed.manifests.len(), 1, "{listed:?}");
    assert_eq!(listed.manifests[0].digest, packed.descriptor.digest);

    let out = scratch.0.join("out");
    ok(std::fs::create_dir_all(&out).map_err(io), "mkdir");
    let written = ok(
        pull_files(&store, &Selector::Tag("report".into()), &out).await,
        "pull",
    );
    assert_eq!(written.len(), 2);
    assert_eq!(
        ok(std::fs::read(out.join("report.json")).map_err(io), "read"),
        br#"{"ok":true}"#
    );
    assert_eq!(
        ok(
            std::fs::read(out.join("docs/readme.txt")).map_err(io),
            "read"
        ),
        b"read me"
    );

    artifact.subject = None;
    let old = ok(
        pack(&store, &artifact, Form::V1_0, Some("report-1.0")).await,
        "pack 1.0",
    );
    assert_eq!(old.form, Form::V1_0);
    let (_, raw) = ok(
        store
            .fetch_manifest(&Selector::Tag("report-1.0".into()))
            .await,
        "fetch",
    );
    let manifest: Manifest = ok(
        serde_json::from_slice(raw.bytes()).map_err(invalid),
        "parse",
    );
    assert!(
        manifest.artifact_type.is_none(),
        "1.0 form has no artifactType"
    );
    assert_eq!(
        manifest.config.media_type.as_str(),
        "application/vnd.example.report"
    );
    artifact.subject = Some(image.descriptor());
    let err = expect_err(
        pack(&store, &artifact, Form::V1_0, None).await,
        "1.0 with a subject",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidInput { .. }),
        "1.0 with a subject",
    );

    // A title that climbs out: nothing is written anywhere.
    let mut evil = report.clone();
    evil.annotations.insert(
        crate::model::ANNOTATION_TITLE.into(),
        "../escaped.json".into(),
    );
    let hostile = Artifact::new(
        MediaType::new("application/vnd.example.evil"),
        vec![readme.clone(), evil],
    );
    ok(
        pack(&store, &hostile, Form::V1_1, Some("evil")).await,
        "pack hostile",
    );
    let clean = scratch.0.join("clean");
    ok(std::fs::create_dir_all(&clean).map_err(io), "mkdir");
    let err = expect_err(
        pull_files(&store, &Selector::Tag("evil".into()), &clean).await,
        "hostile pull",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidInput { .. }),
        "hostile title",
    );
    assert!(!scratch.0.join("escaped.json").exists(), "a file escaped");
    let left: Vec<_> = ok(std::fs::read_dir(&clean).map_err(io), "read_dir").collect();
    assert!(left.is_empty(), "a refused pull wrote {left:?}");
}

fn io(e: std::io::Error) -> Error {
    Error::InvalidInput {
        what: "scratch files".into(),
        reason: e.to_string(),
    }
}

/// An image whose config names `arch`, OCI- or Docker-typed.
async fn platform_image(store: &Store, seed: &str, arch: &str, docker: bool) -> Descriptor {
    let (config_type, layer_type, manifest_type) = if docker {
        (
            MediaType::DOCKER_CONFIG,
            MediaType::DOCKER_LAYER_GZIP,
            MediaType::DOCKER_MANIFEST,
        )
    } else {
        (MediaType::OCI_CONFIG, LAYER, MediaType::OCI_MANIFEST)
    };
    let config = ok(
        store
            .push_bytes(
                config_type,
                format!(r#"{{"architecture":"{arch}","os":"linux","seed":"{seed}"}}"#),
            )
            .await,
        "push config",
    );
    let layer = ok(
        store
            .push_bytes(layer_type, format!("layer {seed} {arch}"))
            .await,
        "push layer",
    );
    let mut manifest = Manifest::new(config, vec![layer]);
    manifest.media_type = Some(manifest_type);
    let raw = ok(manifest.to_raw(), "serialise");
    ok(store.push_manifest(&raw, None).await, "push manifest")
}

/// Index creation: members from this store and from another backend,
/// de-duplicated with annotations merged, platforms read from configs,
/// copied here by digest, an OCI index unless every member is Docker (then
/// a Docker list, which refuses annotations); one index source alone is
/// kept byte for byte.
pub async fn index_creation(subject: Subject) {
    use crate::index::{Annotations, Source, create};
    let store = subject.store;
    let elsewhere = Store::new(crate::memory::MemoryBackend::new());
    let amd64 = platform_image(&store, "idx", "amd64", false).await;
    let arm64 = platform_image(&elsewhere, "idx", "arm64", false).await;
    let sources = [
        Source::new(store.clone(), Selector::Digest(amd64.digest.clone())),
        Source::new(elsewhere.clone(), Selector::Digest(arm64.digest.clone())),
        Source::new(store.clone(), Selector::Digest(amd64.digest.clone())),
    ];
    let mut annotations = Annotations::default();
    annotations
        .index
        .insert("org.example.index".into(), "yes".into());
    annotations.descriptors.push((
        Some(crate::model::Platform::new("linux", "arm64")),
        "org.example.arm".into(),
        "yes".into(),
    ));
    let created = ok(
        create(&store, &sources, &annotations, Some("multi")).await,
        "create index",
    );
    assert_eq!(created.descriptor.media_type, MediaType::OCI_INDEX);
    let index: Index = ok(
        serde_json::from_slice(created.raw.bytes()).map_err(invalid),
        "parse",
    );
    assert_eq!(index.manifests.len(), 2, "members: {index:?}");
    assert_eq!(
        index
            .annotations
            .get("org.example.index")
            .map(String::as_str),
        Some("yes")
    );
    let platforms: Vec<String> = index
        .manifests
        .iter()
        .map(|m| {
            m.platform
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert!(
        index.manifests[1]
            .annotations
            .contains_key("org.example.arm")
    );
    assert!(
        !index.manifests[0]
            .annotations
            .contains_key("org.example.arm")
    );
    let resolved = ok(
        store.resolve(&Selector::Tag("multi".into())).await,
        "resolve",
    );
    assert_eq!(resolved.digest, created.descriptor.digest);
    let copied = ok(
        store
            .fetch_manifest(&Selector::Digest(arm64.digest.clone()))
            .await,
        "member copied",
    );
    let document = ok(copied.1.parse(), "parse member");
    for child in document.children() {
        assert!(
            ok(store.exists(child).await, "exists"),
            "member content {} missing",
            child.digest
        );
    }

    // One index source, no annotations: the same bytes.
    let again = ok(
        create(
            &store,
            &[Source::new(store.clone(), Selector::Tag("multi".into()))],
            &Annotations::default(),
            Some("same"),
        )
        .await,
        "re-create from one index",
    );
    assert_eq!(again.descriptor.digest, created.descriptor.digest);

    // Docker-typed members make a Docker list, which takes no annotations.
    let d1 = platform_image(&elsewhere, "docker", "amd64", true).await;
    let d2 = platform_image(&elsewhere, "docker", "arm64", true).await;
    let docker_sources = [
        Source::new(elsewhere.clone(), Selector::Digest(d1.digest.clone())),
        Source::new(elsewhere.clone(), Selector::Digest(d2.digest.clone())),
    ];
    let list = ok(
        create(
            &store,
            &docker_sources,
            &Annotations::default(),
            Some("docker"),
        )
        .await,
        "docker list",
    );
    assert_eq!(list.descriptor.media_type, MediaType::DOCKER_MANIFEST_LIST);
    let err = expect_err(
        create(&store, &docker_sources, &annotations, None).await,
        "annotated docker list",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidInput { .. }),
        "annotated docker list",
    );
}
