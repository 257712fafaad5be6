//! Settings per registry (issue 22 §8): `orca registry set|get|ls|rm`
//! keep them in a file every command and `sync` read — TLS and a CA, and
//! mirrors that content is read from first — and `cp` takes settings for
//! one end only (`--src-…`, `--dest-…`).

use orca_testkit::{RecordingProxy, RegistryServer};

use crate::common::{bucket, json, ok, orca, run, s3, unique};

/// The lines of what clients sent through `proxy` since `mark` that are
/// requests.
fn requests_since(proxy: &RecordingProxy, mark: usize) -> Vec<String> {
    proxy.recorded()[mark..]
        .lines()
        .filter(|l| l.starts_with("GET ") || l.starts_with("HEAD ") || l.starts_with("PUT "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_cacert_kept_for_a_host_is_used_by_every_command_until_removed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let server = RegistryServer::start_tls().expect("docker-registry with TLS");
    let ca = server.ca_file().expect("CA file").to_owned();
    std::fs::write(path.join("note.txt"), b"kept settings\n").expect("write");
    let target = format!("{}/{}:v1", server.host(), unique("kept"));

    // A loopback host speaks plain HTTP by default: refused by the server.
    let refused = run(path, &["push", &target, "note.txt"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");

    std::fs::copy(&ca, path.join("ca.pem")).expect("copy CA");
    let set = json(
        path,
        &[
            "registry",
            "set",
            &server.host(),
            "--cacert",
            "ca.pem",
            "--tls",
            "enabled",
        ],
    );
    assert_eq!(set["tls"], "enabled", "{set}");
    // Kept by absolute path, in ~/.config/orca/registries.yaml.
    let kept =
        std::fs::read_to_string(path.join(".config/orca/registries.yaml")).expect("settings file");
    assert!(
        kept.contains(
            &path
                .join("ca.pem")
                .canonicalize()
                .expect("ca")
                .display()
                .to_string()
        ),
        "{kept}"
    );
    ok(path, &["push", &target, "note.txt"]);
    let listed = ok(path, &["registry", "ls"]);
    assert!(
        listed.contains(&format!("{}\ttls=enabled cacert", server.host())),
        "{listed}"
    );
    let got = ok(path, &["registry", "get", &server.host()]);
    assert!(
        got.contains("tls: enabled") && got.contains("cacert: "),
        "{got}"
    );

    // From another directory: the kept path still holds.
    let elsewhere = path.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let tags = orca(path)
        .current_dir(&elsewhere)
        .args(["tags", &target.replace(":v1", "")])
        .output()
        .expect("run");
    assert!(tags.status.success(), "{tags:?}");

    // Flags given on the command line win: --plain-http over the file.
    let plain = run(path, &["tags", &target.replace(":v1", ""), "--plain-http"]);
    assert_eq!(plain.status.code(), Some(1), "{plain:?}");

    let removed = ok(path, &["registry", "rm", &server.host()]);
    assert!(removed.contains("removed"), "{removed}");
    let again = run(path, &["tags", &target.replace(":v1", "")]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let empty = ok(path, &["registry", "get", &server.host()]);
    assert!(empty.contains("no settings"), "{empty}");

    // Mistakes are named and change nothing.
    let bad = run(path, &["registry", "set", &server.host(), "--rate", "0"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("positive"),
        "{bad:?}"
    );
    let nothing = run(path, &["registry", "set", &server.host()]);
    assert_eq!(nothing.status.code(), Some(2), "{nothing:?}");
    let url = run(
        path,
        &[
            "registry",
            "set",
            "x.example",
            "--mirror",
            "https://m.example",
        ],
    );
    assert!(
        String::from_utf8_lossy(&url.stderr).contains("HOST[:PORT][/PREFIX]"),
        "{url:?}"
    );
    // A settings file that cannot be read stops every command, naming it.
    std::fs::write(path.join(".config/orca/registries.yaml"), "a.example: [").expect("write");
    let broken = run(path, &["tags", &target.replace(":v1", "")]);
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("registries.yaml"),
        "{broken:?}"
    );
}

#[test]
fn reads_come_from_the_mirror_and_tags_from_the_registry() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let shared = RegistryServer::shared();
    // The registry itself is reached through a proxy that records what it
    // is asked; its mirror is the same server under `cache/`, asked directly.
    let proxy = RecordingProxy::start(shared.port()).expect("proxy");
    let origin = format!("127.0.0.1:{}", proxy.port());
    let repository = unique("mirrored");
    std::fs::write(path.join("v1.txt"), b"served by the mirror\n").expect("write");
    std::fs::write(path.join("v2.txt"), b"only at the registry\n").expect("write");
    let v1_layer = ok(path, &["digest", "v1.txt"]);
    let v1_layer = v1_layer
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned();
    ok(
        path,
        &["push", &format!("{origin}/{repository}:v1"), "v1.txt"],
    );
    ok(
        path,
        &[
            "cp",
            &format!("{}/{repository}:v1", shared.host()),
            &format!("{}/cache/{repository}:v1", shared.host()),
        ],
    );
    ok(
        path,
        &["push", &format!("{origin}/{repository}:v2"), "v2.txt"],
    );
    ok(
        path,
        &[
            "registry",
            "set",
            &origin,
            "--mirror",
            &format!("{}/cache", shared.host()),
        ],
    );

    // v1: the tag is asked of the registry (and what it holds, by HEAD),
    // its manifest and blobs are read from the mirror.
    let mark = proxy.recorded().len();
    ok(
        path,
        &["pull", &format!("{origin}/{repository}:v1"), "-o", "one"],
    );
    assert_eq!(
        std::fs::read(path.join("one/v1.txt")).expect("pulled"),
        b"served by the mirror\n"
    );
    let asked = requests_since(&proxy, mark);
    assert!(
        asked.iter().any(|r| r.contains("/manifests/v1 ")),
        "the tag was not resolved at the registry: {asked:#?}"
    );
    assert!(
        !asked.iter().any(|r| r.starts_with("GET ")
            && (r.contains("/blobs/") || r.contains("/manifests/sha256:"))),
        "content was read from the registry, not the mirror: {asked:#?}"
    );

    // v2: the mirror does not have it, so the registry serves it.
    let mark = proxy.recorded().len();
    ok(
        path,
        &["pull", &format!("{origin}/{repository}:v2"), "-o", "two"],
    );
    assert_eq!(
        std::fs::read(path.join("two/v2.txt")).expect("pulled"),
        b"only at the registry\n"
    );
    let asked = requests_since(&proxy, mark);
    assert!(
        asked
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains("/blobs/")),
        "{asked:#?}"
    );

    // sync reads its sources through the mirror as well.
    std::fs::write(
        path.join("sync.yaml"),
        format!(
            "sync:\n  - source: {origin}/{repository}\n    target: oci:{}/mirror\n",
            path.display()
        ),
    )
    .expect("write");
    let mark = proxy.recorded().len();
    ok(path, &["sync", "sync.yaml"]);
    let asked = requests_since(&proxy, mark);
    assert!(
        !asked
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains(&v1_layer)),
        "sync read v1's layer from the registry: {asked:#?}"
    );
    let tags = ok(path, &["tags", &format!("oci:{}/mirror", path.display())]);
    assert_eq!(
        tags.lines().collect::<Vec<_>>(),
        [format!("{repository}:v1"), format!("{repository}:v2")],
        "{tags}"
    );

    // Writes go to the registry, never to the mirror.
    ok(
        path,
        &[
            "cp",
            &format!("{origin}/{repository}:v1"),
            &format!("{origin}/{repository}:v3"),
        ],
    );
    let mirror_tags = ok(
        path,
        &["tags", &format!("{}/cache/{repository}", shared.host())],
    );
    assert_eq!(mirror_tags.trim(), "v1", "{mirror_tags}");
}

#[test]
fn each_end_of_a_copy_takes_its_own_settings() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let server = RegistryServer::start_tls().expect("docker-registry with TLS");
    let ca = server
        .ca_file()
        .expect("CA file")
        .to_str()
        .expect("utf-8")
        .to_owned();
    std::fs::write(path.join("note.txt"), b"two ends\n").expect("write");
    let source = format!("{}/{}:v1", RegistryServer::shared().host(), unique("ends"));
    ok(path, &["push", &source, "note.txt"]);
    let destination = format!("{}/{}:v1", server.host(), unique("ends"));

    // The global --ca-file means TLS at both ends: the plain source fails.
    let both = run(path, &["cp", &source, &destination, "--ca-file", &ca]);
    assert_eq!(both.status.code(), Some(1), "{both:?}");
    ok(path, &["cp", &source, &destination, "--dest-ca-file", &ca]);
    ok(
        path,
        &["tags", &destination.replace(":v1", ""), "--ca-file", &ca],
    );

    // An S3 end with its own endpoint, when the environment's is wrong.
    let bucket_target = format!("{}:v1", s3("ends"));
    let _ = bucket();
    let endpoint = orca_testkit::MotoServer::shared().endpoint();
    let wrong = |args: &[&str]| {
        orca(path)
            .current_dir(path)
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .args(args)
            .output()
            .expect("run")
    };
    let copied = wrong(&[
        "cp",
        &source,
        &bucket_target,
        "--dest-s3-endpoint",
        &endpoint,
    ]);
    assert!(copied.status.success(), "{copied:?}");
    let back = wrong(&[
        "cp",
        &bucket_target,
        &format!("oci:{}/back:v1", path.display()),
        "--src-s3-endpoint",
        &endpoint,
    ]);
    assert!(back.status.success(), "{back:?}");
}
