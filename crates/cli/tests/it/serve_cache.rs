//! `orca serve` as a pull-through cache of a real registry (Debian's
//! docker-registry behind a proxy that records every request it gets):
//! skopeo pulls through it twice and the second pull asks upstream
//! nothing; digests are upstream's; with upstream gone a cached tag is
//! still served and an uncached one fails at once; the namespace is
//! read-only; a moved tag is seen once the freshness time passed.

use std::process::Command;
use std::time::{Duration, Instant};

use orca_testkit::{RecordingProxy, RegistryServer, require_program};

use crate::common::{json, ok, seed_image};
use crate::http::send;
use crate::serve::Serving;

/// Requests upstream got whose line holds `what`.
fn asked(proxy: &RecordingProxy, what: &str) -> usize {
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
            "upstreams:\n  - namespace: up\n    registry: 127.0.0.1:{}\n    fresh_for: 2s\n    immutable_tags: [\"v*\"]\n",
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

    // Read-only.
    let pushed = send(&host, "POST", "/v2/up/lib/app/blobs/uploads/", &[], b"");
    assert_eq!(pushed.status, 405, "{}", pushed.text());

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
