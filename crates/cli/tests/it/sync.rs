//! `orca sync` against the real registry: repositories mirrored into
//! layout, archive and bucket bundles that skopeo and umoci read, a re-run
//! that asks one question per image (counted at a recording proxy), tag
//! and platform filters, prune with a dry run first, shared blobs moved
//! once, and bundles restored into a registry with digests preserved.
//! Faults are in `sync_faults`.

use std::path::Path;

use orca_testkit::{RecordingProxy, RegistryServer};

use crate::common::{json, ok, seed_image, unique};

/// Requests the client sent in `recorded` whose request line starts with
/// `method` and names `what` (`/manifests/`, `/blobs/`).
pub(crate) fn requests(recorded: &str, method: &str, what: &str) -> usize {
    recorded
        .lines()
        .filter(|line| line.starts_with(&format!("{method} /v2/")) && line.contains(what))
        .count()
}

pub(crate) fn write_config(path: &Path, text: &str) -> String {
    let file = path.join(format!("{}.yaml", unique("sync")));
    std::fs::write(&file, text).expect("write config");
    file.display().to_string()
}

pub(crate) fn actions(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|image| {
            (
                format!(
                    "{}:{}",
                    image["target"].as_str().unwrap_or_default(),
                    image["tag"].as_str().unwrap_or_default()
                ),
                image["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn repositories_mirror_into_a_bundle_and_back_and_reruns_are_cheap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let proxy = RecordingProxy::start(registry.port()).expect("proxy");
    let via_proxy = format!("127.0.0.1:{}", proxy.port());
    let prefix = unique("mirror");

    // The source: two repositories, three tags, a signature on one image.
    let seed = path.join("seed");
    for (tag, content) in [("1.0", "one"), ("1.1", "one point one"), ("2.0", "two")] {
        seed_image(&seed, tag, content.as_bytes());
    }
    let seed = format!("oci:{}", seed.display());
    for tag in ["1.0", "1.1", "2.0"] {
        ok(
            path,
            &[
                "cp",
                &format!("{seed}:{tag}"),
                &format!("{}/{prefix}/app:{tag}", registry.host()),
            ],
        );
    }
    ok(
        path,
        &[
            "cp",
            &format!("{seed}:1.0"),
            &format!("{}/{prefix}/tool:1.0", registry.host()),
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
            .map(|n| (format!("oci:{}/{n}", bundle.display()), "copied".to_owned()))
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

    // Nothing changed: one manifest request per image, no blob.
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
    assert_eq!(manifest_requests, 4, "one per image:\n{recorded}");
    assert_eq!(requests(&recorded, "GET", "/blobs/"), 0, "{recorded}");

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
            format!("oci:{}/{prefix}/app:1.0", bundle.display()),
            "would-prune".to_owned()
        )),
        "{dry}"
    );
    let unchanged = std::fs::read_to_string(bundle.join("index.json")).expect("index.json");
    assert_eq!(unchanged, index, "a dry run changes nothing");
    let pruned = json(path, &["sync", &pruning]);
    assert!(
        actions(&pruned).contains(&(
            format!("oci:{}/{prefix}/app:1.0", bundle.display()),
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

/// Pushes images `(repository, tag, content)` under `prefix` of the shared
/// registry, by way of a scratch layout.
pub(crate) fn seed(path: &Path, prefix: &str, images: &[(&str, &str, &str)]) {
    let registry = RegistryServer::shared();
    let scratch = path.join(unique("seed"));
    for (repository, tag, content) in images {
        seed_image(&scratch, tag, content.as_bytes());
        ok(
            path,
            &[
                "cp",
                &format!("oci:{}:{tag}", scratch.display()),
                &format!("{}/{prefix}/{repository}:{tag}", registry.host()),
            ],
        );
    }
}

/// Asserts that each `(repository, tag)` names the same digest under
/// `from` and under `to` (registry bases, `HOST[/PREFIX]`).
fn same_digests(path: &Path, from: &str, to: &str, images: &[(&str, &str)]) {
    for (repository, tag) in images {
        let original = ok(path, &["resolve", &format!("{from}/{repository}:{tag}")]);
        let copy = ok(path, &["resolve", &format!("{to}/{repository}:{tag}")]);
        assert_eq!(original, copy, "{repository}:{tag} keeps its digest");
    }
}

pub(crate) fn tags_of(report: &serde_json::Value, entry_target: &str) -> Vec<String> {
    let mut tags: Vec<String> = report["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|image| {
            image["target"]
                .as_str()
                .unwrap_or_default()
                .starts_with(entry_target)
        })
        .map(|image| image["tag"].as_str().unwrap_or_default().to_owned())
        .collect();
    tags.sort();
    tags
}

#[test]
fn filters_pick_tags_by_glob_regex_semver_and_newest_and_bring_digest_tags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("filters");
    seed(
        path,
        &prefix,
        &[
            ("app", "1.0", "a"),
            ("app", "1.1", "b"),
            ("app", "2.0", "c"),
            ("app", "2.1-rc", "d"),
            ("app", "latest", "c"),
        ],
    );
    // A cosign-style signature tag of 2.0.
    let signed = ok(
        path,
        &["resolve", &format!("{}/{prefix}/app:2.0", registry.host())],
    );
    let signature_tag = format!("{}.sig", signed.trim().replace(':', "-"));
    seed(path, &prefix, &[("app", &signature_tag, "signature")]);

    let out = |name: &str| path.join(name).display().to_string();
    let config = write_config(
        path,
        &format!(
            "sync:\n\
             - source: {host}/{prefix}/app\n  target: oci:{semver}\n  tags: {{semver: \">=1.1, <2.1\"}}\n\
             - source: {host}/{prefix}/app\n  target: oci:{newest}\n  tags: {{newest: 2}}\n\
             - source: {host}/{prefix}/app\n  target: oci:{regex}\n  tags: {{include: [\"/^1\\\\.[0-9]+$/\"]}}\n\
             - source: {host}/{prefix}/app\n  target: oci:{glob}\n  tags: {{include: [\"2.*\"], exclude: [\"*-rc\"]}}\n  digest_tags: true\n",
            host = registry.host(),
            semver = out("semver"),
            newest = out("newest"),
            regex = out("regex"),
            glob = out("glob"),
        ),
    );
    let report = json(path, &["sync", &config]);
    assert_eq!(
        tags_of(&report, &format!("oci:{}/", out("semver"))),
        ["1.1", "2.0"],
        "{report}"
    );
    assert_eq!(
        tags_of(&report, &format!("oci:{}/", out("newest"))),
        ["2.0", "2.1-rc"],
        "{report}"
    );
    assert_eq!(
        tags_of(&report, &format!("oci:{}/", out("regex"))),
        ["1.0", "1.1"],
        "{report}"
    );
    // Digest tags are no images of their own, but come along when asked.
    assert_eq!(
        tags_of(&report, &format!("oci:{}/", out("glob"))),
        ["2.0"],
        "{report}"
    );
    let bundle_tags = json(path, &["tags", &format!("oci:{}", out("glob"))]);
    assert!(
        bundle_tags
            .to_string()
            .contains(&format!("{prefix}/app:{signature_tag}")),
        "{bundle_tags}"
    );
    let semver_tags = json(path, &["tags", &format!("oci:{}", out("semver"))]);
    assert!(!semver_tags.to_string().contains(".sig"), "{semver_tags}");
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

/// Pushes a two-platform index (linux/amd64, linux/arm64) tagged `1.0`
/// to `repository`; returns the arm64 image's digest.
pub(crate) async fn push_index(client: &orca::http::Registry, repository: &str) -> String {
    let store = orca::Store::new(client.repository(repository).await.expect("repository"));
    let mut members = Vec::new();
    for architecture in ["amd64", "arm64"] {
        let layer = orca_testkit::layer_of("arch.txt", architecture.as_bytes());
        let mut image =
            orca_testkit::push_layered_image(&store, &[&layer], architecture, None).await;
        image.platform =
            Some(orca::Platform::parse(&format!("linux/{architecture}")).expect("platform"));
        members.push(image);
    }
    let index = orca::Index {
        manifests: members.clone(),
        ..orca::Index::new()
    };
    store
        .push_manifest(&index.to_raw().expect("raw"), Some("1.0"))
        .await
        .expect("index");
    members[1].digest.to_string()
}

/// Runs `work` against stores of the shared registry's repositories.
fn on_registry<F, T>(work: impl FnOnce(orca::http::Registry) -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let registry = orca::registry(&RegistryServer::shared().host(), &orca::OpenOptions::new())
            .expect("registry client");
        work(registry).await
    })
}

#[test]
fn a_base_layer_shared_by_ten_images_is_transferred_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("shared");
    let base = orca_testkit::layer_of("base.bin", &vec![5u8; 2 * 1024 * 1024]);
    let base_digest = orca::Digest::sha256(&base);
    let repositories = prefix.clone();
    on_registry(|client| async move {
        for n in 0..10 {
            let store = orca::Store::new(
                client
                    .repository(&format!("{repositories}/img{n}"))
                    .await
                    .expect("repository"),
            );
            let own = orca_testkit::layer_of("own.txt", format!("image {n}").as_bytes());
            orca_testkit::push_layered_image(&store, &[&base, &own], "amd64", Some("1.0")).await;
        }
    });
    let proxy = RecordingProxy::start(registry.port()).expect("proxy");
    let copy = unique("shared-copy");
    let config = write_config(
        path,
        &format!(
            "sync:\n  - source: 127.0.0.1:{}/{prefix}/\n    target: {}/{copy}\n    images: 10\n",
            proxy.port(),
            registry.host()
        ),
    );
    let report = json(path, &["sync", &config]);
    assert_eq!(report["summary"]["copied"], 10, "{report}");
    let recorded = proxy.recorded();
    let base_fetches = requests(&recorded, "GET", &format!("/blobs/{base_digest}"));
    assert_eq!(
        base_fetches, 1,
        "the base layer left the source once:\n{recorded}"
    );
}

#[test]
fn platforms_narrow_an_index_and_a_rerun_still_costs_one_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("platforms");
    let repository = format!("{prefix}/multi");
    let arm = on_registry(|client| async move { push_index(&client, &repository).await });
    let proxy = RecordingProxy::start(registry.port()).expect("proxy");
    let bundle = path.join("bundle");
    let config = write_config(
        path,
        &format!(
            "sync:\n  - source: 127.0.0.1:{}/{prefix}/multi\n    target: oci:{}\n    platforms: [linux/arm64]\n",
            proxy.port(),
            bundle.display()
        ),
    );
    let first = json(path, &["sync", &config]);
    assert_eq!(first["images"][0]["action"], "copied", "{first}");
    let copied = ok(
        path,
        &[
            "resolve",
            &format!("oci:{}:{prefix}/multi:1.0", bundle.display()),
        ],
    );
    assert_eq!(copied.trim(), arm, "the arm64 image alone");
    let before = proxy.recorded().len();
    let second = json(path, &["sync", &config]);
    assert_eq!(second["images"][0]["action"], "up-to-date", "{second}");
    let recorded = proxy.recorded()[before..].to_owned();
    let manifest_requests =
        requests(&recorded, "HEAD", "/manifests/") + requests(&recorded, "GET", "/manifests/");
    assert_eq!(manifest_requests, 1, "{recorded}");
}
