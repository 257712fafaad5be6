//! `orca serve` as a pull-through cache of a real registry (Debian's
//! docker-registry behind a proxy that records every request it gets):
//! skopeo pulls through it twice and the second pull asks upstream
//! nothing; digests are upstream's; with upstream gone a cached tag is
//! still served and an uncached one fails at once; the namespace is
//! read-only but for referrers, which are upstream's and ours; a moved
//! tag is seen once the freshness time passed. A corrupt upstream byte
//! fails the pull and caches nothing; eight clients missing one blob at
//! once cause one upstream fetch; a request during a fill follows it;
//! containerd's `?ns=` and Docker's bare mirror names reach the same
//! cache; an upstream may have the namespace's own credentials. What the
//! cache holds for which repository, and how much, is in
//! `serve_cache_holding.rs`.

use std::process::Command;
use std::time::{Duration, Instant};

use orca_testkit::{RecordingProxy, RegistryServer, require_program};

use crate::common::{json, ok, seed_image};
use crate::http::send;
use crate::serve::Serving;

/// Requests upstream got whose line holds `what`.
pub(crate) fn asked(proxy: &RecordingProxy, what: &str) -> usize {
    proxy
        .recorded()
        .lines()
        .filter(|line| {
            (line.starts_with("GET ") || line.starts_with("HEAD ")) && line.contains(what)
        })
        .count()
}

fn skopeo_copy(source: &str, dest: &str) -> std::process::Output {
    let skopeo = require_program("skopeo", "scripts/setup (apt-get install skopeo)");
    Command::new(skopeo)
        .args(["copy", "--src-tls-verify=false", source, dest])
        .output()
        .expect("skopeo")
}

#[test]
fn skopeo_pulls_through_the_cache_and_the_second_pull_asks_upstream_nothing() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let upstream = RegistryServer::start().expect("docker-registry (scripts/setup installs it)");
    let proxy = RecordingProxy::start(upstream.port()).expect("proxy");
    let seed = path.join("seed");
    seed_image(&seed, "v1", b"cached layer\n");
    let origin = format!("{}/lib/app", upstream.host());
    ok(
        path,
        &[
            "cp",
            &format!("oci:{}:v1", seed.display()),
            &format!("{origin}:v1"),
        ],
    );
    ok(
        path,
        &[
            "cp",
            &format!("oci:{}:v1", seed.display()),
            &format!("{origin}:moving"),
        ],
    );
    std::fs::write(
        path.join("serve.yaml"),
        format!(
            "upstreams:\n  - namespace: up\n    registry: 127.0.0.1:{}\n    fresh_for: 2s\n    immutable_tags: [\"v*\"]\n    default: true\n",
            proxy.port()
        ),
    )
    .expect("write");
    let served = path.join("served");
    let serving = Serving::start(
        path,
        &format!("oci:{}", served.display()),
        &["--config", path.join("serve.yaml").to_str().expect("utf-8")],
    );
    let host = serving.host().to_owned();

    let first = skopeo_copy(
        &format!("docker://{host}/up/lib/app:v1"),
        &format!("oci:{}:v1", path.join("out1").display()),
    );
    assert!(
        first.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&first.stderr),
        serving.log()
    );
    let blobs_first = asked(&proxy, "/blobs/sha256:");
    assert!(
        blobs_first >= 2,
        "the first pull fetched its config and layer upstream"
    );
    let second = skopeo_copy(
        &format!("docker://{host}/up/lib/app:v1"),
        &format!("oci:{}:v1", path.join("out2").display()),
    );
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        asked(&proxy, "/blobs/sha256:"),
        blobs_first,
        "the second pull fetched blobs upstream"
    );
    assert_eq!(
        asked(&proxy, "/manifests/v1"),
        1,
        "an immutable tag was asked about again"
    );

    // Upstream's digest, as upstream serves it.
    let digest = |target: &str| {
        let head = json(path, &["manifest", "head", target]);
        let digest = head["digest"].as_str().unwrap_or_default().to_owned();
        assert!(digest.starts_with("sha256:"), "{target}: {head}");
        digest
    };
    assert_eq!(
        digest(&format!("{host}/up/lib/app:v1")),
        digest(&format!("{origin}:v1"))
    );

    // containerd's mirror form: `?ns=` names the upstream, by its
    // namespace or its host, and lands in the same cache.
    let v1 = digest(&format!("{origin}:v1"));
    for ns in ["up".to_owned(), format!("127.0.0.1:{}", proxy.port())] {
        let answer = send(
            &host,
            "HEAD",
            &format!("/v2/lib/app/manifests/v1?ns={ns}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            b"",
        );
        assert_eq!(answer.status, 200, "?ns={ns}");
        assert_eq!(answer.header("docker-content-digest"), Some(v1.as_str()));
    }
    assert_eq!(
        asked(&proxy, "/manifests/v1"),
        1,
        "?ns= asked upstream again"
    );

    // Docker's registry-mirrors send bare names: a repository this server
    // does not hold is read from the default upstream's cache; one pushed
    // here is its own.
    let bare = send(
        &host,
        "HEAD",
        "/v2/lib/app/manifests/v1",
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(bare.status, 200);
    assert_eq!(bare.header("docker-content-digest"), Some(v1.as_str()));
    std::fs::write(path.join("mine.txt"), b"pushed here\n").expect("write");
    ok(path, &["push", &format!("{host}/mine/app:v1"), "mine.txt"]);
    let mine = digest(&format!("{host}/mine/app:v1"));
    assert_ne!(mine, v1, "a pushed repository was read from upstream");
    assert_eq!(
        asked(&proxy, "mine/app/blobs"),
        0,
        "a push's blob checks went upstream"
    );
    assert!(path.join("served/mine/app/index.json").exists());

    // Read-only but for referrers of its images: a tag push and a
    // delete are refused.
    let pushed = crate::common::run(
        path,
        &["push", &format!("{host}/up/lib/app:v9"), "mine.txt"],
    );
    assert!(!pushed.status.success());
    let said = String::from_utf8_lossy(&pushed.stderr);
    assert!(said.contains("does not support push"), "{said}");
    let deleted = send(
        &host,
        "DELETE",
        &format!("/v2/up/lib/app/manifests/{v1}"),
        &[],
        b"",
    );
    assert_eq!(deleted.status, 405, "{}", deleted.text());
    // Referrers: one attached upstream (docker-registry keeps it at the
    // fallback tag), one attached through the cache; both listed.
    std::fs::write(path.join("up.sig"), b"signed upstream\n").expect("write");
    std::fs::write(path.join("here.sig"), b"signed here\n").expect("write");
    let attach = |target: &str, file: &str, kind: &str| {
        crate::common::json(path, &["attach", target, file, "--artifact-type", kind])
    };
    let theirs = attach(
        &format!("{origin}:v1"),
        "up.sig",
        "application/vnd.example.upstream",
    );
    let ours = attach(
        &format!("{host}/up/lib/app:v1"),
        "here.sig",
        "application/vnd.example.here",
    );
    let found = json(path, &["discover", &format!("{host}/up/lib/app:v1")]);
    let mut listed: Vec<String> = found["referrers"]
        .as_array()
        .expect("referrers")
        .iter()
        .map(crate::common::digest)
        .collect();
    listed.sort();
    let mut expected = vec![crate::common::digest(&theirs), crate::common::digest(&ours)];
    expected.sort();
    assert_eq!(listed, expected, "{found}");
    // The upstream referrer is cached: its manifest is served by digest.
    let fetched = send(
        &host,
        "GET",
        &format!(
            "/v2/up/lib/app/manifests/{}",
            crate::common::digest(&theirs)
        ),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(fetched.status, 200, "{}", fetched.text());

    // A mutable tag moved upstream is seen once it is no longer fresh.
    assert!(
        send(
            &host,
            "GET",
            "/v2/up/lib/app/manifests/moving",
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            b""
        )
        .status
            == 200
    );
    let other = path.join("other");
    seed_image(&other, "v2", b"moved layer\n");
    ok(
        path,
        &[
            "cp",
            &format!("oci:{}:v2", other.display()),
            &format!("{origin}:moving"),
        ],
    );
    let moved = digest(&format!("{origin}:moving"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(digest(&format!("{host}/up/lib/app:moving")), moved);
    // Past fresh_for, the immutable tag is still not asked about.
    assert_eq!(digest(&format!("{host}/up/lib/app:v1")), v1);
    assert_eq!(
        asked(&proxy, "/manifests/v1"),
        1,
        "an immutable tag was asked about once fresh_for passed"
    );

    // Upstream gone: the cached tag is served, an uncached one fails fast.
    drop(proxy);
    drop(upstream);
    let third = skopeo_copy(
        &format!("docker://{host}/up/lib/app:v1"),
        &format!("oci:{}:v1", path.join("out3").display()),
    );
    assert!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    let began = Instant::now();
    let missing = send(&host, "GET", "/v2/up/lib/app/manifests/never", &[], b"");
    assert_eq!(missing.status, 503, "{}", missing.text());
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "an uncached tag hung {:?}",
        began.elapsed()
    );
    let metrics = send(&host, "GET", "/metrics", &[], b"");
    assert!(
        metrics
            .text()
            .contains("orca_cache_requests_total{result=\"hit\"}"),
        "{}",
        metrics.text()
    );
}

/// Starts orca serve on a directory with the namespace `up` caching the
/// registry behind `proxy`.
pub(crate) fn cache_of(path: &std::path::Path, proxy: &RecordingProxy) -> Serving {
    std::fs::write(
        path.join("serve.yaml"),
        format!(
            "upstreams:\n  - namespace: up\n    registry: 127.0.0.1:{}\n",
            proxy.port()
        ),
    )
    .expect("write");
    Serving::start(
        path,
        &format!("oci:{}", path.join("served").display()),
        &["--config", path.join("serve.yaml").to_str().expect("utf-8")],
    )
}

/// Pushes `size` bytes of `seed`-derived content to `repository` upstream;
/// returns the blob's digest.
pub(crate) fn upstream_blob(
    path: &std::path::Path,
    repository: &str,
    seed: u8,
    size: usize,
) -> String {
    let file = path.join(format!("blob-{seed}"));
    let content: Vec<u8> = (0..size).map(|i| (i % 253) as u8 ^ seed).collect();
    std::fs::write(&file, content).expect("write");
    ok(
        path,
        &["blob", "put", repository, file.to_str().expect("utf-8")],
    )
    .trim()
    .to_owned()
}

#[test]
fn a_corrupt_upstream_byte_fails_the_pull_and_caches_nothing() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let upstream = RegistryServer::start().expect("docker-registry (scripts/setup installs it)");
    let digest = upstream_blob(path, &format!("{}/lib/big", upstream.host()), 1, 4 << 20);
    let proxy = RecordingProxy::with_faults(
        upstream.port(),
        orca_testkit::Faults {
            corrupt_at: Some((1_000_000, 1)),
            ..orca_testkit::Faults::default()
        },
    )
    .expect("proxy");
    let serving = cache_of(path, &proxy);
    let host = serving.host().to_owned();
    let target = format!("{host}/up/lib/big@{digest}");
    // A client that does not retry: the answer breaks off before its
    // last bytes, which wait for the store's verdict.
    let first = send(
        &host,
        "GET",
        &format!("/v2/up/lib/big/blobs/{digest}"),
        &[],
        &[],
    );
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(
        first.body.len() < 4 << 20,
        "the whole corrupt blob reached the client ({} bytes)",
        first.body.len()
    );
    let hex = digest.trim_start_matches("sha256:");
    let cached = path.join("served/up/lib/big/blobs/sha256").join(hex);
    // The fill ends when the store saw the mismatch.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !cached.exists(),
        "the cache kept a corrupt blob\n{}",
        serving.log()
    );
    // Upstream sends it right now: fetched, verified, cached.
    ok(path, &["blob", "get", &target, "-o", "second"]);
    // Published once the store checked the last byte the client got.
    let began = Instant::now();
    while !cached.exists() && began.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cached.exists(), "{}", serving.log());
    let bytes = std::fs::read(&cached).expect("the cached blob");
    assert_eq!(orca::Digest::sha256(&bytes).to_string(), digest);
}

#[test]
fn clients_pulling_one_uncached_blob_at_once_share_one_upstream_fetch() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let upstream = RegistryServer::start().expect("docker-registry (scripts/setup installs it)");
    let digest = upstream_blob(
        path,
        &format!("{}/lib/shared", upstream.host()),
        2,
        16 << 20,
    );
    let proxy = RecordingProxy::start(upstream.port()).expect("proxy");
    let serving = cache_of(path, &proxy);
    let target = format!("{}/up/lib/shared@{digest}", serving.host());
    let clients: Vec<_> = (0..8)
        .map(|i| {
            crate::common::orca(path)
                .current_dir(path)
                .args(["-q", "blob", "get", &target, "-o", &format!("out-{i}")])
                .spawn()
                .expect("start a client")
        })
        .collect();
    for mut client in clients {
        assert!(client.wait().expect("wait").success(), "{}", serving.log());
    }
    let gets = proxy
        .recorded()
        .lines()
        .filter(|line| line.starts_with("GET ") && line.contains(&format!("/blobs/{digest}")))
        .count();
    assert_eq!(gets, 1, "upstream was asked for the blob {gets} times");
}

#[test]
fn a_request_that_comes_during_a_fill_follows_it_and_shares_its_verdict() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let upstream = RegistryServer::start().expect("docker-registry (scripts/setup installs it)");
    let size = 4 << 20;
    let bad = upstream_blob(path, &format!("{}/lib/follow", upstream.host()), 5, size);
    let good = upstream_blob(path, &format!("{}/lib/follow", upstream.host()), 6, size);
    // A 2 MiB/s link: each fill takes two seconds; the first one's bytes
    // are corrupted on the way.
    let proxy = RecordingProxy::with_faults(
        upstream.port(),
        orca_testkit::Faults {
            corrupt_at: Some((1_000_000, 1)),
            link_down: Some(2 << 20),
            ..orca_testkit::Faults::default()
        },
    )
    .expect("proxy");
    let serving = cache_of(path, &proxy);
    let host = serving.host().to_owned();
    let two_at_once = |digest: &str| {
        let blob = format!("/v2/up/lib/follow/blobs/{digest}");
        std::thread::scope(|scope| {
            let first = scope.spawn(|| send(&host, "GET", &blob, &[], &[]));
            std::thread::sleep(Duration::from_millis(500));
            let second = scope.spawn(|| send(&host, "GET", &blob, &[], &[]));
            (first.join().expect("first"), second.join().expect("second"))
        })
    };
    let followed = || {
        send(&host, "GET", "/metrics", &[], &[])
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("orca_cache_requests_total{result=\"followed\"} "))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };

    // A corrupt fill: neither answer is whole, nothing is cached.
    let (first, second) = two_at_once(&bad);
    for answer in [&first, &second] {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(
            answer.body.len() < size,
            "a corrupt blob reached a client whole"
        );
    }
    assert_eq!(followed(), 1, "the second request did not follow the fill");
    let cached = |digest: &str| {
        path.join("served/up/lib/follow/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    assert!(!cached(&bad).exists(), "{}", serving.log());

    // A sound fill: both answers whole and right, one upstream fetch.
    let (first, second) = two_at_once(&good);
    for answer in [&first, &second] {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(crate::http::sha256(&answer.body), good);
    }
    assert_eq!(followed(), 2);
    let fetched = proxy
        .recorded()
        .lines()
        .filter(|l| l.starts_with("GET ") && l.contains(&good))
        .count();
    assert_eq!(fetched, 1, "{}", proxy.recorded());
    assert!(cached(&good).exists());
}

#[test]
fn an_upstream_that_asks_for_a_password_gets_the_namespaces_own() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let upstream = RegistryServer::start_htpasswd("mirror", "s3cret")
        .expect("docker-registry and htpasswd (scripts/setup installs them)");
    let content = path.join("private.txt");
    std::fs::write(&content, b"behind a password\n").expect("write");
    let pushed = crate::common::with_input(
        crate::common::orca(path).current_dir(path).args([
            "-u",
            "mirror",
            "--password-stdin",
            "blob",
            "put",
            &format!("{}/team/private", upstream.host()),
            "private.txt",
        ]),
        b"s3cret\n",
    );
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let digest = String::from_utf8_lossy(&pushed.stdout).trim().to_owned();
    std::fs::write(path.join("password"), b"s3cret\n").expect("write");
    let config = |user: &str, root: &str| {
        std::fs::write(
            path.join("serve.yaml"),
            format!(
                "upstreams:\n  - namespace: up\n    registry: {}\n    username: {user}\n    password_file: {}\n",
                upstream.host(),
                path.join("password").display()
            ),
        )
        .expect("write");
        Serving::start(
            path,
            &format!("oci:{}", path.join(root).display()),
            &["--config", path.join("serve.yaml").to_str().expect("utf-8")],
        )
    };
    let serving = config("mirror", "served");
    let got = send(
        serving.host(),
        "GET",
        &format!("/v2/up/team/private/blobs/{digest}"),
        &[],
        &[],
    );
    assert_eq!(got.status, 200, "{}\n{}", got.text(), serving.log());
    assert_eq!(got.body, b"behind a password\n");
    drop(serving);
    // Someone else's name, on an empty cache: upstream refuses it, so
    // nothing is served.
    let serving = config("stranger", "other");
    let refused = send(
        serving.host(),
        "GET",
        &format!("/v2/up/team/private/blobs/{digest}"),
        &[],
        &[],
    );
    assert!(refused.status >= 400, "{}", refused.text());
    assert_ne!(refused.body, b"behind a password\n");
}
