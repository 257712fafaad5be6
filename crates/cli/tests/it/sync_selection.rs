//! `orca sync` choosing and moving: tag filters (glob, regex, semver,
//! newest) and digest tags, platforms narrowing an index, and a base
//! layer many images share taken from the source once.

use orca_testkit::{RecordingProxy, RegistryServer};

use crate::common::{json, ok, unique};
use crate::sync_support::{on_registry, push_index, requests, seed, tags_of, write_config};

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
        tags_of(&report, &format!("oci:{}:", out("semver"))),
        ["1.1", "2.0"],
        "{report}"
    );
    assert_eq!(
        tags_of(&report, &format!("oci:{}:", out("newest"))),
        ["2.0", "2.1-rc"],
        "{report}"
    );
    assert_eq!(
        tags_of(&report, &format!("oci:{}:", out("regex"))),
        ["1.0", "1.1"],
        "{report}"
    );
    // Digest tags are no images of their own, but come along when asked.
    assert_eq!(
        tags_of(&report, &format!("oci:{}:", out("glob"))),
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
