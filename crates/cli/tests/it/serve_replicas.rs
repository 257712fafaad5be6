//! Several `orca serve` on one store (issue 23 §4, §5): an upload session
//! lives in the store, so a server killed mid-upload is replaced and the
//! client's next `PATCH` continues, and a session started at one replica
//! is finished at another; replicas on one directory or one bucket lose no
//! tag or referrer under concurrent pushes through both, while a garbage
//! collection loop runs.

use std::path::Path;

use crate::common::{bucket, json, ok, unique};
use crate::http::{send, sha256};
use crate::serve::Serving;

const MIB: usize = 1024 * 1024;

fn chunk_upload_survives(root: &str) {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let data: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&data);
    let first = Serving::start(path, root, &[]);
    let started = send(first.host(), "POST", "/v2/kept/blobs/uploads/", &[], b"");
    assert_eq!(started.status, 202, "{}", started.text());
    let location = started.header("location").expect("Location").to_owned();
    let chunk = |host: &str, from: usize, to: usize| {
        send(
            host,
            "PATCH",
            &location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &format!("{from}-{}", to - 1)),
            ],
            &data[from..to],
        )
    };
    let patched = chunk(first.host(), 0, MIB);
    assert_eq!(patched.status, 202, "{}", patched.text());
    assert_eq!(patched.header("range"), Some(&*format!("0-{}", MIB - 1)));

    // SIGKILL, mid-upload; a new server on the same store.
    drop(first);
    let second = Serving::start(path, root, &[]);
    let status = send(second.host(), "GET", &location, &[], b"");
    assert_eq!(status.status, 204, "{}", status.text());
    assert_eq!(status.header("range"), Some(&*format!("0-{}", MIB - 1)));
    // A chunk out of order is refused, and says where the upload stands.
    let skipped = chunk(second.host(), 2 * MIB, 3 * MIB);
    assert_eq!(skipped.status, 416, "{}", skipped.text());
    let patched = chunk(second.host(), MIB, 2 * MIB);
    assert_eq!(patched.status, 202, "{}", patched.text());

    // The last chunk and the close go to another replica.
    let third = Serving::start(path, root, &[]);
    let closed = send(
        third.host(),
        "PUT",
        &format!("{location}?digest={digest}"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &format!("{}-{}", 2 * MIB, 3 * MIB - 1)),
        ],
        &data[2 * MIB..],
    );
    assert_eq!(closed.status, 201, "{}", closed.text());
    let fetched = send(
        second.host(),
        "GET",
        &format!("/v2/kept/blobs/{digest}"),
        &[],
        b"",
    );
    assert_eq!(fetched.status, 200);
    assert!(fetched.body == data, "the blob came back different");
    let gone = send(second.host(), "GET", &location, &[], b"");
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert!(
        gone.text().contains("BLOB_UPLOAD_UNKNOWN"),
        "{}",
        gone.text()
    );
}

#[test]
fn an_upload_survives_a_killed_server_on_a_directory() {
    let dir = tempfile::tempdir().expect("temporary directory");
    chunk_upload_survives(&format!("oci:{}", dir.path().display()));
    // Nothing of the session is left beside the layout.
    let uploads = dir.path().join("kept/uploads");
    let left = std::fs::read_dir(&uploads).map_or(0, |d| d.flatten().count());
    assert_eq!(left, 0, "session pieces left in {}", uploads.display());
}

#[test]
fn an_upload_survives_a_killed_server_on_a_bucket() {
    chunk_upload_survives(&format!("s3://{}/{}", bucket(), unique("kept")));
}

/// Four client processes push and attach through two replicas at once,
/// each image through one and its referrer through the other, while a
/// collection loop runs on the store: every tag and referrer is there at
/// the end, and every image is whole.
/// `collect`: a target the test collects with `orca gc` in a loop; else
/// the servers collect themselves (`serve_args`).
fn replicas_lose_nothing(root: &str, collect: Option<&str>, serve_args: &[&str]) {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path().to_owned();
    let a = Serving::start(&path, root, serve_args);
    let b = Serving::start(&path, root, serve_args);
    let hosts = [a.host().to_owned(), b.host().to_owned()];
    // A blob nothing names, older than the grace by the end: collected.
    let orphan = b"nothing names this blob";
    let orphan_digest = sha256(orphan);
    let pushed = send(
        &hosts[0],
        "POST",
        &format!("/v2/shared/app/blobs/uploads/?digest={orphan_digest}"),
        &[("Content-Type", "application/octet-stream")],
        orphan,
    );
    assert_eq!(pushed.status, 201, "{}", pushed.text());
    let started = std::time::Instant::now();
    const CLIENTS: usize = 4;
    const EACH: usize = 25;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (path, collect, stop) = (path.clone(), collect.map(str::to_owned), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            let Some(collect) = collect else {
                return 1;
            };
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let output =
                    crate::common::run(&path, &["gc", &collect, "--grace", "5s", "--force"]);
                // A repository with no layout yet is not an error of the
                // collector's making.
                // Under a steady stream of tag changes a collection may give
                // up (said, nothing deleted); it is tried again.
                let text = String::from_utf8_lossy(&output.stderr);
                assert!(
                    output.status.success() || text.contains("tags changed during each"),
                    "gc failed: {text}"
                );
                runs += 1;
            }
            runs
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (path, hosts) = (path.clone(), hosts.clone());
            std::thread::spawn(move || {
                let dir = path.join(format!("client-{client}"));
                std::fs::create_dir_all(&dir).expect("mkdir");
                for i in 0..EACH {
                    let file = dir.join("note.txt");
                    std::fs::write(&file, format!("client {client} image {i}\n")).expect("write");
                    let sig = dir.join("sig.json");
                    std::fs::write(&sig, format!("{{\"signed\": \"{client}-{i}\"}}"))
                        .expect("write");
                    let (push_at, attach_at) =
                        (&hosts[(client + i) % 2], &hosts[(client + i + 1) % 2]);
                    let tag = format!("c{client}-{i}");
                    ok(
                        &dir,
                        &["push", &format!("{push_at}/shared/app:{tag}"), "note.txt"],
                    );
                    ok(
                        &dir,
                        &[
                            "attach",
                            &format!("{attach_at}/shared/app:{tag}"),
                            "sig.json",
                            "--artifact-type",
                            "application/vnd.example.sig",
                        ],
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = collector.join().expect("collector");
    assert!(runs >= 1, "the collector never ran");
    // The orphan outlived the grace (5 s) and a collection after it.
    let wait = std::time::Duration::from_secs(8).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    if let Some(collect) = collect {
        ok(&path, &["gc", collect, "--grace", "5s", "--force"]);
    }
    // The servers' own loop gets its turn (within half a minute).
    let head = || {
        send(
            &hosts[1],
            "HEAD",
            &format!("/v2/shared/app/blobs/{orphan_digest}"),
            &[],
            b"",
        )
    };
    let mut orphan_now = head();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while orphan_now.status != 404 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        orphan_now = head();
    }
    assert_eq!(
        orphan_now.status,
        404,
        "the collection never took the orphan blob; the servers said:\n{}\n{}",
        a.log(),
        b.log()
    );

    // Through either replica: every tag, each image whole, one referrer.
    let tags = json(&path, &["tags", &format!("{}/shared/app", hosts[0])]);
    let tags: Vec<String> = tags["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .filter(|t| !t.starts_with("sha256-"))
        .collect();
    assert_eq!(tags.len(), CLIENTS * EACH, "tags lost: {tags:?}");
    for client in 0..CLIENTS {
        for i in 0..EACH {
            let at = &hosts[(client + i) % 2];
            let target = format!("{at}/shared/app:c{client}-{i}");
            let out = path.join(format!("pulled-{client}-{i}"));
            std::fs::create_dir_all(&out).expect("mkdir");
            ok(
                &path,
                &["pull", &target, "-o", out.to_str().expect("utf-8")],
            );
            assert_eq!(
                std::fs::read_to_string(out.join("note.txt")).expect("pulled"),
                format!("client {client} image {i}\n")
            );
            let referrers = json(&path, &["discover", &target]);
            let listed = referrers["referrers"].as_array().map_or(0, Vec::len);
            assert_eq!(listed, 1, "{target}: {referrers}");
        }
    }
}

#[test]
fn two_replicas_on_a_directory_lose_no_tag_or_referrer() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = format!("oci:{}", dir.path().display());
    let collect = format!("oci:{}", dir.path().join("shared/app").display());
    replicas_lose_nothing(&root, Some(&collect), &[]);
    blobs_hash_to_their_names(&dir.path().join("shared/app"));
}

#[test]
fn two_replicas_on_a_bucket_lose_no_tag_or_referrer() {
    let root = format!("s3://{}/{}", bucket(), unique("replicas"));
    // Here the servers collect, every 3 s, beside the pushes.
    replicas_lose_nothing(&root, None, &["-v", "--gc-every", "3s", "--gc-grace", "5s"]);
}

/// Every blob of the layout at `dir` hashes to its name.
fn blobs_hash_to_their_names(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    for entry in std::fs::read_dir(&blobs).expect("blobs").flatten() {
        let bytes = std::fs::read(entry.path()).expect("read blob");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(
            sha256(&bytes),
            format!("sha256:{name}"),
            "a blob does not hash to its name"
        );
    }
}
