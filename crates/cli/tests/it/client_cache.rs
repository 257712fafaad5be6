//! The client's content cache (`--cache DIR`, `ORCA_CACHE`) against a
//! real registry behind a proxy that records each request: a second copy
//! of an image asks the registry for no blob; another repository holding
//! the same blobs is asked once per blob (`HEAD`) before the cache serves
//! it; a corrupt entry is dropped and fetched again; two processes
//! filling one cache at once leave every entry whole; `sync` and `pull`
//! read through it as `cp` does; `orca cache` lists, sizes and prunes it.

use orca_testkit::{RecordingProxy, RegistryServer};

use crate::common::{json, ok, seed_image};

/// Requests of `method` the proxy passed on for blobs of `repository`.
fn blob_requests(proxy: &RecordingProxy, method: &str, repository: &str) -> usize {
    proxy
        .recorded()
        .lines()
        .filter(|l| l.starts_with(&format!("{method} /v2/{repository}/blobs/sha256:")))
        .count()
}

/// Every entry `orca cache ls` lists hashes to its digest.
fn assert_entries_whole(path: &std::path::Path, cache: &str) -> Vec<serde_json::Value> {
    let listed = json(path, &["--cache", cache, "cache", "ls"]);
    let entries = listed.as_array().expect("entries").clone();
    for entry in &entries {
        let digest = entry["digest"].as_str().expect("digest");
        let file = path
            .join(cache)
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&file).expect("the entry's file");
        assert_eq!(
            orca::Digest::sha256(&bytes).to_string(),
            digest,
            "a torn entry"
        );
        assert_eq!(entry["size"].as_u64(), Some(bytes.len() as u64));
    }
    entries
}

#[test]
fn the_client_cache_serves_what_it_holds_to_repositories_known_to_hold_it() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let upstream = RegistryServer::start().expect("docker-registry (scripts/setup installs it)");
    let layer: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
    seed_image(&path.join("seed"), "v1", &layer);
    for repository in ["lib/app", "lib/other"] {
        ok(
            path,
            &[
                "cp",
                "oci:seed:v1",
                &format!("{}/{repository}:v1", upstream.host()),
            ],
        );
    }
    let proxy = RecordingProxy::start(upstream.port()).expect("proxy");
    let registry = format!("127.0.0.1:{}", proxy.port());
    let cp = |cache: &str, repository: &str, out: &str| {
        ok(
            path,
            &[
                "--cache",
                cache,
                "cp",
                &format!("{registry}/{repository}:v1"),
                &format!("oci:{out}:v1"),
            ],
        )
    };

    cp("cache", "lib/app", "out1");
    let fetched = blob_requests(&proxy, "GET", "lib/app");
    assert_eq!(fetched, 2, "the config and the layer\n{}", proxy.recorded());
    let entries = assert_entries_whole(path, "cache");
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e["sources"] == serde_json::json!([format!("{registry}/lib/app")])),
        "{entries:?}"
    );

    // Again, through ORCA_CACHE: no blob from the registry.
    let again = crate::common::orca(path)
        .current_dir(path)
        .env("ORCA_CACHE", "cache")
        .args(["cp", &format!("{registry}/lib/app:v1"), "oci:out2:v1"])
        .output()
        .expect("orca");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        blob_requests(&proxy, "GET", "lib/app"),
        fetched,
        "{}",
        proxy.recorded()
    );

    // lib/other holds the same blobs: asked once each, never fetched.
    cp("cache", "lib/other", "out3");
    assert_eq!(
        blob_requests(&proxy, "GET", "lib/other"),
        0,
        "{}",
        proxy.recorded()
    );
    assert_eq!(
        blob_requests(&proxy, "HEAD", "lib/other"),
        2,
        "{}",
        proxy.recorded()
    );
    cp("cache", "lib/other", "out4");
    assert_eq!(blob_requests(&proxy, "HEAD", "lib/other"), 2, "asked again");

    // A repository upstream says does not hold a cached blob is never
    // served it from the cache.
    std::fs::write(path.join("else.txt"), b"something else\n").expect("write");
    ok(
        path,
        &["push", &format!("{registry}/lib/else:v1"), "else.txt"],
    );
    let layer = entries
        .iter()
        .max_by_key(|e| e["size"].as_u64())
        .and_then(|e| e["digest"].as_str())
        .expect("the layer")
        .to_owned();
    let refused = crate::common::run(
        path,
        &[
            "--cache",
            "cache",
            "blob",
            "get",
            &format!("{registry}/lib/else@{layer}"),
            "-o",
            "leaked",
        ],
    );
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    assert!(!path.join("leaked").exists());
    let asked: Vec<_> = proxy
        .recorded()
        .lines()
        .filter(|l| l.contains(&format!("/v2/lib/else/blobs/{layer}")))
        .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(asked, ["HEAD"], "one HEAD, no GET");

    // A corrupt entry: dropped, fetched again, whole afterwards.
    let big = entries
        .iter()
        .max_by_key(|e| e["size"].as_u64())
        .expect("the layer");
    let digest = big["digest"].as_str().expect("digest").to_owned();
    let file = path
        .join("cache/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&file).expect("entry");
    bytes[1000] ^= 0xff;
    std::fs::write(&file, bytes).expect("corrupt it");
    cp("cache", "lib/app", "out5");
    assert_eq!(
        proxy
            .recorded()
            .lines()
            .filter(|l| l.starts_with("GET ") && l.contains(&digest))
            .count(),
        2,
        "{}",
        proxy.recorded()
    );
    assert_entries_whole(path, "cache");
    for out in ["out1", "out2", "out3", "out4", "out5"] {
        ok(
            path,
            &[
                "cp",
                &format!("oci:{out}:v1"),
                &format!("oci:check-{out}:v1"),
            ],
        );
    }

    // sync and pull read through it too: a mirror of lib/app into a
    // bundle, and an artifact pulled twice.
    std::fs::write(
        path.join("mirror.yaml"),
        format!("sync:\n  - source: {registry}/lib/app\n    target: oci:bundle\n"),
    )
    .expect("write");
    let gets = blob_requests(&proxy, "GET", "lib/app");
    ok(path, &["--cache", "cache", "sync", "mirror.yaml"]);
    assert_eq!(
        blob_requests(&proxy, "GET", "lib/app"),
        gets,
        "sync fetched blobs"
    );
    std::fs::write(path.join("notes.txt"), b"pulled twice\n").expect("write");
    ok(
        path,
        &["push", &format!("{registry}/lib/notes:v1"), "notes.txt"],
    );
    for out in ["pulled1", "pulled2"] {
        ok(
            path,
            &[
                "--cache",
                "cache",
                "pull",
                &format!("{registry}/lib/notes:v1"),
                "-o",
                out,
            ],
        );
        assert_eq!(
            std::fs::read(path.join(out).join("notes.txt")).expect("pulled"),
            b"pulled twice\n"
        );
    }
    assert_eq!(
        blob_requests(&proxy, "GET", "lib/notes"),
        1,
        "the second pull fetched the file again\n{}",
        proxy.recorded()
    );

    // Two processes filling one cache at once.
    let clients: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            crate::common::orca(path)
                .current_dir(path)
                .args([
                    "--cache",
                    "shared",
                    "cp",
                    &format!("{registry}/lib/app:v1"),
                    &format!("oci:both-{name}:v1"),
                ])
                .spawn()
                .expect("start orca")
        })
        .collect();
    for mut client in clients {
        assert!(client.wait().expect("wait").success());
    }
    assert_eq!(assert_entries_whole(path, "shared").len(), 2);
    let leftovers = std::fs::read_dir(path.join("shared/tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "fills left behind");

    // Size and prune.
    let sized = json(path, &["--cache", "shared", "cache", "size"]);
    assert_eq!(sized["blobs"], 2);
    assert!(sized["bytes"].as_u64().expect("bytes") > 3 << 20);
    let pruned = json(
        path,
        &["--cache", "shared", "cache", "prune", "--max-size", "1MiB"],
    );
    let removed = pruned["removed"].as_u64().expect("removed");
    assert!(removed >= 1, "{pruned}");
    let left = json(path, &["--cache", "shared", "cache", "size"]);
    assert!(left["bytes"].as_u64().expect("bytes") <= 1 << 20, "{left}");
    json(path, &["--cache", "shared", "cache", "prune", "--all"]);
    assert_eq!(
        json(path, &["--cache", "shared", "cache", "size"])["blobs"],
        0
    );
    let refused = crate::common::run(path, &["cache", "size"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--cache DIR"));
}
