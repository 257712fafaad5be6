//! A storage's one-level listing agrees with its full listing, so a walk
//! over a tree of layouts (a root's catalog) finds what a full listing
//! would, reading only the levels it passes.

use super::*;
use crate::layout::Level;

/// Where the storage lists one level, each level it gives holds exactly
/// the objects and the next parts of longer keys that the full listing
/// shows under that prefix, sorted (`a-c` before `a`'s own level is
/// read: key order, not name order); where it does not, the full listing
/// shows every key a walk would look for.
pub async fn a_level_holds_what_is_directly_under_it<S: ObjectStorage + Clone>(
    subject: LayoutSubject<S>,
) {
    let storage = subject.storage.clone();
    let keys = [
        "tree/a/oci-layout",
        "tree/a/index.json",
        "tree/a/blobs/sha256/00",
        "tree/a/b/oci-layout",
        "tree/a-c/oci-layout",
        "tree/a0/x/y/oci-layout",
        "tree/z",
    ];
    for key in keys {
        ok(
            storage
                .write(key, Bytes::from_static(b"{}"), Condition::Absent)
                .await,
            "write",
        );
    }
    let listed: Vec<String> = ok(storage.list("tree/").await, "list")
        .into_iter()
        .map(|listed| listed.key)
        .collect();
    for key in keys {
        assert!(
            listed.iter().any(|k| k == key),
            "{key} not listed: {listed:?}"
        );
    }
    let expected = |prefix: &str| Level::of(prefix, listed.iter().map(String::as_str));
    let Some(top) = ok(storage.list_level("tree/").await, "list a level") else {
        return;
    };
    assert_eq!(
        top,
        Level {
            objects: vec!["z".into()],
            below: vec!["a".into(), "a-c".into(), "a0".into()],
        }
    );
    for prefix in [
        "tree/",
        "tree/a/",
        "tree/a/b/",
        "tree/a0/",
        "tree/a0/x/",
        "tree/none/",
    ] {
        let level = ok(storage.list_level(prefix).await, "list a level");
        assert_eq!(level, Some(expected(prefix)), "the level under {prefix}");
    }
    assert_eq!(
        expected("tree/a/"),
        Level {
            objects: vec!["index.json".into(), "oci-layout".into()],
            below: vec!["b".into(), "blobs".into()],
        }
    );
}
