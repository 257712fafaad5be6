//! Blobs, tags, repositories and garbage collection through the CLI: blob
//! commands (a FIFO and stdin read once), tag listing and paging, every
//! tag copied, repositories listed (a registry's under a prefix), and gc
//! with its grace period and the fallback tags it drops.

use crate::common::{digest, json, ok, registry, run, s3};

#[test]
fn blobs_tags_repositories_and_gc() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    std::fs::write(path.join("blob.bin"), vec![9u8; 3 * 1024 * 1024 + 5]).expect("write");
    for base in ["oci:./layout".to_owned(), s3("blobs"), registry("blobs")] {
        let put = json(path, &["blob", "put", &base, "blob.bin"]);
        let blob = digest(&put);
        assert_eq!(put["size"], 3 * 1024 * 1024 + 5);
        let at = format!("{base}@{blob}");
        let head = json(path, &["blob", "head", &at]);
        assert_eq!(head["size"], 3 * 1024 * 1024 + 5, "{base}");
        let out = path.join("blob.out");
        json(
            path,
            &["blob", "get", &at, "-o", out.to_str().expect("utf-8")],
        );
        assert_eq!(
            std::fs::read(&out).expect("read"),
            std::fs::read(path.join("blob.bin")).expect("read")
        );
        std::fs::remove_file(&out).expect("remove");
        // Deleting asks first; a script (no terminal) must say --force.
        let refused = crate::common::run(path, &["blob", "delete", &at]);
        assert_eq!(refused.status.code(), Some(2), "{base}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("--force"),
            "{refused:?}"
        );
        json(path, &["blob", "head", &at]);
        json(path, &["blob", "delete", "-f", &at]);
        let gone = crate::common::run(path, &["blob", "head", &at]);
        assert_eq!(gone.status.code(), Some(3), "not found: {base}");
    }

    // Tags: more of them, some filtered, paged, removed; every tag copied.
    std::fs::write(path.join("note.txt"), b"note\n").expect("write");
    let pushed = json(path, &["push", "oci:./tags:v1", "note.txt"]);
    let tagged = json(path, &["tag", "oci:./tags:v1", "v2", "v3"]);
    assert_eq!(digest(&tagged["manifest"]), digest(&pushed));
    json(path, &["attach", "oci:./tags:v1", "note.txt"]);
    let all = json(path, &["tags", "oci:./tags"]);
    assert_eq!(all["tags"].as_array().map(Vec::len), Some(4), "{all}");
    let plain = json(path, &["tags", "oci:./tags", "--exclude-digest-tags"]);
    assert_eq!(plain["tags"], serde_json::json!(["v1", "v2", "v3"]));
    let page = json(
        path,
        &[
            "tags",
            "oci:./tags",
            "--exclude-digest-tags",
            "--last",
            "v1",
            "-n",
            "1",
        ],
    );
    assert_eq!(page["tags"], serde_json::json!(["v2"]));
    json(path, &["untag", "oci:./tags:v3"]);
    let repository = registry("all-tags");
    let copied = json(path, &["cp", "--all-tags", "oci:./tags", &repository]);
    assert_eq!(
        copied["copied"].as_array().map(Vec::len),
        Some(2),
        "{copied}"
    );
    let remote = json(path, &["tags", &repository]);
    assert_eq!(remote["tags"], serde_json::json!(["v1", "v2"]));
    let host = repository.split('/').next().expect("host");
    let repositories = json(path, &["repos", host]);
    let name = repository.split_once('/').expect("name").1;
    assert!(
        repositories["repositories"]
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r == name),
        "{repositories}"
    );
    // HOST/PREFIX lists the repositories under the prefix only.
    ok(
        path,
        &["cp", "oci:./tags:v1", &format!("{repository}/inner:v1")],
    );
    let under = json(path, &["repos", &repository]);
    assert_eq!(
        under["repositories"],
        serde_json::json!([format!("{name}/inner")])
    );

    // A deleted manifest's blobs are garbage. Written just now, they are
    // within the default grace period (and the referrer left without its
    // subject is a young manifest, which keeps what it names): gc keeps
    // them.
    let refused = run(path, &["manifest", "delete", "oci:./tags:v2"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    json(path, &["resolve", "oci:./tags:v2"]);
    json(path, &["manifest", "delete", "--force", "oci:./tags:v2"]);
    let kept = json(path, &["gc", "oci:./tags"]);
    assert_eq!(kept["blobs"].as_array().map(Vec::len), Some(0), "{kept}");
    assert_eq!(kept["grace_seconds"], 24 * 60 * 60, "{kept}");
    // No grace at all only with --force.
    let refused = run(path, &["gc", "oci:./tags", "--grace", "0"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--force"),
        "{refused:?}"
    );
    let dry = json(path, &["gc", "oci:./tags", "--dry-run", "--grace", "0"]);
    assert_eq!(dry["removed"], false);
    let found = dry["blobs"].as_array().map(Vec::len).unwrap_or(0);
    assert!(found >= 1, "{dry}");
    // The referrers index of the deleted manifest goes with it, and the dry
    // run names its fallback tag.
    let fallback = dry["tags"][0].as_str().unwrap_or_default().to_owned();
    assert!(fallback.starts_with("sha256-"), "{dry}");
    let said = ok(path, &["gc", "oci:./tags", "--dry-run", "--grace", "0"]);
    assert!(
        said.contains(&format!("would untag {fallback} (referrers indexes")),
        "{said}"
    );
    let collected = json(path, &["gc", "oci:./tags", "--grace", "0", "--force"]);
    assert_eq!(collected["blobs"].as_array().map(Vec::len), Some(found));
    assert_eq!(collected["tags"], dry["tags"]);
    let left = json(path, &["tags", "oci:./tags"]);
    assert!(
        !left["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .any(|t| t == fallback.as_str()),
        "{left}"
    );
    let version = json(path, &["version"]);
    assert!(version["version"].is_string());
}

/// `blob put` reads what can be read only once (a FIFO, stdin) once: it is
/// spooled, then pushed as a file is.
#[test]
fn blob_put_reads_a_fifo_and_stdin_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    std::fs::create_dir(path.join("layout")).expect("mkdir");
    let fifo = path.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, b"through a fifo").expect("write fifo"))
    };
    let pushed = json(
        path,
        &["blob", "put", "oci:./layout", fifo.to_str().expect("utf-8")],
    );
    writer.join().expect("writer");
    assert_eq!(pushed["size"], 14, "{pushed}");
    let mut child = crate::common::orca(path)
        .current_dir(path)
        .args(["blob", "put", "oci:./layout", "-", "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"through a fifo").expect("write stdin");
    }
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "{output:?}");
    let from_stdin: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(from_stdin["digest"], pushed["digest"]);
    let back = ok(
        path,
        &[
            "blob",
            "get",
            &format!("oci:./layout@{}", digest(&pushed)),
            "-o",
            "-",
        ],
    );
    assert_eq!(back, "through a fifo");
}
