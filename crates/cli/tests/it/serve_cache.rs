//! `orca serve` as a pull-through cache of a real registry (Debian's
//! docker-registry behind a proxy that records every request it gets):
//! skopeo pulls through it twice and the second pull asks upstream
//! nothing; digests are upstream's; with upstream gone a cached tag is
//! still served and an uncached one fails at once; the namespace is
//! read-only but for referrers, which are upstream's and ours; a moved tag is seen once the freshness time passed. A
//! corrupt upstream byte fails the pull and caches nothing; eight clients
//! missing one blob at once cause one upstream fetch; containerd's `?ns=`
//! and Docker's bare mirror names reach the same cache. A blob cached
//! for one repository reaches another after one upstream HEAD, by a mount;
//! never one upstream says does not hold it.

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
fn cache_of(path: &std::path::Path, proxy: &RecordingProxy) -> Serving {
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
fn upstream_blob(path: &std::path::Path, repository: &str, seed: u8, size: usize) -> String {
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
fn a_blob_cached_for_one_repository_is_served_to_another_only_after_upstream_says_it_holds_it() {
    use std::os::unix::fs::MetadataExt;
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let upstream = RegistryServer::start().expect("docker-registry (scripts/setup installs it)");
    let digest = upstream_blob(path, &format!("{}/a/x", upstream.host()), 3, 1 << 20);
    ok(
        path,
        &[
            "blob",
            "put",
            &format!("{}/b/y", upstream.host()),
            path.join("blob-3").to_str().expect("utf-8"),
        ],
    );
    // c/z holds something else upstream, not this blob.
    upstream_blob(path, &format!("{}/c/z", upstream.host()), 4, 1000);
    let proxy = RecordingProxy::start(upstream.port()).expect("proxy");
    let serving = cache_of(path, &proxy);
    let host = serving.host().to_owned();
    let get = |name: &str| {
        send(
            &host,
            "GET",
            &format!("/v2/up/{name}/blobs/{digest}"),
            &[],
            &[],
        )
    };
    let first = get("a/x");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(crate::http::sha256(&first.body), digest);
    let blob_requests = |name: &str| asked(&proxy, &format!("/v2/{name}/blobs/{digest}"));
    assert_eq!(
        blob_requests("a/x"),
        2,
        "a HEAD and a GET for the first fill"
    );

    // b/y: upstream is asked once whether b/y holds it; the bytes come
    // from the cache, mounted (one file on a directory).
    let second = get("b/y");
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(crate::http::sha256(&second.body), digest);
    let recorded = proxy.recorded();
    let asked_for_b: Vec<_> = recorded
        .lines()
        .filter(|line| line.contains(&format!("/v2/b/y/blobs/{digest}")))
        .collect();
    assert_eq!(asked_for_b.len(), 1, "{recorded}");
    assert!(asked_for_b[0].starts_with("HEAD "), "{recorded}");
    let file = |name: &str| {
        path.join("served/up")
            .join(name)
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let (a, b) = (
        std::fs::metadata(file("a/x")).expect("a/x holds it"),
        std::fs::metadata(file("b/y")).expect("b/y holds it"),
    );
    assert_eq!(a.ino(), b.ino(), "the mount is a link to one file");

    // c/z does not hold it upstream: never served from a/x's copy.
    let third = get("c/z");
    assert_eq!(third.status, 404, "{}", third.text());
    assert!(third.text().contains("BLOB_UNKNOWN"), "{}", third.text());
    assert!(!file("c/z").exists());
    let metrics = send(&host, "GET", "/metrics", &[], &[]).text();
    assert!(
        metrics.contains("orca_cache_requests_total{result=\"mounted\"} 1"),
        "{metrics}"
    );
    // The catalog lists the repositories, not the namespace's records.
    let catalog = send(&host, "GET", "/v2/_catalog", &[], &[]).text();
    assert!(!catalog.contains("_records"), "{catalog}");

    // Restarted, with the records on disk: another blob is filled, one
    // cached for a/x still mounted into d/w.
    drop(serving);
    let other = upstream_blob(path, &format!("{}/a/x", upstream.host()), 7, 1000);
    ok(
        path,
        &[
            "blob",
            "put",
            &format!("{}/d/w", upstream.host()),
            path.join("blob-3").to_str().expect("utf-8"),
        ],
    );
    let serving = cache_of(path, &proxy);
    let host = serving.host().to_owned();
    let fresh = send(&host, "GET", &format!("/v2/up/a/x/blobs/{other}"), &[], &[]);
    assert_eq!(fresh.status, 200, "{}\n{}", fresh.text(), serving.log());
    assert_eq!(crate::http::sha256(&fresh.body), other);
    let mounted = send(
        &host,
        "GET",
        &format!("/v2/up/d/w/blobs/{digest}"),
        &[],
        &[],
    );
    assert_eq!(mounted.status, 200, "{}\n{}", mounted.text(), serving.log());
    assert_eq!(
        proxy
            .recorded()
            .lines()
            .filter(|l| l.starts_with("GET ") && l.contains(&format!("/v2/d/w/blobs/{digest}")))
            .count(),
        0,
        "fetched instead of mounted after the restart"
    );
}

/// The bytes the blob files under `dir` take, each file once (links to
/// one file count once).
fn stored_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut queue = vec![dir.to_path_buf()];
    while let Some(here) = queue.pop() {
        let Ok(entries) = std::fs::read_dir(&here) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                queue.push(entry.path());
            } else if entry
                .path()
                .parent()
                .is_some_and(|p| p.ends_with("blobs/sha256"))
                && seen.insert(meta.ino())
            {
                total += meta.len();
            }
        }
    }
    total
}

#[test]
fn the_size_budget_evicts_the_images_pulled_least_recently_and_never_one_in_use() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let upstream = RegistryServer::start().expect("docker-registry (scripts/setup installs it)");
    // Six images of a 1 MiB layer each (bytes that do not compress).
    for i in 0..6u32 {
        let mut state = 0x9e37_79b9_u32.wrapping_mul(i + 1);
        let content: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let seed = path.join(format!("seed{i}"));
        seed_image(&seed, "v1", &content);
        ok(
            path,
            &[
                "cp",
                &format!("oci:{}:v1", seed.display()),
                &format!("{}/lib/img{i}:v1", upstream.host()),
            ],
        );
    }
    let budget: u64 = 4 << 20;
    std::fs::write(
        path.join("serve.yaml"),
        format!(
            "gc:\n  every: 1s\n  grace: 1s\nupstreams:\n  - namespace: up\n    registry: {}\n    budget: 4MiB\n    keep_for: 3s\n",
            upstream.host()
        ),
    )
    .expect("write");
    let serving = Serving::start(
        path,
        &format!("oci:{}", path.join("served").display()),
        &["--config", path.join("serve.yaml").to_str().expect("utf-8")],
    );
    let host = serving.host().to_owned();
    let pull = |i: u32, out: &str| {
        crate::common::run(
            path,
            &[
                "cp",
                &format!("{host}/up/lib/img{i}:v1"),
                &format!("oci:{}:img{i}", path.join(out).display()),
            ],
        )
    };
    // One client keeps pulling img0 all along; the others pull img1..img5
    // one after another, past the budget.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let hot = scope.spawn(|| {
            let mut pulls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let pulled = pull(0, "hot");
                assert!(
                    pulled.status.success(),
                    "a pull of the image in use failed: {}",
                    String::from_utf8_lossy(&pulled.stderr)
                );
                pulls += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            pulls
        });
        for i in 1..6 {
            let pulled = pull(i, "cold");
            assert!(
                pulled.status.success(),
                "{}",
                String::from_utf8_lossy(&pulled.stderr)
            );
            if i == 1 {
                // A signature pushed here: img1 exists nowhere else with
                // it, and is never evicted.
                std::fs::write(path.join("sig.txt"), b"signed here\n").expect("write");
                ok(
                    path,
                    &[
                        "attach",
                        &format!("{host}/up/lib/img1:v1"),
                        "sig.txt",
                        "--artifact-type",
                        "application/vnd.example.signature",
                    ],
                );
            }
            std::thread::sleep(Duration::from_millis(700));
        }
        // Under the budget once the passes ran, on disk too.
        let began = Instant::now();
        loop {
            let on_disk = stored_bytes(&path.join("served/up"));
            if on_disk <= budget {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "the cache holds {on_disk} bytes, over its budget of {budget}\n{}",
                serving.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(hot.join().expect("the hot client") > 3);
    });
    // The image in use, the one signed here and the latest pulled are
    // whole in the cache: tagged, every blob there.
    for i in [0, 1, 5] {
        let cached = crate::common::run(
            path,
            &[
                "cp",
                &format!(
                    "oci:{}:v1",
                    path.join(format!("served/up/lib/img{i}")).display()
                ),
                &format!("oci:{}:check", path.join(format!("check{i}")).display()),
            ],
        );
        assert!(
            cached.status.success(),
            "img{i} is not whole in the cache: {}",
            String::from_utf8_lossy(&cached.stderr)
        );
    }
    let signed = json(path, &["discover", &format!("{host}/up/lib/img1:v1")]);
    assert_eq!(
        signed["referrers"].as_array().map(Vec::len),
        Some(1),
        "{signed}"
    );
    let metrics = send(&host, "GET", "/metrics", &[], b"").text();
    let evictions: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("orca_cache_evictions_total{namespace=\"up\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(evictions >= 2, "{metrics}");
    // An evicted image is fetched again on demand.
    let again = pull(2, "again");
    assert!(
        again.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&again.stderr),
        serving.log()
    );
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
