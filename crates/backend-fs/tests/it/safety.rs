//! Crash and concurrency safety: failed, cancelled and killed pushes publish
//! nothing; concurrent processes never lose a tag; readers never see a
//! half-written `index.json`; concurrent processes never lose a referrer.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, stream};
use orca_core::layout::LayoutIndex;
use orca_core::{Body, Descriptor, MediaType};

use crate::common::{leftovers, push_image, store};

const LAYOUT_ENV: &str = "ORCA_TEST_LAYOUT";
const PREFIX_ENV: &str = "ORCA_TEST_PREFIX";

/// In a child process: the layout the parent chose. Otherwise a fresh one.
fn layout_for_test() -> (Option<tempfile::TempDir>, PathBuf, String) {
    match std::env::var_os(LAYOUT_ENV) {
        Some(root) => {
            let prefix = std::env::var(PREFIX_ENV).expect("prefix for the child");
            (None, PathBuf::from(root), prefix)
        }
        None => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let root = dir.path().join("layout");
            (Some(dir), root, "solo".to_owned())
        }
    }
}

fn child(test: &str, root: &std::path::Path, prefix: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(LAYOUT_ENV, root)
        .env(PREFIX_ENV, prefix);
    command
}

/// Tags one manifest 100 times and finds all 100 tags. Run alone it uses
/// its own layout; `two_processes_never_lose_a_tag` runs it as a child.
#[tokio::test]
async fn tagger() {
    let (_guard, root, prefix) = layout_for_test();
    let store = store(&root);
    let manifest = push_image(&store, "shared", None).await;
    for i in 0..100 {
        store
            .tag(&manifest, &format!("{prefix}-{i:03}"))
            .await
            .expect("tag");
    }
    let tags = store.tags_all().await.expect("tags");
    let mine = tags
        .iter()
        .filter(|t| t.starts_with(&format!("{prefix}-")))
        .count();
    assert_eq!(mine, 100, "tags of {prefix}: {tags:?}");
}

#[tokio::test]
async fn two_processes_never_lose_a_tag() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("layout");
    let mut children: Vec<_> = ["a", "b"]
        .iter()
        .map(|prefix| {
            child("safety::tagger", &root, prefix)
                .spawn()
                .expect("spawn tagger")
        })
        .collect();
    for c in &mut children {
        let status = c.wait().expect("wait for tagger");
        assert!(status.success(), "a tagger process failed: {status}");
    }
    let tags = store(&root).tags_all().await.expect("tags");
    assert_eq!(
        tags.len(),
        200,
        "tags after 2 processes x 100 tag operations: {tags:?}"
    );
}

#[tokio::test]
async fn readers_never_see_a_half_written_index() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("layout");
    let store = store(&root);
    let manifest = push_image(&store, "readers", Some("first")).await;
    let index_path = root.join("index.json");
    let reader = std::thread::spawn(move || {
        let mut reads = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let bytes = std::fs::read(&index_path).expect("index.json is always there");
            LayoutIndex::parse(&bytes, "index.json").expect("index.json is always whole");
            reads += 1;
            if std::fs::metadata(index_path.with_file_name("done")).is_ok() {
                break;
            }
        }
        reads
    });
    for i in 0..150 {
        store.tag(&manifest, &format!("t{i}")).await.expect("tag");
    }
    std::fs::write(root.join("done"), b"").expect("signal");
    let reads = reader.join().expect("reader");
    assert!(reads > 0);
}

/// Bytes a stalling body yields before it stalls.
const STALL_AFTER: u64 = 1024 * 1024;

fn stalling_body(descriptor: &Descriptor) -> Body {
    let first = Bytes::from(vec![7u8; STALL_AFTER as usize]);
    Body::new(
        descriptor.size,
        stream::iter([Ok(first)]).chain(stream::pending()),
    )
}

fn wait_for_temp_file(root: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while leftovers(root).is_empty() {
        assert!(Instant::now() < deadline, "the push never started writing");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn big_descriptor() -> Descriptor {
    Descriptor::of(MediaType::OCI_LAYER_TAR, &vec![7u8; 8 * 1024 * 1024])
}

/// A push that stalls is cancelled: nothing appears at the blob path, and
/// the bytes that arrived stay in the blob's partial file, from which a
/// later push continues. As a child of `killed_pushes_publish_nothing`
/// it stalls until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher() {
    let (_guard, root, prefix) = layout_for_test();
    let store = store(&root);
    let desc = big_descriptor();
    let task = {
        let (store, desc) = (store.clone(), desc.clone());
        tokio::spawn(async move { store.push(&desc, stalling_body(&desc)).await })
    };
    if prefix != "solo" {
        let outcome = task.await;
        panic!("the stalled push was meant to be killed, it ended: {outcome:?}");
    }
    // Cancelled once the bytes before the stall are on disk.
    let partial_file = root
        .join("ingest")
        .join(format!("partial-sha256-{}", desc.digest.hex()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&partial_file).map_or(0, |m| m.len()) < STALL_AFTER {
        assert!(
            Instant::now() < deadline,
            "the push never wrote its first bytes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert!(task.await.is_err(), "the push was not cancelled");
    assert!(
        !store.exists(&desc).await.expect("exists"),
        "a cancelled push published a blob"
    );
    let held = wait_for_partial(&store, &desc, STALL_AFTER).await;
    assert_eq!(held, STALL_AFTER, "the partial file holds what arrived");
    resume(&store, &desc, held).await;
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
}

/// Waits until the partial file of `desc` holds `want` bytes (or, with
/// `want` zero, anything), and returns what it holds.
async fn wait_for_partial(store: &orca_core::Store, desc: &Descriptor, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = store.partial(desc).await.expect("partial");
        if (want == 0 && held > 0) || (want > 0 && held == want) {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "the partial file holds {held} bytes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Pushes the rest of `desc` from `held` and checks the whole blob.
async fn resume(store: &orca_core::Store, desc: &Descriptor, held: u64) {
    let rest = Bytes::from(vec![7u8; (desc.size - held) as usize]);
    store
        .push_opts(
            desc,
            Body::from_bytes(rest),
            orca_core::PushOptions::resumed(held),
        )
        .await
        .expect("resume the push");
    let bytes = store.fetch(desc).await.expect("fetch");
    let read: Vec<_> = bytes.collect().await;
    assert!(
        read.iter().all(Result::is_ok),
        "the resumed blob does not verify"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pushes_publish_nothing_and_resume() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("layout");
    let mut process = child("safety::pusher", &root, "child")
        .spawn()
        .expect("spawn pusher");
    wait_for_temp_file(&root);
    process.kill().expect("kill the pusher");
    process.wait().expect("reap the pusher");
    let store = store(&root);
    assert!(
        !store.exists(&big_descriptor()).await.expect("exists"),
        "a killed push published a blob"
    );
    assert!(
        !root
            .join("blobs/sha256")
            .join(big_descriptor().digest.hex())
            .exists()
    );
    // Whatever the killed process wrote is continued, not sent again.
    let held = store.partial(&big_descriptor()).await.expect("partial");
    assert!(held <= STALL_AFTER, "{held}");
    if held > 0 {
        resume(&store, &big_descriptor(), held).await;
    }
}

#[tokio::test]
async fn failed_pushes_leave_no_temporary_files() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("layout");
    let store = store(&root);
    let desc = Descriptor::of(MediaType::OCI_LAYER_TAR, b"expected bytes");
    let err = store
        .push(&desc, Body::from_bytes(&b"other  bytes!!"[..]))
        .await
        .expect_err("mismatch");
    assert!(
        matches!(err, orca_core::Error::DigestMismatch { .. }),
        "{err}"
    );
    assert!(!root.join("blobs/sha256").join(desc.digest.hex()).exists());
    assert!(
        leftovers(&root).is_empty(),
        "temporary files stayed: {:?}",
        leftovers(&root)
    );
}

#[tokio::test]
async fn first_write_creates_a_complete_layout() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("new");
    let store = store(&root);
    assert!(!root.exists(), "opening must not write");
    store
        .push_bytes(MediaType::OCI_LAYER_TAR, &b"first"[..])
        .await
        .expect("push");
    let marker = std::fs::read_to_string(root.join("oci-layout")).expect("oci-layout");
    assert_eq!(marker, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = std::fs::read(root.join("index.json")).expect("index.json");
    assert!(
        LayoutIndex::parse(&index, "index.json")
            .expect("parse")
            .is_empty()
    );
}

/// Attaches 25 referrers to one subject. Run alone it uses its own layout;
/// `four_processes_never_lose_a_referrer` runs it as a child.
#[tokio::test]
async fn attacher() {
    let (guard, root, _) = layout_for_test();
    let store = store(&root);
    let prefix = std::env::var(orca_testkit::ATTACH_PREFIX_ENV).unwrap_or_else(|_| "solo".into());
    orca_testkit::attach_many(&store, &prefix).await;
    if guard.is_some() {
        let subject = orca_testkit::attach_subject(&store).await;
        let listed = store.referrers(&subject, None).await.expect("referrers");
        assert_eq!(listed.manifests.len(), orca_testkit::ATTACHES_PER_PROCESS);
    }
}

#[tokio::test]
async fn four_processes_never_lose_a_referrer() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("layout");
    let env = [
        (LAYOUT_ENV.to_owned(), root.display().to_string()),
        (PREFIX_ENV.to_owned(), "attach".to_owned()),
    ];
    orca_testkit::attach_from_processes(&store(&root), "safety::attacher", &env).await;
}

/// What a push that never finished left in `ingest/` (a partial file kept
/// for resuming) is removed by the clean-up garbage collection runs — once
/// it is old, and never while a push holds it.
#[tokio::test]
async fn the_clean_up_removes_staging_of_pushes_that_died() {
    use orca_core::layout::ObjectStorage;

    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("layout");
    let backend = orca_backend_fs::open(&root).expect("open");
    let store = orca_core::Store::new(backend.clone());
    let size = 4 * 1024 * 1024;
    let descriptor = Descriptor::new(
        MediaType::OCI_LAYER_TAR,
        orca_core::Digest::sha256(b"never completes"),
        size,
    );
    let sent = stream::iter((0..2).map(|_| Ok(Bytes::from(vec![1u8; 1024 * 1024]))))
        .chain(stream::pending());
    let push = store.push(&descriptor, Body::new(size, sent));
    let held = tokio::time::timeout(Duration::from_millis(500), push).await;
    assert!(held.is_err(), "the stalled push ended: {held:?}");
    // The writer thread lets go of the file once the push is dropped.
    let deadline = Instant::now() + Duration::from_secs(5);
    let storage = backend.storage();
    let young = storage
        .clean_staging(Duration::from_secs(3600))
        .await
        .expect("clean-up");
    assert_eq!(young, 0, "young staging was removed");
    assert_eq!(leftovers(&root).len(), 1, "{:?}", leftovers(&root));
    let mut removed = 0;
    while removed == 0 && Instant::now() < deadline {
        removed = storage
            .clean_staging(Duration::ZERO)
            .await
            .expect("clean-up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(removed, 1);
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
}

/// The clean-up removes only the staging names the layout gives: what
/// others keep in `ingest/` stays however old (here a layout named
/// `app/ingest` made before the layout `app`, as a registry root holds
/// two repositories so named; its `oci-layout` and `index.json` sit in
/// `app`'s `ingest/`).
#[tokio::test]
async fn the_clean_up_leaves_what_others_keep_in_ingest() {
    use orca_core::layout::ObjectStorage;

    let dir = tempfile::tempdir().expect("temporary directory");
    let app = dir.path().join("app");
    // `app/ingest` first: a directory holding only `ingest/` is one being
    // made a layout, so `app` then opens too.
    let beside = store(&app.join("ingest"));
    let image = push_image(&beside, "beside", Some("v1")).await;
    let backend = orca_backend_fs::open(&app).expect("open");
    push_image(&orca_core::Store::new(backend.clone()), "app", Some("v1")).await;
    // A temporary file a dead process left: orca's to remove.
    std::fs::write(app.join("ingest").join("blob.1.2.3"), b"left").expect("write");
    let removed = backend
        .storage()
        .clean_staging(Duration::ZERO)
        .await
        .expect("clean-up");
    assert_eq!(removed, 1);
    assert!(!app.join("ingest").join("blob.1.2.3").exists());
    let found = beside
        .resolve(&orca_core::Selector::Tag("v1".into()))
        .await
        .expect("the layout beside kept its tag");
    assert_eq!(found.digest, image.digest);
    beside.fetch_bytes(&found).await.expect("and its manifest");
}

/// Backends review m18: a symlink planted at a blob's partial-file name
/// (in a shared layout's `ingest/`) is never followed: the file it points
/// at keeps its bytes, and the push still lands whole.
#[cfg(unix)]
#[tokio::test]
async fn m18_a_planted_partial_symlink_is_not_followed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("layout");
    let store = store(&root);
    push_image(&store, "first", Some("v1")).await;
    let outside = dir.path().join("precious");
    std::fs::write(&outside, b"precious bytes").expect("write");
    let data = b"a blob whose partial name was planted";
    let desc = Descriptor::of(MediaType::OCI_LAYER_TAR, data);
    let ingest = root.join("ingest");
    std::fs::create_dir_all(&ingest).expect("ingest");
    let planted = ingest.join(format!("partial-sha256-{}", desc.digest.hex()));
    std::os::unix::fs::symlink(&outside, &planted).expect("plant");
    let pushed = store.push(&desc, Body::from_bytes(&data[..])).await;
    assert_eq!(
        std::fs::read(&outside).expect("read"),
        b"precious bytes",
        "the push wrote through the planted link ({pushed:?})"
    );
    pushed.expect("the push goes on past the planted link");
    assert_eq!(store.fetch_bytes(&desc).await.expect("fetch"), &data[..]);
}

/// What a write of `index.json` answers names that write alone: a read of
/// the same file in between keeps it (the writer's compare still holds,
/// no false conflict), and once another write replaced the file it no
/// longer matches, even if the new file took the old one's inode and
/// times.
#[tokio::test]
async fn a_written_version_names_that_write_alone() {
    use orca_core::layout::{Changed, Condition, ObjectStorage};
    let dir = tempfile::tempdir().expect("temporary directory");
    let storage = orca_backend_fs::Directory::open(dir.path().join("layout"), false).expect("open");
    let first = storage
        .write_versioned(
            "index.json",
            Bytes::from_static(b"{\"a\":1}"),
            Condition::Absent,
        )
        .await
        .expect("first write")
        .expect("a directory names what it wrote");
    let (_, read) = storage
        .read("index.json", 1024)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(read, first, "a read of the same file names it as written");
    let second = storage
        .write_versioned(
            "index.json",
            Bytes::from_static(b"{\"a\":2}"),
            Condition::Matches(first.clone()),
        )
        .await
        .expect("the writer's compare holds after a read")
        .expect("version");
    assert_ne!(second, first);
    let stale = storage
        .write_versioned(
            "index.json",
            Bytes::from_static(b"{\"a\":3}"),
            Condition::Matches(first.clone()),
        )
        .await;
    assert!(
        matches!(stale, Err(orca_core::Error::Conflict { .. })),
        "a write that compared against a replaced file went through: {stale:?}"
    );
    match storage
        .read_changed("index.json", 1024, &first)
        .await
        .expect("read")
    {
        Changed::Yes(Some((bytes, _))) => assert_eq!(&bytes[..], b"{\"a\":2}"),
        other => panic!("a replaced file read as unchanged: {other:?}"),
    }
}
