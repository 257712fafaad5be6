//! What `orca serve`'s pull-through cache holds, for which repository and
//! how much (a real docker-registry upstream): a blob cached for one
//! repository reaches another after one upstream `HEAD`, by a mount, and
//! never one upstream says lacks it, also after a restart; the size
//! budget evicts the images pulled least recently, never one in use or
//! one a referrer pushed here names.

use std::time::{Duration, Instant};

use orca_testkit::{RecordingProxy, RegistryServer};

use crate::common::{json, ok, seed_image};
use crate::http::send;
use crate::serve::Serving;
use crate::serve_cache::{asked, cache_of, upstream_blob};

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
