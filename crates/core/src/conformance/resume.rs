//! The resume check: a blob push interrupted part-way (its future dropped,
//! as when a process is killed or a copy cancelled) leaves what arrived
//! where the backend can resume, and a push of the rest completes the blob
//! — verified whole; without the capability nothing is offered and a
//! resumed push is refused.

use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, stream};

use super::Subject;
use super::content::GeneratedBlob;
use super::support::{LAYER, assert_kind, ok};
use crate::backend::PushOptions;
use crate::body::Body;
use crate::error::Error;

/// Chunks of 1 MiB; the push stalls after this many bytes.
const STALL_AFTER: u64 = 5 * 1024 * 1024 / 2;

/// Interrupted pushes are continued where the backend can resume.
pub async fn resume(subject: Subject) {
    let store = subject.store;
    let blob = GeneratedBlob::new(4 * 1024 * 1024 + 1234, 77);
    let descriptor = blob.descriptor(LAYER);
    let bytes = blob.to_bytes();
    if !store.capabilities().resume {
        assert_eq!(ok(store.partial(&descriptor).await, "partial"), 0);
        let err = store
            .push_opts(
                &descriptor,
                Body::from_bytes(bytes.slice(1..)),
                PushOptions::resumed(1),
            )
            .await
            .expect_err("a resumed push without the capability");
        assert_kind(&err, |e| matches!(e, Error::Unsupported { .. }), "resume");
        return;
    }

    // The body yields the first STALL_AFTER bytes, then stalls; once the
    // backend has taken them all, the push is dropped.
    let (stalled, reached) = tokio::sync::oneshot::channel::<()>();
    let mut signal = Some(stalled);
    let head = bytes.slice(..STALL_AFTER as usize);
    let chunks: Vec<crate::Result<Bytes>> = head
        .chunks(1024 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stalling = stream::iter(chunks).chain(stream::poll_fn(move |_| {
        if let Some(signal) = signal.take() {
            let _ = signal.send(());
        }
        Poll::<Option<crate::Result<Bytes>>>::Pending
    }));
    let push = {
        let (store, descriptor) = (store.clone(), descriptor.clone());
        tokio::spawn(async move {
            store
                .push(&descriptor, Body::new(descriptor.size, stalling))
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(30), reached)
        .await
        .unwrap_or_else(|_| panic!("the push never read its body to the stall"))
        .unwrap_or_else(|_| panic!("the push ended before the stall"));
    push.abort();
    assert!(push.await.is_err(), "the stalled push was not cancelled");
    assert!(
        !ok(store.exists(&descriptor).await, "exists"),
        "an interrupted push published the blob"
    );

    // What arrived may take a moment to settle (a writer thread draining).
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let held = ok(store.partial(&descriptor).await, "partial");
        if held > 0 || Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        held > 0 && held <= STALL_AFTER,
        "after {STALL_AFTER} bytes arrived the backend offers {held} to resume from"
    );
    ok(
        store
            .push_opts(
                &descriptor,
                Body::from_bytes(bytes.slice(held as usize..)),
                PushOptions::resumed(held),
            )
            .await,
        "push the rest",
    );
    let body = ok(store.fetch(&descriptor).await, "fetch the resumed blob");
    let fetched = ok(body.bytes(descriptor.size).await, "read the resumed blob");
    assert!(fetched == bytes, "the resumed blob differs");
    assert_eq!(
        ok(store.partial(&descriptor).await, "partial"),
        0,
        "a finished push left a partial"
    );

    // A partial that is not the start of the blob is found out and
    // dropped: the resumed push fails and the whole push then works.
    let other = GeneratedBlob::new(3 * 1024 * 1024, 78);
    let other_descriptor = other.descriptor(LAYER);
    let wrong = Bytes::from(vec![0u8; 2 * 1024 * 1024]);
    let failing = stream::iter([
        Ok(wrong),
        Err(Error::InvalidInput {
            what: "test source".into(),
            reason: "cut off".into(),
        }),
    ]);
    let _ = store
        .push(&other_descriptor, Body::new(other_descriptor.size, failing))
        .await;
    let held = ok(store.partial(&other_descriptor).await, "partial");
    if held > 0 {
        let rest = other.to_bytes().slice(held as usize..);
        let err = store
            .push_opts(
                &other_descriptor,
                Body::from_bytes(rest),
                PushOptions::resumed(held),
            )
            .await
            .expect_err("a wrong partial");
        assert_kind(
            &err,
            |e| matches!(e, Error::DigestMismatch { .. }),
            "resume on a wrong partial",
        );
        assert!(!ok(store.exists(&other_descriptor).await, "exists"));
    }
    ok(
        store.push(&other_descriptor, other.body()).await,
        "push whole",
    );
    assert!(ok(store.exists(&other_descriptor).await, "exists"));
}
