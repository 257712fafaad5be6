//! Checks of the optional operations: mount, ranged fetches and the
//! repository catalog, each asserted where the capability is claimed and
//! `Unsupported` where it is not.

use super::support::*;

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
