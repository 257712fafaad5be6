//! `orca sync` against the real registry: repositories mirrored into
//! layout, archive and bucket bundles that skopeo and umoci read, a re-run
//! that asks one question per image (counted at a recording proxy) and
//! none for immutable tags, prune
//! with a dry run first, bundles restored into a registry with digests
//! preserved, and configurations refused. Choosing tags and platforms is
//! in `sync_selection`, faults in `sync_faults`.

use orca_testkit::{RecordingProxy, RegistryServer};

use crate::common::{json, ok, unique};
use crate::sync_support::{
    actions, on_registry, push_index, requests, same_digests, seed, write_config,
};

#[test]
fn repositories_mirror_into_a_bundle_and_back_and_reruns_are_cheap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let proxy = RecordingProxy::start(registry.port()).expect("proxy");
    let via_proxy = format!("127.0.0.1:{}", proxy.port());
    let prefix = unique("mirror");

    // The source: two repositories, three tags, a signature on one image.
    seed(
        path,
        &prefix,
        &[
            ("app", "1.0", "one"),
            ("app", "1.1", "one point one"),
            ("app", "2.0", "two"),
            ("tool", "1.0", "one"),
        ],
    );
    // And a multi-platform image, a third repository.
    let multi = format!("{prefix}/multi");
    on_registry(|client| async move { push_index(&client, &multi).await });
    std::fs::write(path.join("sig.json"), b"{\"signed\":true}").expect("write");
    ok(
        path,
        &[
            "attach",
            &format!("{}/{prefix}/app:2.0", registry.host()),
            "sig.json",
            "--artifact-type",
            "application/vnd.example.signature",
        ],
    );

    let bundle = path.join("bundle");
    let config = write_config(
        path,
        &format!(
            "# every repository under the prefix, except the 1.1 tags\n\
             defaults:\n  referrers: true\n  tags:\n    exclude: [\"1.1\"]\n\
             sync:\n  - source: {via_proxy}/{prefix}/\n    target: oci:{}\n",
            bundle.display()
        ),
    );
    let first = json(path, &["sync", &config]);
    let expected_names = [
        format!("{prefix}/app:1.0"),
        format!("{prefix}/app:2.0"),
        format!("{prefix}/multi:1.0"),
        format!("{prefix}/tool:1.0"),
    ];
    assert_eq!(
        actions(&first),
        expected_names
            .iter()
            .map(|n| (format!("oci:{}:{n}", bundle.display()), "copied".to_owned()))
            .collect::<Vec<_>>(),
        "{first}"
    );
    // The bundle names each image REPO:TAG, as skopeo reads it.
    let index = std::fs::read_to_string(bundle.join("index.json")).expect("index.json");
    for name in &expected_names {
        assert!(index.contains(&format!("\"{name}\"")), "{name} in {index}");
    }
    let skopeo = orca_testkit::require_program("skopeo", "scripts/setup (apt-get install skopeo)");
    let inspected = std::process::Command::new(skopeo)
        .args([
            "inspect",
            &format!("oci:{}:{prefix}/app:2.0", bundle.display()),
        ])
        .output()
        .expect("skopeo");
    assert!(
        inspected.status.success(),
        "skopeo reads the bundle: {}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let umoci = orca_testkit::require_program("umoci", "scripts/setup (apt-get install umoci)");
    let stat = std::process::Command::new(umoci)
        .args([
            "stat",
            "--image",
            &format!("{}:{prefix}/app:2.0", bundle.display()),
        ])
        .output()
        .expect("umoci");
    assert!(
        stat.status.success(),
        "umoci reads the bundle: {}",
        String::from_utf8_lossy(&stat.stderr)
    );
    // The signature came along.
    let discovered = json(
        path,
        &[
            "discover",
            &format!("oci:{}:{prefix}/app:2.0", bundle.display()),
        ],
    );
    assert!(
        discovered
            .to_string()
            .contains("application/vnd.example.signature"),
        "{discovered}"
    );

    // Nothing changed: one manifest request per image, and (with
    // `referrers`) one look for its referrers: docker-registry has no
    // Referrers API, so a HEAD of the fallback tag, and a GET (by digest)
    // of the one that exists, app:2.0's. No blob.
    let before = proxy.recorded().len();
    let second = json(path, &["sync", &config]);
    assert!(
        actions(&second)
            .iter()
            .all(|(_, action)| action == "up-to-date"),
        "{second}"
    );
    assert_eq!(second["summary"]["bytes"], 0);
    let recorded = proxy.recorded()[before..].to_owned();
    let manifest_requests =
        requests(&recorded, "HEAD", "/manifests/") + requests(&recorded, "GET", "/manifests/");
    let fallback_tags = requests(&recorded, "HEAD", "/manifests/sha256-");
    assert_eq!(fallback_tags, 4, "{recorded}");
    assert_eq!(
        manifest_requests,
        4 + fallback_tags + 1,
        "one per image:\n{recorded}"
    );
    assert_eq!(requests(&recorded, "GET", "/blobs/"), 0, "{recorded}");

    // Tags declared immutable that the bundle has: the source is asked
    // for its catalog and tag lists, and about no image.
    let trusting = config.replace(".yaml", "-immutable.yaml");
    std::fs::write(
        &trusting,
        std::fs::read_to_string(&config).expect("config").replace(
            "referrers: true",
            "referrers: true\n  immutable_tags: [\"*\"]",
        ),
    )
    .expect("write");
    let before = proxy.recorded().len();
    let third = json(path, &["sync", &trusting]);
    assert_eq!(actions(&third), actions(&second), "{third}");
    let recorded = proxy.recorded()[before..].to_owned();
    assert_eq!(requests(&recorded, "HEAD", "/manifests/"), 0, "{recorded}");
    assert_eq!(requests(&recorded, "GET", "/manifests/"), 0, "{recorded}");
    assert_eq!(requests(&recorded, "GET", "/tags/list"), 3, "{recorded}");

    // Prune: the source drops a tag; a dry run says so and changes nothing.
    ok(
        path,
        &["untag", &format!("{}/{prefix}/app:1.0", registry.host())],
    );
    let pruning = config.replace(".yaml", "-prune.yaml");
    std::fs::write(
        &pruning,
        std::fs::read_to_string(&config)
            .expect("config")
            .replace("referrers: true", "referrers: true\n  prune: true"),
    )
    .expect("write");
    let dry = json(path, &["sync", &pruning, "--dry-run"]);
    assert!(
        actions(&dry).contains(&(
            format!("oci:{}:{prefix}/app:1.0", bundle.display()),
            "would-prune".to_owned()
        )),
        "{dry}"
    );
    let unchanged = std::fs::read_to_string(bundle.join("index.json")).expect("index.json");
    assert_eq!(unchanged, index, "a dry run changes nothing");
    let pruned = json(path, &["sync", &pruning]);
    assert!(
        actions(&pruned).contains(&(
            format!("oci:{}:{prefix}/app:1.0", bundle.display()),
            "pruned".to_owned()
        )),
        "{pruned}"
    );
    let tags = json(path, &["tags", &format!("oci:{}", bundle.display())]);
    assert!(
        !tags.to_string().contains(&format!("{prefix}/app:1.0")),
        "{tags}"
    );

    // The air-gap round trip: the bundle restored into a second, empty
    // registry, digests preserved.
    let empty = RegistryServer::start().expect("a second docker-registry");
    let restore = write_config(
        path,
        &format!(
            "sync:\n  - source: oci:{}\n    target: {}\n    referrers: true\n",
            bundle.display(),
            empty.host()
        ),
    );
    let back = json(path, &["sync", &restore]);
    assert!(
        actions(&back).iter().all(|(_, action)| action == "copied"),
        "{back}"
    );
    same_digests(
        path,
        &format!("{}/{prefix}", registry.host()),
        &format!("{}/{prefix}", empty.host()),
        &[("app", "2.0"), ("multi", "1.0"), ("tool", "1.0")],
    );
    let signature = json(
        path,
        &["discover", &format!("{}/{prefix}/app:2.0", empty.host())],
    );
    assert!(
        signature
            .to_string()
            .contains("application/vnd.example.signature"),
        "{signature}"
    );
}

#[test]
fn a_signature_added_to_an_unchanged_image_comes_on_the_next_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("signed-later");
    seed(path, &prefix, &[("app", "1.0", "one")]);
    let config = write_config(
        path,
        &format!(
            "sync:\n  - source: {host}/{prefix}/app\n    target: {host}/{prefix}-mirror\n    \
             referrers: true\n",
            host = registry.host()
        ),
    );
    let copied = json(path, &["sync", &config]);
    assert_eq!(actions(&copied)[0].1, "copied", "{copied}");

    // Signed after it was mirrored: the tag does not move.
    std::fs::write(path.join("sig.json"), b"{\"signed\":\"later\"}").expect("write");
    let source = format!("{}/{prefix}/app:1.0", registry.host());
    ok(
        path,
        &[
            "attach",
            &source,
            "sig.json",
            "--artifact-type",
            "application/vnd.example.signature",
        ],
    );
    // The repository keeps its path under the target's prefix.
    let mirrored = format!("{}/{prefix}-mirror/{prefix}/app:1.0", registry.host());
    let signatures = |path: &std::path::Path| {
        json(path, &["discover", &mirrored])
            .to_string()
            .matches("application/vnd.example.signature")
            .count()
    };
    let dry = json(path, &["sync", &config, "--dry-run"]);
    assert_eq!(actions(&dry)[0].1, "would-copy", "{dry}");
    assert_eq!(signatures(path), 0, "a dry run copies nothing");

    let signed = json(path, &["sync", &config]);
    assert_eq!(actions(&signed)[0].1, "copied", "{signed}");
    assert_eq!(
        signed["images"][0]["sourceDigest"], signed["images"][0]["targetDigest"],
        "the image itself did not change: {signed}"
    );
    assert!(signatures(path) > 0, "the signature came along");
    let again = json(path, &["sync", &config]);
    assert_eq!(actions(&again)[0].1, "up-to-date", "{again}");
    assert_eq!(again["summary"]["bytes"], 0);
}

#[test]
fn a_bad_configuration_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    for (text, says) in [
        ("sync: []\n", "no entries"),
        ("sync:\n  - source: a/b\n", "target"),
        (
            "sync:\n  - source: a/b\n    target: c\n    tags:\n      include: [\"/(oops/\"]\n",
            "(oops",
        ),
        (
            "sync:\n  - source: a/b\n    target: c\n    immutable_tags: [\"/v[/\"]\n",
            "v[",
        ),
        (
            "sync:\n  - source: a/b\n    target: c\n    colour: red\n",
            "colour",
        ),
    ] {
        let config = write_config(path, text);
        let output = crate::common::run(path, &["sync", &config]);
        assert!(!output.status.success(), "{text} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{text}: {stderr}");
    }
}

#[test]
fn archive_and_bucket_bundles_fill_rerun_and_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("bundles");
    seed(
        path,
        &prefix,
        &[
            ("app", "1.0", "one"),
            ("app", "2.0", "two"),
            ("tool", "1.0", "tool"),
        ],
    );
    let archive = path.join("mirror.tar");
    let bucket = crate::common::s3("sync");
    let config = write_config(
        path,
        &format!(
            "sync:\n\
             - source: {host}/{prefix}/\n  target: oci-archive:{archive}\n\
             - source: {host}/{prefix}/\n  target: {bucket}\n",
            host = registry.host(),
            archive = archive.display(),
        ),
    );
    let first = json(path, &["sync", &config]);
    let copied = first["summary"]["copied"].as_u64().unwrap_or_default();
    assert_eq!(copied, 6, "three images into each bundle: {first}");
    // Nothing is left beside the archive but the archive.
    let beside: Vec<_> = std::fs::read_dir(path)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".orca-sync"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    let written = std::fs::metadata(&archive)
        .and_then(|m| m.modified())
        .expect("archive");
    let again = json(path, &["sync", &config]);
    assert_eq!(
        std::fs::metadata(&archive)
            .and_then(|m| m.modified())
            .expect("archive"),
        written,
        "an archive nothing changed in is not rewritten"
    );
    assert_eq!(again["summary"]["upToDate"], 6, "{again}");
    assert_eq!(again["summary"]["bytes"], 0, "{again}");

    // skopeo reads an image of the archive by its REPO:TAG name.
    let skopeo = orca_testkit::require_program("skopeo", "scripts/setup (apt-get install skopeo)");
    let inspected = std::process::Command::new(skopeo)
        .args([
            "inspect",
            &format!("oci-archive:{}:{prefix}/app:2.0", archive.display()),
        ])
        .output()
        .expect("skopeo");
    assert!(
        inspected.status.success(),
        "skopeo reads the archive: {}",
        String::from_utf8_lossy(&inspected.stderr)
    );

    // Both bundles restore into the registry with digests preserved.
    for (label, bundle) in [
        ("from-archive", format!("oci-archive:{}", archive.display())),
        ("from-bucket", bucket.clone()),
    ] {
        let restored = unique(label);
        let restore = write_config(
            path,
            &format!(
                "sync:\n  - source: {bundle}\n    target: {}/{restored}\n",
                registry.host()
            ),
        );
        let back = json(path, &["sync", &restore]);
        assert_eq!(back["summary"]["copied"], 3, "{back}");
        same_digests(
            path,
            &format!("{}/{prefix}", registry.host()),
            &format!("{}/{restored}/{prefix}", registry.host()),
            &[("app", "1.0"), ("app", "2.0"), ("tool", "1.0")],
        );
    }
}
