//! Issue 22 §1, nothing destroyed: `cp` into an archive that exists adds
//! to it; a file that is no archive is never overwritten; a copy by digest
//! moves no tag and is listed (untagged) where it lands; `pull` keeps the
//! files that are there; deletes ask first.

use std::path::Path;

use crate::common::{digest, json, ok, registry, run, seed_image};

fn tags(dir: &Path, target: &str) -> Vec<String> {
    let listed = json(dir, &["tags", target]);
    listed["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t.as_str().expect("tag").to_owned())
        .collect()
}

/// What `index.json` of the layout at `dir` lists: (ref name, digest).
fn entries(dir: &Path) -> Vec<(Option<String>, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("json");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .map(str::to_owned),
                m["digest"].as_str().expect("digest").to_owned(),
            )
        })
        .collect()
}

#[test]
fn cp_into_an_archive_adds_to_what_it_holds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let one = seed_image(&path.join("src"), "v1", b"one\n");
    let two = seed_image(&path.join("src"), "v2", b"two\n");
    std::fs::write(path.join("sig.txt"), b"signed\n").expect("write");
    ok(
        path,
        &[
            "attach",
            "oci:./src:v1",
            "sig.txt",
            "--artifact-type",
            "application/vnd.example.sig",
        ],
    );

    // Into a directory that does not exist yet: it is made, as for oci:.
    let archive = "oci-archive:./out/sub/a.tar";
    ok(
        path,
        &["cp", "-r", "oci:./src:v1", &format!("{archive}:v1")],
    );
    ok(path, &["cp", "oci:./src:v2", &format!("{archive}:v2")]);
    let held = tags(path, archive);
    assert!(
        held.contains(&"v1".to_owned()) && held.contains(&"v2".to_owned()),
        "{held:?}"
    );
    assert!(
        held.iter().any(|t| t.starts_with("sha256-")),
        "v1's referrer was lost: {held:?}"
    );
    assert_eq!(
        digest(&json(path, &["resolve", &format!("{archive}:v1")])),
        one
    );
    assert_eq!(
        digest(&json(path, &["resolve", &format!("{archive}:v2")])),
        two
    );
    let found = json(path, &["discover", &format!("{archive}:v1")]);
    assert!(
        found.to_string().contains("application/vnd.example.sig"),
        "{found}"
    );
    // Nothing beside it but the archive.
    let beside: Vec<_> = std::fs::read_dir(path.join("out/sub"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(beside, ["a.tar"], "temporaries left: {beside:?}");

    // A docker-archive keeps its other names too.
    ok(
        path,
        &["cp", "oci:./src:v1", "docker-archive:./d.tar:app:v1"],
    );
    ok(
        path,
        &["cp", "oci:./src:v2", "docker-archive:./d.tar:tool:v2"],
    );
    assert_eq!(
        digest(&json(path, &["resolve", "docker-archive:./d.tar:app:v1"])),
        one
    );
    assert_eq!(
        digest(&json(path, &["resolve", "docker-archive:./d.tar:tool:v2"])),
        two
    );

    // --overwrite starts the archive afresh.
    ok(
        path,
        &[
            "cp",
            "--overwrite",
            "oci:./src:v2",
            &format!("{archive}:only"),
        ],
    );
    assert_eq!(tags(path, archive), ["only"]);
}

#[test]
fn cp_never_overwrites_a_file_that_is_no_archive() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    seed_image(&path.join("src"), "v1", b"one\n");
    std::fs::write(path.join("notes.txt"), b"my notes\n").expect("write");
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec!["cp"];
        args.extend_from_slice(extra);
        args.extend(["oci:./src:v1", "oci-archive:./notes.txt:v1"]);
        let refused = run(path, &args);
        assert_eq!(refused.status.code(), Some(1), "{refused:?}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("not an image archive"), "{said}");
        assert_eq!(
            std::fs::read(path.join("notes.txt")).expect("read"),
            b"my notes\n"
        );
    }
    let beside: Vec<_> = std::fs::read_dir(path)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(beside.is_empty(), "temporaries left: {beside:?}");
}

#[test]
fn a_copy_by_digest_moves_no_tag_and_is_listed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let image = seed_image(&path.join("src"), "v1", b"by digest\n");
    let source = format!("oci:./src@{image}");

    // To a registry: pushed by digest, no `latest`.
    let repository = registry("bydigest");
    let copied = json(path, &["cp", &source, &repository]);
    assert_eq!(
        copied["copied"][0]["tag"],
        serde_json::Value::Null,
        "{copied}"
    );
    assert_eq!(
        digest(&json(path, &["resolve", &format!("{repository}@{image}")])),
        image
    );
    let latest = run(path, &["resolve", &format!("{repository}:latest")]);
    assert!(!latest.status.success(), "a copy by digest tagged latest");

    // To a layout: an untagged entry, which gc keeps and skopeo reads.
    ok(path, &["cp", &source, "oci:./bydigest"]);
    assert_eq!(entries(&path.join("bydigest")), [(None, image.clone())]);
    let collected = json(path, &["gc", "oci:./bydigest", "--grace", "0", "--force"]);
    assert_eq!(
        collected["blobs"].as_array().map(Vec::len),
        Some(0),
        "{collected}"
    );
    let skopeo = orca_testkit::require_program("skopeo", "scripts/setup (apt-get install skopeo)");
    let inspected = std::process::Command::new(skopeo)
        .current_dir(path)
        .args(["inspect", "--raw", "oci:./bydigest"])
        .output()
        .expect("run skopeo");
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    // Copied again, and then tagged: one entry, the tagged one.
    ok(path, &["cp", &source, "oci:./bydigest"]);
    assert_eq!(entries(&path.join("bydigest")).len(), 1);
    ok(path, &["tag", &format!("oci:./bydigest@{image}"), "named"]);
    assert_eq!(
        entries(&path.join("bydigest")),
        [(Some("named".to_owned()), image.clone())]
    );
}

#[test]
fn pull_keeps_the_files_that_are_there() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    std::fs::write(path.join("report.txt"), b"new report\n").expect("write");
    ok(path, &["push", "oci:./art:v1", "report.txt"]);
    let out = path.join("out");
    std::fs::create_dir_all(&out).expect("dir");
    std::fs::write(out.join("report.txt"), b"my own report\n").expect("write");
    let refused = run(path, &["pull", "oci:./art:v1", "-o", "out"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("--overwrite") && said.contains("report.txt"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(out.join("report.txt")).expect("read"),
        b"my own report\n"
    );
    let leftovers = std::fs::read_dir(&out).expect("dir").count();
    assert_eq!(leftovers, 1, "the refused pull left files");
    ok(path, &["pull", "oci:./art:v1", "-o", "out", "--overwrite"]);
    assert_eq!(
        std::fs::read(out.join("report.txt")).expect("read"),
        b"new report\n"
    );
}

/// Issue 22 §4: tag, untag and attach rewrite an archive as cp does (what
/// it held stays); deletes are refused with what to do instead, never
/// "not found" for a tag `tags` lists.
#[test]
fn write_commands_on_archives_rewrite_them_or_say_why_not() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let image = seed_image(&path.join("src"), "v1", b"archived\n");
    let archive = "oci-archive:./a.tar";
    ok(path, &["cp", "oci:./src:v1", &format!("{archive}:multi")]);
    ok(path, &["tag", &format!("{archive}:multi"), "extra"]);
    assert_eq!(tags(path, archive), ["extra", "multi"]);
    ok(path, &["untag", &format!("{archive}:extra")]);
    assert_eq!(tags(path, archive), ["multi"]);
    std::fs::write(path.join("sig.txt"), b"signed\n").expect("write");
    ok(
        path,
        &[
            "attach",
            &format!("{archive}:multi"),
            "sig.txt",
            "--artifact-type",
            "application/vnd.example.sig",
        ],
    );
    let found = json(path, &["discover", &format!("{archive}:multi")]);
    assert!(
        found.to_string().contains("application/vnd.example.sig"),
        "{found}"
    );
    assert_eq!(
        digest(&json(path, &["resolve", &format!("{archive}:multi")])),
        image
    );
    for args in [
        vec!["manifest", "delete", "-f", "oci-archive:./a.tar:multi"],
        vec![
            "blob",
            "delete",
            "-f",
            "oci-archive:./a.tar@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
    ] {
        let refused = run(path, &args);
        assert_eq!(refused.status.code(), Some(2), "{refused:?}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains("archives are read-only for this command"),
            "{said}"
        );
    }
    assert_eq!(
        tags(path, archive).first().map(String::as_str),
        Some("multi")
    );

    ok(
        path,
        &["cp", "oci:./src:v1", "docker-archive:./d.tar:app:v1"],
    );
    ok(path, &["tag", "docker-archive:./d.tar:app:v1", "v2"]);
    assert_eq!(
        digest(&json(path, &["resolve", "docker-archive:./d.tar:app:v2"])),
        image
    );
    assert_eq!(
        digest(&json(path, &["resolve", "docker-archive:./d.tar:app:v1"])),
        image
    );
}
