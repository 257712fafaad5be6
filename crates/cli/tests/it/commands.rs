//! Each command on each backend: push → tags → resolve → inspect → pull
//! round trips, attach and discover (with concurrent attaches), index
//! creation and platform filters — all through `--format json`, which
//! must parse and carry digests.

use std::path::Path;

use crate::common::{digest, json, ok, registry, run, s3, seed_image};

/// push → tags → resolve → inspect → pull of one file on `base`.
fn round_trip(dir: &Path, base: &str, label: &str) {
    let file = dir.join(format!("{label}.txt"));
    std::fs::write(&file, format!("the {label} file\n")).expect("write");
    let target = format!("{base}:v1");
    let name = format!("{label}.txt");
    let pushed = json(
        dir,
        &[
            "push",
            &target,
            &format!("{name}:text/plain"),
            "--artifact-type",
            "application/vnd.example.note",
            "--annotation",
            "purpose=test",
        ],
    );
    let pushed_digest = digest(&pushed);
    assert_eq!(pushed["form"], "1.1", "{pushed}");
    let tags = json(dir, &["tags", base]);
    assert_eq!(tags["tags"], serde_json::json!(["v1"]), "{base}");
    let resolved = json(dir, &["resolve", &target]);
    assert_eq!(digest(&resolved), pushed_digest, "{base}");
    let inspected = json(dir, &["inspect", &target]);
    assert_eq!(digest(&inspected), pushed_digest);
    assert_eq!(inspected["artifactType"], "application/vnd.example.note");
    assert_eq!(inspected["annotations"]["purpose"], "test");
    assert_eq!(
        inspected["layers"][0]["annotations"]["org.opencontainers.image.title"],
        name.as_str()
    );
    let out = dir.join(format!("{label}-out"));
    let pulled = json(dir, &["pull", &target, "-o", out.to_str().expect("utf-8")]);
    assert_eq!(
        pulled["files"].as_array().map(Vec::len),
        Some(1),
        "{pulled}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join(&name)).expect("pulled file"),
        format!("the {label} file\n")
    );
}

#[test]
fn round_trips_on_every_backend() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    round_trip(path, "oci:./layout", "layout");
    round_trip(path, &s3("round-trip"), "bucket");
    round_trip(path, &registry("round-trip"), "registry");
    // Archives are written once: push creates one, the rest read it.
    round_trip(path, "oci-archive:./artifact.tar", "archive");
    // A docker-archive holds images: one is copied in, then read back.
    let image = seed_image(&path.join("images"), "v1", b"docker archive\n");
    ok(
        path,
        &[
            "cp",
            "oci:./images:v1",
            "docker-archive:./image.tar:example/app:v1",
        ],
    );
    let tags = json(path, &["tags", "docker-archive:./image.tar:example/app:v1"]);
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    // The whole archive lists its images by name, as docker load names them.
    let whole = json(path, &["tags", "docker-archive:./image.tar"]);
    assert_eq!(whole["tags"], serde_json::json!(["example/app:v1"]));
    let inspected = json(
        path,
        &["inspect", "docker-archive:./image.tar:example/app:v1"],
    );
    assert_eq!(inspected["platform"], "linux/amd64", "{inspected}");
    assert_eq!(inspected["layers"].as_array().map(Vec::len), Some(1));
    // Back out of the docker archive and into a layout, runnable as before.
    ok(path, &["cp", "docker-archive:./image.tar", "oci:./back:v1"]);
    let back = json(path, &["inspect", "oci:./back:v1"]);
    assert_eq!(back["platform"], "linux/amd64");
    assert!(!image.is_empty());
}

#[test]
fn attach_and_discover_lose_nothing_under_concurrency() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    std::fs::write(path.join("sig.json"), b"{\"signed\":true}").expect("write");
    for base in ["oci:./layout".to_owned(), s3("attach"), registry("attach")] {
        let subject = format!("{base}:v1");
        std::fs::write(path.join("subject.txt"), b"subject\n").expect("write");
        let pushed = json(path, &["push", &subject, "subject.txt"]);
        // Four processes attach at once.
        let children: Vec<_> = (0..4)
            .map(|i| {
                crate::common::orca(path)
                    .current_dir(path)
                    .args([
                        "attach",
                        &subject,
                        "sig.json",
                        "--artifact-type",
                        "application/vnd.example.signature",
                        "--annotation",
                        &format!("n={i}"),
                        "--format",
                        "json",
                    ])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn attach")
            })
            .collect();
        let mut attached = Vec::new();
        for child in children {
            let output = child.wait_with_output().expect("attach");
            assert!(
                output.status.success(),
                "attach on {base}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let value: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("attach json");
            attached.push(digest(&value));
        }
        attached.sort();
        let found = json(path, &["discover", &subject]);
        assert_eq!(digest(&found["subject"]), digest(&pushed));
        let mut listed: Vec<String> = found["referrers"]
            .as_array()
            .expect("referrers")
            .iter()
            .map(digest)
            .collect();
        listed.sort();
        assert_eq!(listed, attached, "referrers lost on {base}");
        // A filter that matches nothing, and the text tree.
        let none = json(
            path,
            &[
                "discover",
                &subject,
                "--artifact-type",
                "application/vnd.other",
            ],
        );
        assert_eq!(none["referrers"], serde_json::json!([]));
        let tree = ok(path, &["discover", &subject]);
        assert_eq!(
            tree.matches("application/vnd.example.signature").count(),
            4,
            "{tree}"
        );
        // Siblings are drawn as a tree: ├── for all but the last.
        assert!(tree.contains("├── ") && tree.contains("└── "), "{tree}");
        let zero = crate::common::run(path, &["discover", &subject, "--depth", "0"]);
        assert_eq!(zero.status.code(), Some(2), "{zero:?}");
    }
}

#[test]
fn index_creation_and_platform_filters() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let layout = path.join("layout");
    let amd64 = seed_image(&layout, "amd64", b"amd64\n");
    let arm64 = platform_image(&layout, "arm64");
    let created = json(
        path,
        &[
            "index",
            "create",
            "oci:./layout:multi",
            "oci:./layout:amd64",
            "oci:./layout:arm64",
            "--annotation",
            "org.example.built-by=orca",
        ],
    );
    let inspected = json(path, &["inspect", "oci:./layout:multi"]);
    assert_eq!(digest(&inspected), digest(&created));
    let members: Vec<(String, String)> = inspected["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| (m["platform"].as_str().unwrap_or("").to_owned(), digest(m)))
        .collect();
    assert_eq!(
        members,
        [
            ("linux/amd64".to_owned(), amd64.clone()),
            ("linux/arm64".to_owned(), arm64.clone())
        ]
    );
    // One platform: the member itself. Two: an index of both.
    ok(
        path,
        &[
            "cp",
            "--platform",
            "linux/arm64",
            "oci:./layout:multi",
            "oci:./one:v1",
        ],
    );
    assert_eq!(digest(&json(path, &["resolve", "oci:./one:v1"])), arm64);
    ok(
        path,
        &[
            "cp",
            "--platform",
            "linux/arm64",
            "--platform",
            "linux/amd64",
            "oci:./layout:multi",
            "oci:./two:v1",
        ],
    );
    let two = json(path, &["inspect", "oci:./two:v1"]);
    assert_eq!(two["manifests"].as_array().map(Vec::len), Some(2), "{two}");
    // manifest get of one platform, manifest head, manifest put.
    let bytes = ok(
        path,
        &[
            "manifest",
            "get",
            "oci:./layout:multi",
            "--platform",
            "linux/arm64",
        ],
    );
    std::fs::write(path.join("m.json"), &bytes).expect("write");
    let put = json(path, &["manifest", "put", "oci:./layout:copy", "m.json"]);
    assert_eq!(digest(&put), arm64);
    let head = json(path, &["manifest", "head", "oci:./layout:copy"]);
    assert_eq!(digest(&head), arm64);

    // Issue 22 §9: inspect and config take --platform; a platform the index
    // lacks is not found, and the message names the ones it has.
    let one = json(
        path,
        &["inspect", "oci:./layout:multi", "--platform", "linux/arm64"],
    );
    assert_eq!(digest(&one), arm64);
    let config = ok(
        path,
        &["config", "oci:./layout:multi", "--platform", "linux/arm64"],
    );
    let config: serde_json::Value = serde_json::from_str(&config).expect("config json");
    assert_eq!(config["architecture"], "arm64", "{config}");
    let index = crate::common::run(path, &["config", "oci:./layout:multi"]);
    assert_eq!(index.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&index.stderr).contains("linux/amd64, linux/arm64"),
        "{index:?}"
    );
    for args in [
        &[
            "cp",
            "--platform",
            "linux/s390x",
            "oci:./layout:multi",
            "oci:./none:v1",
        ][..],
        &[
            "manifest",
            "get",
            "oci:./layout:multi",
            "--platform",
            "linux/s390x",
        ],
    ] {
        let missed = crate::common::run(path, args);
        assert_eq!(missed.status.code(), Some(3), "{missed:?}");
        let said = String::from_utf8_lossy(&missed.stderr);
        assert!(said.contains("linux/amd64, linux/arm64"), "{said}");
    }
}

/// An image whose config says linux/`architecture`, tagged with it.
fn platform_image(layout: &Path, architecture: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = orca::Store::new(orca::fs::open(layout).expect("layout"));
        let layer = store
            .push_bytes(
                orca::MediaType::OCI_LAYER_TAR,
                architecture.as_bytes().to_vec(),
            )
            .await
            .expect("layer");
        let config = serde_json::json!({
            "architecture": architecture,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]},
        });
        let config = store
            .push_bytes(
                orca::MediaType::OCI_CONFIG,
                serde_json::to_vec(&config).expect("json"),
            )
            .await
            .expect("config");
        let manifest = orca::Manifest::new(config, vec![layer])
            .to_raw()
            .expect("raw");
        store
            .push_manifest(&manifest, Some(architecture))
            .await
            .expect("manifest")
            .digest
            .to_string()
    })
}

#[test]
fn s3_settings_come_from_the_aws_profile_too() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    std::fs::write(path.join("note.txt"), b"from a profile\n").expect("write");
    let aws = path.join(".aws");
    std::fs::create_dir_all(&aws).expect("dir");
    std::fs::write(
        aws.join("credentials"),
        "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[orca]\naws_access_key_id = orca-test-key\naws_secret_access_key = orca-test-secret\n",
    )
    .expect("credentials");
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile orca]\nregion = us-east-1\nendpoint_url = {}\n",
            orca_testkit::MotoServer::shared().endpoint()
        ),
    )
    .expect("config");
    let target = format!("{}:v1", s3("profile"));
    let run = |profile: Option<&str>| {
        let mut command = crate::common::orca(path);
        command
            .current_dir(path)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_ENDPOINT_URL")
            .args(["push", &target, "note.txt", "--format", "json"]);
        if let Some(profile) = profile {
            command.env("AWS_PROFILE", profile);
        }
        command.output().expect("run orca")
    };
    let pushed = run(Some("orca"));
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let resolved = json(path, &["resolve", &target]);
    let pushed: serde_json::Value = serde_json::from_slice(&pushed.stdout).expect("json");
    assert_eq!(digest(&resolved), digest(&pushed));
}

#[test]
fn annotation_files_and_configs_go_into_the_manifest() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    std::fs::write(path.join("a.txt"), b"a\n").expect("write");
    std::fs::write(path.join("config.json"), br#"{"kind":"example"}"#).expect("write");
    std::fs::write(
        path.join("annotations.json"),
        br#"{"$manifest": {"org.example.from-file": "yes"}}"#,
    )
    .expect("write");
    let pushed = json(
        path,
        &[
            "push",
            "oci:./layout:v1",
            "a.txt",
            "--annotation-file",
            "annotations.json",
            "--config",
            "config.json:application/vnd.example.config+json",
            "--oci-version",
            "1.0",
            "--artifact-type",
            "application/vnd.example.thing",
        ],
    );
    assert_eq!(pushed["form"], "1.0");
    let inspected = json(path, &["inspect", "oci:./layout:v1"]);
    assert_eq!(inspected["annotations"]["org.example.from-file"], "yes");
    assert_eq!(
        inspected["config"]["mediaType"],
        "application/vnd.example.config+json"
    );
}

#[test]
fn cp_link_hard_links_between_layouts() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let image = seed_image(&path.join("a"), "v1", b"linked, not copied\n");
    let copied = json(path, &["cp", "--link", "oci:./a:v1", "oci:./b:v1"]);
    assert!(copied["summary"]["mounted"].as_u64() >= Some(2), "{copied}");
    assert_eq!(digest(&json(path, &["resolve", "oci:./b:v1"])), image);
    // The layer is the same file in both layouts.
    let blobs = |layout: &str| -> Vec<std::fs::Metadata> {
        std::fs::read_dir(path.join(layout).join("blobs/sha256"))
            .expect("blobs")
            .map(|e| e.expect("entry").metadata().expect("meta"))
            .filter(|m| m.nlink() > 1)
            .collect()
    };
    assert!(blobs("b").len() >= 2, "no blob of b is a hard link");
    // Without --link, nothing is shared.
    ok(path, &["cp", "oci:./a:v1", "oci:./c:v1"]);
    let c: Vec<_> = std::fs::read_dir(path.join("c/blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").metadata().expect("meta").nlink())
        .collect();
    assert!(c.iter().all(|n| *n == 1), "{c:?}");
}

/// Schema 1 from the command line: refused with the flag to use, copied
/// as it is with `--allow-schema1` or `ORCA_ENABLE_DEPRECATED_SCHEMA1=1`.
#[test]
fn schema1_needs_the_flag_and_is_copied_verbatim_with_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    std::fs::write(path.join("layer.bin"), vec![3u8; 2048]).expect("write");
    let layer = digest(&json(path, &["blob", "put", "oci:./s1", "layer.bin"]));
    let manifest = format!(
        "{{\n   \"schemaVersion\": 1,\n   \"name\": \"library/old\",\n   \"tag\": \"1\",\n   \"architecture\": \"amd64\",\n   \"fsLayers\": [{{\"blobSum\":\"{layer}\"}}],\n   \"history\": [{{\"v1Compatibility\":\"{{}}\"}}]\n}}"
    );
    std::fs::write(path.join("old.json"), &manifest).expect("write");
    let refused = run(path, &["manifest", "put", "oci:./s1:old", "old.json"]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("schema 1") && said.contains("--allow-schema1"),
        "{said}"
    );
    let put = json(
        path,
        &[
            "manifest",
            "put",
            "oci:./s1:old",
            "old.json",
            "--allow-schema1",
        ],
    );
    let copied = crate::common::orca(path)
        .current_dir(path)
        .env("ORCA_ENABLE_DEPRECATED_SCHEMA1", "1")
        .args(["cp", "oci:./s1:old", "oci:./out:old", "--format", "json"])
        .output()
        .expect("run orca");
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let resolved = json(path, &["resolve", "oci:./out:old", "--allow-schema1"]);
    assert_eq!(digest(&resolved), digest(&put));
}
