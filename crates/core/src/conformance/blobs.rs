//! Content checks: blobs and manifests round-trip byte for byte, streamed
//! with flat memory; wrong digests, sizes and failing bodies publish
//! nothing; pushes are idempotent and safe concurrently; invalid manifests
//! are refused.

use super::support::*;

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

/// `stat` tells the size of stored content, found by digest alone, and
/// `None` for content that is not there.
pub async fn stat_tells_sizes(subject: Subject) {
    let store = &subject.store;
    let blob = push_blob(store, &[3u8; 1000]).await;
    let unknown = Descriptor::new(MediaType::OCTET_STREAM, blob.digest.clone(), 0);
    assert_eq!(ok(store.stat(&unknown).await, "stat a blob"), Some(1000));
    let manifest = push_image(store, "stat", None).await;
    let by_digest = Descriptor::new(manifest.media_type().clone(), manifest.digest(), 0);
    assert_eq!(
        ok(store.stat(&by_digest).await, "stat a manifest"),
        Some(manifest.bytes().len() as u64)
    );
    let absent = Descriptor::new(MediaType::OCTET_STREAM, Digest::sha256(b"never pushed"), 0);
    assert_eq!(ok(store.stat(&absent).await, "stat the absent"), None);
}
