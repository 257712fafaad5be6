//! Issue 22 §3: bundles are first-class. What `sync` writes into a layout,
//! an oci-archive or a bucket prefix is read back by every command through
//! one grammar (`oci:DIR:REPO:TAG`, `oci-archive:FILE:REPO:TAG`,
//! `s3://BUCKET/PREFIX:REPO:TAG`); `repos` lists a bundle's repositories;
//! the sync report names each image in that same grammar, so a line of it
//! can be pasted into a command.

use orca_testkit::RegistryServer;

use crate::common::{digest, json, ok, unique};
use crate::sync_support::{seed, write_config};

#[test]
fn every_bundle_grammar_reads_back_what_sync_wrote() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("bundled");
    seed(
        path,
        &prefix,
        &[("app", "1.0", "one"), ("tool", "1.0", "tool")],
    );
    std::fs::write(path.join("report.txt"), b"a report\n").expect("write");
    let layout = path.join("bundle");
    let archive = path.join("bundle.tar");
    let bucket = crate::common::s3("bundle");
    let config = write_config(
        path,
        &format!(
            "sync:\n\
             - source: {host}/{prefix}/\n  target: oci:{layout}\n\
             - source: {host}/{prefix}/\n  target: oci-archive:{archive}\n\
             - source: {host}/{prefix}/\n  target: {bucket}\n",
            host = registry.host(),
            layout = layout.display(),
            archive = archive.display(),
        ),
    );
    let report = json(path, &["sync", &config]);
    let images = report["images"].as_array().expect("images");
    assert_eq!(images.len(), 6, "{report}");
    for image in images {
        // The report's target and tag, pasted into a command.
        let named = format!(
            "{}:{}",
            image["target"].as_str().expect("target"),
            image["tag"].as_str().expect("tag")
        );
        let resolved = json(path, &["resolve", &named]);
        assert_eq!(
            Some(digest(&resolved).as_str()),
            image["sourceDigest"].as_str(),
            "{named}"
        );
        let inspected = json(path, &["inspect", &named]);
        assert_eq!(digest(&inspected), digest(&resolved), "{named}");
    }
    let expected = [format!("{prefix}/app"), format!("{prefix}/tool")];
    for bundle in [
        format!("oci:{}", layout.display()),
        format!("oci-archive:{}", archive.display()),
        bucket.clone(),
    ] {
        let listed = json(path, &["repos", &bundle]);
        assert_eq!(
            listed["repositories"],
            serde_json::json!(expected),
            "{bundle}"
        );
        let repository = format!("{bundle}:{prefix}/app");
        let tags = json(path, &["tags", &repository]);
        assert_eq!(tags["tags"], serde_json::json!(["1.0"]), "{repository}");
        // Every tag of one repository of the bundle, copied out.
        let out = unique("unbundled");
        ok(path, &["cp", "-a", &repository, &format!("oci:./{out}")]);
        let copied = json(path, &["tags", &format!("oci:./{out}")]);
        assert_eq!(copied["tags"], serde_json::json!(["1.0"]), "{repository}");
    }
    // Written into, by every write command, in the same grammar.
    for bundle in [format!("oci:{}", layout.display()), bucket.clone()] {
        let note = format!("{bundle}:{prefix}/notes:v1");
        ok(path, &["push", &note, "report.txt"]);
        let out = path.join(unique("pulled"));
        ok(path, &["pull", &note, "-o", out.to_str().expect("utf-8")]);
        assert_eq!(
            std::fs::read(out.join("report.txt")).expect("pulled"),
            b"a report\n"
        );
        ok(path, &["tag", &note, "v2"]);
        let tags = json(path, &["tags", &format!("{bundle}:{prefix}/notes")]);
        assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]), "{bundle}");
    }
}

/// Issue 22 §3: skopeo (1.9) reads only OCI media types from a layout, so
/// a Docker image copied as it is into one is not found by it; `cp
/// --image-format oci` converts it (new digests, said on stderr), and
/// skopeo reads the result.
#[test]
fn docker_media_types_are_converted_for_skopeo() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    crate::common::seed_image(&path.join("src"), "v1", b"docker image\n");
    let registry = RegistryServer::shared();
    let docker = format!("{}/{}:v1", registry.host(), unique("v2s2"));
    let skopeo = orca_testkit::require_program("skopeo", "scripts/setup (apt-get install skopeo)");
    let pushed = std::process::Command::new(&skopeo)
        .current_dir(path)
        .args([
            "copy",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
            "oci:./src:v1",
            &format!("docker://{docker}"),
        ])
        .output()
        .expect("skopeo");
    assert!(pushed.status.success(), "{pushed:?}");
    let inspected = json(path, &["inspect", &docker]);
    assert_eq!(
        inspected["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let skopeo_reads = |layout: &str| {
        std::process::Command::new(&skopeo)
            .current_dir(path)
            .args(["inspect", "--raw", &format!("oci:./{layout}:v1")])
            .output()
            .expect("skopeo")
            .status
            .success()
    };
    ok(path, &["cp", &docker, "oci:./kept:v1"]);
    assert!(
        !skopeo_reads("kept"),
        "skopeo read Docker media types after all"
    );
    let converted = crate::common::run(
        path,
        &["cp", "--image-format", "oci", &docker, "oci:./converted:v1"],
    );
    assert!(converted.status.success(), "{converted:?}");
    let said = String::from_utf8_lossy(&converted.stderr);
    assert!(
        said.contains("converted") && said.contains("is now"),
        "{said}"
    );
    assert!(
        skopeo_reads("converted"),
        "skopeo does not read the converted image"
    );
    let inspected = json(path, &["inspect", "oci:./converted:v1"]);
    assert_eq!(
        inspected["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_ne!(
        digest(&inspected),
        digest(&json(path, &["resolve", &docker]))
    );
}

#[test]
fn cp_all_tags_copies_a_bundle_whole_into_another_bundle() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    std::fs::write(path.join("a.txt"), b"in one/app\n").expect("write");
    std::fs::write(path.join("b.txt"), b"in two/x/y\n").expect("write");
    let one = json(path, &["push", "oci:./src:one/app:v1", "a.txt"]);
    let two = json(path, &["push", "oci:./src:two/x/y:v2", "b.txt"]);
    let bucket = crate::common::s3("whole");

    // Layout → archive → bucket → layout: every name kept, digests kept,
    // and each line of the output a target that can be typed.
    let out = ok(path, &["cp", "-a", "oci:./src", "oci-archive:./whole.tar"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!(
                "oci:./src:one/app:v1 -> oci-archive:./whole.tar:one/app:v1 {}",
                digest(&one)
            ),
            format!(
                "oci:./src:two/x/y:v2 -> oci-archive:./whole.tar:two/x/y:v2 {}",
                digest(&two)
            ),
        ],
        "{out}"
    );
    ok(path, &["cp", "-a", "oci-archive:./whole.tar", &bucket]);
    ok(path, &["cp", "-a", &bucket, "oci:./back"]);
    let names = json(path, &["tags", "oci:./back"]);
    assert_eq!(
        names["tags"],
        serde_json::json!(["one/app:v1", "two/x/y:v2"])
    );
    assert_eq!(
        digest(&json(path, &["resolve", "oci:./back:one/app:v1"])),
        digest(&one)
    );
    assert_eq!(
        digest(&json(path, &["resolve", "oci:./back:two/x/y:v2"])),
        digest(&two)
    );
    let repos = ok(path, &["repos", &bucket]);
    assert_eq!(
        repos.lines().collect::<Vec<_>>(),
        ["one/app", "two/x/y"],
        "{repos}"
    );

    // A bundle does not fit into one registry repository: refused, with
    // what to do instead, before anything is written.
    let registry = format!("{}/{}", RegistryServer::shared().host(), unique("whole"));
    let refused = crate::common::run(path, &["cp", "-a", "oci:./src", &registry]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("orca sync") && stderr.contains("oci:./src:REPO"),
        "{stderr}"
    );
    let tags = crate::common::run(path, &["tags", &registry]);
    assert_eq!(tags.status.code(), Some(3), "{tags:?}");
}
