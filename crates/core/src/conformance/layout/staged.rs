//! Staged objects that grow in place ([`ObjectStorage::append`]) and
//! become blobs by a rename ([`ObjectStorage::publish`]), where a storage
//! offers them; a storage that does not says so plainly.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::*;

fn chunks(parts: &[&'static [u8]]) -> BoxStream<'static, Result<Bytes>> {
    let parts: Vec<Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    futures::stream::iter(parts).boxed()
}

/// Appends land only at the offset the object holds and never beside
/// another writer's (whose request is held open at that moment); a body
/// that fails part-way keeps what it wrote; publishing checks size and
/// digest (a mismatch leaves the object), links the blob into place dated
/// now, so a collection's grace counts from there, and removes the object.
pub async fn staged_objects_append_in_place_and_publish_verified<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let storage = subject.storage.clone();
    let key = "uploads/conformance/data";
    if !storage.appends() {
        let refused = storage.append(key, 0, chunks(&[b"x"])).await;
        assert!(
            matches!(refused, Err(Error::Unsupported { .. })),
            "a storage that does not append refuses: {refused:?}"
        );
        let descriptor = Descriptor::of(MediaType::OCTET_STREAM, &b"x"[..]);
        assert!(!ok(storage.publish(key, &descriptor).await, "publish"));
        return;
    }
    assert_eq!(
        ok(
            storage.append(key, 0, chunks(&[b"hello, "])).await,
            "append"
        ),
        7
    );
    let twice = storage.append(key, 0, chunks(&[b"HELLO, "])).await;
    assert!(matches!(twice, Err(Error::Conflict { .. })), "{twice:?}");
    let behind = storage.append(key, 3, chunks(&[b"x"])).await;
    assert!(matches!(behind, Err(Error::Conflict { .. })), "{behind:?}");

    // Another writer holds the object open mid-request: a second request
    // at the same offset is refused, and the first then lands whole.
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let slow = futures::stream::iter(vec![Ok(Bytes::from_static(b"wor"))])
        .chain(futures::stream::once(async move {
            let _ = held.await;
            Ok(Bytes::from_static(b"ld"))
        }))
        .boxed();
    let first = {
        let storage = storage.clone();
        tokio::spawn(async move { storage.append(key, 7, slow).await })
    };
    // Once its first bytes landed, the first writer holds the object.
    for _ in 0..500 {
        if ok(storage.size(key).await, "size") == Some(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        ok(storage.size(key).await, "size"),
        Some(10),
        "the held writer's first bytes"
    );
    let beside = storage.append(key, 7, chunks(&[b"WORLD"])).await;
    assert!(
        matches!(&beside, Err(Error::Conflict { what, .. }) if what.contains("another")),
        "a second writer beside a held one: {beside:?}"
    );
    let _ = release.send(());
    let first = first.await.expect("the first writer's task");
    assert_eq!(ok(first, "the held append"), 12);

    // A body that breaks off keeps what it wrote.
    let broken = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"!")),
        Err(Error::Failed {
            doing: "reading a request body".into(),
            source: "broke off".into(),
        }),
    ])
    .boxed();
    assert!(storage.append(key, 12, broken).await.is_err());
    assert_eq!(ok(storage.size(key).await, "size"), Some(13));

    let content = &b"hello, world!"[..];
    let right = Descriptor::of(MediaType::OCTET_STREAM, content);
    let wrong_digest = Descriptor::of(MediaType::OCTET_STREAM, &b"hello, WORLD!"[..]);
    let mismatch = storage.publish(key, &wrong_digest).await;
    assert!(
        matches!(mismatch, Err(Error::DigestMismatch { .. })),
        "{mismatch:?}"
    );
    let mut wrong_size = right.clone();
    wrong_size.size += 1;
    let mismatch = storage.publish(key, &wrong_size).await;
    assert!(
        matches!(mismatch, Err(Error::SizeMismatch { .. })),
        "{mismatch:?}"
    );
    assert!(
        ok(
            storage.read(&blob_path(&wrong_digest.digest), 64).await,
            "read"
        )
        .is_none()
    );
    assert_eq!(
        ok(storage.size(key).await, "size"),
        Some(13),
        "a mismatch leaves the object"
    );

    assert!(ok(storage.publish(key, &right).await, "publish"));
    assert_eq!(ok(storage.size(key).await, "size"), None, "published: gone");
    let (bytes, _) = ok(
        storage.read(&blob_path(&right.digest), 64).await,
        "read blob",
    )
    .expect("the published blob");
    assert_eq!(&bytes[..], content);
    let listed = ok(storage.list("blobs/").await, "list blobs");
    let entry = listed
        .iter()
        .find(|l| l.key == blob_path(&right.digest))
        .expect("the blob listed");
    let age = entry.modified.and_then(|m| m.elapsed().ok());
    assert!(
        age.is_some_and(|a| a < Duration::from_secs(60)),
        "a published blob is dated when published: {entry:?}"
    );
    assert!(!ok(storage.publish(key, &right).await, "publish again"));
    drop(subject.guard);
}
